"""Step 03-insights/01: crystal features of DS2 and DS3 from one model, and their t-SNE table.

(:class:`DatasetEmbeddings` holds a run's datasets embedded by one of its models; for
arbitrary structures use :meth:`cgcnn.Predictor.embed`, which returns :class:`cgcnn.Embeddings`.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from cgcnn.prediction.inference import embed_dataset
from cgcnn.study.base_model import base_checkpoint
from cgcnn.study.datasets import load_data
from cgcnn.study.final_models import load_adaptation
from cgcnn.study.profiles import StudyProfile
from cgcnn.training.checkpoint import load_checkpoint

_TSNE_COLUMNS = ("material_id", "formula", "bg_exp", "bg_pbe", "anion_class", "crystal_system", "n_elements")


@dataclass
class DatasetEmbeddings:
    """Crystal features of DS2 and DS3 from one model.

    ``conv``: pooled features after the last convolution [n, atom_fea_len];
    ``hidden``: the post-FC vector feeding the output layer [n, h_fea_len].
    """

    model: str
    checkpoint: Path
    frames: dict[str, pd.DataFrame]
    conv: dict[str, np.ndarray]
    hidden: dict[str, np.ndarray]

    def layer(self, name: Literal["conv", "hidden"]) -> dict[str, np.ndarray]:
        return self.conv if name == "conv" else self.hidden


def model_checkpoint(run_dir: str | os.PathLike, model: str, seed: int | None = None) -> Path:
    """Checkpoint of ``m1``, ``m2`` (selected policy), ``m2_<policy>`` or ``control`` (first seed by default)."""
    if model == "m1":
        return base_checkpoint(run_dir)
    ckpts = load_adaptation(run_dir).checkpoints(model)
    return ckpts[seed if seed is not None else min(ckpts)]


def embed_datasets(
    run_dir: str | os.PathLike,
    profile: StudyProfile,
    model: str = "m2",
    *,
    datasets: tuple[str, ...] = ("ds2", "ds3"),
    seed: int | None = None,
) -> DatasetEmbeddings:
    """Last-convolution features and post-FC vectors of ``datasets`` from one model."""
    profile.apply_threads()

    data = load_data(run_dir)
    ckpt = model_checkpoint(run_dir, model, seed)
    loaded = load_checkpoint(ckpt)
    frames, conv, hidden = {}, {}, {}
    for name in datasets:
        ds = data.dataset(name, None, loaded.features)
        frame = getattr(data, name).set_index("material_id", drop=False).loc[ds.ids].reset_index(drop=True)
        c, h = embed_dataset(loaded, ds, device=profile.device)
        frames[name], conv[name], hidden[name] = frame, c, h
    return DatasetEmbeddings(model, ckpt, frames, conv, hidden)


def embed_backbone(run_dir: str | os.PathLike, profile: StudyProfile) -> DatasetEmbeddings | None:
    """CHGNet's crystal representation (:mod:`cgcnn.backbones.chgnet`) of DS2 and DS3, as ``conv``
    (and ``hidden``) of a :class:`DatasetEmbeddings`; None when the run's methods step had no
    CHGNet candidate.  Read from the feature store the methods step filled (computed if missing)."""
    from cgcnn.study.methods import load_methods
    from cgcnn.study.recipes import BACKBONES

    methods = load_methods(run_dir) or {}
    if not any(c in BACKBONES for c in methods.get("candidates", [])):
        return None
    from cgcnn.backbones.chgnet import FeatureStore
    from cgcnn.study.fits import FitCache

    data = load_data(run_dir)
    store = FeatureStore(FitCache.of_run(run_dir).root / "features", profile.methods.chgnet.version)
    frames, conv = {}, {}
    for name in ("ds2", "ds3"):
        records = store.records(data.structures(name))
        frame = getattr(data, name)
        frame = frame[frame["material_id"].isin(records)].reset_index(drop=True)
        frames[name] = frame
        conv[name] = np.stack([records[m].crystal for m in frame["material_id"]])
    return DatasetEmbeddings("chgnet", store.root, frames, conv, conv)


def tsne_table(embeddings: DatasetEmbeddings, tsne, *, fitted: str = "ds2", projected: str = "ds3") -> pd.DataFrame:
    """t-SNE coordinates with material id, dataset, formula, gaps and classes (one row per crystal)."""
    parts = []
    for name, xy in ((fitted, tsne.fitted), (projected, tsne.projected)):
        frame = embeddings.frames[name]
        part = frame[[c for c in _TSNE_COLUMNS if c in frame.columns]].copy()
        part.insert(1, "dataset", name.upper())
        part["x"], part["y"] = xy[:, 0], xy[:, 1]
        parts.append(part)
    return pd.concat(parts, ignore_index=True)
