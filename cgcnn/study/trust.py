"""Step 02-ml-dev/04: how far the selected ensemble can be trusted — intervals that hold on new
chemistry, an applicability domain, and the DS2 labels that look wrong.

1. :func:`prepare` — the selected method (the methods record), M1's crystal features, elements,
   Magpie features and M1's PBE prediction of every DS2 material, and three protocols: the
   **grouped** folds of the fine-tuning study (first repeat) and **chemistry-shift** folds
   (:func:`cgcnn.evaluation.folds.cluster_folds`: whole composition clusters held out), and
   **class-held-out** folds (:func:`cgcnn.evaluation.folds.class_folds`: each large anion
   class held out whole, the rarer ones together), where a test material's whole class is new.
2. :func:`fit_protocol` — in each fold the selected recipe is refitted as in the methods step
   (same members, seeds and inner split; the boosted trees too, learning what the selection's
   trees learn) and the test materials are
   predicted twice: with the PBE gap they have (MP's) and with M1's prediction of it, as for a
   user who gives none.  Every fit goes through the fit cache (:mod:`cgcnn.study.fits`).
3. :func:`analyse` — the domain rules of :mod:`cgcnn.prediction.domain` applied out of fold
   (counts, feature space and gap range from the fold's training materials; the distance
   threshold from the grouped folds), the normalised conformal intervals of
   :mod:`cgcnn.prediction.intervals` calibrated on the chemistry-shift folds (a setting;
   Mondrian by domain category, and by anion class where the CV says so), their **cross-fitted**
   coverage and width (each fold's materials scored by a calibration that never saw them),
   overall and per anion class, MAE in vs out of domain with a bootstrap interval (those
   measures: :mod:`cgcnn.prediction.coverage`), and the table of suspicious labels.
4. :func:`write` — the trust record, ``tables/trust_*.csv`` and the shipped calibration
   (``models/trust/``: :class:`cgcnn.prediction.trust.Trust` fitted on all of DS2).

DS3 is not touched here; the final step scores the intervals and the flag on it once.
(Over 400 lines: one notebook step whose cells are these functions, with the choices its
calibration makes by CV; the generic measures live in :mod:`cgcnn.prediction.coverage`.)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cgcnn.data.label_audit import suspicious_labels as suspicious_labels_etl
from cgcnn.data.material_classes import anion_class
from cgcnn.evaluation.folds import Fold, class_folds, cluster_folds
from cgcnn.fileio import write_json
from cgcnn.prediction.coverage import (
    class_coverage_table,
    conditioning_table,
    coverage_table,
    cross_fitted,
    reasons_table,
    separation,
)
from cgcnn.prediction.domain import (
    IN_DOMAIN,
    OUT_OF_DOMAIN,
    PBE_PREDICTED,
    Domain,
    FeatureSpace,
    element_counts,
    element_sets,
    formulas,
)
from cgcnn.prediction.ensemble import mix
from cgcnn.prediction.inference import predict
from cgcnn.prediction.intervals import NORMALISERS, Intervals
from cgcnn.prediction.trust import Trust, crystal_features
from cgcnn.study import engine
from cgcnn.study.candidates import TREES_WEIGHT, NetworkEnsemble, method_trees, network_ensemble
from cgcnn.study.methods import MethodsSetup, load_methods
from cgcnn.study.methods import prepare as methods_prepare
from cgcnn.study.profiles import StudyProfile
from cgcnn.study.recipes import BACKBONES, NETWORKS, Materials, Trees, candidate
from cgcnn.study.rundir import clear, read_json, run_paths, write_table

GROUPED, SHIFT, CLASS_OUT = "grouped", "chemistry_shift", "class_held_out"
PROTOCOL_LABELS = {
    GROUPED: "grouped by formula",
    SHIFT: "chemistry shift (composition clusters held out)",
    CLASS_OUT: "anion class held out",
}
__all__ = [
    "CLASS_OUT",
    "GROUPED",
    "PROTOCOL_LABELS",
    "SHIFT",
    "TrustAnalysis",
    "TrustSetup",
    "analyse",
    "backbone_coverage",
    "fit_protocol",
    "prepare",
    "run_trust",
    "write",
    "write_backbone_coverage",
]


@dataclass
class TrustSetup:
    """What every fold needs (see :func:`prepare`)."""

    m: MethodsSetup
    selection: dict
    network: NetworkEnsemble  # the selected recipe's networks (also reading M1's PBE: materials_ppbe)
    trees: Trees | None  # the selected recipe's trees, or None
    materials_ppbe: Materials  # DS2 with M1's PBE prediction as every material's PBE gap
    features: np.ndarray  # M1's crystal features [n, d]
    elements: list[frozenset[str]]
    classes: list[str]  # anion class of every material (cgcnn.data.material_classes)
    pbe_predicted: np.ndarray
    protocols: dict[str, list[Fold]]

    @property
    def profile(self) -> StudyProfile:
        return self.m.cv.profile

    @property
    def ids(self) -> list[str]:
        return list(self.m.cv.frame["material_id"])

    @property
    def truth(self) -> np.ndarray:
        return self.m.cv.truth.loc[self.ids].to_numpy(np.float64)


def prepare(run_dir: str | os.PathLike, profile: StudyProfile) -> TrustSetup | None:
    """The selected method and the two protocols; None when the run selected no method."""
    selection = load_methods(run_dir)
    if not selection:
        return None
    m = methods_prepare(run_dir, profile)
    cv = m.cv
    base_pbe = np.maximum(predict(cv.base, cv.dataset, device=profile.device), 0.0)
    materials_ppbe = Materials(cv.frame, pbe_inputs=base_pbe)
    network = m.build(selection["network"])
    if selection["network"] in NETWORKS:  # a CGCNN network reads its PBE input from its dataset
        ppbe = network_ensemble(selection["network"], profile, cv.data, cv.base, cv.dataset, base_pbe, cv.cache)
        network.views[id(materials_ppbe)] = ppbe
    trees = method_trees(selection["selected"], profile)
    magpie = m.materials.magpie
    grouped = [f for f in cv.folds if f.repeat == 0]
    shift = cluster_folds(magpie, k=len(grouped), clusters=profile.trust.clusters, seed=profile.cv.seed)
    classes = [anion_class(f) for f in formulas(cv.dataset.graphs)]  # as a prediction classes them
    protocols = {GROUPED: grouped, SHIFT: shift}
    if profile.trust.held_out_class_min > 0:
        held_out = class_folds(classes, min_size=profile.trust.held_out_class_min, seed=profile.cv.seed)
        if held_out:  # fewer than two classes: nothing to hold out and train on
            protocols[CLASS_OUT] = held_out
    if not set(profile.trust.calibrate_on) & set(protocols):  # refused before any fold is fitted
        raise ValueError(
            f"trust.calibrate_on names {', '.join(profile.trust.calibrate_on)}, which this run does not have (it has "
            f"{', '.join(protocols)}); name one of those"
        )
    features = crystal_features(cv.base, cv.dataset, device=profile.device)
    return TrustSetup(
        m,
        selection,
        network,
        trees,
        materials_ppbe,
        features,
        element_sets(cv.dataset.graphs),
        classes,
        base_pbe,
        protocols,
    )


def fit_protocol(t: TrustSetup, protocol: str, *, echo: Callable[[str], Any] = print) -> pd.DataFrame:
    """Out-of-fold predictions of the selected recipe on every fold of ``protocol``, by the
    study's fold loop (members through the fit cache: the grouped folds read back the methods
    step's fits): the networks' mean, spread and each member, and the trees, with the PBE gaps
    the materials have and with M1's (``*_ppbe``)."""
    folds = t.protocols[protocol]
    kw = {"val_fraction": t.profile.cv.inner_val_fraction, "also": {"ppbe": t.materials_ppbe}}
    net = engine.cross_validate(t.network, t.m.materials, folds, **kw)
    p = net.predictions
    table = pd.DataFrame(
        {
            "protocol": protocol,
            "fold": p["fold"],
            "material_id": p["material_id"],
            "cgcnn_mean": p["prediction"],
            "cgcnn_std": p["std"],
            "cgcnn_mean_ppbe": p["prediction_ppbe"],
            "cgcnn_std_ppbe": p["std_ppbe"],
        }
    )
    members = net.members if net.members is not None else pd.DataFrame(columns=["view", "member"])
    for view, suffix in (("given", ""), ("ppbe", "_ppbe")):  # each member: smaller ensembles can be scored
        mine = members[members["view"] == view]
        for k in sorted(mine["member"].unique()):
            table[f"member_{k}{suffix}"] = mine.loc[mine["member"] == k, "prediction"].to_numpy()
    if t.trees is not None:
        trees = engine.cross_validate(t.trees, t.m.materials, folds, **kw).predictions
        table["trees"] = trees["prediction"].to_numpy()
        table["trees_ppbe"] = trees["prediction_ppbe"].to_numpy()
    echo(f"{protocol}: {len(folds)} folds, {len(table)} test materials")
    return table


