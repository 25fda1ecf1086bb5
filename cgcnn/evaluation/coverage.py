"""How good are intervals and a domain flag, measured on out-of-fold predictions.

The functions take a long out-of-fold table — one row per (protocol, fold, PBE input,
material) with ``truth``, ``prediction``, ``spread`` (the raw ensemble spread), ``category``
and ``in_domain`` / ``domain_note`` (:mod:`cgcnn.prediction.domain`) — as
:mod:`cgcnn.study.trust` builds it:

* :func:`cross_fitted` — interval bounds for every row from a conformal calibration
  (:class:`cgcnn.prediction.intervals.Intervals`) that never saw that row's materials;
* :func:`coverage_table` — coverage, mean width and MAE per protocol, PBE input and domain;
* :func:`separation` — MAE in vs out of domain with a bootstrap interval of the difference;
* :func:`reasons_table` — how many rows each domain rule flags, and their MAE.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cgcnn.evaluation.bootstrap import group_difference_ci
from cgcnn.prediction.domain import RULE_NOTES
from cgcnn.prediction.intervals import Intervals, interval_coverage

__all__ = ["coverage_table", "cross_fitted", "reasons_table", "separation"]


def cross_fitted(oof: pd.DataFrame, normaliser: str, level: float) -> pd.DataFrame:
    """Interval bounds for every row, each (protocol, fold) calibrated on the rows of every
    protocol whose materials are not in that fold's test set."""
    out = []
    for _, part in oof.groupby(["protocol", "fold"], sort=False):
        cal = oof[~oof["material_id"].isin(set(part["material_id"]))]
        iv = Intervals.fit(cal["prediction"] - cal["truth"], cal["spread"], cal["category"], normaliser)
        lo, hi = iv.bounds(part["prediction"], part["spread"], part["category"], level)
        out.append(part.assign(lo=lo, hi=hi))
    return pd.concat(out).sort_index()


def coverage_table(bounds: pd.DataFrame, level: float) -> pd.DataFrame:
    """Coverage, mean width and MAE per protocol, PBE input and domain."""
    rows = []
    for (protocol, pbe_input), part in bounds.groupby(["protocol", "pbe_input"], sort=False):
        subsets = {"all": part, "in domain": part[part["in_domain"]], "out of domain": part[~part["in_domain"]]}
        for name, sub in subsets.items():
            if sub.empty:
                continue
            rows.append(
                {
                    "protocol": protocol,
                    "pbe_input": pbe_input,
                    "subset": name,
                    "level": level,
                    "n": len(sub),
                    "coverage": interval_coverage(sub["truth"], sub["lo"], sub["hi"]),
                    "mean_width_ev": float((sub["hi"] - sub["lo"]).mean()),
                    "mae": float((sub["prediction"] - sub["truth"]).abs().mean()),
                }
            )
    return pd.DataFrame(rows)


def separation(oof: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """MAE in vs out of domain per protocol (MP's PBE gaps given), with a bootstrap 95 %
    interval of the difference (out − in; materials resampled)."""
    rows = []
    rng = np.random.default_rng(seed)
    for protocol, part in oof[oof["pbe_input"] == "given"].groupby("protocol", sort=False):
        err = (part["prediction"] - part["truth"]).abs().to_numpy()
        inside = part["in_domain"].to_numpy()
        row = {
            "protocol": protocol,
            "n_in": int(inside.sum()),
            "n_out": int((~inside).sum()),
            "mae_in": float(err[inside].mean()) if inside.any() else np.nan,
            "mae_out": float(err[~inside].mean()) if (~inside).any() else np.nan,
        }
        row["diff_out_minus_in"], row["diff_lo"], row["diff_hi"] = group_difference_ci(
            err, inside, n_boot=n_boot, rng=rng
        )
        rows.append(row)
    return pd.DataFrame(rows)


def reasons_table(oof: pd.DataFrame) -> pd.DataFrame:
    """Count and MAE of the out-of-fold rows flagged by each domain rule (MP's PBE given)."""
    given = oof[oof["pbe_input"] == "given"]
    reasons = given["domain_note"].map(lambda n: n.split("; ") if isinstance(n, str) and n else [])
    rows = []
    for protocol, part in given.groupby("protocol", sort=False):
        for name, start in RULE_NOTES.items():
            hit = reasons.loc[part.index].map(lambda why, start=start: any(r.startswith(start) for r in why))
            rows.append(
                {
                    "protocol": protocol,
                    "rule": name,
                    "n": int(hit.sum()),
                    "mae": float((part.loc[hit, "prediction"] - part.loc[hit, "truth"]).abs().mean())
                    if hit.any()
                    else np.nan,
                }
            )
    return pd.DataFrame(rows)
