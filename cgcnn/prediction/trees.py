"""Boosted trees on composition and the PBE gap, as a member of a shipped ensemble.

The study's strongest baseline — scikit-learn's ``HistGradientBoostingRegressor`` on Magpie
composition features plus the PBE gap (:mod:`cgcnn.evaluation.baselines`) — makes errors that are only
partly correlated with a CGCNN's, so the average of the two beats both (measured by the
grouped CV of :mod:`cgcnn.study.methods`).  To ship it, the fitted model is stored with
`skops <https://skops.readthedocs.io>`_ (no pickle: loading refuses any type outside
:data:`TRUSTED_TYPES`).

Features, in order: the 132 Magpie statistics of the crystal's composition (from the atoms
of its graph, :func:`cgcnn.data.descriptors.composition_features`) and the PBE gap in eV (NaN when
unknown, the trees' missing value).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cgcnn.errors import CgcnnError
from cgcnn.fileio import atomic_write_bytes

TRUSTED_TYPES = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]


class TabularModelError(CgcnnError, ValueError):
    """A stored tree model that cannot be loaded safely."""


def tree_features(composition: np.ndarray, pbe: np.ndarray) -> np.ndarray:
    """[n, 133]: Magpie features and the PBE gap."""
    return np.column_stack([np.asarray(composition, dtype=np.float64), np.asarray(pbe, dtype=np.float64)])


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
