"""Step 02-ml-dev/01: the base model M1, trained on the PBE gaps of DS1 into ``<run>/models/m1/``.

M1 is a fit like any other of the study (:mod:`cgcnn.study.fits`): trained once into the fit
cache, resumed from its last finished epoch when a run was interrupted, read back by every
run folder whose settings leave it unchanged, and copied into ``<run>/models/m1/``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cgcnn.data.features import AtomFeatures
from cgcnn.evaluation.metrics import regression_metrics
from cgcnn.prediction.inference import predict, resolve_device
from cgcnn.prediction.shipped import manifest, member_checkpoints
from cgcnn.study.datasets import load_data
from cgcnn.study.fits import FitCache, dataset_digest
from cgcnn.study.profiles import StudyProfile
from cgcnn.study.rundir import run_paths, write_table
from cgcnn.training.checkpoint import load_checkpoint
from cgcnn.training.fit import FitResult, fit


@dataclass
class BaseResult:
    """M1: its checkpoint, training history and DS1 train/validation/test metrics."""

    checkpoint: Path
    history: pd.DataFrame
    metrics: pd.DataFrame
    best_epoch: int
    seconds: float
    n_crystals: int


def metrics_row(y_true, y_pred) -> dict:
    """:func:`cgcnn.evaluation.metrics.regression_metrics` of two array-likes (as float arrays)."""
    return regression_metrics(np.asarray(y_true, float), np.asarray(y_pred, float))


def _ds1_ids(ds1: pd.DataFrame, profile: StudyProfile) -> list[str]:
    """DS1 ids to train on: all, or a random subset of ``base.max_crystals`` (seeded by the base seed)."""
    ids = list(ds1["material_id"])
    limit = profile.base.max_crystals
    if limit is not None and limit < len(ids):
        keep = np.sort(np.random.default_rng(profile.base.train.seed).choice(len(ids), size=limit, replace=False))
        ids = [ids[k] for k in keep]
    return ids


def train_base(run_dir: str | os.PathLike, profile: StudyProfile, *, progress: bool = False) -> BaseResult:
    """Train M1 on DS1 (PBE gaps) into ``<run>/models/m1/`` and score it on the DS1 splits.

    ``profile.base.max_crystals`` limits DS1 to a random subset (seeded by the base seed).
    """
    profile.apply_threads()

    run = Path(run_dir)
    paths = run_paths(run)
    data = load_data(run)
    if profile.base.source == "shipped":
        return use_shipped_base(run, profile, data)
    dataset = data.dataset("ds1", "bg_pbe", AtomFeatures.default(), ids=_ds1_ids(data.ds1, profile))
    cfg = profile.train_config(profile.base.train)
    spec = {
        "kind": "m1",
        "model": profile.model.model_dump(),
        "train": cfg.to_dict(),
        "data": dataset_digest(dataset),
        "nproc": profile.nproc,  # DDP shards the batches: another fit than one process
        "device": resolve_device(profile.device).type,
    }

    def work(out: Path):
        if profile.nproc > 1:
            return _fit_distributed(data, dataset, cfg, out, profile)
        meta = {"role": "base", "dataset": "DS1"}
        return fit(dataset, cfg, out, model_config=profile.model, progress=progress, meta=meta, resume=True)

    cached = FitCache.of_run(run).fit(spec, work)  # trained once; resumed after a crash; shared by runs
    best = cached.copy_to(paths["models"] / "m1")
    seconds = cached.seconds
    history = cached.history()
    splits = json.loads((best.parent / "splits.json").read_text())
    loaded = load_checkpoint(best)
    pred = predict(loaded, dataset, device=profile.device)
    metrics = _split_metrics(dataset, pred, splits)
    write_table(paths["tables"] / "m1_ds1_metrics.csv", metrics)
    write_table(paths["tables"] / "m1_history.csv", history, index=False)
    return BaseResult(best, history, metrics, cached.best_epoch, seconds, len(dataset))


def _fit_distributed(data, dataset, cfg, out: Path, profile: StudyProfile):
    """Train M1 with ``profile.nproc`` processes: ``python -m torch.distributed.run`` runs
    ``cgcnn train --resume`` (DDP, see :mod:`cgcnn.training.distributed`) on DS1's graph file and the chosen ids."""
    import subprocess
    import sys

    inputs = out.with_name(out.name + "-inputs")
    inputs.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"material_id": dataset.ids, "bg_pbe": dataset.y}).to_csv(inputs / "ds1_targets.csv", index=False)
    (inputs / "train.json").write_text(json.dumps(cfg.to_dict()))
    (inputs / "model.json").write_text(
        json.dumps(profile.model.model_dump(exclude={"nbr_fea_len", "orig_atom_fea_len"}))
    )
    g = dataset.config
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(profile.nproc),
        "-m",
        "cgcnn",
        "train",
        "--graphs",
        str(data.files["ds1_graphs"]),
        "--targets",
        str(inputs / "ds1_targets.csv"),
        "--target-column",
        "bg_pbe",
        "--config",
        str(inputs / "train.json"),
        "--model-config",
        str(inputs / "model.json"),
        "--radius",
        f"{g.radius:g}",
        "--max-neighbors",
        str(g.max_neighbors),
        "--output",
        str(out),
        "--resume",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = [
            line for line in proc.stderr.splitlines() if line.startswith("error:")
        ] or proc.stderr.strip().splitlines()[-1:]
        raise RuntimeError(
            f"distributed training of M1 with {profile.nproc} processes failed: {tail[0] if tail else proc.returncode}"
        )
    history = pd.read_csv(out / "history.csv")
    best = history.loc[history["val_mae"].idxmin()] if history["val_mae"].notna().any() else history.iloc[-1]
    return FitResult(
        out / "best.pt",
        out / "last.pt",
        history,
        float(best["val_mae"]),
        int(best["epoch"]),
        None,
        json.loads((out / "splits.json").read_text()),
    )


