"""Stage 4b: CGCNN ensembles that use the PBE gaps better than sequential fine-tuning.

Candidates (``profile.methods.candidates``), each a variant of M1 fine-tuned on DS2 with
its new layers starting at zero (:meth:`cgcnn.model.CGCNN.load_base_weights`):

* ``delta`` — PBE-aware: the head also reads the PBE gap, with a direct linear path from it
  to the output, so the network learns the correction from PBE to experiment;
* ``delta_composition`` — the same, the head also reading Magpie composition features;
* ``multifidelity`` — one network with a learned fidelity embedding (``pbe``,
  ``experiment``), trained on ``pbe_crystals`` DS1 crystals (PBE labels, PBE input unknown)
  together with the DS2 training crystals (experimental labels, each seen
  ``experiment_weight`` times per epoch); it also reads the PBE gap when predicting the
  experimental one and can predict the PBE gap itself.

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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cgcnn.config import AdaptConfig, ModelConfig
from cgcnn.fileio import write_json
from cgcnn.study.profiles import StudyProfile
from cgcnn.study.rundir import run_paths, write_table

PBE, EXPERIMENT = "pbe", "experiment"
TREES = "_trees"  # suffix of a candidate averaged with the boosted trees on composition + PBE
TREES_WEIGHT = 0.5  # fixed, equal weights: nothing is tuned on the out-of-fold predictions
METHOD_LABELS = {
    "delta": "CGCNN ensemble, PBE-aware (Δ head)",
    "delta_composition": "CGCNN ensemble, PBE-aware + composition",
    "multifidelity": "CGCNN ensemble, multi-fidelity + PBE-aware",
}
METHOD_LABELS.update({f"{k}{TREES}": f"{v}, averaged with boosted trees (composition + PBE)" for k, v in list(METHOD_LABELS.items())})


def method_model_config(name: str, base: ModelConfig) -> ModelConfig:
    """The architecture of candidate ``name``: M1's, plus its per-crystal inputs."""
    extra = {"delta": {"pbe_input": True},
             "delta_composition": {"pbe_input": True, "composition": "magpie"},
             "multifidelity": {"pbe_input": True, "fidelities": [PBE, EXPERIMENT]}}
    if name not in extra:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(extra)}")
    return base.model_copy(update=extra[name])


def pbe_inputs(frame: pd.DataFrame, ids: list[str], base, dataset, device) -> tuple[np.ndarray, np.ndarray]:
    """(PBE gap, source) per material: MP's ``bg_pbe`` where known, else M1's prediction."""
    from cgcnn.inference import predict

    known = pd.to_numeric(frame.set_index("material_id").loc[ids, "bg_pbe"], errors="coerce").to_numpy(np.float64)
    source = np.where(np.isfinite(known), "given", "predicted").astype(object)
    if (~np.isfinite(known)).any():
        todo = np.flatnonzero(~np.isfinite(known))
        known[todo] = predict(base, dataset.subset_positions(todo), device=device)
    return known, source


@dataclass
class EnsembleMethod:
    """One candidate as a CV method (``__call__(train, test, context)``), plus its final fit.

    ``dataset`` holds the DS2 crystals at positions ``offset + k`` (k = DS2 position) and,
    for the multi-fidelity method, ``n_pbe`` DS1 crystals first.
    """

    name: str
    profile: StudyProfile
    base: Any  # cgcnn.checkpoint.Loaded
    dataset: Any  # cgcnn.dataset.CrystalDataset
    groups: list[str]
    scratch: Path
    offset: int = 0
    echo: Callable[[str], Any] = print
    spreads: list[pd.DataFrame] = field(default_factory=list)
    fits: list[dict] = field(default_factory=list)

    @property
    def model_config(self) -> ModelConfig:
        return method_model_config(self.name, self.base.model_config)

    def fit_members(self, fit: np.ndarray, val: np.ndarray, out: Path, tag: dict) -> list[Path]:
        """Fit ``members`` seeds on DS2 positions ``fit`` (early stopping on ``val``)."""
        from cgcnn.adapt import adapt

        s = self.profile.methods
        train = np.asarray(fit, dtype=np.int64) + self.offset
        if self.offset:  # multi-fidelity: the PBE crystals, and the DS2 ones weighted
            train = np.concatenate([np.arange(self.offset), np.repeat(train, s.experiment_weight)])
        val = np.asarray(val, dtype=np.int64) + self.offset
        paths = []
        for k in range(s.members):
            seed = 100 * int(tag.get("seed", 0)) + k
            cfg = AdaptConfig(freeze=s.freeze, normalizer="refit", train=self.profile.train_config(s.train, seed=seed))
            t0 = time.perf_counter()
            result = adapt(self.base, self.dataset, cfg, out / f"member-{k}", splits=(train, val),
                           model_config=self.model_config, progress=False)
            self.fits.append({"method": self.name, **tag, "member": k, "seed": seed, "inner_val_mae": result.best_val_mae,
                              "best_epoch": result.best_epoch, "epochs_run": len(result.history),
                              "seconds": round(time.perf_counter() - t0, 2)})
            paths.append(result.best_checkpoint)
        return paths

    def predict_members(self, checkpoints: list[Path], positions: np.ndarray) -> np.ndarray:
        """[members, n] predictions (eV) for DS2 ``positions`` at the experimental fidelity."""
        from cgcnn.checkpoint import load_checkpoint
        from cgcnn.inference import predict

        sub = self.dataset.subset_positions(np.asarray(positions, dtype=np.int64) + self.offset)
        return np.vstack([predict(load_checkpoint(c), sub, device=self.profile.device) for c in checkpoints])

    def __call__(self, train, test, ctx) -> np.ndarray:
        from cgcnn.cv import inner_split

        fit, val = inner_split(self.groups, train, val_fraction=self.profile.cv.inner_val_fraction, seed=1000 * ctx.seed + ctx.fold)
        out = self.scratch / f"r{ctx.repeat}-f{ctx.fold}"
        checkpoints = self.fit_members(fit, val, out, {"repeat": ctx.repeat, "fold": ctx.fold, "seed": ctx.seed})
        preds = self.predict_members(checkpoints, test)
        ids = [self.dataset.ids[p + self.offset].split("@")[0] for p in test]
        self.spreads.append(pd.DataFrame({"repeat": ctx.repeat, "material_id": ids, "std": preds.std(axis=0)}))
        maes = [r["inner_val_mae"] for r in self.fits[-len(checkpoints):]]
        self.echo(f"repeat {ctx.repeat} fold {ctx.fold}  {self.name:>18}  inner val MAE of members "
                  + ", ".join(f"{m:.3f}" for m in maes) + " eV")
        shutil.rmtree(out, ignore_errors=True)
        return preds.mean(axis=0)


