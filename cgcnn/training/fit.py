"""Training: splits, the fit loop, early stopping, checkpoints and resume.

``fit`` trains a CGCNN on a :class:`~cgcnn.data.dataset.CrystalDataset` (one process, or
several under torchrun: :mod:`cgcnn.training.distributed`).  The module is a little over 400 lines
because the fit loop's phases, each a short function, share the ``_Run`` state and are
kept together so that one-process and DDP training stay one code path:

* the split is explicit (``split_indices`` with a seed, or given), and the target
  normaliser is fitted on the training split only;
* loss is the MSE of normalised targets (as the original; ``loss="huber"`` for a Huber loss); model selection is on the
  validation MAE in eV; early stopping after ``patience`` epochs without improvement;
* identical seed -> identical result on CPU (initialisation from ``torch.manual_seed``,
  shuffling from a dedicated ``torch.Generator`` whose state is checkpointed);
* ``last.pt`` is written atomically after every epoch and ``best.pt`` when validation
  improves; ``resume=True`` continues from ``last.pt`` and ends with the same weights as
  an uninterrupted run;
* ``history.csv`` records every epoch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from cgcnn.config import GraphConfig, ModelConfig, TrainConfig
from cgcnn.data.batch import iterate_batches, prefetch
from cgcnn.data.dataset import CrystalDataset
from cgcnn.data.descriptors import check_inputs
from cgcnn.data.features import AtomFeatures
from cgcnn.errors import CgcnnError
from cgcnn.fileio import atomic_write_bytes
from cgcnn.lock import RunLock
from cgcnn.nn.forward import (
    autocast,
    check_elements,
    predict_normalised,
    resolve_device,
)
from cgcnn.nn.model import CGCNN
from cgcnn.provenance import collect
from cgcnn.training.allocator import keep_freed_memory
from cgcnn.training.checkpoint import (
    Loaded,
    build_model,
    checkpoint_dict,
    read_checkpoint,
    save_checkpoint,
)
from cgcnn.training.distributed import (
    DistContext,
    barrier,
    data_parallel,
    rank_positions,
    reduce_sums,
    setup,
)
from cgcnn.training.freeze import apply_freeze, train_mode
from cgcnn.training.normalizer import Normalizer

log = logging.getLogger(__name__)


class TrainingError(CgcnnError, ValueError):
    """Training cannot start: no labels, too few samples, or a resume with other settings."""


def split_indices(
    n: int, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random train / validation / test positions (disjoint, covering ``range(n)``)."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    n_test = int(round(n * test_fraction))
    if val_fraction > 0 and n >= 3:
        n_val = max(n_val, 1)
    if n - n_val - n_test < 1:
        raise TrainingError(
            f"{n} samples are too few for val_fraction={val_fraction}, test_fraction={test_fraction}; "
            "give more labelled crystals (check the skipped items) or smaller fractions"
        )
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


# --------------------------------------------------------------------------- fit, in phases
@dataclass
class _Run:
    """Everything one training run carries from epoch to epoch (and into ``last.pt``)."""

    model: CGCNN
    features: AtomFeatures
    norm: Normalizer
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    cfg: TrainConfig
    freeze: str
    meta: dict
    history: list[dict]
    start_epoch: int = 0
    best_mae: float = math.inf
    best_epoch: int = -1
    stale: int = 0
    net: torch.nn.Module | None = None  # what the training step calls: the model, or its DDP wrapper
    dist: DistContext = field(default_factory=DistContext)

    def checkpoint(self, epoch: int, splits_n: dict, git_sha: str | None) -> dict:
        extra = {
            "train_config": self.cfg.to_dict(),
            "freeze": self.freeze,
            "optimizer": self.optimizer.state_dict(),
            "generator_state": self.generator.get_state(),
            "history": self.history,
            "best_val_mae": float(self.best_mae),
            "best_epoch": int(self.best_epoch),
            "stale_epochs": int(self.stale),
            "meta": {"splits_n": splits_n, "git_sha": git_sha, **self.meta},
        }
        return checkpoint_dict(self.model, self.features, self.norm, epoch=epoch, extra=extra)


def resolve_splits(dataset: CrystalDataset, cfg: TrainConfig, splits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) positions: the given ``splits`` or ``split_indices`` with ``cfg.seed``."""
    if splits is None:
        train_pos, val_pos, test_pos = split_indices(len(dataset), cfg.val_fraction, cfg.test_fraction, cfg.seed)
    else:
        train_pos, val_pos = np.asarray(splits[0], dtype=np.int64), np.asarray(splits[1], dtype=np.int64)
        test_pos = np.asarray(splits[2], dtype=np.int64) if len(splits) > 2 else np.zeros(0, np.int64)
    if len(train_pos) == 0:
        raise TrainingError("the training split is empty; give explicit splits with training positions")
    return train_pos, val_pos, test_pos


