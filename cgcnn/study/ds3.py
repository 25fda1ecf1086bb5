"""Step 02-ml-dev/04, second half — DS3 evaluation: the models the cross-validation chose, every baseline, with intervals.

DS3 is touched once, here, and only after the CV table exists (the CV record; the
evaluation refuses to run without it).  Scored: raw PBE, PBE linearly corrected on all of
DS2, the two boosted-tree baselines fitted on all of DS2 (hyper-parameters by inner CV),
HSE06, G0W0, M1, every M2 variant and the control (final models, one per seed; a model's
DS3 prediction is the mean over its seeds), and ``m2`` (the policy the CV selected).

Per model: MAE with a bootstrap 95 % interval (materials resampled), RMSE, R², max error,
``n``; for seeded models also the mean ± std of the per-seed MAE; paired differences (with
intervals) against the baseline with the best CV MAE and, for M2, against the control.
Errors by anion class and by gap range, and the table without the DS3 materials that have a
DS2 polymorph.  Writes the DS3 record (``run_paths(run)["metrics"]``) and ``<run>/tables/ds3_*.csv``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cgcnn.evaluation.baselines import magpie_features
from cgcnn.evaluation.bootstrap import group_difference_ci, mae_ci, paired_difference_ci
from cgcnn.evaluation.metrics import regression_metrics
from cgcnn.fileio import write_json
from cgcnn.prediction.ensemble import coverage, ensemble_predict, mix
from cgcnn.prediction.inference import predict
from cgcnn.prediction.trees import load_tree_member
from cgcnn.prediction.trust import add_trust_columns, load_trust
from cgcnn.study.base_model import base_checkpoint
from cgcnn.study.candidates import pbe_inputs
from cgcnn.study.cross_validation import CONTROL, ds2_frame, materials_frame, model_key
from cgcnn.study.datasets import StudyData, load_data
from cgcnn.study.display import label, model_labels
from cgcnn.study.engine import fit_final
from cgcnn.study.final_models import AdaptationResult, load_adaptation
from cgcnn.study.fits import FitCache
from cgcnn.study.methods import load_methods
from cgcnn.study.methods import prepare as methods_prepare
from cgcnn.study.profiles import StudyProfile
from cgcnn.study.recipes import BACKBONES, Materials, baselines, registered
from cgcnn.study.rundir import require_cv, run_paths, write_table
from cgcnn.training.checkpoint import load_checkpoint

GAP_RANGES = (0.0, 1.0, 2.0, 3.0, np.inf)
_PREDICTION_COLUMNS = ("material_id", "formula", "bg_exp", "bg_pbe", "anion_class", "crystal_system")


@dataclass
class Ds3Evaluation:
    """DS3 scores of every model and baseline.

    Attributes:
        summary: index model; label, mae, mae_lo, mae_hi, rmse, r2, max_error, n, seeds,
            seed_mae, seed_mae_std, diff_vs_best_baseline (+ _lo, _hi), diff_vs_control (+ _lo, _hi).
        summary_no_polymorphs: the same without the DS3 materials that have a DS2 polymorph.
        excluded: those DS3 ids.
        by_class / by_gap: MAE per anion class / experimental-gap range (rows) and model (columns).
        predictions: DS3 rows with ``pred_<model>`` (mean over seeds).
        per_seed_predictions: long table material_id, model, seed, prediction.
    """

    summary: pd.DataFrame
    summary_no_polymorphs: pd.DataFrame
    excluded: list[str]
    by_class: pd.DataFrame
    by_gap: pd.DataFrame
    predictions: pd.DataFrame
    per_seed_predictions: pd.DataFrame
    best_baseline: str
    metrics_path: Path


def _long(ids: list[str], model: str, seed, values) -> pd.DataFrame:
    return pd.DataFrame({"material_id": ids, "model": model, "seed": seed, "prediction": np.asarray(values, float)})


def _baseline_predictions(
    data: StudyData, ds2_ids: list[str], ids: list[str], profile: StudyProfile
) -> list[pd.DataFrame]:
    """Every registered baseline fitted on all of DS2 by the study's fold loop
    (:func:`cgcnn.study.engine.fit_final`, seed 0), then HSE06 and G0W0 as the DS3 table gives them."""
    ds3 = data.ds3.set_index("material_id", drop=False)
    train, test = Materials(ds2_frame(data, ds2_ids)), Materials(materials_frame(data.ds3, ids))
    parts = []
    for recipe in baselines(profile):
        fitted = fit_final(recipe, train, seed=0, val_fraction=profile.cv.inner_val_fraction)
        parts.append(_long(ids, recipe.name, np.nan, fitted.predict(test).mean))
    for col, name in (("bg_hse06", "hse06"), ("bg_g0w0", "g0w0")):
        if col in ds3.columns:
            parts.append(_long(ids, name, np.nan, pd.to_numeric(ds3.loc[ids, col], errors="coerce")))
    return parts


def _model_predictions(profile: StudyProfile, adaptation: AdaptationResult, base, ds3_set) -> list[pd.DataFrame]:
    """M1, every final adapted model and the control (per seed); the selected policy also as ``m2``."""
    ids = list(ds3_set.ids)
    parts = [_long(ids, "m1", np.nan, predict(base, ds3_set, device=profile.device))]
    selected = model_key(adaptation.selected_policy)
    for model in [model_key(p) for p in profile.adapt.policies] + [CONTROL]:
        for seed, ckpt in sorted(adaptation.checkpoints(model).items()):
            pred = predict(load_checkpoint(ckpt), ds3_set, device=profile.device)
            parts.append(_long(ids, model, seed, pred))
            if model == selected:
                parts.append(_long(ids, "m2", seed, pred))
    return parts


def _backbone_candidates(run: Path, profile: StudyProfile, data: StudyData, base, ds3_set) -> list[pd.DataFrame]:
    """Every backbone candidate the methods step compared (CHGNet; without trees), fitted on all
    of DS2 and scored on DS3 once (``ens_<name>``), the PBE gaps as the ensemble reads them."""
    methods = load_methods(run) or {}
    names = [c for c in methods.get("candidates", []) if c in BACKBONES]
    if not names:
        return []
    m = methods_prepare(run, profile)
    ids = list(ds3_set.ids)
    pbe, _ = pbe_inputs(data.ds3, ids, base, ds3_set, profile.device)
    test = Materials(materials_frame(data.ds3, ids), pbe_inputs=pbe)
    parts = []
    for name in names:
        fitted = fit_final(
            m.build(name, echo=lambda _: None),
            m.materials,
            seed=profile.cv.seed,
            val_fraction=profile.cv.inner_val_fraction,
        )
        parts.append(_long(ids, f"ens_{name}", np.nan, fitted.predict(test).mean))
    return parts


def _ensemble_predictions(
    run: Path, profile: StudyProfile, base, data: StudyData, ds3_set
) -> tuple[list[pd.DataFrame], pd.DataFrame | None]:
    """The selected ensemble (from the methods record), called as a user would: structures, the
    known PBE gaps of the DS3 table, M1 for any missing one, the intervals and domain flag of
    the trust step (``models/trust``) when it ran.  (rows, its prediction table by material)."""
    methods = load_methods(run)
    if not methods or not methods.get("final"):
        return [], None
    if methods["final"].get("backbone"):
        table = _backbone_table(run, profile, base, data, ds3_set, methods)
        return [_long(list(table["material_id"]), "ensemble", np.nan, table["prediction_ev"])], table.set_index(
            "material_id"
        )
    members = [load_checkpoint(run / c) for c in methods["final"]["checkpoints"]]
    ds3 = data.ds3.set_index("material_id")
    pbe = pd.to_numeric(ds3["bg_pbe"], errors="coerce").dropna().to_dict()
    trees, weight = None, 0.5
    if methods["final"].get("trees"):
        trees, weight = load_tree_member(run, methods["final"]["trees"]), methods["final"]["trees"]["weight"]
    table = ensemble_predict(
        members,
        ds3_set.subset_positions(np.arange(len(ds3_set))),
        pbe=pbe,
        pbe_model=base,
        scale=methods["calibration"]["scale"],
        trees=trees,
        trees_weight=weight,
        trust=load_trust(run_paths(run)["models"] / "trust"),
        device=profile.device,
    )
    return [_long(list(table["material_id"]), "ensemble", np.nan, table["prediction_ev"])], table.set_index(
        "material_id"
    )


def _backbone_table(run: Path, profile: StudyProfile, base, data: StudyData, ds3_set, methods: dict) -> pd.DataFrame:
    """The selected backbone ensemble (:mod:`cgcnn.prediction.backbone`) on DS3, as a user would
    call it: the known PBE gaps, M1's prediction for a missing one, the trees when the selection
    averages with them, the calibrated spread, and the trust step's intervals and domain flag."""
    from cgcnn.backbones.chgnet import FeatureStore
    from cgcnn.prediction.backbone import BackboneModel

    model = BackboneModel.load(run / methods["final"]["backbone"])
    ids = list(ds3_set.ids)
    store = FeatureStore(FitCache.of_run(run).root / "features", model.manifest["version"])
    records = store.records(data.structures("ds3", ids))
    pbe, source = pbe_inputs(data.ds3, ids, base, ds3_set, profile.device)
    magpie = magpie_features(list(data.ds3.set_index("material_id").loc[ids, "formula"]))
    has = np.array([m in records for m in ids])
    mean, std = np.full(len(ids), np.nan), np.full(len(ids), np.nan)
    if has.any():
        pos = np.flatnonzero(has)
        mean[pos], std[pos] = model.predict([records[ids[p]] for p in pos], magpie[pos], pbe[pos])
    trees = methods["final"].get("trees")
    if trees:
        member = load_tree_member(run, trees)
        mean, std = mix(mean, std, member.predict(magpie, pbe), trees["weight"])
    table = pd.DataFrame(
        {
            "material_id": ids,
            "prediction_ev": np.maximum(mean, 0.0),
            "prediction_std_ev": methods["calibration"]["scale"] * std,
            "n_members": len(model.manifest["files"]) + bool(trees),
            "pbe_gap_ev": pbe,
            "pbe_gap_source": source,
        }
    )
    trust = load_trust(run_paths(run)["models"] / "trust")
    if trust is not None:
        add_trust_columns(table, std, ds3_set, trust, base, device=profile.device)
    return table


