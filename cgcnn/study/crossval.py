"""Cross-validation tables of the study: baselines on the folds, within-fold choices, the CV table.

Every model and baseline is scored on the same out-of-fold predictions of DS2.  The table
is computed on the materials that **every** model predicts (DS2 materials without a PBE gap
have no raw / linear PBE prediction, so they are left out of every row, keeping the rows
paired); ``n`` says how many.  Per model: MAE / RMSE / R² as mean ± std over the repeats,
a bootstrap 95 % interval of the MAE (materials resampled; each material's absolute error
averaged over repeats), and paired differences against the best baseline and (for M2)
against the control.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BASELINES = {
    "pbe": "PBE (raw)",
    "pbe_linear": "PBE, linear correction",
    "gbm_composition": "boosted trees, Magpie composition",
    "gbm_composition_pbe": "boosted trees, Magpie composition + PBE",
}


def ds2_frame(data, ids: list[str]) -> pd.DataFrame:
    """DS2 rows in ``ids`` order: material_id, formula, group (reduced formula), bg_exp, bg_pbe."""
    from pymatgen.core import Composition

    ds2 = data.ds2.set_index("material_id").loc[ids]
    frame = pd.DataFrame({
        "material_id": ids,
        "formula": ds2["formula"].to_numpy(),
        "bg_exp": ds2["bg_exp"].astype(float).to_numpy(),
        "bg_pbe": pd.to_numeric(ds2["bg_pbe"], errors="coerce").to_numpy(),
    })
    frame["group"] = [Composition(f).reduced_formula for f in frame["formula"]]
    return frame.set_index("material_id", drop=False)


def within_fold_choices(candidates: pd.DataFrame, candidate_preds: pd.DataFrame, policies: list[str]) -> pd.DataFrame:
    """Out-of-fold predictions of each model with its learning rate chosen *inside* each fold
    (lowest inner validation MAE), and of ``m2``: in each fold the policy whose model has the
    lowest inner validation MAE.  Long table model, repeat, fold, material_id, prediction."""
    best = candidates.loc[candidates.groupby(["repeat", "fold", "model"])["inner_val_mae"].idxmin()]
    keys = best[["model", "lr", "repeat", "fold"]]
    chosen = candidate_preds.merge(keys, on=["model", "lr", "repeat", "fold"])
    adapted = best[best["model"].isin([f"m2_{p}" for p in policies])]
    m2 = adapted.loc[adapted.groupby(["repeat", "fold"])["inner_val_mae"].idxmin(), ["model", "lr", "repeat", "fold"]]
    m2_preds = candidate_preds.merge(m2, on=["model", "lr", "repeat", "fold"]).assign(model="m2")
    cols = ["model", "repeat", "fold", "material_id", "prediction"]
    return pd.concat([m2_preds[cols], chosen[cols]], ignore_index=True)


def run_baselines(frame: pd.DataFrame, folds, cv) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Out-of-fold predictions of the four baselines, and the boosted trees' chosen
    hyper-parameters per fold."""
    from cgcnn.baselines import BoostedTrees, LinearPBE, RawPBE, magpie_features
    from cgcnn.cv import out_of_fold

    y, pbe, groups = frame["bg_exp"].to_numpy(), frame["bg_pbe"].to_numpy(), list(frame["group"])
    magpie = magpie_features(list(frame["formula"]))
    gbm = BoostedTrees(magpie, y, groups, grid=dict(cv.gbm_grid))
    gbm_pbe = BoostedTrees(np.column_stack([magpie, pbe]), y, groups, grid=dict(cv.gbm_grid))
    methods = {"pbe": RawPBE(pbe), "pbe_linear": LinearPBE(pbe, y), "gbm_composition": gbm, "gbm_composition_pbe": gbm_pbe}
    fold_of = {(f.repeat, int(p)): f.fold for f in folds for p in f.test}
    position = {m: k for k, m in enumerate(frame["material_id"])}
    parts = []
    for name, method in methods.items():
        oof = out_of_fold(method, folds, list(frame["material_id"]), name=name)
        oof["fold"] = [fold_of[(r, position[m])] for r, m in zip(oof["repeat"], oof["material_id"])]
        parts.append(oof)
    chosen = pd.concat([pd.DataFrame(m.chosen).assign(model=n) for n, m in (("gbm_composition", gbm), ("gbm_composition_pbe", gbm_pbe))])
    return pd.concat(parts, ignore_index=True)[["model", "repeat", "fold", "material_id", "prediction"]], chosen


def common_materials(predictions: pd.DataFrame) -> list[str]:
    """Materials that every model predicts (a finite prediction in every repeat)."""
    ok = predictions.assign(ok=np.isfinite(predictions["prediction"])).groupby(["material_id"])["ok"].all()
    counts = predictions.groupby("material_id")["model"].nunique()
    n_models = predictions["model"].nunique()
    return sorted(m for m in ok.index if ok[m] and counts[m] == n_models)


def _abs_error_by_material(predictions: pd.DataFrame, truth: pd.Series) -> pd.DataFrame:
    """material × model table of absolute errors averaged over repeats."""
    err = (predictions["prediction"] - truth.loc[predictions["material_id"]].to_numpy()).abs()
    return predictions.assign(err=err.to_numpy()).groupby(["material_id", "model"])["err"].mean().unstack("model")