def build_method(name: str, profile: StudyProfile, data, base, ds2, pbe: np.ndarray, groups, scratch: Path, echo) -> EnsembleMethod:
    """The candidate ``name`` with its training dataset (DS2, and DS1 crystals for multi-fidelity)."""
    from cgcnn.dataset import CrystalDataset
    from cgcnn.inputs import attach_inputs

    cfg = method_model_config(name, base.model_config)
    ds2 = ds2.subset_positions(np.arange(len(ds2)))  # a copy: inputs differ per method
    attach_inputs(ds2, cfg, fidelity=EXPERIMENT if cfg.fidelities else None, pbe=pbe)
    if not cfg.fidelities:
        return EnsembleMethod(name, profile, base, ds2, groups, scratch, echo=echo)
    ds1_ids = list(data.ds1["material_id"])
    n = min(profile.methods.pbe_crystals, len(ds1_ids))
    pick = sorted(np.random.default_rng(profile.cv.seed).choice(len(ds1_ids), size=n, replace=False).tolist())
    ds1 = data.dataset("ds1", "bg_pbe", base.features, ids=[ds1_ids[k] for k in pick])
    attach_inputs(ds1, cfg, fidelity=PBE, pbe=None)  # the PBE label is the target: never an input
    both = CrystalDataset.concat([(ds1, PBE), (ds2, EXPERIMENT)])
    return EnsembleMethod(name, profile, base, both, groups, scratch, offset=len(ds1), echo=echo)


def _trees_out_of_fold(frame: pd.DataFrame, folds, cv, pbe: np.ndarray) -> tuple[pd.DataFrame, list[dict]]:
    """Out-of-fold predictions of boosted trees on Magpie composition + the PBE gap the
    networks read (MP's, or M1's where MP has none), hyper-parameters by inner grouped CV."""
    from cgcnn.baselines import BoostedTrees, magpie_features
    from cgcnn.cv import out_of_fold
    from cgcnn.tabular import tree_features

    trees = BoostedTrees(tree_features(magpie_features(list(frame["formula"])), pbe), frame["bg_exp"].to_numpy(),
                         list(frame["group"]), grid=dict(cv.gbm_grid))
    return out_of_fold(trees, folds, list(frame["material_id"])), trees.chosen


def _with_trees(table: pd.DataFrame, trees: pd.DataFrame, name: str) -> pd.DataFrame:
    """A candidate's out-of-fold table averaged with the trees' (:func:`cgcnn.ensemble.mix`)."""
    from cgcnn.ensemble import mix

    merged = table.merge(trees.rename(columns={"prediction": "trees"}), on=["repeat", "material_id"], suffixes=("", "_t"))
    mean, std = mix(merged["prediction"], merged["std"], merged["trees"], TREES_WEIGHT)
    return merged[["repeat", "fold", "material_id"]].assign(model=f"ens_{name}{TREES}", prediction=mean, std=std)[table.columns]


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
    from cgcnn.checkpoint import load_checkpoint
    from cgcnn.cv import grouped_folds, inner_split, out_of_fold
    from cgcnn.study.base import base_checkpoint
    from cgcnn.study.crossval import cv_summary, ds2_frame
    from cgcnn.study.data import load_data

    settings = profile.methods
    if not settings.candidates:
        return None
    profile.apply_threads()
    run = Path(run_dir)
    paths = run_paths(run)
    data = load_data(run)
    base = load_checkpoint(base_checkpoint(run))
    ds2 = data.dataset("ds2", "bg_exp", base.features)
    frame = ds2_frame(data, ds2.ids)
    groups, truth = list(frame["group"]), frame["bg_exp"]
    pbe, pbe_source = pbe_inputs(data.ds2, ds2.ids, base, ds2, profile.device)
    cv = profile.cv
    folds = grouped_folds(groups, truth.to_numpy(), k=cv.folds, repeats=cv.repeats, seed=cv.seed)
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
    trees_oof, trees_chosen = _trees_out_of_fold(frame, folds, cv, pbe)
    for name in list(methods):  # each candidate averaged with the boosted trees: one more candidate
        hybrid = _with_trees(oof[list(methods).index(name)], trees_oof, name)
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