def initial_model(
    dataset: CrystalDataset, model_config: ModelConfig | None, init: Loaded | None
) -> tuple[CGCNN, AtomFeatures]:
    """A fresh model sized for ``dataset`` (seeded by the caller), or a copy of ``init``."""
    if init is not None:
        features, graph = init.features, init.graph_config
        check_elements(dataset, features)
        if model_config is None or model_config == init.model_config:
            model = build_model(init.model_config, features, graph)
            model.load_state_dict(init.model.state_dict())
        else:  # a variant of the base (e.g. PBE-aware): base weights, new layers from zero
            mc = model_config.model_copy(
                update={"nbr_fea_len": init.model_config.nbr_fea_len, "orig_atom_fea_len": features.length}
            )

            def body(c):
                return c.model_dump(include={"atom_fea_len", "n_conv", "h_fea_len", "n_h"})

            if body(mc) != body(init.model_config):
                raise TrainingError(
                    f"the model config {body(mc)} does not match the base model's {body(init.model_config)}"
                )
            model = build_model(mc, features, graph)
            model.load_base_weights(init.model.state_dict())
    else:
        features, graph = dataset.features, dataset.config
        mc = (model_config or ModelConfig()).model_copy(
            update={"nbr_fea_len": graph.n_gaussians, "orig_atom_fea_len": features.length}
        )
        model = build_model(mc, features, graph)
    if graph != dataset.config:
        raise TrainingError(
            f"dataset graphs use {dataset.config.key()} but the model was trained on {graph.key()}; rebuild the graphs with the model's settings"
        )
    return model, features


def resume_from(run: _Run, last_path: Path) -> None:
    """Load weights, optimiser, shuffling state, history and early-stopping counters of an
    interrupted run; refuse a ``last.pt`` written with other settings."""
    raw = read_checkpoint(last_path)

    # Same settings required, except the epoch budget (a run may be extended) and the device.
    def loose(d):
        return {k: v for k, v in (d or {}).items() if k not in ("epochs", "device")}

    if loose(raw.get("train_config")) != loose(run.cfg.to_dict()) or raw.get("freeze") != run.freeze:
        raise TrainingError(
            f"{last_path} was written with other settings (train config / freeze policy); "
            "resume only with the settings of the interrupted run, or use a new output folder"
        )
    run.model.load_state_dict(raw["state_dict"])
    run.optimizer.load_state_dict(raw["optimizer"])
    run.generator.set_state(raw["generator_state"])
    run.history = list(raw["history"])
    run.start_epoch = raw["epoch"] + 1
    run.best_mae, run.best_epoch, run.stale = raw["best_val_mae"], raw["best_epoch"], raw["stale_epochs"]
    log.info("resuming %s at epoch %d", last_path.parent, run.start_epoch)


