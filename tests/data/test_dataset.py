"""Labelled datasets (cgcnn.data.dataset)."""

from __future__ import annotations

import numpy as np
import pytest

from cgcnn.data.dataset import CrystalDataset
from cgcnn.data.features import AtomFeatures
from cgcnn.errors import DatasetError

# -- CrystalDataset --------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), "n/a", None, float("inf")])
def test_label_that_is_not_a_number_is_skipped_naming_the_item(tiny_graphs, tiny_targets, tiny_features, bad):
    targets = dict(tiny_targets, **{"MgO-099": bad})
    ds = CrystalDataset(tiny_graphs, targets, tiny_features)
    assert len(ds) == 23 and "MgO-099" not in ds.ids
    assert [p.item_id for p in ds.problems] == ["MgO-099"]
    assert "not a finite number" in ds.problems[0].reason
    with pytest.raises(DatasetError, match="MgO-099"):
        CrystalDataset(tiny_graphs, targets, tiny_features, on_error="error")


def test_element_outside_the_feature_table_is_skipped_naming_it(tiny_graphs, tiny_targets, tiny_features):
    # the same table without caesium (Z = 55)
    no_cs = AtomFeatures.from_dict({k: v for k, v in tiny_features.to_dict().items() if k != "55"})
    ds = CrystalDataset(tiny_graphs, tiny_targets, no_cs)
    cscl_ids = [m for m in tiny_graphs.ids if m.startswith("CsCl")]
    assert len(ds) == 20 and not set(cscl_ids) & set(ds.ids)
    assert [p.item_id for p in ds.problems] == cscl_ids
    assert all("Cs (Z=55)" in p.reason for p in ds.problems)
    with pytest.raises(DatasetError, match=r"CsCl-097.*Cs \(Z=55\)"):
        CrystalDataset(tiny_graphs, tiny_targets, no_cs, on_error="error")


def test_label_without_a_graph_is_reported(tiny_graphs, tiny_targets, tiny_features):
    ds = CrystalDataset(tiny_graphs, dict(tiny_targets, ghost=1.0), tiny_features)
    assert len(ds) == 24
    assert [p.item_id for p in ds.problems] == ["ghost"]


def test_labels_follow_the_ids(tiny_dataset, tiny_targets):
    assert tiny_dataset.y.dtype == np.float32
    assert np.allclose(tiny_dataset.y, [tiny_targets[m] for m in tiny_dataset.ids])


def test_unlabelled_dataset_keeps_every_graph(tiny_graphs, tiny_features):
    ds = CrystalDataset(tiny_graphs, None, tiny_features)
    assert ds.ids == tiny_graphs.ids and ds.y is None
