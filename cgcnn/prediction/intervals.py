"""Prediction intervals by normalised split-conformal calibration, per domain category.

A model's error on a material is scored as ``|y - ŷ| / (σ + floor)``: ``σ`` is the spread of
the ensemble (members' standard deviation and the tree–CGCNN disagreement, the raw spread
of :func:`cgcnn.prediction.ensemble.mix`), ``floor`` a constant that keeps a tiny spread from
giving a zero-width interval (the median spread of the calibration set).  With
``normaliser="distance"`` ``σ`` is instead the material's distance to its nearest training
crystal in the feature space of :mod:`cgcnn.prediction.domain` (so the interval widens with
how new a crystal is), and ``floor`` the median distance of the calibration set.  With
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

Within a category the scores may also be kept **per material class** (the anion class of
:mod:`cgcnn.data.material_classes`: oxides, halides, chalcogenides, ...): the model's error
differs by class (on DS2, run ship-10, the category-only 90 % interval covered 79 % of the
oxides out of fold and 97 % of the pnictides), so a class with at least
``min_class_scores`` scores in the material's category gets its own quantile; a smaller cell
falls back to the category's scores as above.  ``min_class_scores = 0`` (and calibrations
saved before classes were kept) use the categories alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

NORMALISERS = ("spread", "distance", "constant")
NORMALISER_NOTES = {  # what the scores are, in words (report and model card)
    "spread": "absolute errors divided by the ensemble's spread plus its median",
    "distance": "absolute errors divided by the crystal's distance to its nearest training crystal in M1's "
    "feature space plus the median distance, so the interval widens with how new a crystal is",
    "constant": "absolute errors",
}
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
        normaliser: ``"spread"`` (scores divided by ``spread + floor``), ``"distance"``
            (divided by ``distance + floor``) or ``"constant"``.
        floor: added to the spread (eV) or the distance.
        scores: category -> the calibration scores (sorted).
        class_scores: category -> material class -> its calibration scores (sorted).
        min_class_scores: fewest scores a (category, class) cell needs for its own quantile;
            0: classes are not used.
    """

    normaliser: str
    floor: float
    scores: dict[str, list[float]] = field(default_factory=dict)
    class_scores: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    min_class_scores: int = 0

    @classmethod
    def fit(
        cls,
        errors: np.ndarray,
        spreads: np.ndarray,
        categories: Sequence[str],
        normaliser: str = "spread",
        *,
        classes: Sequence[str] | None = None,
        min_class_scores: int = 0,
        distances: np.ndarray | None = None,
    ) -> Intervals:
        """Calibrate on out-of-fold errors (prediction - truth), raw spreads and categories
        (and material classes, used where a cell holds ``min_class_scores`` scores;
        ``distances`` to the nearest training crystal, needed by the distance normaliser)."""
        if normaliser not in NORMALISERS:
            raise ValueError(f"normaliser must be one of {NORMALISERS}, got {normaliser!r}")
        e = np.abs(np.asarray(errors, float))
        s = _measure(normaliser, spreads, distances)
        floor = float(np.median(s)) if normaliser != "constant" and len(s) else 0.0
        score = e / _unit(normaliser, s, floor)
        cats = np.asarray(categories, dtype=object)
        scores = {str(c): sorted(score[cats == c].tolist()) for c in dict.fromkeys(cats)}
        if classes is None or min_class_scores <= 0:
            return cls(normaliser, floor, scores)
        kinds = np.asarray(classes, dtype=object)
        cells = {
            str(c): {
                str(k): sorted(score[(cats == c) & (kinds == k)].tolist()) for k in dict.fromkeys(kinds[cats == c])
            }
            for c in scores
        }
        return cls(normaliser, floor, scores, cells, int(min_class_scores))

    def width_unit(self, spreads: np.ndarray, distances: np.ndarray | None = None) -> np.ndarray:
        """What the score multiplies: ``spread + floor`` (eV), ``distance + floor``, or 1 for
        the constant normaliser."""
        return _unit(self.normaliser, _measure(self.normaliser, spreads, distances), self.floor)

    def quantile(self, category: str, level: float, material_class: str | None = None) -> tuple[float, str]:
        """(score quantile, the scores that gave it: ``category/class``, a category or
        ``"all"``) for a material of ``category`` (and ``material_class``) at ``level``."""
        need = min_scores(level)
        if material_class is not None and self.min_class_scores > 0:
            cell = self.class_scores.get(category, {}).get(material_class, ())
            if len(cell) >= max(need, self.min_class_scores):
                return conformal_quantile(cell, level), f"{category}/{material_class}"
        for name in (category, OUT_OF_DOMAIN):
            if len(self.scores.get(name, ())) >= need:
                return conformal_quantile(self.scores[name], level), name
        pooled = [x for v in self.scores.values() for x in v]
        return conformal_quantile(pooled, level), "all"

    def half_widths(
        self,
        spreads: np.ndarray,
        categories: Sequence[str],
        level: float,
        classes: Sequence[str] | None = None,
        distances: np.ndarray | None = None,
    ) -> np.ndarray:
        """Half-width (eV) of the central interval at ``level`` for every material."""
        unit = self.width_unit(spreads, distances)
        cats = [str(c) for c in categories]
        kinds = [str(k) for k in classes] if classes is not None else [None] * len(cats)
        if not len(cats) == len(kinds) == len(unit):
            raise ValueError(
                f"{len(unit)} spreads, {len(cats)} categories and {len(kinds)} classes: one each per material"
            )
        keys = list(zip(cats, kinds))
        q = {key: self.quantile(key[0], level, key[1])[0] for key in dict.fromkeys(keys)}
        return unit * np.array([q[key] for key in keys], dtype=np.float64)

    def bounds(
        self,
        predictions: np.ndarray,
        spreads: np.ndarray,
        categories: Sequence[str],
        level: float,
        classes: Sequence[str] | None = None,
        distances: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) bounds in eV; the lower one never below 0."""
        half = self.half_widths(spreads, categories, level, classes, distances)
        p = np.asarray(predictions, dtype=np.float64)
        return np.maximum(p - half, 0.0), p + half

    def to_dict(self) -> dict:
        return {
            "normaliser": self.normaliser,
            "floor": self.floor,
            "scores": self.scores,
            "class_scores": self.class_scores,
            "min_class_scores": self.min_class_scores,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> Intervals:
        """Also reads calibrations saved before classes were kept (no ``class_scores``)."""
        return cls(
            str(d["normaliser"]),
            float(d["floor"]),
            {k: list(map(float, v)) for k, v in d["scores"].items()},
            {c: {k: list(map(float, v)) for k, v in cell.items()} for c, cell in d.get("class_scores", {}).items()},
            int(d.get("min_class_scores", 0)),
        )


def _measure(normaliser: str, spreads, distances) -> np.ndarray:
    """The per-material measure a normaliser scales the scores by (spreads for all but the
    distance normaliser)."""
    if normaliser != "distance":
        return np.asarray(spreads, dtype=np.float64)
    if distances is None:
        raise ValueError("the distance normaliser needs each material's distance to the training set")
    return np.asarray(distances, dtype=np.float64)


def _unit(normaliser: str, measure: np.ndarray, floor: float) -> np.ndarray:
    """What a score is divided by (and a quantile multiplied by): ``measure + floor``, or 1."""
    return np.ones_like(measure) if normaliser == "constant" else measure + floor


def interval_coverage(truth, lower, upper) -> float:
    """Fraction of ``truth`` inside ``[lower, upper]``."""
    y = np.asarray(truth, dtype=np.float64)
    return float(np.mean((y >= np.asarray(lower)) & (y <= np.asarray(upper)))) if len(y) else float("nan")
