"""Intervals and the applicability domain of an adapted model, from the lab's out-of-fold errors.

* **Domain** — the shipped ensemble's (:mod:`cgcnn.prediction.domain`) extended with the lab's
  materials: their M1 crystal features join the reference set (standardised as the shipped
  set), their elements the element counts, and the ranges of training gaps and PBE gaps widen
  to include theirs.  The distance threshold stays the shipped one.
* **Intervals** — split-conformal (:mod:`cgcnn.prediction.intervals`), calibrated on the
  selected recipe's out-of-fold errors on the lab's data, per domain category (and anion class
  where a cell is large enough).  Each out-of-fold material's distance to the training crystals
  is measured against the shipped reference plus the lab materials of its *training* folds
  only, as a new material's will be.  The normaliser (the material's distance, the spread, or
  none) is the one giving the narrowest cross-fitted intervals, as for the shipped ensemble.
* **Cross-fitted coverage** — each fold's intervals calibrated on the other folds' errors only
  (:func:`cgcnn.prediction.coverage.cross_fitted`): how often a new lab material's interval
  holds its gap, in all and in and out of domain.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from cgcnn.data.material_classes import anion_class
from cgcnn.finetune.lab import Lab
from cgcnn.prediction.coverage import cross_fitted
from cgcnn.prediction.domain import Domain, FeatureSpace, element_counts, element_sets
from cgcnn.prediction.ensemble import calibration_scale
from cgcnn.prediction.intervals import NORMALISERS, Intervals, interval_coverage
from cgcnn.prediction.trust import Trust
from cgcnn.study.engine import OutOfFold

__all__ = ["calibrate", "extended_domain", "oof_frame"]


def extended_domain(lab: Lab, positions: np.ndarray | None = None) -> Domain:
    """The shipped domain with the lab's materials at ``positions`` (default: all) added."""
    base = lab.model.trust.domain
    pos = np.arange(len(lab)) if positions is None else np.asarray(positions, np.int64)
    space = base.space
    added = (lab.features[pos] - space.mean) / space.std
    counts = dict(base.counts)
    for el, c in element_counts([element_sets(lab.dataset.graphs)[p] for p in pos]).items():
        counts[el] = counts.get(el, 0) + c
    y, pbe = lab.materials.y[pos], lab.materials.pbe[pos]
    max_pbe = base.max_pbe_ev
    if max_pbe is not None and np.isfinite(pbe).any():
        max_pbe = max(max_pbe, float(np.nanmax(pbe)))
    return replace(
        base,
        space=FeatureSpace(space.mean, space.std, np.vstack([space.reference, added])),
        counts=dict(sorted(counts.items())),
        max_gap_ev=max(base.max_gap_ev, float(y.max())) if len(y) else base.max_gap_ev,
        max_pbe_ev=max_pbe,
        notes={**base.notes, "extended_with_lab_materials": int(len(pos))},
    )


def oof_frame(lab: Lab, result: OutOfFold, folds) -> pd.DataFrame:
    """One row per (repeat, fold, material) of ``result``: truth, prediction, spread, and the
    domain seen from that fold's training data (distance, category, in_domain, domain_note),
    with the anion class."""
    index = {m: k for k, m in enumerate(lab.ids)}
    elements = element_sets(lab.dataset.graphs)
    classes = [anion_class(f) for f in lab.materials.frame["formula"]]
    parts = []
    by_fold = {(f.repeat, f.fold): f for f in folds}
    for (r, k), part in result.predictions.groupby(["repeat", "fold"], sort=False):
        pos = np.array([index[m] for m in part["material_id"]], np.int64)
        domain = extended_domain(lab, by_fold[(r, k)].train)
        pred = part["prediction"].to_numpy(np.float64)
        inside, notes, cats, dist = domain.assess(
            lab.features[pos],
            [elements[p] for p in pos],
            pred,
            list(lab.pbe_source[pos]),
            pbe_gaps=lab.materials.pbe_read[pos],
        )
        parts.append(
            pd.DataFrame(
                {
                    "protocol": "grouped",
                    "fold": f"{r}-{k}",
                    "pbe_input": "given",
                    "material_id": part["material_id"].to_numpy(),
                    "truth": lab.materials.y[pos],
                    "prediction": pred,
                    "spread": part["std"].to_numpy(np.float64) if "std" in part else np.zeros(len(pos)),
                    "distance": dist,
                    "category": cats,
                    "in_domain": inside,
                    "domain_note": notes,
                    "anion_class": [classes[p] for p in pos],
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def _coverage_rows(bounds: pd.DataFrame, level: float) -> list[dict]:
    rows = []
    for name, sub in {
        "all": bounds,
        "in domain": bounds[bounds["in_domain"]],
        "out of domain": bounds[~bounds["in_domain"]],
    }.items():
        if len(sub):
            rows.append(
                {
                    "subset": name,
                    "n": int(len(sub)),
                    "coverage": interval_coverage(sub["truth"], sub["lo"], sub["hi"]),
                    "mean_width_ev": float((sub["hi"] - sub["lo"]).mean()),
                    "mae": float((sub["prediction"] - sub["truth"]).abs().mean()),
                }
            )
    return rows


def calibrate(lab: Lab, result: OutOfFold, folds, *, level: float, min_class_scores: int) -> tuple[Trust, float, dict]:
    """(trust, spread calibration factor, report) for the recipe of ``result``: intervals fitted
    on every out-of-fold error, the domain extended with every lab material, and the report's
    cross-fitted coverage per normaliser (the chosen one's by subset)."""
    oof = oof_frame(lab, result, folds)
    tried = {}
    for normaliser in NORMALISERS:
        if normaliser == "spread" and not (oof["spread"] > 0).any():
            continue
        bounds = cross_fitted(oof, normaliser, level, min_class_scores)
        tried[normaliser] = (bounds, float((bounds["hi"] - bounds["lo"]).mean()))
    finite = {k: v for k, v in tried.items() if np.isfinite(v[1])} or tried
    chosen = min(finite, key=lambda k: finite[k][1])
    bounds = tried[chosen][0]
    intervals = Intervals.fit(
        oof["prediction"] - oof["truth"],
        oof["spread"],
        oof["category"],
        chosen,
        classes=oof["anion_class"],
        min_class_scores=min_class_scores,
        distances=oof["distance"],
    )
    report = {
        "level": level,
        "normaliser": chosen,
        "normalisers_tried": {k: {"mean_width_ev": v[1]} for k, v in tried.items()},
        "cross_fitted_coverage": _coverage_rows(bounds, level),
        "n_calibration": {k: len(v) for k, v in intervals.scores.items()},
        "calibrated_on": "out-of-fold errors on the lab's data (grouped folds)",
    }
    for k, v in tried.items():
        report["normalisers_tried"][k]["coverage"] = interval_coverage(v[0]["truth"], v[0]["lo"], v[0]["hi"])
    scale = calibration_scale(oof["prediction"] - oof["truth"], oof["spread"])
    trust = Trust(intervals, extended_domain(lab), level, {"calibrated_on": ["lab (grouped)"], **report})
    return trust, scale, report