def _combine(t: TrustSetup, table: pd.DataFrame, suffix: str) -> tuple[np.ndarray, np.ndarray]:
    """(prediction clipped at 0, raw spread) of the selected recipe from a fold table."""
    mean, std = table[f"cgcnn_mean{suffix}"].to_numpy(), table[f"cgcnn_std{suffix}"].to_numpy()
    if t.trees is not None:
        mean, std = mix(mean, std, table[f"trees{suffix}"].to_numpy(), TREES_WEIGHT)
    return np.maximum(mean, 0.0), std


def _domain(t: TrustSetup, train: np.ndarray, threshold: float) -> Domain:
    s = t.profile.trust
    return Domain(
        FeatureSpace.fit(t.features[train]),
        threshold,
        element_counts(t.elements[p] for p in train),
        s.min_element_count,
        float(t.truth[train].max()),
        s.near_zero_ev,
        s.distance_percentile,
        max_pbe_ev=float(t.m.pbe[train].max()),
    )


def out_of_fold_table(t: TrustSetup, folds: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, float]:
    """One row per (protocol, material, PBE input): prediction, raw spread, truth, domain
    flag, note and category out of fold; and the distance threshold (from the grouped folds)."""
    position = {m: k for k, m in enumerate(t.ids)}
    source = dict(zip(t.ids, t.m.pbe_source))
    dist: dict[tuple[str, int], np.ndarray] = {}
    for protocol, fold_list in t.protocols.items():
        for fold in fold_list:
            dist[(protocol, fold.fold)] = FeatureSpace.fit(t.features[fold.train]).distances(t.features[fold.test])
    grouped = np.concatenate([dist[(GROUPED, f.fold)] for f in t.protocols[GROUPED]])
    threshold = float(np.percentile(grouped, t.profile.trust.distance_percentile))
    rows = []
    for protocol, fold_list in t.protocols.items():
        for fold in fold_list:
            table = folds[protocol]
            table = (
                table[table["fold"] == fold.fold]
                .set_index("material_id")
                .loc[[t.ids[p] for p in fold.test]]
                .reset_index()
            )
            domain = _domain(t, fold.train, threshold)
            for pbe_input, suffix in (("given", ""), ("predicted", "_ppbe")):
                pred, spread = _combine(t, table, suffix)
                src = [source[m] if pbe_input == "given" else "predicted" for m in table["material_id"]]
                pbe = (t.m.pbe if pbe_input == "given" else t.pbe_predicted)[fold.test]
                inside, notes, cats, d = domain.assess(
                    t.features[fold.test],
                    [t.elements[p] for p in fold.test],
                    pred,
                    src,
                    distances=dist[(protocol, fold.fold)],
                    pbe_gaps=pbe,
                )
                rows.append(
                    pd.DataFrame(
                        {
                            "protocol": protocol,
                            "fold": fold.fold,
                            "pbe_input": pbe_input,
                            "material_id": table["material_id"],
                            "truth": t.truth[[position[m] for m in table["material_id"]]],
                            "anion_class": [t.classes[position[m]] for m in table["material_id"]],
                            "prediction": pred,
                            "spread": spread,
                            "distance": d,
                            "in_domain": inside,
                            "category": cats,
                            "domain_note": notes,
                        }
                    )
                )
    return pd.concat(rows, ignore_index=True), threshold


