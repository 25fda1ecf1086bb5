"""DS3 evaluation: every model and baseline scored on the validation set, and display helpers.

Scored: raw PBE, linear-corrected PBE (fitted per seed on that seed's DS2 adaptation
*training* split), HSE06, G0W0, M1, every M2 variant and the control; models with seeds are
reported as mean ± std over seeds.  :func:`evaluate_ds3` writes ``<run>/metrics.json`` and
``<run>/tables/ds3_*.csv``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cgcnn.fileio import write_json
from cgcnn.study.adaptation import CONTROL, AdaptationResult, load_adaptation, model_key
from cgcnn.study.base import base_checkpoint, metrics_row
from cgcnn.study.data import StudyData, load_data
from cgcnn.study.profiles import StudyProfile
from cgcnn.study.rundir import run_paths, write_table

MODEL_LABELS = {
    "pbe": "PBE (raw)",
    "pbe_linear": "PBE, linear correction",
    "hse06": "HSE06",
    "g0w0": "G0W0",
    "m1": "M1 (base, DS1)",
    "m2": "M2 (selected policy)",
    "m2_none": "M2, nothing frozen",
    "m2_embedding": "M2, embedding frozen",
    "m2_convs": "M2, embedding + convs frozen",
    "m2_head": "M2, all but output frozen",
    "control": "control (DS2 from scratch)",
}
_METRIC_KEYS = ("mae", "rmse", "r2", "max_error", "n")
_PREDICTION_COLUMNS = ("material_id", "formula", "bg_exp", "bg_pbe", "anion_class", "crystal_system")


@dataclass
class Ds3Evaluation:
    """DS3 scores of every model and baseline.

    Attributes:
        per_seed: long table model, seed, mae, rmse, r2, max_error, n.
        summary: index model; label, mae, mae_std, rmse, rmse_std, r2, r2_std, max_error, n, seeds.
        summary_no_polymorphs: the same without the DS3 materials that have a DS2 polymorph.
        excluded: those DS3 ids.
        predictions: DS3 rows with one column per model (mean prediction over seeds).
        per_seed_predictions: long table material_id, model, seed, prediction.
        metrics_path: where ``metrics.json`` was written.
    """

    per_seed: pd.DataFrame
    summary: pd.DataFrame
    summary_no_polymorphs: pd.DataFrame
    excluded: list[str]
    predictions: pd.DataFrame
    per_seed_predictions: pd.DataFrame
    metrics_path: Path


def _summarise(per_seed_pred: pd.DataFrame, truth: pd.Series, ids: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-seed metrics and their mean ± std over seeds, on the DS3 rows ``ids``."""
    rows = []
    wanted = set(ids)
    for (model, seed), grp in per_seed_pred.groupby(["model", "seed"], sort=False, dropna=False):
        grp = grp[grp["material_id"].isin(wanted)]
        rows.append({"model": model, "seed": seed, **metrics_row(truth.loc[grp["material_id"]].to_numpy(), grp["prediction"])})
    per_seed = pd.DataFrame(rows)
    out = []
    for model, grp in per_seed.groupby("model", sort=False):
        row = {"model": model, "label": MODEL_LABELS.get(model, model)}
        for key in ("mae", "rmse", "r2", "max_error"):
            row[key] = grp[key].mean()
            row[f"{key}_std"] = grp[key].std(ddof=1) if len(grp) > 1 else np.nan
        row["n"] = int(grp["n"].max())
        row["seeds"] = int(grp["seed"].nunique()) if grp["seed"].notna().all() else 1
        out.append(row)
    summary = pd.DataFrame(out).set_index("model")
    return per_seed, summary


def _metrics_json_block(summary: pd.DataFrame) -> dict:
    models = {}
    for model, row in summary.iterrows():
        entry = {k: (int(row[k]) if k == "n" else float(row[k])) for k in _METRIC_KEYS}
        entry["label"] = row["label"]
        entry["seeds"] = int(row["seeds"])
        if row["seeds"] > 1:
            for k in ("mae", "rmse", "r2"):
                entry[f"{k}_std"] = float(row[f"{k}_std"])
        models[str(model)] = entry
    return models


def _long(ids: list[str], model: str, seed, values) -> pd.DataFrame:
    """Predictions of one model (and seed) for ``ids``, as rows material_id, model, seed, prediction."""
    return pd.DataFrame({"material_id": ids, "model": model, "seed": seed, "prediction": np.asarray(values, float)})


def _baseline_predictions(data: StudyData, adaptation: AdaptationResult, ids: list[str]) -> list[pd.DataFrame]:
    """Raw PBE, linear-corrected PBE (per seed, fitted on its DS2 training split), HSE06, G0W0."""
    from cgcnn.metrics import LinearCorrection

    ds3 = data.ds3.set_index("material_id", drop=False)
    ds2 = data.ds2.set_index("material_id")
    pbe = ds3.loc[ids, "bg_pbe"].astype(float)
    parts = [_long(ids, "pbe", np.nan, pbe)]
    splits = adaptation.splits
    for seed in adaptation.seeds:
        train_ids = splits.loc[(splits["seed"] == seed) & (splits["split"] == "train"), "material_id"]
        corr = LinearCorrection.fit(ds2.loc[train_ids, "bg_pbe"].astype(float), ds2.loc[train_ids, "bg_exp"].astype(float))
        parts.append(_long(ids, "pbe_linear", seed, corr.predict(pbe)))
    for col, name in (("bg_hse06", "hse06"), ("bg_g0w0", "g0w0")):
        if col in ds3.columns:
            parts.append(_long(ids, name, np.nan, pd.to_numeric(ds3.loc[ids, col], errors="coerce")))
    return parts


