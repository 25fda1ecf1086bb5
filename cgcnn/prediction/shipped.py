"""Models that ship inside the package (``cgcnn/models/<name>/``), and their manifests.

Each shipped model is a folder of package data holding ``model.pt`` (a self-describing
checkpoint written by :mod:`cgcnn.training.checkpoint`) or ``member-<k>.pt`` files (an ensemble), and
``manifest.json``: what it was trained on (ids, data checksums), with which settings, its
metrics, the git SHA and wall time.  ``scripts/ship_model.py`` writes them from a training
run; nothing in ``cgcnn/models/`` is made by hand.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from cgcnn.errors import CgcnnError

MANIFEST = "manifest.json"
# What a shipped checkpoint keeps of a training checkpoint: weights, settings, normaliser (no
# optimiser or resume state).
SLIM_KEYS = (
    "format",
    "format_version",
    "model_config",
    "graph_config",
    "atom_features",
    "normalizer",
    "state_dict",
    "epoch",
    "best_val_mae",
    "best_epoch",
    "train_config",
)


def slim_checkpoint(raw: dict, **meta) -> dict:
    """The part of a training checkpoint (:func:`cgcnn.training.checkpoint.read_checkpoint`) a
    shipped model keeps, with ``meta`` (e.g. where it was shipped, the git SHA) under ``"meta"``."""
    return {**{key: raw[key] for key in SLIM_KEYS if key in raw}, "meta": meta}


class ShippedModelError(CgcnnError, FileNotFoundError):
    """No shipped model of that name."""


def models_root() -> Path:
    """The package's ``models/`` folder."""
    return Path(str(resources.files("cgcnn") / "models"))


def shipped_models() -> list[str]:
    """Names of the models shipped with this installation (folders holding a manifest)."""
    root = models_root()
    return sorted(p.parent.name for p in root.glob(f"*/{MANIFEST}")) if root.is_dir() else []


def shipped_model_dir(name: str) -> Path:
    """Folder of shipped model ``name``; a clear error listing the shipped ones otherwise."""
    folder = models_root() / name
    if not (folder / MANIFEST).is_file():
        have = ", ".join(shipped_models()) or "none"
        raise ShippedModelError(f"no shipped model named {name!r} (shipped: {have}); give a checkpoint path instead")
    return folder


def manifest(name: str) -> dict:
    """The manifest of shipped model ``name``."""
    return json.loads((shipped_model_dir(name) / MANIFEST).read_text())


def member_checkpoints(name: str) -> list[Path]:
    """The checkpoint file(s) of shipped model ``name`` (one, or an ensemble's members)."""
    folder = shipped_model_dir(name)
    files = sorted(folder.glob("member-*.pt")) or [folder / "model.pt"]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise ShippedModelError(f"shipped model {name!r} is incomplete: {missing[0]} is missing; reinstall the package")
    return files
