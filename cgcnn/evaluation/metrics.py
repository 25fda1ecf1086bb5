"""Regression metrics and the non-ML baselines of the study.

Baselines on the evaluation set: the raw PBE gap, a linear correction of PBE
(``exp ≈ a·PBE + b``) fitted on the adaptation *training* split only, and any
reference columns present (HSE06, G0W0).  Rows where a column is missing are left out of
that column's metrics (``n`` says how many were scored).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    """MAE, RMSE, R², max absolute error and n over the pairs where both are finite."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.shape != p.shape:
        raise ValueError(f"shapes differ: {t.shape} vs {p.shape}")
    ok = np.isfinite(t) & np.isfinite(p)
    t, p = t[ok], p[ok]
    n = int(t.size)
    if n == 0:
        return {"mae": np.nan, "rmse": np.nan, "r2": np.nan, "max_error": np.nan, "n": 0}
    err = p - t
    ss_tot = float(((t - t.mean()) ** 2).sum())
    r2 = 1.0 - float((err**2).sum()) / ss_tot if ss_tot > 0 else np.nan
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "r2": r2,
        "max_error": float(np.abs(err).max()),
        "n": n,
    }


@dataclass(frozen=True)
class LinearCorrection:
    """``exp ≈ slope · PBE + intercept`` (least squares)."""

    slope: float
    intercept: float

    @classmethod
    def fit(cls, pbe, exp) -> LinearCorrection:
        x = np.asarray(pbe, dtype=np.float64)
        y = np.asarray(exp, dtype=np.float64)
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() < 2:
            raise ValueError("a linear correction needs at least two finite (PBE, experiment) pairs")
        slope, intercept = np.polyfit(x[ok], y[ok], 1)
        return cls(float(slope), float(intercept))

    def predict(self, pbe) -> np.ndarray:
        return self.slope * np.asarray(pbe, dtype=np.float64) + self.intercept


def baseline_table(df: pd.DataFrame, exp_col: str, columns: Mapping[str, str] | Sequence[str]) -> pd.DataFrame:
    """Metrics of each prediction column against ``exp_col`` (one row per column).

    ``columns`` maps a display name to a column of ``df`` (or lists columns by name);
    columns absent from ``df`` are skipped.
    """
    mapping = dict(columns) if isinstance(columns, Mapping) else {c: c for c in columns}
    rows = []
    for name, col in mapping.items():
        if col not in df.columns:
            continue
        rows.append({"model": name, **regression_metrics(df[exp_col], pd.to_numeric(df[col], errors="coerce"))})
    return (
        pd.DataFrame(rows).set_index("model") if rows else pd.DataFrame(columns=["mae", "rmse", "r2", "max_error", "n"])
    )


def summarise_seeds(per_seed: pd.DataFrame, by: str = "model") -> pd.DataFrame:
    """Mean ± std over seeds of a long table with columns ``by``, mae, rmse, r2 (, n)."""
    agg = per_seed.groupby(by).agg(
        mae=("mae", "mean"),
        mae_std=("mae", "std"),
        rmse=("rmse", "mean"),
        rmse_std=("rmse", "std"),
        r2=("r2", "mean"),
        r2_std=("r2", "std"),
        n=("n", "max"),
        seeds=("mae", "size"),
    )
    return agg
