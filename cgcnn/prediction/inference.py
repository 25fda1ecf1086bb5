"""Inference: device choice, predictions and embeddings of a loaded model on a dataset.

The single path from a loaded checkpoint (:class:`~cgcnn.training.checkpoint.Loaded`) and a
:class:`~cgcnn.data.dataset.CrystalDataset` to band gaps in eV (:func:`predict`) or to crystal
features (:func:`embed_dataset`).  Training uses :func:`predict_normalised` for validation.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from cgcnn.data.batch import iterate_batches, prefetch
from cgcnn.data.dataset import CrystalDataset
from cgcnn.data.descriptors import check_inputs
from cgcnn.data.features import AtomFeatures
from cgcnn.errors import DatasetError
from cgcnn.nn.model import CGCNN
from cgcnn.training.checkpoint import Loaded

MAX_EDGES = 32768
"""Default edge cap of an inference batch: its [E, 2F] edge tensors stay ~16 MB whatever the
crystals' sizes, so prediction's peak memory is bounded (and, on a CPU, the batch's working
set stays in cache)."""


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


def predict(
    loaded: Loaded,
    dataset: CrystalDataset,
    *,
    batch_size: int = 256,
    max_edges: int | None = MAX_EDGES,
    device: str | torch.device = "auto",
) -> np.ndarray:
    """Predictions in eV for every crystal of ``dataset`` (its order), in batches of at most
    ``batch_size`` crystals and ``max_edges`` edges (``None``: no edge cap)."""
    check_elements(dataset, loaded.features)
    check_inputs(dataset, loaded.model_config)
    dev = resolve_device(device)
    loaded.model.to(dev)
    z = predict_normalised(loaded.model, dataset, np.arange(len(dataset)), batch_size, dev, max_edges=max_edges)
    return loaded.normalizer.denorm(z.astype(np.float64))


@torch.no_grad()
def embed_dataset(
    loaded: Loaded,
    dataset: CrystalDataset,
    *,
    batch_size: int = 256,
    max_edges: int | None = MAX_EDGES,
    device: str | torch.device = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """(last-convolution crystal features [n, atom_fea_len], post-FC vectors [n, h_fea_len])."""
    check_elements(dataset, loaded.features)
    check_inputs(dataset, loaded.model_config)
    dev = resolve_device(device)
    model = loaded.model.to(dev).eval()
    conv, hidden = [], []
    for batch in iterate_batches(dataset, np.arange(len(dataset)), batch_size, max_edges=max_edges):
        c, h = model.embed(batch.to(dev))
        conv.append(c.cpu())
        hidden.append(h.cpu())
    return torch.cat(conv).numpy(), torch.cat(hidden).numpy()
