"""Boosted trees on composition and the PBE gap, as a member of a shipped ensemble.

The study's strongest baseline — scikit-learn's ``HistGradientBoostingRegressor`` on Magpie
composition features plus the PBE gap (:mod:`cgcnn.evaluation.baselines`) — makes errors that are only
partly correlated with a CGCNN's, so the average of the two beats both (measured by the
grouped CV of :mod:`cgcnn.study.methods`).  To ship it, the fitted model is stored with
`skops <https://skops.readthedocs.io>`_ (no pickle: loading refuses any type outside
:data:`TRUSTED_TYPES`).

Features, in order: the 132 Magpie statistics of the crystal's composition (from the atoms
of its graph, :func:`cgcnn.data.descriptors.composition_features`) and the PBE gap in eV (NaN when
unknown, the trees' missing value).  What the trees predict (:class:`TreeMember`): the gap
itself (``target = "gap"``), or the correction from PBE to experiment (``"correction"``: the
gap is the PBE gap plus their output).  The shipped ``ensemble.json`` says which.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cgcnn.errors import CgcnnError
from cgcnn.fileio import atomic_write_bytes

GAP, CORRECTION = "gap", "correction"
TARGETS = (GAP, CORRECTION)
TRUSTED_TYPES = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]


class TabularModelError(CgcnnError, ValueError):
    """A stored tree model that cannot be loaded safely."""


def tree_features(composition: np.ndarray, pbe: np.ndarray) -> np.ndarray:
    """[n, 133]: Magpie features and the PBE gap."""
    return np.column_stack([np.asarray(composition, dtype=np.float64), np.asarray(pbe, dtype=np.float64)])


@dataclass(frozen=True)
class TreeMember:
    """A fitted tree model and what it learnt (``target``: :data:`GAP` or :data:`CORRECTION`)."""

    model: Any
    target: str = GAP

    def __post_init__(self):
        if self.target not in TARGETS:
            raise TabularModelError(f"tree target {self.target!r}: expected one of {', '.join(TARGETS)}")

    def predict(self, composition: np.ndarray, pbe: np.ndarray) -> np.ndarray:
        """The predicted gap in eV of each crystal (NaN for a correction without a PBE gap)."""
        pbe = np.asarray(pbe, dtype=np.float64)
        out = self.model.predict(tree_features(composition, pbe))
        return out if self.target == GAP else out + pbe


def save_trees(model, path: str | Path) -> None:
    """Store a fitted ``HistGradientBoostingRegressor`` with skops (atomically)."""
    import skops.io as sio

    atomic_write_bytes(path, sio.dumps(model))


def load_trees(path: str | Path):
    """Load a model stored by :func:`save_trees`; refuses a file holding other types."""
    import skops.io as sio

    path = Path(path)
    try:
        data = path.read_bytes()
        untrusted = sio.get_untrusted_types(data=data)
    except FileNotFoundError:
        raise TabularModelError(f"{path}: no such tree model") from None
    except Exception as exc:  # not a skops file
        raise TabularModelError(
            f"{path}: not a tree model stored by cgcnn ({str(exc).splitlines()[0][:120]})"
        ) from None
    unexpected = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if unexpected:
        raise TabularModelError(f"{path}: holds types that are not trusted ({', '.join(unexpected)}); not loading it")
    model = sio.loads(data, trusted=untrusted)
    if type(model).__name__ != "HistGradientBoostingRegressor":
        raise TabularModelError(f"{path}: holds a {type(model).__name__}, not a HistGradientBoostingRegressor")
    return model


def load_tree_member(folder: str | Path, entry: dict) -> TreeMember:
    """The trees an ensemble manifest's ``"trees"`` entry names (``file`` relative to ``folder``;
    ``target``, absent in manifests written before the correction target: the gap)."""
    return TreeMember(load_trees(Path(folder) / entry["file"]), entry.get("target", GAP))
