"""The public way to use a trained model: ``load_model(...)`` → ``predict`` / ``embed``.

A :class:`Predictor` wraps one loaded checkpoint with the graph settings and atom-feature
table it was trained with, so that structures go in and band gaps (eV) come out without
assembling graphs, datasets and batches by hand::

    from cgcnn import load_model
    model = load_model("runs/default-…/models/m1/best.pt")
    table = model.predict(structure)              # pandas DataFrame: material_id, prediction_ev

Inputs are everything :func:`cgcnn.building.read_inputs` accepts: pymatgen ``Structure``s
(one, a list, ``{id: structure}``), CIF files or folders, a Materials Project snapshot
(``.jsonl.gz``), or a saved graph set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cgcnn.building import read_inputs
from cgcnn.checkpoint import Loaded, load_checkpoint
from cgcnn.dataset import CrystalDataset
from cgcnn.errors import DatasetError, OnError, Problem
from cgcnn.inference import embed_dataset, predict

log = logging.getLogger(__name__)


@dataclass
class Embeddings:
    """Crystal features of the last convolution layer and post-FC vectors.

    Shapes (n crystals): ``conv`` [n, atom_fea_len], ``hidden`` [n, h_fea_len].
    """

    ids: list[str]
    conv: np.ndarray
    hidden: np.ndarray
    skipped: list[Problem]


class Predictor:
    """A loaded model ready to predict band gaps for structures (see the module docstring)."""

    def __init__(self, loaded: Loaded, *, device: str = "auto", batch_size: int = 256, source: str | None = None):
        self.loaded = loaded
        self.device = device
        self.batch_size = batch_size
        self.source = source

    def __repr__(self) -> str:
        return f"Predictor(source={self.source!r}, graphs={self.loaded.graph_config.key()}, model={self.loaded.model_config.to_dict()})"

    def dataset(self, structures, *, on_error: OnError = "skip", workers: int = 1, progress: bool = False) -> CrystalDataset:
        """The crystals of ``structures`` as a dataset for this model (bad items skipped and
        listed in ``.problems``, or raised with ``on_error="error"``).

        Raises:
            DatasetError: no structure could be read.
        """
        graphs, problems = read_inputs(structures, self.loaded.graph_config, workers=workers, on_error=on_error, progress=progress)
        ds = CrystalDataset(graphs, None, self.loaded.features, on_error=on_error)
        ds.problems = problems + ds.problems
        if len(ds) == 0:
            first = f" (first: {ds.problems[0]})" if ds.problems else ""
            raise DatasetError(f"no structure could be read from {_describe(structures)}; {len(ds.problems)} skipped{first}")
        return ds

    def predict(self, structures, *, on_error: OnError = "skip", workers: int = 1, progress: bool = False) -> pd.DataFrame:
        """Band gaps in eV: a DataFrame with ``material_id`` and ``prediction_ev`` in input
        order; skipped items are in ``.attrs["skipped"]`` (list of :class:`Problem`)."""
        ds = self.dataset(structures, on_error=on_error, workers=workers, progress=progress)
        pred = predict(self.loaded, ds, batch_size=self.batch_size, device=self.device)
        table = pd.DataFrame({"material_id": ds.ids, "prediction_ev": pred})
        table.attrs["skipped"] = list(ds.problems)
        return table

    def embed(self, structures, *, on_error: OnError = "skip", workers: int = 1, progress: bool = False) -> Embeddings:
        """Last-convolution crystal features and post-FC vectors of ``structures``."""
        ds = self.dataset(structures, on_error=on_error, workers=workers, progress=progress)
        conv, hidden = embed_dataset(self.loaded, ds, batch_size=self.batch_size, device=self.device)
        return Embeddings(list(ds.ids), conv, hidden, list(ds.problems))


def _describe(inputs) -> str:
    if isinstance(inputs, (str, Path)):
        return str(inputs)
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(x, (str, Path)) for x in inputs):
        return ", ".join(map(str, inputs[:3])) + (" …" if len(inputs) > 3 else "")
    return "the given structures"


def load_model(
    path: str | Path,
    *,
    device: str = "auto",
    batch_size: int = 256,
    atom_features: str | Path | None = None,
    radius: float | None = None,
    max_neighbors: int | None = None,
) -> Predictor:
    """Load a checkpoint for prediction.

    Args:
        path: the name of a model shipped with the package (``"base"``: M1, a PBE-gap model;
            see :func:`cgcnn.shipped.shipped_models`), one of our self-describing checkpoints
            (``best.pt``), or an original CGCNN ``.pth.tar`` (then give ``atom_features``,
            ``radius`` and ``max_neighbors``).
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.

    Raises:
        CheckpointError: the file is not a usable checkpoint (the message says why).
    """
    from cgcnn.shipped import member_checkpoints, shipped_models

    if not Path(path).exists() and str(path) in shipped_models():
        members = member_checkpoints(str(path))
        if len(members) > 1:  # ensembles: see the methods issue; one member at a time for now
            raise NotImplementedError(f"shipped model {path!r} is an ensemble; ensembles are not supported yet")
        return Predictor(load_checkpoint(members[0], device="cpu"), device=device, batch_size=batch_size, source=f"shipped:{path}")
    loaded = load_checkpoint(path, atom_features=atom_features, radius=radius, max_neighbors=max_neighbors, device="cpu")
    return Predictor(loaded, device=device, batch_size=batch_size, source=str(path))