def score(per_seed_pred: pd.DataFrame, truth: pd.Series, ids: list[str], best_baseline: str) -> pd.DataFrame:
    """Per model (mean prediction over seeds): MAE with interval, RMSE, R², max error, n,
    per-seed MAE mean ± std, and paired differences vs ``best_baseline`` and (M2) the control."""
    preds = per_seed_pred[per_seed_pred["material_id"].isin(set(ids))]
    mean = preds.groupby(["material_id", "model"], sort=False)["prediction"].mean().unstack("model").loc[ids]
    y = truth.loc[ids].to_numpy()
    rows = {}
    for model in dict.fromkeys(preds["model"]):
        p = mean[model].to_numpy()
        ci = mae_ci(y, p)
        seeds = preds[preds["model"] == model].groupby("seed", dropna=False)
        seed_mae = [
            regression_metrics(truth.loc[g["material_id"]].to_numpy(), g["prediction"].to_numpy())["mae"]
            for _, g in seeds
        ]
        row = {
            "label": label(model),
            **regression_metrics(y, p),
            "mae_lo": ci.lo,
            "mae_hi": ci.hi,
            "seeds": len(seed_mae),
            "seed_mae": float(np.mean(seed_mae)),
            "seed_mae_std": float(np.std(seed_mae, ddof=1)) if len(seed_mae) > 1 else np.nan,
        }
        if best_baseline in mean:
            d = paired_difference_ci(y, p, mean[best_baseline].to_numpy())
            row.update(diff_vs_best_baseline=d.value, diff_vs_best_baseline_lo=d.lo, diff_vs_best_baseline_hi=d.hi)
        if model == "m2" and CONTROL in mean:
            d = paired_difference_ci(y, p, mean[CONTROL].to_numpy())
            row.update(diff_vs_control=d.value, diff_vs_control_lo=d.lo, diff_vs_control_hi=d.hi)
        rows[model] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "model"
    return table


