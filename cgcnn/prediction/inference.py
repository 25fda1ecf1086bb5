"""Inference: device choice, predictions and embeddings of a loaded model on a dataset.

The single path from a loaded checkpoint (:class:`~cgcnn.training.checkpoint.Loaded`) and a
:class:`~cgcnn.data.dataset.CrystalDataset` to band gaps in eV (:func:`predict`) or to crystal
features (:func:`embed_dataset`).  The device, mixed-precision and batch primitives live in
:mod:`cgcnn.nn.forward` (training validates with them too); they are re-exported here.
"""

from __future__ import annotations

import numpy as np
import torch

from cgcnn.data.batch import iterate_batches
from cgcnn.data.dataset import CrystalDataset
from cgcnn.data.descriptors import check_inputs
from cgcnn.nn.forward import autocast, check_elements, predict_normalised, resolve_device
from cgcnn.training.checkpoint import Loaded

__all__ = [
    "MAX_EDGES",
    "autocast",
    "check_elements",
    "embed_dataset",
    "predict",
    "predict_normalised",
    "resolve_device",
]

MAX_EDGES = 32768
"""Default edge cap of an inference batch: its [E, 2F] edge tensors stay ~16 MB whatever the
crystals' sizes, so prediction's peak memory is bounded (and, on a CPU, the batch's working
set stays in cache)."""


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
