"""Scoring a model's predictions against labels: what ``cgcnn evaluate`` reports.

The table is the one ``predict`` gives (``material_id, prediction_ev, …``) with the label
``target_ev`` beside it; a model with calibrated intervals adds ``prediction_lo_ev``,
``prediction_hi_ev`` and ``in_domain``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cgcnn.evaluation.bootstrap import bootstrap_mean, mae_ci
from cgcnn.evaluation.metrics import regression_metrics


def scored_metrics(table: pd.DataFrame, level: float | None = None) -> dict:
    """MAE (with its bootstrap 95 % interval ``mae_lo``, ``mae_hi``), RMSE, R², max error and
    n; with intervals also their coverage (``interval_coverage`` with its bootstrap interval,
    at ``level``) and mean width, and the MAE in and out of the applicability domain.  NaN
    becomes None (JSON null)."""
    y, p = table["target_ev"].to_numpy(float), table["prediction_ev"].to_numpy(float)
    metrics = regression_metrics(y, p)
    ci = mae_ci(y, p)
    metrics.update(mae_lo=ci.lo, mae_hi=ci.hi, mae_ci_level=ci.level)
    if "prediction_lo_ev" in table:
        lo, hi = table["prediction_lo_ev"].to_numpy(float), table["prediction_hi_ev"].to_numpy(float)
        cov = bootstrap_mean(((lo <= y) & (y <= hi)).astype(float))
        metrics.update(
            interval_level=level,
            interval_coverage=cov.value,
            interval_coverage_lo=cov.lo,
            interval_coverage_hi=cov.hi,
            interval_mean_width_ev=float(np.mean(hi - lo)) if len(table) else None,
        )
    if "in_domain" in table:
        inside = table["in_domain"].to_numpy(bool)
        err = np.abs(p - y)
        metrics.update(
            n_in_domain=int(inside.sum()),
            mae_in_domain=float(err[inside].mean()) if inside.any() else None,
            mae_out_of_domain=float(err[~inside].mean()) if (~inside).any() else None,
        )
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in metrics.items()}


def scored_sentence(m: dict) -> str:
    """The metrics of :func:`scored_metrics` in one sentence."""
    if not m["n"]:
        return "no labelled structure to score"
    text = f"MAE {m['mae']:.3f} eV [95 % CI {m['mae_lo']:.3f}, {m['mae_hi']:.3f}] on {m['n']} materials"
    if m.get("interval_coverage") is not None:
        text += (
            f"; the {100 * m['interval_level']:g} % interval covers {100 * m['interval_coverage']:.0f} % "
            f"[{100 * m['interval_coverage_lo']:.0f}, {100 * m['interval_coverage_hi']:.0f}] of them "
            f"(mean width {m['interval_mean_width_ev']:.2f} eV)"
        )
    if "n_in_domain" in m:
        text += f"; {m['n_in_domain']} in domain"
    return text
