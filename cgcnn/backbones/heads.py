"""Fine-tuning a pretrained backbone's top on experimental gaps: the domain adaptation of the
paper, on CHGNet.

Two depths (:data:`DEPTHS`), each a head that learns the **correction to PBE** (the prediction
is the PBE gap the material reads plus the head's output):

* ``readout`` — CHGNet's readout (a per-atom MLP, averaged over atoms) starts from its pretrained
  weights, with a new output layer drawn from the fit's seed (it predicted energies; the seeds
  make an ensemble's members differ); everything below is
  frozen: the readout input is read from the feature store;
* ``block`` — the same, plus CHGNet's last interaction block and its readout LayerNorm
  trained too, starting from what enters that block (also in the store).

Training: Adam, mean-squared error on the correction standardised with the training split's
mean and standard deviation (the normaliser; never fitted on validation or test materials),
early stopping on the validation MAE (eV).  A checkpoint is written every epoch (``last.pt``,
with the random state), so ``resume=True`` continues an interrupted fit and ends with the
weights of an uninterrupted one.  ``best.pt`` is self-describing (format, depth, model version,
normaliser, settings).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cgcnn.backbones.chgnet import ChgnetRecord, load_backbone
from cgcnn.fileio import atomic_write_bytes

DEPTHS = ("readout", "block")
FORMAT = 1
__all__ = ["DEPTHS", "HeadFit", "HeadSettings", "ChgnetHead", "fit_head", "load_head", "predict_head"]


@dataclass(frozen=True)
class HeadSettings:
    depth: str
    lr: float
    epochs: int
    patience: int
    batch_size: int
    seed: int
    version: str


@dataclass
class HeadFit:
    """What a head fit reports (what the fit cache records)."""

    best_val_mae: float
    best_epoch: int
    history: list[dict]


class ChgnetHead(nn.Module):
    """CHGNet's readout (and, at depth ``block``, its last interaction block and readout norm),
    copied from the pretrained model, with a new output layer (initialised from torch's seed)."""

    def __init__(self, depth: str, version: str):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"unknown CHGNet fine-tuning depth {depth!r}; choose from {', '.join(DEPTHS)}")
        backbone = load_backbone(version)
        self.depth = depth
        self.block = copy.deepcopy(backbone.atom_conv_layers[-1]) if depth == "block" else None
        self.norm = copy.deepcopy(backbone.readout_norm) if depth == "block" else None
        self.mlp = copy.deepcopy(backbone.mlp)
        self.mlp.layers[-1].reset_parameters()  # a new output (it predicted energies), drawn from the fit's seed

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.block is None:
            atoms = batch["atoms"]
        else:
            atoms = self.norm(
                self.block(
                    atom_feas=batch["pre_atoms"],
                    bond_feas=batch["bond_feas"],
                    bond_weights=batch["bond_weights"],
                    atom_graph=batch["atom_graph"],
                    directed2undirected=batch["d2u"],
                )
            )
        per_atom = self.mlp(atoms).view(-1)
        owners, n = batch["owners"], batch["n_atoms"]
        return torch.zeros(len(n), dtype=per_atom.dtype, device=per_atom.device).index_add_(0, owners, per_atom) / n


