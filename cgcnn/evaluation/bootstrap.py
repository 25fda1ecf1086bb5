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


def group_difference_ci(
    errors, in_group, *, n_boot: int = 2000, level: float = 0.95, rng: np.random.Generator | None = None
) -> tuple[float, float, float]:
    """(mean error outside the group − inside it, and its percentile bootstrap interval):
    the materials are resampled with their group membership (e.g. the domain flag), so the
    interval covers the uncertainty of both means and of the group sizes.  NaNs when a group
    is empty; resamples that leave a group empty are skipped."""
    e, g = np.abs(np.asarray(errors, dtype=np.float64)), np.asarray(in_group, dtype=bool)
    if not g.any() or g.all():
        return np.nan, np.nan, np.nan
    rng = rng if rng is not None else np.random.default_rng(0)
    diffs = []
    for _ in range(n_boot):
        k = rng.integers(0, len(e), len(e))
        ek, gk = e[k], g[k]
        if gk.any() and (~gk).any():
            diffs.append(ek[~gk].mean() - ek[gk].mean())
    a = (1 - level) / 2
    lo, hi = (
        (float(np.percentile(diffs, 100 * a)), float(np.percentile(diffs, 100 * (1 - a))))
        if diffs
        else (np.nan, np.nan)
    )
    return float(e[~g].mean() - e[g].mean()), lo, hi
