"""Prediction intervals by normalised split-conformal calibration, per domain category.

A model's error on a material is scored as ``|y - ŷ| / (σ + floor)``: ``σ`` is the spread of
the ensemble (members' standard deviation and the tree–CGCNN disagreement, the raw spread
of :func:`cgcnn.prediction.ensemble.mix`), ``floor`` a constant that keeps a tiny spread from
giving a zero-width interval (the median spread of the calibration set).  With
``normaliser="constant"`` the score is the plain absolute error.  The central interval at
level ``q`` is ``ŷ ± s_q·(σ + floor)``, ``s_q`` the ``ceil((n + 1)·q)``-th smallest of the
``n`` calibration scores (split conformal: ``P(y in interval) >= q`` for a new material
exchangeable with the calibration set).

Scores are kept **per category** (Mondrian conformal): in domain, out of domain, and "PBE
gap predicted" (:mod:`cgcnn.prediction.domain`), so an interval widens where the model is
known to be worse and the coverage holds within each category, not only on average.  A
category with too few scores for the level borrows the scores of the out-of-domain one and
then of all of them (``fallback``).  The lower bound is clipped at 0 eV (a gap is never
negative; clipping never uncovers a true gap >= 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

NORMALISERS = ("spread", "constant")
OUT_OF_DOMAIN = "out_of_domain"


def conformal_quantile(scores: Sequence[float], level: float) -> float:
    """The split-conformal quantile of ``scores`` at ``level`` (inf when there are too few)."""
    if not 0 < level < 1:
        raise ValueError(f"interval level must be between 0 and 1 (exclusive), got {level}")
    s = np.sort(np.asarray(scores, dtype=np.float64))
    s = s[np.isfinite(s)]
    k = math.ceil((len(s) + 1) * level)
    return float(s[k - 1]) if 0 < k <= len(s) else math.inf


def min_scores(level: float) -> int:
    """Fewest calibration scores that give a finite quantile at ``level``."""
    return math.ceil(level / (1 - level) - 1e-9)


@dataclass
class Intervals:
    """Calibrated conformal intervals (see the module docstring).

    Attributes:
        normaliser: ``"spread"`` (scores divided by ``spread + floor``) or ``"constant"``.
        floor: eV added to the spread.
        scores: category -> the calibration scores (sorted).
    """

    normaliser: str
    floor: float
    scores: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def fit(
        cls, errors: np.ndarray, spreads: np.ndarray, categories: Sequence[str], normaliser: str = "spread"
    ) -> Intervals:
        """Calibrate on out-of-fold errors (prediction - truth), raw spreads and categories."""
        if normaliser not in NORMALISERS:
            raise ValueError(f"normaliser must be one of {NORMALISERS}, got {normaliser!r}")
        e, s = np.abs(np.asarray(errors, float)), np.asarray(spreads, float)
        floor = float(np.median(s)) if normaliser == "spread" and len(s) else 0.0
        scale = s + floor if normaliser == "spread" else np.ones_like(s)
        score = e / scale
        cats = np.asarray(categories, dtype=object)
        return cls(normaliser, floor, {str(c): sorted(score[cats == c].tolist()) for c in dict.fromkeys(cats)})

    def width_unit(self, spreads: np.ndarray) -> np.ndarray:
        """What the score multiplies: ``spread + floor`` (eV), or 1 for the constant normaliser."""
        s = np.asarray(spreads, dtype=np.float64)
        return s + self.floor if self.normaliser == "spread" else np.ones_like(s)

    def quantile(self, category: str, level: float) -> tuple[float, str]:
        """(score quantile, category whose scores gave it) for ``category`` at ``level``."""
        need = min_scores(level)
        for name in (category, OUT_OF_DOMAIN):
            if len(self.scores.get(name, ())) >= need:
                return conformal_quantile(self.scores[name], level), name
        pooled = [x for v in self.scores.values() for x in v]
        return conformal_quantile(pooled, level), "all"

    def half_widths(self, spreads: np.ndarray, categories: Sequence[str], level: float) -> np.ndarray:
        """Half-width (eV) of the central interval at ``level`` for every material."""
        unit = self.width_unit(spreads)
        cats = np.asarray(categories, dtype=object)
        q = {c: self.quantile(str(c), level)[0] for c in dict.fromkeys(cats)}
        return unit * np.array([q[c] for c in cats], dtype=np.float64)

    def bounds(
        self, predictions: np.ndarray, spreads: np.ndarray, categories: Sequence[str], level: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) bounds in eV; the lower one never below 0."""
        half = self.half_widths(spreads, categories, level)
        p = np.asarray(predictions, dtype=np.float64)
        return np.maximum(p - half, 0.0), p + half

    def to_dict(self) -> dict:
        return {"normaliser": self.normaliser, "floor": self.floor, "scores": self.scores}

    @classmethod
    def from_dict(cls, d: Mapping) -> Intervals:
        return cls(str(d["normaliser"]), float(d["floor"]), {k: list(map(float, v)) for k, v in d["scores"].items()})


def interval_coverage(truth, lower, upper) -> float:
    """Fraction of ``truth`` inside ``[lower, upper]``."""
    y = np.asarray(truth, dtype=np.float64)
    return float(np.mean((y >= np.asarray(lower)) & (y <= np.asarray(upper)))) if len(y) else float("nan")