def _split_metrics(dataset, pred, splits: dict[str, list[str]]) -> pd.DataFrame:
    position = {m: k for k, m in enumerate(dataset.ids)}
    rows = []
    for split, split_ids in splits.items():
        pos = [position[m] for m in split_ids if m in position]
        if pos:
            rows.append({"split": split, **metrics_row(dataset.y[pos], pred[pos])})
    return pd.DataFrame(rows).set_index("split")


def use_shipped_base(run: Path, profile: StudyProfile, data) -> BaseResult:
    """Copy the packaged M1 (``cgcnn/models/base``) into ``<run>/models/m1/best.pt`` and score it
    on DS1 with the splits it was trained with; refuses graph settings other than the profile's."""
    source = member_checkpoints("base")[0]
    loaded = load_checkpoint(source)
    if loaded.graph_config != profile.graph:
        raise ValueError(
            f"the shipped M1 uses graphs {loaded.graph_config.key()} but profile {profile.name!r} asks for "
            f"{profile.graph.key()}; set base.source to 'train' or use the shipped graph settings"
        )
    out = run_paths(run)["models"] / "m1"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    shutil.copyfile(source, out / "best.pt")
    info = manifest("base")
    dataset = data.dataset("ds1", "bg_pbe", loaded.features)
    pred = predict(loaded, dataset, device=profile.device)
    metrics = _split_metrics(dataset, pred, info["ids"])
    history = pd.DataFrame(info.get("history", []))
    write_table(run_paths(run)["tables"] / "m1_ds1_metrics.csv", metrics)
    return BaseResult(
        out / "best.pt", history, metrics, int(info["best_epoch"]), float(info["wall_time_s"]), len(dataset)
    )


def base_checkpoint(run_dir: str | os.PathLike) -> Path:
    """``<run>/models/m1/best.pt``; names the notebook to run when it is missing."""
    path = run_paths(run_dir)["models"] / "m1" / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the base-model stage (02-ml-dev/01-base-model.ipynb) first")
    return path
