"""Uncertainty of the reported errors: bootstrap confidence intervals, paired differences.

With 29 DS3 materials, differences of a few hundredths of an eV are noise; every MAE the
study reports carries a bootstrap 95 % interval over materials, and every comparison of two
models is *paired* (the same materials resampled for both).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A point estimate with its ``level`` confidence interval [lo, hi]."""

    value: float
    lo: float
    hi: float
    level: float
    n: int

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.lo:.3f}, {self.hi:.3f}]"


def _finite(*arrays) -> list[np.ndarray]:
    arrs = [np.asarray(a, dtype=np.float64) for a in arrays]
    ok = np.all([np.isfinite(a) for a in arrs], axis=0)
    return [a[ok] for a in arrs]


def bootstrap_mean(values, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Interval:
    """Mean of ``values`` with a percentile bootstrap interval (values resampled with replacement)."""
    (v,) = _finite(values)
    if v.size == 0:
        return Interval(np.nan, np.nan, np.nan, level, 0)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    a = (1 - level) / 2
    return Interval(float(v.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a)), level, int(v.size))


def mae_ci(y_true, y_pred, **kw) -> Interval:
    """MAE with a bootstrap interval over materials."""
    t, p = _finite(y_true, y_pred)
    return bootstrap_mean(np.abs(p - t), **kw)


def paired_difference_ci(y_true, pred_a, pred_b, **kw) -> Interval:
    """MAE(a) − MAE(b) on the materials both predict, with a paired bootstrap interval
    (negative: a is better).  An interval that excludes 0 is a difference the data support."""
    t, a, b = _finite(y_true, pred_a, pred_b)
    return bootstrap_mean(np.abs(a - t) - np.abs(b - t), **kw)