def error_by(predictions: pd.DataFrame, column: str, models: list[str]) -> pd.DataFrame:
    """MAE of each model (columns) per value of ``column`` (rows), with ``n``."""
    err = {m: (predictions[f"pred_{m}"] - predictions["bg_exp"]).abs() for m in models}
    frame = pd.DataFrame(err).assign(group=predictions[column].astype(str))
    table = frame.groupby("group").mean()
    table.insert(0, "n", frame.groupby("group").size())
    table.index.name = column
    return table


def _write(paths: dict[str, Path], ev: Ds3Evaluation, adaptation: AdaptationResult, profile: StudyProfile) -> None:
    write_table(paths["tables"] / "ds3_metrics.csv", ev.summary)
    write_table(paths["tables"] / "ds3_metrics_without_ds2_polymorphs.csv", ev.summary_no_polymorphs)
    write_table(paths["tables"] / "ds3_errors_by_class.csv", ev.by_class)
    write_table(paths["tables"] / "ds3_errors_by_gap.csv", ev.by_gap)
    write_table(paths["tables"] / "ds3_predictions.csv", ev.predictions, index=False)
    write_table(paths["tables"] / "ds3_predictions_per_seed.csv", ev.per_seed_predictions, index=False)

    def block(t):
        return {str(m): {k: v for k, v in row.items()} for m, row in t.iterrows()}

    write_json(
        ev.metrics_path,
        {
            "models": block(ev.summary),
            "ds3_without_ds2_polymorphs": {"excluded": ev.excluded, "models": block(ev.summary_no_polymorphs)},
            "selected_policy": adaptation.selected_policy,
            "learning_rates": {k: float(v) for k, v in adaptation.choices["lr"].items()},
            "best_baseline_by_cv": ev.best_baseline,
            "seeds": adaptation.seeds,
            "profile": profile.name,
            "n_ds3": len(ev.predictions),
            **_ensemble_coverage(ev.predictions),
            "note": "mae: of the mean prediction over seeds, with a bootstrap 95% interval [mae_lo, mae_hi]; "
            "seed_mae(_std): mean (std) of the per-seed MAE; diff_*: paired MAE difference (negative = better)",
        },
    )