def suspicious_labels(t: TrustSetup, bounds: pd.DataFrame) -> pd.DataFrame:
    """DS2 labels that look wrong: the ETL's tests (:func:`cgcnn.data.label_audit.suspicious_labels`:
    sources disagreeing beyond its threshold, a gap far below its PBE gap) and an out-of-fold
    error (grouped folds, MP's PBE) beyond ``beyond_interval`` half-widths of the interval."""
    s = t.profile.trust
    ds2 = t.m.cv.data.ds2.set_index("material_id").loc[t.ids].reset_index()
    conflicts_csv = Path(t.m.cv.run) / "bucket" / "reports" / "conflicts.csv"
    conflicts = pd.read_csv(conflicts_csv, dtype={"material_id": str}) if conflicts_csv.is_file() else pd.DataFrame()
    etl = suspicious_labels_etl(ds2, conflicts, t.profile.etl.ds2.below_pbe_threshold).set_index("material_id")[
        "reasons"
    ]
    grouped = bounds[(bounds["protocol"] == GROUPED) & (bounds["pbe_input"] == "given")].set_index("material_id")
    half = (grouped["hi"] - grouped["lo"]) / 2
    err = grouped["prediction"] - grouped["truth"]
    rows = []
    for _, r in ds2.iterrows():
        mid = r["material_id"]
        why = etl[mid].split("; ") if mid in etl.index else []
        if mid in grouped.index and abs(err[mid]) > s.beyond_interval * half[mid]:
            why.append(
                f"out-of-fold error {err[mid]:+.2f} eV beyond {s.beyond_interval:g}x the interval's "
                f"half-width ({half[mid]:.2f})"
            )
        if why:
            pbe = pd.to_numeric(r.get("bg_pbe"), errors="coerce")
            rows.append(
                {
                    "material_id": mid,
                    "formula": r["formula"],
                    "bg_exp": float(r["bg_exp"]),
                    "bg_exp_source": r.get("bg_exp_source"),
                    "bg_pbe": float(pbe) if pd.notna(pbe) else np.nan,
                    "oof_prediction": float(grouped.loc[mid, "prediction"]) if mid in grouped.index else np.nan,
                    "n_reasons": len(why),
                    "reasons": "; ".join(why),
                }
            )
    cols = ["material_id", "formula", "bg_exp", "bg_exp_source", "bg_pbe", "oof_prediction", "n_reasons", "reasons"]
    return pd.DataFrame(rows, columns=cols).sort_values(["n_reasons", "material_id"], ascending=[False, True])


