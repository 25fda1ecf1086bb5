"""The machinery of the baselines every CGCNN model must beat (the baselines themselves are
recipes of :mod:`cgcnn.study.recipes`: raw PBE, PBE linearly corrected
(:class:`cgcnn.evaluation.metrics.LinearCorrection`), and these boosted trees):

* composition-only gradient boosting: Magpie element-property statistics (matminer's
  ``ElementProperty.from_preset("magpie")``, 132 features) into scikit-learn's
  ``HistGradientBoostingRegressor``;
* the same with the PBE gap as one more input (De Breuck et al., J. Mater. Inf. 2, 10 (2022));
* the same learning the correction ``experiment − PBE`` instead of the gap itself (the PBE gap
  still an input): a tree predicts a constant per leaf, so reproducing the near-linear
  dependence of the gap on PBE costs the gap-target trees many splits that the correction
  target does not need (``offset`` of :class:`BoostedTrees`).

Materials without a PBE gap: the PBE baselines cannot predict them (NaN: they are left out
of those rows' metrics and of paired comparisons with them); the gap-target boosted trees take
the missing PBE gap as a missing value (the model's native handling of NaN inputs); the
correction-target trees train on the materials with a PBE gap and predict NaN without one.
Hyper-parameters of the boosted trees are chosen per outer fold by an inner grouped CV on
that fold's training materials only.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cgcnn.data.magpie import of_formulas

GBM_GRID = {"learning_rate": (0.05, 0.1), "max_leaf_nodes": (15, 31)}


def magpie_features(formulas: Sequence[str]) -> np.ndarray:
    """Magpie statistics of each composition, shape [n, 132] (matminer's magpie preset,
    vectorised in :mod:`cgcnn.data.magpie`)."""
    return of_formulas(list(formulas))


@dataclass
class BoostedTrees:
    """Gradient-boosted trees on ``features`` (e.g. Magpie, optionally + PBE) with the
    hyper-parameters of ``grid`` chosen by ``inner_folds``-fold grouped CV on each training set.

    ``offset`` (e.g. the PBE gap): the trees learn ``y − offset`` and predict ``offset +`` their
    output; materials whose offset is NaN are left out of every fit and predicted NaN.
    :meth:`fit` and :meth:`fit_all` return the bare scikit-learn model (it predicts ``y − offset``)."""

    features: np.ndarray
    y: np.ndarray
    groups: Sequence[str]
    grid: dict = field(default_factory=lambda: dict(GBM_GRID))
    inner_folds: int = 3
    max_iter: int = 300
    offset: np.ndarray | None = None

    @property
    def target(self) -> np.ndarray:
        """What the trees learn: ``y``, or ``y − offset``."""
        y = np.asarray(self.y, dtype=np.float64)
        return y if self.offset is None else y - np.asarray(self.offset, dtype=np.float64)

    def _usable(self, positions) -> np.ndarray:
        """``positions`` whose target is known (all of them without an offset)."""
        positions = np.asarray(positions, dtype=np.int64)
        return positions[np.isfinite(self.target[positions])]

    def _model(self, params: dict, seed: int):
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(max_iter=self.max_iter, early_stopping=False, random_state=seed, **params)

    def choose(self, train: np.ndarray, seed: int) -> dict:
        """The grid point with the lowest inner-CV MAE on ``train`` (ties: first in grid order)."""
        from sklearn.model_selection import GroupKFold

        combos = [dict(zip(self.grid, values)) for values in itertools.product(*self.grid.values())]
        if len(combos) == 1:
            return combos[0]
        train = self._usable(train)
        groups = np.asarray(self.groups)[train]
        inner = list(GroupKFold(n_splits=self.inner_folds).split(train, groups=groups))
        X, y = self.features[train], self.target[train]
        scores = []
        for params in combos:
            err = [np.abs(self._model(params, seed).fit(X[a], y[a]).predict(X[b]) - y[b]).mean() for a, b in inner]
            scores.append(float(np.mean(err)))
        return combos[int(np.argmin(scores))]

    def fit(self, train, seed: int):
        """(model fitted on positions ``train`` with hyper-parameters chosen on them, those parameters)."""
        train = self._usable(train)
        params = self.choose(train, seed)
        return self._model(params, seed).fit(self.features[train], self.target[train]), params

    def predict(self, model, features: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
        """``model``'s predictions of ``y`` for ``features`` (plus ``offset`` when the trees learn a correction)."""
        pred = model.predict(features)
        return pred if self.offset is None else pred + np.asarray(offset, dtype=np.float64)

    def fit_all(self, seed: int = 0):
        """Choose hyper-parameters on every material and fit the final model (for DS3)."""
        return self.fit(np.arange(len(self.y)), seed)