def _ensemble_coverage(predictions: pd.DataFrame) -> dict:
    """Fraction of DS3 materials within ±1 / ±2 calibrated std of the ensemble."""
    if "std_ensemble" not in predictions:
        return {}
    err = (predictions["pred_ensemble"] - predictions["bg_exp"]).to_numpy()
    std = predictions["std_ensemble"].to_numpy()
    out = {
        "ensemble_ds3_coverage": {
            "within_1sd": coverage(err, std, 1),
            "within_2sd": coverage(err, std, 2),
            "mean_std_ev": float(std.mean()),
        }
    }
    if "lo_ensemble" in predictions:
        out["ensemble_ds3_trust"] = ds3_trust(predictions)
    return out


def ds3_trust(predictions: pd.DataFrame) -> dict:
    """Coverage and mean width of the ensemble's interval on DS3, and its MAE in vs out of
    domain (bootstrap 95 % intervals; the difference out − in resampled over materials)."""
    y = predictions["bg_exp"].to_numpy(np.float64)
    lo, hi = predictions["lo_ensemble"].to_numpy(np.float64), predictions["hi_ensemble"].to_numpy(np.float64)
    inside = predictions["in_domain_ensemble"].to_numpy(bool)
    err = np.abs(predictions["pred_ensemble"].to_numpy(np.float64) - y)
    covered = (y >= lo) & (y <= hi)
    diff, diff_lo, diff_hi = group_difference_ci(err, inside)

    def part(mask):
        return {
            "n": int(mask.sum()),
            "coverage": float(covered[mask].mean()) if mask.any() else None,
            "mean_width_ev": float((hi - lo)[mask].mean()) if mask.any() else None,
            "mae": float(err[mask].mean()) if mask.any() else None,
        }

    return {
        "all": part(np.ones_like(inside)),
        "in_domain": part(inside),
        "out_of_domain": part(~inside),
        **{
            k: (None if np.isnan(v) else float(v))
            for k, v in (("diff_out_minus_in", diff), ("diff_lo", diff_lo), ("diff_hi", diff_hi))
        },
    }


