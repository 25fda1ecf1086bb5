"""Checkpoints (cgcnn.training.checkpoint): our self-describing format, and the original CGCNN
``.pth.tar`` files (read from ../shared/data, skipped when it is absent)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from pymatgen.core import Lattice, Structure

from cgcnn.config import FORMAT_VERSION, GraphConfig, ModelConfig
from cgcnn.data.batch import make_batch
from cgcnn.data.building import build_graphs, cif_items
from cgcnn.data.dataset import CrystalDataset
from cgcnn.data.features import AtomFeatures
from cgcnn.lock import LOCK_NAME
from cgcnn.nn.model import CGCNN
from cgcnn.prediction.inference import predict
from cgcnn.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)


class NotATensor:
    """Anything ``torch.load(weights_only=True)`` must refuse to unpickle."""


# -- our checkpoints -----------------------------------------------------------------------


def test_checkpoint_describes_itself(tiny_run, tiny_features, tiny_graph_config, tiny_train_config):
    raw = torch.load(tiny_run.last_checkpoint, map_location="cpu", weights_only=True)  # nothing unpickled
    assert raw["format"] == "cgcnn-da/checkpoint" and raw["format_version"] == FORMAT_VERSION
    assert ModelConfig.model_validate(raw["model_config"]).n_conv == 2
    assert GraphConfig.model_validate(raw["graph_config"]) == tiny_graph_config
    assert raw["atom_features"]["table"] == tiny_features.to_dict()
    assert set(raw["normalizer"]) == {"mean", "std"}
    assert {"state", "param_groups"} <= set(raw["optimizer"])
    assert raw["epoch"] == tiny_train_config.epochs - 1  # 0-based: the last epoch
    assert raw["train_config"] == tiny_train_config.to_dict()
    assert all(isinstance(v, torch.Tensor) for v in raw["state_dict"].values())


def test_loaded_checkpoint_predicts_alone(tiny_run, tiny_dataset, tiny_features, tiny_graph_config, tmp_path):
    lonely = tmp_path / "elsewhere" / "model.pt"  # the checkpoint with nothing beside it
    lonely.parent.mkdir()
    shutil.copy(tiny_run.best_checkpoint, lonely)
    loaded = load_checkpoint(lonely)
    assert loaded.features == tiny_features
    assert loaded.graph_config == tiny_graph_config
    assert loaded.normalizer == tiny_run.normalizer
    assert not loaded.model.training

    # the same numbers as the weights put by hand into a model built from the test's own inputs
    raw = read_checkpoint(tiny_run.best_checkpoint)
    model = CGCNN(
        ModelConfig.model_validate(raw["model_config"]), atom_table=tiny_features.table, graph=tiny_graph_config
    )
    model.load_state_dict(raw["state_dict"])
    with torch.no_grad():
        z = model.eval()(make_batch(tiny_dataset, np.arange(len(tiny_dataset)))).numpy().astype(np.float64)
    pred = predict(loaded, tiny_dataset, device="cpu")
    assert pred.shape == (24,) and np.isfinite(pred).all()
    assert np.array_equal(pred, tiny_run.normalizer.denorm(z))


def test_save_is_atomic_and_leaves_no_temporary_file(tiny_run, tmp_path):
    contents = read_checkpoint(tiny_run.last_checkpoint)
    save_checkpoint(tmp_path / "a.pt", contents)
    save_checkpoint(tmp_path / "a.pt", contents)  # overwrite in place
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]
    assert torch.equal(
        read_checkpoint(tmp_path / "a.pt")["state_dict"]["fc_out.weight"], contents["state_dict"]["fc_out.weight"]
    )
    run_dir = tiny_run.last_checkpoint.parent
    hidden = [
        p.name for p in run_dir.iterdir() if (p.name.startswith(".") and p.name != LOCK_NAME) or p.suffix == ".tmp"
    ]
    assert not hidden  # the run folder's lock file is the only hidden file


def test_checkpoint_with_pickled_objects_is_refused(tmp_path):
    torch.save({"state_dict": {}, "normalizer": {}, "payload": NotATensor()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(tmp_path / "evil.pt")


def test_not_a_checkpoint_and_missing_file_are_refused(tmp_path):
    torch.save({"hello": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a CGCNN checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")


def test_our_checkpoint_refuses_other_graph_settings(tiny_run):
    with pytest.raises(CheckpointError, match="radius=7.* trained with 4.0"):
        load_checkpoint(tiny_run.best_checkpoint, radius=7)
    with pytest.raises(CheckpointError, match="max_neighbors=14"):
        load_checkpoint(tiny_run.best_checkpoint, max_neighbors=14)
    assert load_checkpoint(tiny_run.best_checkpoint, radius=4, max_neighbors=12).graph_config.radius == 4


# -- original CGCNN checkpoints --------------------------------------------------------------


@pytest.fixture(scope="module")
def band_gap(reference_dir):
    return load_checkpoint(
        reference_dir / "band-gap.pth.tar", atom_features=reference_dir / "atom_init.json", radius=8, max_neighbors=12
    )


@pytest.mark.shared_data
def test_band_gap_architecture_is_read_from_the_weights(band_gap, reference_dir):
    cfg = band_gap.model_config
    assert (cfg.orig_atom_fea_len, cfg.nbr_fea_len, cfg.atom_fea_len, cfg.n_conv, cfg.h_fea_len, cfg.n_h) == (
        92,
        41,
        64,
        4,
        32,
        1,
    )
    # shared/data/README.md: normaliser mean 2.3538, std 1.4802 eV
    assert band_gap.normalizer.mean == pytest.approx(2.3538, abs=1e-4)
    assert band_gap.normalizer.std == pytest.approx(1.4802, abs=1e-4)
    raw = read_checkpoint(reference_dir / "band-gap.pth.tar")
    ours, theirs = set(band_gap.model.state_dict()), set(raw["state_dict"])
    assert theirs <= ours  # every original weight has a home, under the same name
    # only the batch-norm counters that PyTorch added after 2018 are new
    assert {k.rsplit(".", 1)[1] for k in ours - theirs} == {"num_batches_tracked"}


@pytest.mark.shared_data
def test_band_gap_predictions_match_the_original_implementation(band_gap, reference_dir):
    items = cif_items([reference_dir / "sample-regression"])
    graphs, problems = build_graphs(items, band_gap.graph_config, progress=False)
    assert problems == [] and len(graphs) == 10
    pred = predict(band_gap, CrystalDataset(graphs, None, band_gap.features), device="cpu")
    ref = pd.read_csv(reference_dir / "reference_predictions.csv", dtype={"cif_id": str}).set_index("cif_id")
    assert np.abs(pred - ref.loc[graphs.ids, "prediction_ev"].to_numpy()).max() < 1e-3


@pytest.mark.shared_data
def test_study_base_model_loads_with_radius_7_and_14_neighbours(reference_dir, cscl):
    m1 = load_checkpoint(
        reference_dir / "seed_m1_base.pth.tar",
        atom_features=reference_dir / "atom_init.json",
        radius=7,
        max_neighbors=14,
    )
    cfg = m1.model_config
    assert (cfg.nbr_fea_len, cfg.atom_fea_len, cfg.n_conv, cfg.h_fea_len, cfg.n_h) == (36, 64, 3, 128, 1)
    assert m1.graph_config == GraphConfig(radius=7, max_neighbors=14)
    # shared/data/README.md: normaliser mean 2.3127, std 1.3868 eV
    assert m1.normalizer.mean == pytest.approx(2.3127, abs=1e-4)
    graphs, _ = build_graphs([("CsCl", cscl)], m1.graph_config, progress=False)
    assert np.isfinite(predict(m1, CrystalDataset(graphs, None, m1.features), device="cpu")).all()


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ({}, ["--atom-features", "--radius", "--max-neighbors"]),
        ({"radius": 8, "max_neighbors": 12}, ["--atom-features"]),
        ({"atom_features": "atom_init.json", "radius": 8}, ["--max-neighbors"]),
    ],
)
def test_original_checkpoint_without_its_settings_is_refused(reference_dir, given, missing):
    if "atom_features" in given:
        given = dict(given, atom_features=reference_dir / given["atom_features"])
    with pytest.raises(CheckpointError, match="original CGCNN checkpoint") as err:
        load_checkpoint(reference_dir / "band-gap.pth.tar", **given)
    named = str(err.value).split("; give ")[1].split(" (e.g.")[0]
    assert named.split(", ") == missing


@pytest.mark.shared_data
def test_original_checkpoint_with_a_feature_table_of_another_length_is_refused(reference_dir, tiny_features):
    with pytest.raises(CheckpointError, match="expect 92 atom features, the table has 8"):
        load_checkpoint(reference_dir / "band-gap.pth.tar", atom_features=tiny_features, radius=8, max_neighbors=12)


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("name", "wrong_radius", "expects", "gives"), [("band-gap.pth.tar", 7, 41, 36), ("seed_m1_base.pth.tar", 8, 36, 41)]
)
def test_original_checkpoint_with_the_wrong_radius_is_refused(reference_dir, name, wrong_radius, expects, gives):
    with pytest.raises(
        CheckpointError, match=rf"expect {expects} distance features but radius {wrong_radius} .* gives {gives}"
    ):
        load_checkpoint(
            reference_dir / name, atom_features=reference_dir / "atom_init.json", radius=wrong_radius, max_neighbors=12
        )


def test_predicting_an_element_the_checkpoint_has_no_features_for_is_refused(tiny_run, tiny_features):
    a = 6.29  # rock salt KCl
    kcl = Structure(
        Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]), ["K", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    loaded = load_checkpoint(tiny_run.best_checkpoint)
    graphs, _ = build_graphs([("KCl", kcl)], loaded.graph_config, progress=False)
    with_k = AtomFeatures.from_dict({**tiny_features.to_dict(), "19": [0.5] * tiny_features.length})
    ds = CrystalDataset(graphs, None, with_k)  # the dataset's table knows K, the checkpoint's does not
    assert len(ds) == 1 and not loaded.features.supports(19)
    with pytest.raises(ValueError, match=r"K \(Z=19\)"):
        predict(loaded, ds, device="cpu")


def test_our_checkpoint_accepts_its_own_table_and_refuses_other_values(tiny_run, tiny_features, tmp_path):
    tiny_features.to_json(tmp_path / "same.json")
    assert load_checkpoint(tiny_run.best_checkpoint, atom_features=tmp_path / "same.json").features == tiny_features
    shifted = AtomFeatures.from_dict({z: [x + 1 for x in v] for z, v in tiny_features.to_dict().items()})
    with pytest.raises(CheckpointError, match="differ from the table stored"):
        load_checkpoint(tiny_run.best_checkpoint, atom_features=shifted)


def test_a_feature_table_of_another_size_is_refused_cleanly(tiny_run, tiny_features):
    # the checkpoint's table plus neodymium (Z=60): more rows than the stored table
    bigger = AtomFeatures.from_dict({**tiny_features.to_dict(), "60": [0.1] * tiny_features.length})
    with pytest.raises(CheckpointError, match="differ"):
        load_checkpoint(tiny_run.best_checkpoint, atom_features=bigger)
