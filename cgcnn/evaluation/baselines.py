"""Baselines every CGCNN model must beat, as cross-validation methods.

* raw PBE (``prediction = PBE gap``), and PBE linearly corrected on the training folds
  (``exp ≈ a·PBE + b``, :class:`cgcnn.evaluation.metrics.LinearCorrection`);
* composition-only gradient boosting: Magpie element-property statistics (matminer's
  ``ElementProperty.from_preset("magpie")``, 132 features) into scikit-learn's
  ``HistGradientBoostingRegressor``;
* the same with the PBE gap as one more input ("correction learning", De Breuck et al.,
  J. Mater. Inf. 2, 10 (2022)).

Materials without a PBE gap: the PBE baselines cannot predict them (NaN: they are left out
of those rows' metrics and of paired comparisons with them); the boosted trees take the
missing PBE gap as a missing value (the model's native handling of NaN inputs).
Hyper-parameters of the boosted trees are chosen per outer fold by an inner grouped CV on
that fold's training materials only.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cgcnn.data.magpie import of_formulas
from cgcnn.evaluation.folds import FoldContext
from cgcnn.evaluation.metrics import LinearCorrection

GBM_GRID = {"learning_rate": (0.05, 0.1), "max_leaf_nodes": (15, 31)}


def magpie_features(formulas: Sequence[str]) -> np.ndarray:
    """Magpie statistics of each composition, shape [n, 132] (matminer's magpie preset,
    vectorised in :mod:`cgcnn.data.magpie`)."""
    return of_formulas(list(formulas))


@dataclass
class RawPBE:
    """The PBE gap itself."""

    pbe: np.ndarray

    def __call__(self, train, test, ctx: FoldContext) -> np.ndarray:
        return np.asarray(self.pbe, dtype=np.float64)[test]


@dataclass
class LinearPBE:
    """PBE corrected by a straight line fitted on the training materials that have a PBE gap."""

    pbe: np.ndarray
    y: np.ndarray

    def __call__(self, train, test, ctx: FoldContext) -> np.ndarray:
        line = LinearCorrection.fit(self.pbe[train], self.y[train])
        return line.predict(self.pbe[test])


@dataclass
class BoostedTrees:
    """Gradient-boosted trees on ``features`` (e.g. Magpie, optionally + PBE) with the
    hyper-parameters of ``grid`` chosen by ``inner_folds``-fold grouped CV on each training set."""

    features: np.ndarray
    y: np.ndarray
    groups: Sequence[str]
    grid: dict = field(default_factory=lambda: dict(GBM_GRID))
    inner_folds: int = 3
    max_iter: int = 300
    chosen: list[dict] = field(default_factory=list)

    def _model(self, params: dict, seed: int):
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(max_iter=self.max_iter, early_stopping=False, random_state=seed, **params)

    def choose(self, train: np.ndarray, seed: int) -> dict:
        """The grid point with the lowest inner-CV MAE on ``train`` (ties: first in grid order)."""
        from sklearn.model_selection import GroupKFold

        combos = [dict(zip(self.grid, values)) for values in itertools.product(*self.grid.values())]
        if len(combos) == 1:
            return combos[0]
        groups = np.asarray(self.groups)[train]
        inner = list(GroupKFold(n_splits=self.inner_folds).split(train, groups=groups))
        X, y = self.features[train], self.y[train]
        scores = []
        for params in combos:
            err = [np.abs(self._model(params, seed).fit(X[a], y[a]).predict(X[b]) - y[b]).mean() for a, b in inner]
            scores.append(float(np.mean(err)))
        return combos[int(np.argmin(scores))]

    def fit(self, train, seed: int):
        """(model fitted on positions ``train`` with hyper-parameters chosen on them, those parameters)."""
        params = self.choose(np.asarray(train), seed)
        return self._model(params, seed).fit(self.features[train], self.y[train]), params

    def __call__(self, train, test, ctx: FoldContext) -> np.ndarray:
        model, params = self.fit(train, ctx.seed)
        self.chosen.append({"repeat": ctx.repeat, "fold": ctx.fold, **params})
        return model.predict(self.features[test])

    def fit_all(self, seed: int = 0):
        """Choose hyper-parameters on every material and fit the final model (for DS3)."""
        everything = np.arange(len(self.y))
        params = self.choose(everything, seed)
        return self._model(params, seed).fit(self.features, self.y), params
