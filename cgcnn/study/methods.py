"""Stage 4b: CGCNN ensembles that use the PBE gaps better than sequential fine-tuning.

Candidates (``profile.methods.candidates``; defined in :mod:`cgcnn.study.candidates`):
PBE-aware (``delta``), PBE-aware + composition (``delta_composition``) and multi-fidelity
(``multifidelity``) CGCNN ensembles fine-tuned from M1, and each of them averaged with
boosted trees on composition + PBE (``<name>_trees``).

The PBE gap a DS2 / DS3 material reads is its Materials Project PBE gap, or M1's
prediction when MP has none (as at prediction time, :mod:`cgcnn.ensemble`).

Protocol: the outer folds of the fine-tuning study (same settings, same folds); in every
fold ``members`` models (seeds) are fitted with early stopping on the inner grouped
validation split and the test fold gets their mean and spread.  The candidate with the
lowest CV MAE is selected, the spread's calibration factor is fitted on its out-of-fold
predictions, and everything is written (``tables/methods_*.csv``, ``methods.json``) before
the selected recipe is trained on all of DS2 (``models/ensemble/member-<k>/``).  DS3 is
never looked at here.  Each candidate's CV is kept as soon as it finishes
(``tables/methods_cv_<name>.*``, with a key of its settings, the CV protocol, M1 and the DS2
ids): a stage interrupted later resumes after the finished candidates.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cgcnn.fileio import write_json
from cgcnn.study.candidates import (
    METHOD_LABELS,
    TREES,
    TREES_WEIGHT,
    build_method,
    method_model_config,
    pbe_inputs,
    trees_out_of_fold,
    with_trees,
)
from cgcnn.study.profiles import StudyProfile
from cgcnn.study.rundir import run_paths, write_table

__all__ = ["METHOD_LABELS", "calibration_rows", "load_methods", "run_methods"]


def calibration_rows(name: str, oof: pd.DataFrame, spreads: pd.DataFrame, truth: pd.Series) -> dict:
    """Coverage of ±1σ / ±2σ before and after the calibration factor (out-of-fold data)."""
    from cgcnn.ensemble import calibration_scale, coverage

    merged = oof.merge(spreads, on=["repeat", "material_id"])
    err = merged["prediction"].to_numpy() - truth.loc[merged["material_id"]].to_numpy()
    std = merged["std"].to_numpy()
    scale = calibration_scale(err, std)
    return {"method": name, "scale": scale, "mean_std_ev": float(np.mean(std)),
            "within_1sd_raw": coverage(err, std, 1), "within_2sd_raw": coverage(err, std, 2),
            "within_1sd": coverage(err, scale * std, 1), "within_2sd": coverage(err, scale * std, 2)}


def _candidate_key(name: str, profile: StudyProfile, base_path: Path, ids: list[str]) -> str:
    """What a candidate's CV depends on: its settings, the CV protocol, M1 and the DS2 ids."""
    import hashlib
    import json

    from cgcnn.fileio import sha256_file

    text = json.dumps({"name": name, "methods": profile.methods.to_dict(), "cv": profile.cv.to_dict(), "device": profile.device,
                       "base": sha256_file(base_path), "ids": list(ids)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _cached_candidate(tables: Path, name: str, key: str) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The out-of-fold table and fits of a candidate already cross-validated with ``key``."""
    import json

    meta = tables / f"methods_cv_{name}.json"
    if not meta.is_file() or json.loads(meta.read_text()).get("key") != key:
        return None
    return (pd.read_csv(tables / f"methods_cv_{name}.csv", dtype={"material_id": str}),
            pd.read_csv(tables / f"methods_cv_{name}_fits.csv"))


def _cache_candidate(tables: Path, name: str, key: str, table: pd.DataFrame, fits: pd.DataFrame) -> None:
    """Keep a finished candidate's CV, so that an interrupted stage resumes after it."""
    write_table(tables / f"methods_cv_{name}.csv", table, index=False)
    write_table(tables / f"methods_cv_{name}_fits.csv", fits, index=False)
    write_json(tables / f"methods_cv_{name}.json", {"key": key})  # written last: marks the candidate complete


def run_methods(run_dir: str | os.PathLike, profile: StudyProfile, *, echo: Callable[[str], Any] = print) -> dict | None:
    """Cross-validate every candidate on the study's folds, add them to the CV table, select
    one, and train it on all of DS2 (see the module docstring).  Returns ``methods.json``'s
    contents, or None when the profile names no candidate."""
    from cgcnn.cv import inner_split, out_of_fold
    from cgcnn.study.base import base_checkpoint
    from cgcnn.study.crossval import cv_summary, ds2_cv_setup

    settings = profile.methods
    if not settings.candidates:
        return None
    run = Path(run_dir)
    paths = run_paths(run)
    setup = ds2_cv_setup(run, profile)
    data, base, ds2, frame, groups, truth, folds = (setup.data, setup.base, setup.dataset, setup.frame, setup.groups,
                                                    setup.truth, setup.folds)
    pbe, pbe_source = pbe_inputs(data.ds2, ds2.ids, base, ds2, profile.device)
    cv = profile.cv
    ens_dir = paths["models"] / "ensemble"
    shutil.rmtree(ens_dir, ignore_errors=True)
    (run / "methods.json").unlink(missing_ok=True)

    methods, oof, calibration, fit_tables = {}, [], [], []
    for name in settings.candidates:
        method = build_method(name, profile, data, base, ds2, pbe, groups, paths["models"] / "cv-methods", echo)
        key = _candidate_key(name, profile, base_checkpoint(run), ds2.ids)
        cached = _cached_candidate(paths["tables"], name, key)
        if cached is None:
            table = out_of_fold(method, folds, list(frame["material_id"]), name=f"ens_{name}")
            table["std"] = pd.concat(method.spreads, ignore_index=True)["std"].to_numpy()
            _cache_candidate(paths["tables"], name, key, table, pd.DataFrame(method.fits))
        else:  # this candidate's CV finished in an earlier, interrupted run with the same settings and data
            table, cached_fits = cached
            method.fits = cached_fits.to_dict(orient="records")
            echo(f"{name}: cross-validation reused from tables/methods_cv_{name}.csv (same settings and data)")
        oof.append(table)
        calibration.append(calibration_rows(name, table.drop(columns="std"), table[["repeat", "material_id", "std"]], truth))
        fit_tables.append(pd.DataFrame(method.fits))
        methods[name] = method
    trees_oof, trees_chosen = trees_out_of_fold(frame, folds, cv, pbe)
    for name in list(methods):  # each candidate averaged with the boosted trees: one more candidate
        hybrid = with_trees(oof[list(methods).index(name)], trees_oof, name)
        oof.append(hybrid)
        calibration.append(calibration_rows(f"{name}{TREES}", hybrid.drop(columns="std"), hybrid[["repeat", "material_id", "std"]], truth))
    oof_table = pd.concat(oof, ignore_index=True)
    fits = pd.concat(fit_tables, ignore_index=True)
    calibration_table = pd.DataFrame(calibration).set_index("method")

    # the CV table of every model, the fine-tuning study's and the baselines' included
    if (paths["tables"] / "cv_predictions.csv").is_file():  # written by the fine-tuning study
        previous = pd.read_csv(paths["tables"] / "cv_predictions.csv", dtype={"material_id": str})
        previous = previous[~previous["model"].astype(str).str.startswith("ens_")]
    else:
        from cgcnn.study.crossval import run_baselines

        previous = run_baselines(frame, folds, cv)[0]
    cv_predictions = pd.concat([previous, oof_table.drop(columns="std")], ignore_index=True)
    cv_table = cv_summary(cv_predictions, truth, seed=cv.seed)
    names = list(methods) + [f"{n}{TREES}" for n in methods]
    mae = {n: float(np.mean([np.abs(g["prediction"] - truth.loc[g["material_id"]].to_numpy()).mean()
                             for _, g in oof_table[oof_table["model"] == f"ens_{n}"].groupby("repeat")])) for n in names}
    selected = min(mae, key=mae.get)
    scale = float(calibration_table.loc[selected, "scale"])

    write_table(paths["tables"] / "cv_predictions.csv", cv_predictions, index=False)
    write_table(paths["tables"] / "cv_metrics.csv", cv_table)
    write_table(paths["tables"] / "methods_cv_predictions.csv", oof_table, index=False)
    write_table(paths["tables"] / "methods_cv_fits.csv", fits, index=False)
    write_table(paths["tables"] / "methods_calibration.csv", calibration_table)
    network = selected.removesuffix(TREES)
    summary = {
        "candidates": list(settings.candidates), "selected": selected, "network": network, "cv_mae_all_ds2": mae,
        "calibration": {"scale": scale, **{k: float(v) for k, v in calibration_table.loc[selected].items()}},
        "trees_cv_choices": trees_chosen,
        "settings": settings.to_dict(), "model_config": method_model_config(network, base.model_config).to_dict(),
        "pbe_sources_ds2": {k: int(v) for k, v in pd.Series(pbe_source).value_counts().items()},
    }
    write_json(run / "methods.json", summary)
    import json

    cv_json = json.loads(paths["cv"].read_text()) if paths["cv"].is_file() else {}
    cv_json["cv_metrics"] = {str(k): {c: v for c, v in row.items()} for k, row in cv_table.iterrows()}
    cv_json["methods"] = {"selected": selected, "cv_mae_all_ds2": mae}
    write_json(paths["cv"], cv_json)
    echo(f"selected method: {selected} (CV MAE {mae[selected]:.4f} eV); spread calibration factor {scale:.2f}")

    # final fit: the selected recipe on all of DS2
    method = methods[network]
    everything = np.arange(len(ds2))
    fit, val = inner_split(groups, everything, val_fraction=cv.inner_val_fraction, seed=cv.seed)
    method.fits.clear()
    checkpoints = method.fit_members(fit, val, ens_dir, {"final": True, "seed": cv.seed})
    final = pd.DataFrame(method.fits).assign(checkpoint=[os.path.relpath(c, run) for c in checkpoints])
    write_table(paths["tables"] / "methods_final_fits.csv", final, index=False)
    summary["final"] = {"checkpoints": [os.path.relpath(c, run) for c in checkpoints], "train_ids": list(ds2.ids),
                        "inner_val_mae": final["inner_val_mae"].tolist()}
    if selected.endswith(TREES):
        from cgcnn.baselines import BoostedTrees, magpie_features
        from cgcnn.tabular import save_trees, tree_features

        trees, params = BoostedTrees(tree_features(magpie_features(list(frame["formula"])), pbe), truth.to_numpy(), groups,
                                     grid=dict(cv.gbm_grid)).fit_all(seed=cv.seed)
        save_trees(trees, ens_dir / "trees.skops")
        summary["final"]["trees"] = {"file": os.path.relpath(ens_dir / "trees.skops", run), "weight": TREES_WEIGHT, "params": params}
    write_json(run / "methods.json", summary)
    shutil.rmtree(paths["models"] / "cv-methods", ignore_errors=True)
    return summary


def load_methods(run_dir: str | os.PathLike) -> dict | None:
    """``<run>/methods.json`` (what :func:`run_methods` wrote), or None."""
    import json

    path = Path(run_dir) / "methods.json"
    return json.loads(path.read_text()) if path.is_file() else None