@dataclass
class TrustAnalysis:
    """Everything :func:`analyse` measured, and the calibration to ship."""

    oof: pd.DataFrame
    bounds: pd.DataFrame
    coverage: pd.DataFrame
    by_class: pd.DataFrame
    conditioning: pd.DataFrame
    separation: pd.DataFrame
    reasons: pd.DataFrame
    suspicious: pd.DataFrame
    normaliser: str
    widths: dict[str, float]
    min_class_scores: int
    trust: Trust


def analyse(t: TrustSetup, folds: dict[str, pd.DataFrame]) -> TrustAnalysis:
    """Domain flags, intervals, their cross-fitted coverage and the suspicious labels.

    The scores come from the out-of-fold rows of the ``calibrate_on`` protocols the run has (a
    setting: by default all of them, from materials like the training ones to a class the
    model never saw).  Two choices are made on the cross-fitted DS2 predictions (MP's PBE,
    every protocol scored): the normaliser whose intervals are narrower (calibrated per
    category), then whether the scores are also kept per anion class — kept when that brings
    the classes' coverage closer to the level (lower :func:`cgcnn.prediction.coverage.class_gap`)."""
    s = t.profile.trust
    level = s.level
    calibrate_on = [p for p in s.calibrate_on if p in t.protocols]  # prepare checked one is there
    oof, threshold = out_of_fold_table(t, folds)
    widths = {}
    for normaliser in NORMALISERS:  # the narrower intervals (every protocol scored, MP's PBE) win
        b = cross_fitted(oof, normaliser, level, calibrate_on=calibrate_on)
        widths[normaliser] = float((b["hi"] - b["lo"])[b["pbe_input"] == "given"].mean())
    normaliser = min(widths, key=widths.get)
    conditioning = conditioning_table(oof, normaliser, level, s.min_class_scores, calibrate_on)
    mine = conditioning[conditioning["calibrated_on"] == conditioning["calibrated_on"].iloc[0]]  # calibrate_on's
    gaps = mine.groupby("min_class_scores", sort=False)["class_gap_both"].first()
    cells = int(gaps.fillna(np.inf).idxmin())  # ties (and no measurable gap) keep the categories alone (listed first)
    bounds = cross_fitted(oof, normaliser, level, cells, calibrate_on)
    everything = np.arange(len(t.ids))
    domain = _domain(t, everything, threshold)
    domain.notes = {"feature_model": "pbe-model (M1), last convolution layer, standardised on DS2"}
    cal = oof[oof["protocol"].isin(calibrate_on)]
    intervals = Intervals.fit(
        cal["prediction"] - cal["truth"],
        cal["spread"],
        cal["category"],
        normaliser,
        classes=cal["anion_class"],
        min_class_scores=cells,
        distances=cal["distance"],
    )
    sep = separation(oof)
    cov = coverage_table(bounds, level)
    by_class = class_coverage_table(bounds, level)
    info = {
        "calibrated_on": {p: PROTOCOL_LABELS[p] for p in calibrate_on},
        "n_calibration": {c: len(v) for c, v in intervals.scores.items()},
        "coverage": cov.to_dict(orient="records"),
        "coverage_by_class": by_class.to_dict(orient="records"),
        "separation": sep.to_dict(orient="records"),
        "normaliser_widths_ev": widths,
        "categories": [IN_DOMAIN, OUT_OF_DOMAIN, PBE_PREDICTED],
        "conditioning": conditioning.to_dict(orient="records"),
        "min_class_scores": cells,
    }
    trust = Trust(intervals, domain, level, info)
    return TrustAnalysis(
        oof,
        bounds,
        cov,
        by_class,
        conditioning,
        sep,
        reasons_table(oof),
        suspicious_labels(t, bounds),
        normaliser,
        widths,
        cells,
        trust,
    )


