"""What a shipped tree member predicts: the gap, or PBE plus the learnt correction (cgcnn.prediction.trees)."""

from __future__ import annotations

import numpy as np
import pytest

from cgcnn.prediction.trees import CORRECTION, GAP, TabularModelError, TreeMember, load_tree_member, save_trees


class Constant:
    """A stand-in model that predicts 0.5 eV for every row (checks the features' shape)."""

    def predict(self, x):
        assert x.shape[1] == 133  # 132 Magpie statistics + the PBE gap
        return np.full(len(x), 0.5)


def test_a_gap_member_returns_the_model_output_and_a_correction_member_adds_the_pbe_gap():
    comp, pbe = np.zeros((3, 132)), np.array([0.0, 1.0, 2.0])
    assert np.allclose(TreeMember(Constant(), GAP).predict(comp, pbe), 0.5)
    assert np.allclose(TreeMember(Constant(), CORRECTION).predict(comp, pbe), [0.5, 1.5, 2.5])
    assert np.isnan(TreeMember(Constant(), CORRECTION).predict(comp[:1], [np.nan])).all()


def test_an_unknown_target_is_refused_by_name():
    with pytest.raises(TabularModelError, match="'residual'"):
        TreeMember(Constant(), "residual")


def test_a_manifest_entry_without_a_target_loads_as_gap_trees(tmp_path):
    from sklearn.ensemble import HistGradientBoostingRegressor

    x = np.column_stack([np.zeros((20, 132)), np.linspace(0, 2, 20)])
    save_trees(HistGradientBoostingRegressor(max_iter=5).fit(x, x[:, -1]), tmp_path / "trees.skops")
    old = load_tree_member(tmp_path, {"file": "trees.skops", "weight": 0.5})
    new = load_tree_member(tmp_path, {"file": "trees.skops", "weight": 0.5, "target": "correction"})
    assert old.target == GAP and new.target == CORRECTION
    pbe = np.array([0.0, 1.0])
    assert np.allclose(new.predict(x[:2, :132], pbe) - old.predict(x[:2, :132], pbe), pbe)