def collate(records: Sequence[ChgnetRecord], depth: str, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """One batch of crystals: their arrays concatenated, graph indices offset per crystal (on ``device``)."""
    return {k: v.to(device) for k, v in _collate(records, depth).items()}


def _collate(records: Sequence[ChgnetRecord], depth: str) -> dict[str, torch.Tensor]:
    n = np.array([len(r.atoms) for r in records])
    batch = {
        "n_atoms": torch.tensor(n, dtype=torch.float32),
        "owners": torch.tensor(np.repeat(np.arange(len(records)), n)),
    }
    if depth == "readout":
        batch["atoms"] = torch.from_numpy(np.concatenate([r.atoms for r in records]))
        return batch
    atom_offset = np.concatenate([[0], np.cumsum(n)[:-1]])
    bond_offset = np.concatenate([[0], np.cumsum([len(r.bond_feas) for r in records])[:-1]])
    for name in ("pre_atoms", "bond_feas", "bond_weights"):
        batch[name] = torch.from_numpy(np.concatenate([getattr(r, name) for r in records]))
    batch["atom_graph"] = torch.from_numpy(np.concatenate([r.atom_graph + a for r, a in zip(records, atom_offset)]))
    batch["d2u"] = torch.from_numpy(np.concatenate([r.d2u + b for r, b in zip(records, bond_offset)]))
    return batch


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _predict(model: ChgnetHead, records: Sequence[ChgnetRecord], batch_size: int) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        parts = [
            model(collate(records[k : k + batch_size], model.depth, _device(model))).cpu().numpy()
            for k in range(0, len(records), batch_size)
        ]
    return np.concatenate(parts) if parts else np.zeros(0)


def fit_head(
    records: Sequence[ChgnetRecord],
    correction: np.ndarray,
    fit: np.ndarray,
    val: np.ndarray,
    settings: HeadSettings,
    folder: str | os.PathLike,
    *,
    resume: bool = True,
    device: str = "cpu",
) -> HeadFit:
    """Train a head on ``records[fit]`` to predict ``correction`` (experiment − PBE, eV), early
    stopping on the MAE over ``records[val]``; ``best.pt`` / ``history.csv`` in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    y = np.asarray(correction, dtype=np.float64)
    mu, sigma = float(y[fit].mean()), float(y[fit].std() or 1.0)
    torch.manual_seed(settings.seed)
    model = ChgnetHead(settings.depth, settings.version).to(device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=settings.lr)
    rng = np.random.default_rng(settings.seed)
    state = {"epoch": 0, "best": np.inf, "best_epoch": 0, "history": []}
    last = folder / "last.pt"
    if resume and last.is_file():
        saved = torch.load(last, weights_only=False, map_location=device)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        rng.bit_generator.state = saved["rng"]
        torch.set_rng_state(saved["torch_rng"].cpu())
        state = saved["state"]
    target = torch.tensor((y - mu) / sigma, dtype=torch.float32, device=device)
    val_records = [records[k] for k in val]
    meta = {"format": FORMAT, "settings": settings.__dict__, "normaliser": {"mean": mu, "std": sigma}}
    while state["epoch"] < settings.epochs and state["epoch"] - state["best_epoch"] < settings.patience:
        t0 = time.perf_counter()
        model.train()
        order = rng.permutation(np.asarray(fit))
        losses = []
        for k in range(0, len(order), settings.batch_size):
            idx = order[k : k + settings.batch_size]
            batch = collate([records[i] for i in idx], settings.depth, device)
            loss = nn.functional.mse_loss(model(batch), target[torch.as_tensor(idx, device=device)])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        val_mae = float(np.abs(mu + sigma * _predict(model, val_records, 256) - y[val]).mean())
        state["epoch"] += 1
        if val_mae < state["best"]:
            state["best"], state["best_epoch"] = val_mae, state["epoch"]
            _save(folder / "best.pt", {**meta, "model": model.state_dict(), "epoch": state["epoch"]})
        state["history"].append(
            {
                "epoch": state["epoch"],
                "train_loss": float(np.mean(losses)),
                "val_mae": val_mae,
                "seconds": round(time.perf_counter() - t0, 3),
            }
        )
        checkpoint = {"model": model.state_dict(), "optimizer": opt.state_dict(), "state": state}
        _save(last, {**checkpoint, "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()})
    lines = ["epoch,train_loss,val_mae,seconds"] + [
        f"{h['epoch']},{h['train_loss']!r},{h['val_mae']!r},{h['seconds']}" for h in state["history"]
    ]
    atomic_write_bytes(folder / "history.csv", ("\n".join(lines) + "\n").encode())
    return HeadFit(float(state["best"]), int(state["best_epoch"]), state["history"])


def _save(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_head(checkpoint: str | os.PathLike, device: str = "cpu") -> tuple[ChgnetHead, dict]:
    """A head from its ``best.pt`` (and the checkpoint's metadata), on ``device``."""
    saved = torch.load(checkpoint, weights_only=False, map_location=device)
    if saved.get("format") != FORMAT:
        raise ValueError(f"{checkpoint}: not a CHGNet head checkpoint of format {FORMAT}")
    s = saved["settings"]
    model = ChgnetHead(s["depth"], s["version"]).to(device)
    model.load_state_dict(saved["model"])
    return model, saved


def predict_head(checkpoint: str | os.PathLike, records: Sequence[ChgnetRecord], device: str = "cpu") -> np.ndarray:
    """The correction to PBE (eV) a head predicts for ``records``."""
    model, saved = load_head(checkpoint, device)
    norm = saved["normaliser"]
    return norm["mean"] + norm["std"] * _predict(model, list(records), 256)