def write(t: TrustSetup, a: TrustAnalysis) -> dict:
    """the trust record, the ``trust_*`` tables and ``models/trust/`` (the calibration to ship)."""
    paths = run_paths(t.m.cv.run)
    write_table(paths["tables"] / "trust_coverage.csv", a.coverage, index=False)
    write_table(paths["tables"] / "trust_coverage_by_class.csv", a.by_class, index=False)
    write_table(paths["tables"] / "trust_conditioning.csv", a.conditioning, index=False)
    write_table(
        paths["tables"] / "trust_domain.csv",
        pd.concat([a.separation.assign(kind="separation"), a.reasons.assign(kind="rule")]),
        index=False,
    )
    write_table(paths["tables"] / "trust_predictions.csv", a.bounds, index=False)
    write_table(paths["tables"] / "suspicious_labels.csv", a.suspicious, index=False)
    a.trust.save(paths["models"] / "trust")
    summary = {
        "selected": t.selection["selected"],
        "level": a.trust.level,
        "normaliser": a.normaliser,
        "normaliser_widths_ev": a.widths,
        "calibrated_on": list(a.trust.info["calibrated_on"]),
        "min_class_scores": a.min_class_scores,
        "conditioning": a.conditioning.to_dict(orient="records"),
        "coverage_by_class": a.by_class.to_dict(orient="records"),
        "distance_threshold": a.trust.domain.distance_threshold,
        "folds": {p: len(f) for p, f in t.protocols.items()},
        "held_out_classes": [sorted({t.classes[p] for p in f.test}) for f in t.protocols.get(CLASS_OUT, [])],
        "coverage": a.coverage.to_dict(orient="records"),
        "separation": a.separation.to_dict(orient="records"),
        "rules": a.reasons.to_dict(orient="records"),
        "suspicious_labels": {
            "n": len(a.suspicious),
            "by_reason": {
                name: int(a.suspicious["reasons"].str.contains(needle, regex=False).sum())
                for name, needle in (
                    ("sources disagree", "sources disagree"),
                    ("below PBE", "below its PBE"),
                    ("beyond the interval", "beyond"),
                )
            },
        },
        "settings": t.profile.trust.to_dict(),
    }
    write_json(paths["trust"], summary)
    return summary


def backbone_coverage(t: TrustSetup, *, echo: Callable[[str], Any] = print) -> pd.DataFrame | None:
    """The cross-fitted coverage of the best candidate on the other backbone (CHGNet), by the same
    protocols and calibration choices as the selected recipe's, when the selection is on CGCNN:
    does the interval hold whatever the backbone?  None when the run has no CHGNet candidate or
    selected one (then the main tables are its own)."""
    scores = {n: v for n, v in t.selection["cv_mae_all_ds2"].items() if candidate(n).network in BACKBONES}
    if not scores or t.selection["network"] in BACKBONES:
        return None
    name = min(scores, key=scores.get)
    base = candidate(name).base
    other = replace(
        t,
        network=t.m.build(base, echo=lambda _: None),
        trees=method_trees(name, t.profile),
        selection={**t.selection, "selected": name, "network": base},
    )
    folds = {p: fit_protocol(other, p, echo=echo) for p in other.protocols}
    return analyse(other, folds).coverage.assign(model=name)


def write_backbone_coverage(t: TrustSetup, coverage: pd.DataFrame | None) -> None:
    """``tables/trust_coverage_backbone.csv`` and ``backbone_coverage`` in the trust record."""
    if coverage is None:
        return
    paths = run_paths(t.m.cv.run)
    write_table(paths["tables"] / "trust_coverage_backbone.csv", coverage, index=False)
    record = read_json(paths["trust"]) or {}
    write_json(paths["trust"], {**record, "backbone_coverage": coverage.to_dict(orient="records")})


def run_trust(run_dir: str | os.PathLike, profile: StudyProfile, *, echo: Callable[[str], Any] = print) -> dict | None:
    """Every step of this module in order (what the notebook does cell by cell)."""
    clear(run_dir, "trust")
    t = prepare(run_dir, profile)
    if t is None:
        return None
    folds = {p: fit_protocol(t, p, echo=echo) for p in t.protocols}
    summary = write(t, analyse(t, folds))
    write_backbone_coverage(t, backbone_coverage(t, echo=echo))
    return summary
