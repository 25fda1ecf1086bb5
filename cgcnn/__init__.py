"""Band-gap domain adaptation with CGCNN.

A re-implementation of the Crystal Graph Convolutional Neural Network (Xie & Grossman,
PRL 120, 145301, 2018) and of the domain-adaptation study built on it (Masood et al.,
Cell Rep. Phys. Sci. 2023): graphs, model, training, adaptation, evaluation, embeddings,
and the ETL that prepares the three datasets.

The public API (imported on first use, so ``import cgcnn.nn.model`` stays light)::

    from cgcnn import load_model
    model = load_model("runs/<run>/models/m1/best.pt")
    model.predict(structure)                       # DataFrame: material_id, prediction_ev

    from cgcnn import GraphConfig, TrainConfig, build_graphs, CrystalDataset, fit, adapt
    graphs, skipped = build_graphs(items, GraphConfig(radius=7, max_neighbors=14))
    result = fit(CrystalDataset(graphs, targets, AtomFeatures.default()), TrainConfig(), "runs/m1")
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cgcnn-da")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

_API = {
    "load_model": "cgcnn.prediction.predictor",
    "Predictor": "cgcnn.prediction.predictor",
    "Embeddings": "cgcnn.prediction.predictor",
    "read_inputs": "cgcnn.data.building",
    "build_graphs": "cgcnn.data.building",
    "GraphSet": "cgcnn.data.graphset",
    "CrystalDataset": "cgcnn.data.dataset",
    "AtomFeatures": "cgcnn.data.features",
    "GraphConfig": "cgcnn.config",
    "ModelConfig": "cgcnn.config",
    "TrainConfig": "cgcnn.config",
    "AdaptConfig": "cgcnn.config",
    "fit": "cgcnn.training.fit",
    "adapt": "cgcnn.training.adapt",
    "train_control": "cgcnn.training.adapt",
    "load_checkpoint": "cgcnn.training.checkpoint",
    "CgcnnError": "cgcnn.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cgcnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
