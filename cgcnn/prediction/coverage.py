"""How good are intervals and a domain flag, measured on out-of-fold predictions.

(In the prediction layer beside the intervals and the domain it measures, so that evaluation
imports nothing of prediction.)

The functions take a long out-of-fold table — one row per (protocol, fold, PBE input,
material) with ``truth``, ``prediction``, ``spread`` (the raw ensemble spread), ``category``
and ``in_domain`` / ``domain_note`` (:mod:`cgcnn.prediction.domain`), ``anion_class`` — as
:mod:`cgcnn.study.trust` builds it:

* :func:`cross_fitted` — interval bounds for every row from a conformal calibration
  (:class:`cgcnn.prediction.intervals.Intervals`) that never saw that row's materials;
* :func:`coverage_table` — coverage, mean width and MAE per protocol, PBE input and domain;
* :func:`class_coverage_table` — the same per material class (``anion_class`` column), and
  :func:`class_gap`, how far the classes' coverage lies from the level;
* :func:`conditioning_table` — those, with intervals by domain category alone and by
  category and anion class (the choice :mod:`cgcnn.study.trust` makes);
* :func:`separation` — MAE in vs out of domain with a bootstrap interval of the difference;
* :func:`reasons_table` — how many rows each domain rule flags, and their MAE.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cgcnn.evaluation.bootstrap import group_difference_ci
from cgcnn.prediction.domain import RULE_NOTES
from cgcnn.prediction.intervals import Intervals, interval_coverage

__all__ = [
    "class_coverage_table",
    "class_gap",
    "conditioning_table",
    "cross_fitted",
    "reasons_table",
    "separation",
]


def cross_fitted(
    oof: pd.DataFrame,
    normaliser: str,
    level: float,
    min_class_scores: int = 0,
    calibrate_on: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Interval bounds for every row, each (protocol, fold) calibrated on the rows of the
    ``calibrate_on`` protocols (None: all) whose materials are not in that fold's test set
    (per material class where a cell holds ``min_class_scores`` scores; 0: categories only)."""
    out = []
    by_class = min_class_scores > 0
    pool = oof if calibrate_on is None else oof[oof["protocol"].isin(list(calibrate_on))]
    for _, part in oof.groupby(["protocol", "fold"], sort=False):
        cal = pool[~pool["material_id"].isin(set(part["material_id"]))]
        iv = Intervals.fit(
            cal["prediction"] - cal["truth"],
            cal["spread"],
            cal["category"],
            normaliser,
            classes=cal["anion_class"] if by_class else None,
            min_class_scores=min_class_scores,
            distances=cal["distance"] if "distance" in cal else None,
        )
        classes = part["anion_class"] if by_class else None
        distances = part["distance"] if "distance" in part else None
        lo, hi = iv.bounds(part["prediction"], part["spread"], part["category"], level, classes, distances)
        out.append(part.assign(lo=lo, hi=hi))
    return pd.concat(out).sort_index()


def _measures(rows: pd.DataFrame) -> dict:
    """Size, interval coverage, mean width (eV) and MAE of some rows with bounds."""
    return {
        "n": len(rows),
        "coverage": interval_coverage(rows["truth"], rows["lo"], rows["hi"]),
        "mean_width_ev": float((rows["hi"] - rows["lo"]).mean()),
        "mae": float((rows["prediction"] - rows["truth"]).abs().mean()),
    }


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
                    **_measures(sub),
                }
            )
    return pd.DataFrame(rows)


def class_coverage_table(bounds: pd.DataFrame, level: float) -> pd.DataFrame:
    """Coverage, mean width and MAE per protocol and material class (MP's PBE gaps given)."""
    rows = []
    given = bounds[bounds["pbe_input"] == "given"]
    for (protocol, kind), sub in given.groupby(["protocol", "anion_class"], sort=False):
        rows.append(
            {
                "protocol": protocol,
                "anion_class": kind,
                "level": level,
                **_measures(sub),
            }
        )
    cols = ["protocol", "anion_class", "level", "n", "coverage", "mean_width_ev", "mae"]
    return pd.DataFrame(rows, columns=cols).sort_values(["protocol", "n"], ascending=[True, False], ignore_index=True)


def class_gap(by_class: pd.DataFrame) -> float:
    """Mean |coverage - level| over the rows of :func:`class_coverage_table`, weighted by
    their size: 0 when every class is covered at the stated level."""
    gap = (by_class["coverage"] - by_class["level"]).abs()
    return float((gap * by_class["n"]).sum() / by_class["n"].sum()) if len(by_class) else float("nan")


def conditioning_table(
    oof: pd.DataFrame,
    normaliser: str,
    level: float,
    min_class_scores: int,
    calibrate_on: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Cross-fitted coverage and width (MP's PBE given) per protocol, and the size-weighted gap
    between each anion class's coverage and the level, calibrated by domain category alone
    (``min_class_scores = 0``) and by category and class (cells of ``min_class_scores``), on
    the rows of the ``calibrate_on`` protocols (those rows first) and, for comparison, on
    those of all of them."""
    rows = []
    chosen = sorted(oof["protocol"].unique()) if calibrate_on is None else sorted(calibrate_on)
    pools = {" + ".join(chosen): chosen}
    pools.setdefault(" + ".join(sorted(oof["protocol"].unique())), None)
    for (name, protocols), cells in ((p, c) for p in pools.items() for c in dict.fromkeys((0, min_class_scores))):
        b = cross_fitted(oof, normaliser, level, cells, protocols)
        given = b[b["pbe_input"] == "given"]
        by_class = class_coverage_table(b, level)
        for protocol, part in given.groupby("protocol", sort=False):
            rows.append(
                {
                    "calibrated_on": name,
                    "conditioning": "category and anion class" if cells else "category",
                    "min_class_scores": cells,
                    "protocol": protocol,
                    **{k: v for k, v in _measures(part).items() if k != "mae"},
                    "class_gap": class_gap(by_class[by_class["protocol"] == protocol]),
                    "class_gap_both": class_gap(by_class),
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
