"""Training: splits, the fit loop, early stopping, checkpoints and resume.

``fit`` trains a CGCNN on a :class:`~cgcnn.dataset.CrystalDataset`:

* the split is explicit (``split_indices`` with a seed, or given), and the target
  normaliser is fitted on the training split only;
* loss is the MSE of normalised targets (as the original); model selection is on the
  validation MAE in eV; early stopping after ``patience`` epochs without improvement;
* identical seed -> identical result on CPU (initialisation from ``torch.manual_seed``,
  shuffling from a dedicated ``torch.Generator`` whose state is checkpointed);
* ``last.pt`` is written atomically after every epoch and ``best.pt`` when validation
  improves; ``resume=True`` continues from ``last.pt`` and ends with the same weights as
  an uninterrupted run;
* ``history.csv`` records every epoch.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from cgcnn.allocator import keep_freed_memory
from cgcnn.batch import iterate_batches
from cgcnn.checkpoint import (
    Loaded,
    build_model,
    checkpoint_dict,
    read_checkpoint,
    save_checkpoint,
)
from cgcnn.config import GraphConfig, ModelConfig, TrainConfig
from cgcnn.dataset import CrystalDataset
from cgcnn.features import AtomFeatures
from cgcnn.fileio import atomic_write_bytes
from cgcnn.freeze import apply_freeze, train_mode
from cgcnn.inference import autocast, check_elements, predict_normalised, resolve_device
from cgcnn.normalizer import Normalizer
from cgcnn.provenance import collect

log = logging.getLogger(__name__)


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random train / validation / test positions (disjoint, covering ``range(n)``)."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    n_test = int(round(n * test_fraction))
    if val_fraction > 0 and n >= 3:
        n_val = max(n_val, 1)
    if n - n_val - n_test < 1:
        raise ValueError(f"{n} samples are too few for val_fraction={val_fraction}, test_fraction={test_fraction}")
    return np.sort(perm[n_val + n_test :]), np.sort(perm[:n_val]), np.sort(perm[n_val : n_val + n_test])


@dataclass
class FitResult:
    best_checkpoint: Path
    last_checkpoint: Path
    history: pd.DataFrame
    best_val_mae: float
    best_epoch: int
    normalizer: Normalizer
    splits: dict[str, list[str]]


def lr_factor(cfg: TrainConfig, epoch: int) -> float:
    """Learning-rate multiplier for a 0-based epoch."""
    if cfg.scheduler == "multistep":
        return cfg.lr_gamma ** sum(epoch >= m for m in cfg.lr_milestones)
    if cfg.scheduler == "cosine":
        return 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
    return 1.0


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _write_history(path: Path, rows: list[dict]) -> None:
    atomic_write_bytes(path, pd.DataFrame(rows).to_csv(index=False).encode())


def fit(
    dataset: CrystalDataset,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    model_config: ModelConfig | None = None,
    init: Loaded | None = None,
    splits: tuple[Sequence[int], Sequence[int]] | tuple[Sequence[int], Sequence[int], Sequence[int]] | None = None,
    freeze: str = "none",
    normalizer: Normalizer | None = None,
    resume: bool = False,
    progress: bool = True,
    meta: dict | None = None,
) -> FitResult:
    """Train and keep the best checkpoint on validation MAE.

    Args:
        dataset: labelled crystals.
        cfg: optimisation settings (seed, epochs, optimiser, schedule, early stopping...).
        out_dir: receives ``best.pt``, ``last.pt``, ``history.csv``, ``splits.json``,
            ``run.json`` (resolved config, versions, git SHA).
        model_config: architecture for a fresh model (``nbr_fea_len`` and
            ``orig_atom_fea_len`` are taken from the dataset).
        init: start from these weights (domain adaptation) instead of random ones.
        splits: explicit (train, val[, test]) positions; default ``split_indices`` with
            ``cfg.seed``.
        freeze: freeze policy (see :mod:`cgcnn.freeze`).
        normalizer: a fixed normaliser (e.g. the base model's); default: fitted on the
            training split.
        resume: continue from ``out_dir/last.pt`` when it exists.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if dataset.y is None:
        raise ValueError("fit needs a labelled dataset")
    device = resolve_device(cfg.device)
    keep_freed_memory()  # large edge tensors: reuse freed memory instead of page-faulting it in

    if splits is None:
        train_pos, val_pos, test_pos = split_indices(len(dataset), cfg.val_fraction, cfg.test_fraction, cfg.seed)
    else:
        train_pos, val_pos = np.asarray(splits[0], dtype=np.int64), np.asarray(splits[1], dtype=np.int64)
        test_pos = np.asarray(splits[2], dtype=np.int64) if len(splits) > 2 else np.zeros(0, np.int64)
    if len(train_pos) == 0:
        raise ValueError("the training split is empty")
    split_ids = {name: [dataset.ids[k] for k in pos] for name, pos in (("train", train_pos), ("val", val_pos), ("test", test_pos))}

    norm = normalizer if normalizer is not None else Normalizer.fit(dataset.y[train_pos])
    y_norm = torch.from_numpy(norm.norm(dataset.y.astype(np.float64)).astype(np.float32))

    torch.manual_seed(cfg.seed)
    if init is not None:
        features, graph = init.features, init.graph_config
        check_elements(dataset, features)
        model = build_model(init.model_config, features, graph)
        model.load_state_dict(init.model.state_dict())
    else:
        features: AtomFeatures = dataset.features
        graph: GraphConfig = dataset.config
        mc = model_config or ModelConfig()
        mc = mc.model_copy(update={"nbr_fea_len": graph.n_gaussians, "orig_atom_fea_len": features.length})
        model = build_model(mc, features, graph)
    if graph != dataset.config:
        raise ValueError(f"dataset graphs use {dataset.config.key()} but the model was trained on {graph.key()}")
    model.to(device)
    apply_freeze(model, freeze)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, cfg)
    generator = torch.Generator().manual_seed(cfg.seed)

    history: list[dict] = []
    start_epoch, best_mae, best_epoch, stale = 0, math.inf, -1, 0
    last_path, best_path = out / "last.pt", out / "best.pt"
    if resume and last_path.exists():
        raw = read_checkpoint(last_path)
        # Same settings required, except the epoch budget (a run may be extended) and the device.
        loose = lambda d: {k: v for k, v in (d or {}).items() if k not in ("epochs", "device")}  # noqa: E731
        if loose(raw.get("train_config")) != loose(cfg.to_dict()) or raw.get("freeze") != freeze:
            raise ValueError(
                f"{last_path} was written with other settings (train config / freeze policy); "
                "resume only with the settings of the interrupted run, or use a new output folder"
            )
        model.load_state_dict(raw["state_dict"])
        optimizer.load_state_dict(raw["optimizer"])
        generator.set_state(raw["generator_state"])
        history = list(raw["history"])
        start_epoch = raw["epoch"] + 1
        best_mae, best_epoch, stale = raw["best_val_mae"], raw["best_epoch"], raw["stale_epochs"]
        log.info("resuming %s at epoch %d", out, start_epoch)

    run_info = {
        "train_config": cfg.to_dict(),
        "model_config": model.config.to_dict(),
        "graph_config": graph.to_dict(),
        "freeze": freeze,
        "normalizer": norm.to_dict(),
        "n": {k: len(v) for k, v in split_ids.items()},
        **collect(),
        **(meta or {}),
    }
    atomic_write_bytes(out / "run.json", json.dumps(run_info, indent=2).encode())
    atomic_write_bytes(out / "splits.json", json.dumps(split_ids, indent=1).encode())

    def save(path: Path, epoch: int) -> None:
        extra = {
            "train_config": cfg.to_dict(),
            "freeze": freeze,
            "optimizer": optimizer.state_dict(),
            "generator_state": generator.get_state(),
            "history": history,
            "best_val_mae": float(best_mae),
            "best_epoch": int(best_epoch),
            "stale_epochs": int(stale),
            "meta": {"splits_n": run_info["n"], "git_sha": run_info.get("git_sha"), **(meta or {})},
        }
        save_checkpoint(path, checkpoint_dict(model, features, norm, epoch=epoch, extra=extra))

    stopped = stale >= (cfg.patience or math.inf)
    bar = tqdm(range(start_epoch, cfg.epochs), desc="epochs", disable=not progress, initial=start_epoch, total=cfg.epochs)
    for epoch in bar:
        if stopped:
            break
        t0 = time.perf_counter()
        lr = cfg.lr * lr_factor(cfg, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        train_mode(model)
        loss_sum, abs_sum, n_seen = 0.0, 0.0, 0
        for batch in iterate_batches(dataset, train_pos, cfg.batch_size, shuffle=True, generator=generator):
            if batch.atomic_numbers.numel() < 2:
                continue  # batch norm needs two atoms; a lone one-atom crystal is dropped
            batch = batch.to(device)
            target = y_norm[torch.from_numpy(batch.positions)].to(device)
            with autocast(device, cfg.amp):
                pred = model(batch).float()
            loss = torch.nn.functional.mse_loss(pred, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * batch.num_graphs
            abs_sum += float((pred.detach() - target).abs().sum()) * norm.std
            n_seen += batch.num_graphs
        val_mae = math.nan
        if len(val_pos):
            z = predict_normalised(model, dataset, val_pos, cfg.batch_size, device, cfg.amp)
            val_mae = float(np.mean(np.abs(norm.denorm(z.astype(np.float64)) - dataset.y[val_pos])))
        improved = (not len(val_pos)) or val_mae < best_mae
        if improved:
            best_mae, best_epoch, stale = (val_mae if len(val_pos) else math.nan), epoch, 0
        else:
            stale += 1
        history.append(
            {
                "epoch": epoch,
                "lr": lr,
                "train_loss": loss_sum / max(n_seen, 1),
                "train_mae": abs_sum / max(n_seen, 1),
                "val_mae": val_mae,
                "seconds": time.perf_counter() - t0,
            }
        )
        if improved:
            save(best_path, epoch)
        save(last_path, epoch)
        _write_history(out / "history.csv", history)
        bar.set_postfix(train_mae=f"{history[-1]['train_mae']:.3f}", val_mae=f"{val_mae:.3f}")
        if cfg.patience is not None and stale >= cfg.patience:
            log.info("early stopping at epoch %d (best %d, val MAE %.4f eV)", epoch, best_epoch, best_mae)
            stopped = True
    bar.close()
    if not best_path.exists():  # resumed a finished run
        save(best_path, history[-1]["epoch"] if history else 0)
    return FitResult(
        best_checkpoint=best_path,
        last_checkpoint=last_path,
        history=pd.DataFrame(history),
        best_val_mae=float(best_mae),
        best_epoch=int(best_epoch),
        normalizer=norm,
        splits=split_ids,
    )