def _model_predictions(profile: StudyProfile, adaptation: AdaptationResult, base, ds3_set) -> list[pd.DataFrame]:
    """M1, every adapted model and the control (per seed); the selected policy also as ``m2``."""
    from cgcnn.checkpoint import load_checkpoint
    from cgcnn.inference import predict

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


def _mean_predictions(ds3: pd.DataFrame, ids: list[str], per_seed_pred: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """DS3 rows (id, formula, gaps, classes) with ``pred_<model>``: the mean prediction over seeds."""
    mean_pred = per_seed_pred.groupby(["material_id", "model"], sort=False)["prediction"].mean().unstack("model")
    predictions = ds3.loc[ids, [c for c in _PREDICTION_COLUMNS if c in ds3.columns]].copy()
    for model in order:
        predictions[f"pred_{model}"] = mean_pred.loc[ids, model].to_numpy()
    return predictions.reset_index(drop=True)


def _write_evaluation(paths: dict[str, Path], ev: Ds3Evaluation, adaptation: AdaptationResult,
                      profile: StudyProfile) -> None:
    """``tables/ds3_*.csv`` and ``metrics.json`` (atomically)."""
    write_table(paths["tables"] / "ds3_metrics.csv", ev.summary)
    write_table(paths["tables"] / "ds3_metrics_without_ds2_polymorphs.csv", ev.summary_no_polymorphs)
    write_table(paths["tables"] / "ds3_metrics_per_seed.csv", ev.per_seed, index=False)
    write_table(paths["tables"] / "ds3_predictions.csv", ev.predictions, index=False)
    write_table(paths["tables"] / "ds3_predictions_per_seed.csv", ev.per_seed_predictions, index=False)
    write_json(ev.metrics_path, {
        "models": _metrics_json_block(ev.summary),
        "ds3_without_ds2_polymorphs": {"excluded": ev.excluded, "models": _metrics_json_block(ev.summary_no_polymorphs)},
        "selected_policy": adaptation.selected_policy,
        "learning_rates": {k: float(v) for k, v in adaptation.choices["lr"].items()},
        "seeds": adaptation.seeds,
        "profile": profile.name,
        "n_ds3": len(ev.predictions),
        "note": "mae/rmse/r2: mean over seeds where a model has seeds (then *_std is the sample std over seeds)",
    })


def evaluate_ds3(run_dir: str | os.PathLike, profile: StudyProfile, adaptation: AdaptationResult | None = None) -> Ds3Evaluation:
    """Score raw and linear-corrected PBE, HSE06, G0W0, M1, every M2 variant and the control on DS3.

    The linear correction is fitted per seed on that seed's DS2 adaptation *training* split.
    Writes ``metrics.json`` (atomically) and ``tables/ds3_*.csv``.
    """
    from cgcnn.checkpoint import load_checkpoint

    profile.apply_threads()

    run = Path(run_dir)
    paths = run_paths(run)
    data = load_data(run)
    adaptation = adaptation or load_adaptation(run)
    base = load_checkpoint(base_checkpoint(run))
    ds3_set = data.dataset("ds3", "bg_exp", base.features)
    ids = list(ds3_set.ids)
    ds3 = data.ds3.set_index("material_id", drop=False)
    truth = ds3.loc[ids, "bg_exp"].astype(float)
    parts = _baseline_predictions(data, adaptation, ids) + _model_predictions(profile, adaptation, base, ds3_set)
    per_seed_pred = pd.concat(parts, ignore_index=True)

    order = [m for m in MODEL_LABELS if m in set(per_seed_pred["model"])]
    per_seed, summary = _summarise(per_seed_pred, truth, ids)
    excluded = [m for m in data.ds3_with_ds2_polymorphs() if m in set(ids)]
    kept = [m for m in ids if m not in set(excluded)]
    _, summary_np = _summarise(per_seed_pred, truth, kept)
    evaluation = Ds3Evaluation(per_seed, summary.loc[order], summary_np.loc[order], excluded,
                               _mean_predictions(ds3, ids, per_seed_pred, order), per_seed_pred, paths["metrics"])
    _write_evaluation(paths, evaluation, adaptation, profile)
    return evaluation


def display_table(summary: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``summary`` with ``mae``/``rmse``/``r2`` as ``"mean ± std"`` strings (for reading)."""
    out = pd.DataFrame(index=summary.index)
    out["model"] = summary["label"]
    for key in ("mae", "rmse", "r2"):
        out[key.upper() if key != "r2" else "R²"] = [
            f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if pd.notna(s) else "")
            for m, s in zip(summary[key], summary[f"{key}_std"])
        ]
    out["n"] = summary["n"]
    out["seeds"] = summary["seeds"]
    return out


def parity_columns(evaluation: Ds3Evaluation) -> dict[str, str]:
    """Panel title -> prediction column of ``evaluation.predictions`` (for parity plots)."""
    return {MODEL_LABELS.get(c[5:], c[5:]): c for c in evaluation.predictions.columns if c.startswith("pred_")}


def adaptation_histories(adaptation: AdaptationResult, seed: int | None = None) -> dict[str, pd.DataFrame]:
    """Model -> training history (``history.csv``) of its chosen-lr fit for ``seed`` (default: first)."""
    out = {}
    for model in adaptation.choices.index:
        ckpts = adaptation.checkpoints(model)
        if not ckpts:
            continue
        path = Path(ckpts[seed if seed is not None else min(ckpts)]).parent / "history.csv"
        if path.is_file():
            out[MODEL_LABELS.get(model, model)] = pd.read_csv(path)
    return out