def _epoch_batches(run: _Run, dataset: CrystalDataset, train_pos: np.ndarray, epoch: int):
    """This process's batches of one epoch: the whole split (one process), or this rank's
    share of it in batches of ``batch_size / world_size`` (DDP)."""
    cfg, ctx = run.cfg, run.dist
    if not ctx.enabled:
        return iterate_batches(dataset, train_pos, cfg.batch_size, shuffle=cfg.shuffle, generator=run.generator)
    mine = rank_positions(train_pos, ctx, epoch=epoch, seed=cfg.seed, shuffle=cfg.shuffle)
    return iterate_batches(dataset, mine, max(1, cfg.batch_size // ctx.world_size))


def train_epoch(
    run: _Run,
    dataset: CrystalDataset,
    train_pos: np.ndarray,
    y_norm: torch.Tensor,
    lr: float,
    device: torch.device,
    epoch: int = 0,
) -> tuple[float, float]:
    """One pass over the training split; returns (mean loss, mean absolute error in eV), over
    every rank under DDP."""
    cfg, model, optimizer = run.cfg, run.model, run.optimizer
    net = run.net or model
    for group in optimizer.param_groups:
        group["lr"] = lr
    train_mode(model)
    loss_sum, abs_sum, n_seen = 0.0, 0.0, 0
    for batch in prefetch(_epoch_batches(run, dataset, train_pos, epoch), pin=device.type == "cuda"):
        if batch.atomic_numbers.numel() < 2 and not run.dist.enabled:
            continue  # batch norm needs two atoms; a lone one-atom crystal is dropped
        batch = batch.to(device)
        target = y_norm[torch.from_numpy(batch.positions)].to(device)
        with autocast(device, cfg.amp):
            pred = net(batch).float()
        if cfg.loss == "huber":  # robust to a few wrong labels: linear beyond huber_delta
            loss = torch.nn.functional.huber_loss(pred, target, delta=cfg.huber_delta)
        else:
            loss = torch.nn.functional.mse_loss(pred, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * batch.num_graphs
        abs_sum += float((pred.detach() - target).abs().sum()) * run.norm.std
        n_seen += batch.num_graphs
    loss_sum, abs_sum, n_seen = reduce_sums(run.dist, loss_sum, abs_sum, n_seen)
    return loss_sum / max(n_seen, 1), abs_sum / max(n_seen, 1)


def validate(run: _Run, dataset: CrystalDataset, val_pos: np.ndarray, device: torch.device) -> float:
    """Validation MAE in eV (NaN without a validation split); each rank predicts its share
    under DDP and the errors are summed over ranks."""
    if not len(val_pos):
        return math.nan
    ctx = run.dist
    mine = val_pos[ctx.rank :: ctx.world_size]
    err = 0.0
    if len(mine):
        z = predict_normalised(
            run.model, dataset, mine, max(1, run.cfg.batch_size // ctx.world_size), device, run.cfg.amp
        )
        err = float(np.sum(np.abs(run.norm.denorm(z.astype(np.float64)) - dataset.y[mine])))
    total, n = reduce_sums(ctx, err, len(mine))
    return total / n


def record_epoch(
    run: _Run, epoch: int, lr: float, losses: tuple[float, float], val_mae: float, seconds: float, *, has_val: bool
) -> bool:
    """Update history and early-stopping counters; True when this epoch is the new best
    (every epoch is, without a validation split)."""
    improved = not has_val or val_mae < run.best_mae
    if improved:
        run.best_mae, run.best_epoch, run.stale = val_mae, epoch, 0
    else:
        run.stale += 1
    run.history.append(
        {
            "epoch": epoch,
            "lr": lr,
            "train_loss": losses[0],
            "train_mae": losses[1],
            "val_mae": val_mae,
            "seconds": seconds,
        }
    )
    return improved


def write_run_files(out: Path, run: _Run, graph: GraphConfig, split_ids: dict[str, list[str]]) -> dict:
    """``run.json`` (resolved configs, normaliser, split sizes, provenance) and ``splits.json``."""
    run_info = {
        "train_config": run.cfg.to_dict(),
        "model_config": run.model.config.to_dict(),
        "graph_config": graph.to_dict(),
        "freeze": run.freeze,
        "normalizer": run.norm.to_dict(),
        "n": {k: len(v) for k, v in split_ids.items()},
        **collect(),
        **run.meta,
    }
    atomic_write_bytes(out / "run.json", json.dumps(run_info, indent=2).encode())
    atomic_write_bytes(out / "splits.json", json.dumps(split_ids, indent=1).encode())
    return run_info


def run_epochs(
    run: _Run,
    dataset: CrystalDataset,
    positions,
    y_norm: torch.Tensor,
    device: torch.device,
    out: Path,
    run_info: dict,
    progress: bool,
) -> None:
    """The epoch loop: train, validate, record, checkpoint (``best.pt`` on improvement,
    ``last.pt`` and ``history.csv`` every epoch), stop early after ``patience`` stale epochs."""
    cfg, (train_pos, val_pos) = run.cfg, positions
    last_path, best_path = out / "last.pt", out / "best.pt"
    main = run.dist.is_main  # only rank 0 writes; the others wait for it at the barrier

    def save(path: Path, epoch: int) -> None:
        if main:
            save_checkpoint(path, run.checkpoint(epoch, run_info["n"], run_info.get("git_sha")))

    stopped = run.stale >= (cfg.patience or math.inf)
    bar = tqdm(
        range(run.start_epoch, cfg.epochs),
        desc="epochs",
        disable=not (progress and main),
        initial=run.start_epoch,
        total=cfg.epochs,
    )
    for epoch in bar:
        if stopped:
            break
        t0 = time.perf_counter()
        lr = cfg.lr * lr_factor(cfg, epoch)
        losses = train_epoch(run, dataset, train_pos, y_norm, lr, device, epoch)
        val_mae = validate(run, dataset, val_pos, device)
        if record_epoch(run, epoch, lr, losses, val_mae, time.perf_counter() - t0, has_val=len(val_pos) > 0):
            save(best_path, epoch)
        save(last_path, epoch)
        if main:
            _write_history(out / "history.csv", run.history)
        barrier(run.dist)
        bar.set_postfix(train_mae=f"{losses[1]:.3f}", val_mae=f"{val_mae:.3f}")
        if cfg.patience is not None and run.stale >= cfg.patience:
            log.info("early stopping at epoch %d (best %d, val MAE %.4f eV)", epoch, run.best_epoch, run.best_mae)
            stopped = True
    bar.close()
    if not best_path.exists():  # resumed a finished run
        save(best_path, run.history[-1]["epoch"] if run.history else 0)
    barrier(run.dist)


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

    Phases: splits (:func:`resolve_splits`) → normaliser on the training split → model
    (:func:`initial_model`) → optional resume (:func:`resume_from`) → per epoch
    :func:`train_epoch`, :func:`validate`, :func:`record_epoch`, checkpoints.

    Args:
        dataset: labelled crystals.
        cfg: optimisation settings (seed, epochs, optimiser, schedule, early stopping...).
        out_dir: receives ``best.pt``, ``last.pt``, ``history.csv``, ``splits.json``,
            ``run.json`` (resolved config, versions, git SHA).
        model_config: architecture for a fresh model (``nbr_fea_len`` and
            ``orig_atom_fea_len`` are taken from the dataset); with ``init``, a
            multi-fidelity / PBE-aware variant of the init's architecture.
        init: start from these weights (domain adaptation) instead of random ones; layers
            of a variant that ``init`` lacks start at zero.
        splits: explicit (train, val[, test]) positions; default ``split_indices`` with
            ``cfg.seed``.
        freeze: freeze policy (see :mod:`cgcnn.training.freeze`).
        normalizer: a fixed normaliser (e.g. the base model's); default: fitted on the
            training split.
        resume: continue from ``out_dir/last.pt`` when it exists.

    Example:
        >>> result = fit(dataset, TrainConfig(epochs=50, optimizer="adamw", lr=3e-3), "runs/m1")
        >>> result.best_checkpoint  # runs/m1/best.pt
    """
    out = Path(out_dir)
    if dataset.y is None:
        raise TrainingError("fit needs a labelled dataset (targets)")
    device = resolve_device(cfg.device)
    ctx, device = setup(device)  # torchrun: join the process group; this rank's device
    keep_freed_memory()  # large edge tensors: reuse freed memory instead of page-faulting it in

    train_pos, val_pos, test_pos = resolve_splits(dataset, cfg, splits)
    if not len(val_pos):
        log.warning(
            "no validation split: every epoch counts as the best, best_val_mae is NaN and early stopping is off"
        )
    split_ids = {
        name: [dataset.ids[k] for k in pos]
        for name, pos in (("train", train_pos), ("val", val_pos), ("test", test_pos))
    }
    norm = normalizer if normalizer is not None else Normalizer.fit(dataset.y[train_pos])
    y_norm = torch.from_numpy(norm.norm(dataset.y.astype(np.float64)).astype(np.float32))

    torch.manual_seed(cfg.seed)
    model, features = initial_model(dataset, model_config, init)
    check_inputs(dataset, model.config)
    if model.config.composition != "none" and (init is None or init.model_config != model.config):
        model.fit_input_scaling(dataset.inputs["composition"][train_pos])  # training split only
    model.to(device)
    apply_freeze(model, freeze)
    net = data_parallel(model, ctx, device, sync=cfg.sync_batchnorm)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg)
    run = _Run(
        model,
        features,
        norm,
        optimizer,
        torch.Generator().manual_seed(cfg.seed),
        cfg,
        freeze,
        meta or {},
        [],
        net=net,
        dist=ctx,
    )
    last_path, best_path = out / "last.pt", out / "best.pt"
    if resume and last_path.exists():
        resume_from(run, last_path)
    barrier(ctx)  # every rank has read last.pt before rank 0 writes it again
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)  # only now: a run refused above leaves nothing behind
    with RunLock(out, what="training output folder") if ctx.is_main else contextlib.nullcontext():
        run_info = write_run_files(out, run, dataset.config, split_ids) if ctx.is_main else {"n": {}, **collect()}
        run_epochs(run, dataset, (train_pos, val_pos), y_norm, device, out, run_info, progress)
    return FitResult(
        best_checkpoint=best_path,
        last_checkpoint=last_path,
        history=pd.DataFrame(run.history),
        best_val_mae=float(run.best_mae),
        best_epoch=int(run.best_epoch),
        normalizer=norm,
        splits=split_ids,
    )
