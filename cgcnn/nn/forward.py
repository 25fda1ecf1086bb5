"""Running a network over batches: device choice, mixed precision, normalised predictions.

The primitives both training (validation every epoch) and prediction
(:mod:`cgcnn.prediction.inference`) run a :class:`~cgcnn.nn.model.CGCNN` with, so neither
layer imports the other.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from cgcnn.data.batch import iterate_batches, prefetch
from cgcnn.data.dataset import CrystalDataset
from cgcnn.data.features import AtomFeatures
from cgcnn.errors import DatasetError
from cgcnn.nn.model import CGCNN

__all__ = ["autocast", "check_elements", "predict_normalised", "resolve_device"]


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU; anything else is passed to torch."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but CUDA is not available on this machine")
    return dev


def autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict_normalised(
    model: CGCNN,
    dataset: CrystalDataset,
    positions,
    batch_size: int,
    device: torch.device,
    amp: bool = False,
    max_edges: int | None = None,
) -> np.ndarray:
    """Normalised predictions at ``positions``, in batches of at most ``batch_size`` crystals
    and (when set) ``max_edges`` edges."""
    model.eval()
    out = []
    batches = iterate_batches(dataset, positions, batch_size, max_edges=max_edges)
    for batch in prefetch(batches, pin=device.type == "cuda"):
        with autocast(device, amp):
            out.append(model(batch.to(device)).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def check_elements(dataset: CrystalDataset, features: AtomFeatures) -> None:
    """Refuse a dataset holding elements the model's atom-feature table does not cover."""
    present = np.unique(dataset.graphs.atomic_numbers)
    missing = [int(z) for z in present if not features.supports(int(z))]
    if missing:
        from pymatgen.core import Element

        names = ", ".join(f"{Element.from_Z(z).symbol} (Z={z})" for z in missing)
        holders = [
            m
            for k, m in enumerate(dataset.ids)
            if np.isin(
                dataset.graphs.atomic_numbers[dataset.graphs.node_ptr[k] : dataset.graphs.node_ptr[k + 1]], missing
            ).any()
        ]
        raise DatasetError(
            f"the model's atom-feature table has no features for {names}, found in {len(holders)} "
            f"material(s), e.g. {', '.join(holders[:5])}; build the dataset with the checkpoint's features "
            f"(CrystalDataset(..., loaded.features)) to skip them"
        )