def cv_summary(predictions: pd.DataFrame, truth: pd.Series, *, seed: int = 0) -> pd.DataFrame:
    """The CV table (see the module docstring): index model, columns mae, mae_std, rmse,
    rmse_std, r2, r2_std, n, repeats, mae_lo, mae_hi, diff_vs_best_baseline (+ lo, hi),
    best_baseline, and for ``m2`` diff_vs_control (+ lo, hi); sorted by MAE."""
    from cgcnn.metrics import regression_metrics
    from cgcnn.stats import bootstrap_mean

    keep = set(common_materials(predictions))
    preds = predictions[predictions["material_id"].isin(keep)]
    rows = {}
    for model, grp in preds.groupby("model", sort=False):
        per_repeat = pd.DataFrame([regression_metrics(truth.loc[g["material_id"]].to_numpy(), g["prediction"].to_numpy())
                                   for _, g in grp.groupby("repeat")])
        row = {k: per_repeat[k].mean() for k in ("mae", "rmse", "r2")}
        row.update({f"{k}_std": per_repeat[k].std(ddof=1) if len(per_repeat) > 1 else np.nan for k in ("mae", "rmse", "r2")})
        row.update(n=int(per_repeat["n"].max()), repeats=len(per_repeat))
        rows[model] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    errors = _abs_error_by_material(preds, truth)
    for model in table.index:
        ci = bootstrap_mean(errors[model], seed=seed)
        table.loc[model, ["mae_lo", "mae_hi"]] = ci.lo, ci.hi
    baselines = [m for m in BASELINES if m in table.index]
    if baselines:
        best = str(table.loc[baselines, "mae"].idxmin())
        table["best_baseline"] = best
        for model in table.index:
            d = bootstrap_mean(errors[model] - errors[best], seed=seed)
            table.loc[model, ["diff_vs_best_baseline", "diff_vs_best_baseline_lo", "diff_vs_best_baseline_hi"]] = d.value, d.lo, d.hi
    if "m2" in table.index and "control" in table.index:
        d = bootstrap_mean(errors["m2"] - errors["control"], seed=seed)
        table.loc["m2", ["diff_vs_control", "diff_vs_control_lo", "diff_vs_control_hi"]] = d.value, d.lo, d.hi
    table.index.name = "model"
    return table.sort_values("mae")


def display_cv_table(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The CV table for reading: MAE ± std over repeats with its interval, RMSE, R², n,
    and the paired differences."""
    from cgcnn.study.evaluation import MODEL_LABELS

    pm = lambda m, s: f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if pd.notna(s) else "")  # noqa: E731
    out = pd.DataFrame(index=table.index)
    out["model"] = [MODEL_LABELS.get(m, m) for m in table.index]
    out["MAE"] = [pm(m, s) for m, s in zip(table["mae"], table["mae_std"])]
    out["MAE 95% CI"] = [f"[{lo:.{digits}f}, {hi:.{digits}f}]" for lo, hi in zip(table["mae_lo"], table["mae_hi"])]
    out["RMSE"] = [pm(m, s) for m, s in zip(table["rmse"], table["rmse_std"])]
    out["R²"] = [pm(m, s) for m, s in zip(table["r2"], table["r2_std"])]
    out["n"] = table["n"]
    return add_differences(out, table, digits)


def add_differences(out: pd.DataFrame, table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Add the paired differences of ``table`` to the display table ``out`` as "+d [lo, hi]"."""
    for key, name in (("diff_vs_best_baseline", "Δ vs best baseline"), ("diff_vs_control", "Δ vs control")):
        if key in table:
            out[name] = [f"{d:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]" if pd.notna(d) else ""
                         for d, lo, hi in zip(table[key], table[f"{key}_lo"], table[f"{key}_hi"])]
    return out


def load_cv_table(run_dir) -> pd.DataFrame:
    """The CV table a run wrote (``tables/cv_metrics.csv``; the methods stage adds its rows)."""
    from cgcnn.study.rundir import run_paths

    return pd.read_csv(run_paths(run_dir)["tables"] / "cv_metrics.csv", index_col="model")


def ds2_cv_setup(run, profile):
    """What every cross-validation stage on DS2 starts from, in one place: the run's data,
    M1, the DS2 dataset, its frame (groups = reduced formulas, truth = experimental gaps)
    and the grouped folds of ``profile.cv``.  Returns a ``SimpleNamespace``."""
    from types import SimpleNamespace

    from cgcnn.checkpoint import load_checkpoint
    from cgcnn.cv import grouped_folds
    from cgcnn.study.base import base_checkpoint
    from cgcnn.study.data import load_data

    profile.apply_threads()
    data = load_data(run)
    base = load_checkpoint(base_checkpoint(run))
    dataset = data.dataset("ds2", "bg_exp", base.features)
    frame = ds2_frame(data, dataset.ids)
    groups, truth = list(frame["group"]), frame["bg_exp"]
    cv = profile.cv
    folds = grouped_folds(groups, truth.to_numpy(), k=cv.folds, repeats=cv.repeats, seed=cv.seed)
    return SimpleNamespace(data=data, base=base, dataset=dataset, frame=frame, groups=groups, truth=truth, folds=folds)