def evaluate_ds3(
    run_dir: str | os.PathLike, profile: StudyProfile, adaptation: AdaptationResult | None = None
) -> Ds3Evaluation:
    """Score every model and baseline on DS3 (see the module docstring); refuses to run before
    the CV table exists."""
    cv = require_cv(run_dir)
    profile.apply_threads()
    run = Path(run_dir)
    paths, data = run_paths(run), load_data(run)
    adaptation = adaptation or load_adaptation(run)
    base = load_checkpoint(base_checkpoint(run))
    ds3_set = data.dataset("ds3", "bg_exp", base.features)
    ds2_ids = list(data.dataset("ds2", "bg_exp", base.features).ids)
    ids = list(ds3_set.ids)
    ds3 = data.ds3.set_index("material_id", drop=False)
    truth = ds3.loc[ids, "bg_exp"].astype(float)
    parts = _baseline_predictions(data, ds2_ids, ids, profile) + _model_predictions(profile, adaptation, base, ds3_set)
    ensemble_parts, ensemble_table = _ensemble_predictions(run, profile, base, data, ds3_set)
    parts += ensemble_parts + _backbone_candidates(run, profile, data, base, ds3_set)
    per_seed_pred = pd.concat(parts, ignore_index=True)
    cv_metrics = cv.get("cv_metrics", {})
    best = min((m for m in registered() if m in cv_metrics), key=lambda m: cv_metrics[m]["mae"], default="pbe_linear")

    order = [m for m in model_labels() if m in set(per_seed_pred["model"])]
    summary = score(per_seed_pred, truth, ids, best).loc[order]
    excluded = [m for m in data.ds3_with_ds2_polymorphs() if m in set(ids)]
    kept = [m for m in ids if m not in set(excluded)]
    summary_np = score(per_seed_pred, truth, kept, best).loc[order]
    mean = per_seed_pred.groupby(["material_id", "model"], sort=False)["prediction"].mean().unstack("model")
    predictions = ds3.loc[ids, [c for c in _PREDICTION_COLUMNS if c in ds3.columns]].copy()
    for model in order:
        predictions[f"pred_{model}"] = mean.loc[ids, model].to_numpy()
    if ensemble_table is not None:
        predictions["std_ensemble"] = ensemble_table.loc[ids, "prediction_std_ev"].to_numpy()
        for col, name in (
            ("prediction_lo_ev", "lo"),
            ("prediction_hi_ev", "hi"),
            ("in_domain", "in_domain"),
            ("domain_note", "domain_note"),
        ):
            if col in ensemble_table:
                predictions[f"{name}_ensemble"] = ensemble_table.loc[ids, col].to_numpy()
    predictions = predictions.reset_index(drop=True)
    predictions["gap_range"] = pd.cut(predictions["bg_exp"], GAP_RANGES, right=False).astype(str)
    shown = [m for m in ("ensemble", "m2", CONTROL, best, "hse06", "g0w0") if m in order]
    evaluation = Ds3Evaluation(
        summary,
        summary_np,
        excluded,
        error_by(predictions, "anion_class", shown),
        error_by(predictions, "gap_range", shown),
        predictions,
        per_seed_pred,
        best,
        paths["metrics"],
    )
    _write(paths, evaluation, adaptation, profile)
    return evaluation


def parity_columns(evaluation: Ds3Evaluation) -> dict[str, str]:
    """Panel title -> prediction column of ``evaluation.predictions`` (for parity plots)."""
    return {label(c[5:]): c for c in evaluation.predictions.columns if c.startswith("pred_")}
