"""Shipped models: scripts/ship_model.py writes them from a run; load_model / predict --model use them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pipeline_runner import REPO  # noqa: F401  (tests/ on the path)

import cgcnn
import cgcnn.shipped
from cgcnn.shipped import ShippedModelError, manifest, shipped_model_dir, shipped_models


def _ship(tiny_run, tiny_dataset, tmp_path, exclude=None, name="tiny"):
    import importlib.util

    spec = importlib.util.spec_from_file_location("ship_model", REPO / "scripts" / "ship_model.py")
    ship = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship)
    tiny_dataset.graphs.save_npz(tmp_path / "graphs.npz")
    pd.DataFrame({"material_id": tiny_dataset.ids, "target": tiny_dataset.y}).to_csv(tmp_path / "targets.csv", index=False)
    argv = ["--name", name, "--run", str(tiny_run.best_checkpoint.parent), "--graphs", str(tmp_path / "graphs.npz"),
            "--targets", str(tmp_path / "targets.csv"), "--models-dir", str(tmp_path / "models")]
    if exclude is not None:
        argv += ["--exclude-ids", str(exclude)]
    return ship.main(argv)


@pytest.fixture
def shipped(tiny_run, tiny_dataset, tmp_path, monkeypatch):
    assert _ship(tiny_run, tiny_dataset, tmp_path) == 0
    monkeypatch.setattr(cgcnn.shipped, "models_root", lambda: tmp_path / "models")
    return tmp_path / "models" / "tiny"


def test_ship_model_writes_a_slim_checkpoint_and_a_manifest(shipped, tiny_run):
    info = json.loads((shipped / "manifest.json").read_text())
    assert set(info["ids"]) == {"train", "val", "test"} and info["ids"]["train"] == tiny_run.splits["train"]
    assert set(info["metrics"]) == {"train", "val", "test"} and np.isfinite(info["metrics"]["test"]["mae"])
    assert info["wall_time_s"] >= 0 and len(info["history"]) == info["epochs_run"] == 3
    assert (shipped / "model.pt").stat().st_size < tiny_run.best_checkpoint.stat().st_size  # no optimiser state
    assert shipped_models() == ["tiny"] and manifest("tiny")["name"] == "tiny"


def test_load_model_by_name_predicts_like_the_checkpoint(shipped, tiny_run, tiny_items):
    by_name = cgcnn.load_model("tiny").predict(dict(tiny_items[:3]))
    by_path = cgcnn.load_model(tiny_run.best_checkpoint).predict(dict(tiny_items[:3]))
    assert np.allclose(by_name["prediction_ev"], by_path["prediction_ev"])


def test_a_model_trained_on_an_excluded_id_is_not_shipped(tiny_run, tiny_dataset, tmp_path):
    held_out = tmp_path / "held_out.csv"
    pd.DataFrame({"material_id": [tiny_run.splits["train"][0]]}).to_csv(held_out, index=False)
    with pytest.raises(SystemExit, match="excluded id"):
        _ship(tiny_run, tiny_dataset, tmp_path, exclude=held_out)
    assert not (tmp_path / "models").exists()


def test_an_unknown_name_lists_the_shipped_models(shipped):
    with pytest.raises(ShippedModelError, match=r"no shipped model named 'm9' \(shipped: tiny\)"):
        shipped_model_dir("m9")


def test_shipped_base_model_never_saw_ds3():
    if "base" not in shipped_models():
        pytest.skip("no base model shipped in this checkout")
    validation = REPO.parent / "shared" / "data" / "bucket" / "raw" / "validation_set.csv"
    if not validation.is_file():
        pytest.skip("../shared/data is absent")
    ds3 = set(pd.read_csv(validation, dtype=str)["material_id"])
    ids = manifest("base")["ids"]
    assert not ds3 & (set(ids["train"]) | set(ids["val"]) | set(ids["test"]))
    loaded = cgcnn.load_checkpoint(shipped_model_dir("base") / "model.pt")
    assert loaded.graph_config.key() == "r7-n14-d0-s0.2"
