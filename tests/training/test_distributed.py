"""Data-parallel training (cgcnn.training.distributed + cgcnn.training.fit.fit) with 2 gloo processes on CPU,
started with ``python -m torch.distributed.run`` as a user would start torchrun."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from cgcnn.training.checkpoint import read_checkpoint


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def inputs(tiny_graphs, tiny_targets, tiny_features, tmp_path_factory):
    """The tiny fixture as files: graphs, targets, atom features, model config."""
    d = tmp_path_factory.mktemp("ddp_inputs")
    tiny_graphs.save_npz(d / "graphs.npz")
    pd.DataFrame({"material_id": list(tiny_targets), "target": list(tiny_targets.values())}).to_csv(
        d / "targets.csv", index=False
    )
    (d / "features.json").write_text(json.dumps(tiny_features.to_dict()))
    (d / "model.json").write_text(json.dumps({"atom_fea_len": 8, "h_fea_len": 16, "n_conv": 2}))
    return d


def _train(inputs, out, nproc: int, config: dict, *, targets=None, resume=False) -> subprocess.CompletedProcess:
    cfg = out.parent / f"{out.name}-config.json"
    cfg.write_text(json.dumps({"device": "cpu", "seed": 0, **config}))
    args = [
        "train",
        "--graphs",
        str(inputs / "graphs.npz"),
        "--targets",
        str(targets or inputs / "targets.csv"),
        "--config",
        str(cfg),
        "--model-config",
        str(inputs / "model.json"),
        "--atom-features",
        str(inputs / "features.json"),
        "--radius",
        "4",
        "--max-neighbors",
        "12",
        "--output",
        str(out),
    ] + (["--resume"] if resume else [])
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_port",
        str(_free_port()),
    ]
    cmd = (launcher + ["-m", "cgcnn"] if nproc > 1 else [sys.executable, "-m", "cgcnn"]) + args
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _weights(path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["state_dict"]


def test_distributed_two_process_gloo_run_writes_exactly_one_checkpoint(inputs, tmp_path):
    out = tmp_path / "run"
    proc = _train(
        inputs,
        out,
        2,
        {
            "epochs": 3,
            "batch_size": 8,
            "optimizer": "adamw",
            "lr": 0.003,
            "scheduler": "none",
            "val_fraction": 0.25,
            "test_fraction": 0.0,
        },
    )
    files = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert files == ["best.pt", "history.csv", "last.pt", "run.json", "splits.json"]
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2] and np.isfinite(history["val_mae"]).all()
    summaries = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1  # rank 0 reports, once
    assert read_checkpoint(out / "last.pt")["epoch"] == 2


@pytest.mark.parametrize("sync", [True, False])
def test_distributed_two_ranks_of_half_a_batch_step_like_one_process_of_the_whole(inputs, tmp_path, tiny_targets, sync):
    """One SGD step on 8 crystals: 2 ranks × 4 with synchronised batch norm equal 1 × 8;
    without synchronisation each rank normalises with its own 4 crystals, and they differ."""
    ids = sorted(tiny_targets)[:8]
    targets = tmp_path / "eight.csv"
    pd.DataFrame({"material_id": ids, "target": [tiny_targets[m] for m in ids]}).to_csv(targets, index=False)
    cfg = {
        "epochs": 1,
        "batch_size": 8,
        "optimizer": "sgd",
        "lr": 0.05,
        "momentum": 0.0,
        "scheduler": "none",
        "val_fraction": 0.0,
        "test_fraction": 0.0,
        "shuffle": False,
        "sync_batchnorm": sync,
    }
    _train(inputs, tmp_path / "one", 1, cfg, targets=targets)
    _train(inputs, tmp_path / "two", 2, cfg, targets=targets)
    one, two = _weights(tmp_path / "one" / "last.pt"), _weights(tmp_path / "two" / "last.pt")
    assert one.keys() == two.keys()
    start = _weights(tmp_path / "one" / "last.pt")  # same seed: same start; check the step did something
    close = all(torch.allclose(one[k].double(), two[k].double(), atol=1e-6) for k in one if one[k].is_floating_point())
    assert close is sync
    assert any((start[k] != 0).any() for k in start if start[k].is_floating_point())


def test_distributed_resumed_two_process_run_ends_like_an_uninterrupted_one(inputs, tmp_path):
    cfg = {
        "epochs": 4,
        "batch_size": 8,
        "optimizer": "adamw",
        "lr": 0.003,
        "scheduler": "none",  # lr independent of the budget
        "val_fraction": 0.25,
        "test_fraction": 0.0,
        "shuffle": True,
    }
    _train(inputs, tmp_path / "straight", 2, cfg)
    _train(inputs, tmp_path / "interrupted", 2, {**cfg, "epochs": 2})
    # the same run continued: the epoch budget may grow, nothing else changes
    cfg_file = tmp_path / "interrupted-config.json"
    _train(inputs, tmp_path / "interrupted", 2, cfg, resume=True)
    assert json.loads(cfg_file.read_text())["epochs"] == 4
    a, b = _weights(tmp_path / "straight" / "last.pt"), _weights(tmp_path / "interrupted" / "last.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    h = pd.read_csv(tmp_path / "interrupted" / "history.csv")
    assert h["epoch"].tolist() == [0, 1, 2, 3]


def test_distributed_base_training_stage_launches_torchrun(inputs, tiny_dataset, tmp_path):
    """The pipeline's base-model stage with ``nproc`` 2 (``run_pipeline.py --nproc 2``)."""
    from types import SimpleNamespace

    from cgcnn.config import TrainConfig
    from cgcnn.study import profiles
    from cgcnn.study.base_model import _fit_distributed

    profile = profiles.load_profile("fixture", nproc=2)
    assert profile.nproc == 2
    data = SimpleNamespace(files={"ds1_graphs": inputs / "graphs.npz"})
    cfg = TrainConfig(
        epochs=2,
        batch_size=8,
        optimizer="adamw",
        lr=0.003,
        scheduler="none",
        val_fraction=0.25,
        test_fraction=0.0,
        device="cpu",
    )
    # DS1 stands in as the tiny graphs (4 Å, 12 neighbours); the default atom features cover their elements
    result = _fit_distributed(data, tiny_dataset, cfg, tmp_path / "m1", profile)
    assert result.best_checkpoint.is_file() and len(result.history) == 2
    assert sorted(result.splits) == ["test", "train", "val"] and len(result.splits["train"]) == 18
