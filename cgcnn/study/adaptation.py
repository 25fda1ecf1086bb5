"""Stage 4: domain adaptation of M1 on DS2, chosen and scored by grouped cross-validation.

Protocol (no choice ever looks at DS3, and no out-of-fold prediction comes from a model
selected on its own test fold):

1. DS2 is split into ``cv.folds`` folds **grouped by reduced formula**, stratified by gap,
   repeated ``cv.repeats`` times (:func:`cgcnn.cv.grouped_folds`).
2. In every outer fold the training materials are split again by formula
   (:func:`cgcnn.cv.inner_split`) into a fitting part and an inner validation part.  Every
   *candidate* — each freeze policy at each learning rate of ``adapt.lr_grid``, and the
   from-scratch control at each rate of its grid — is fitted with early stopping on the inner
   validation MAE, and predicts the outer test fold.
3. Within each fold, each model's learning rate is the candidate with the lowest inner
   validation MAE; ``m2`` is the policy (at its rate) with the lowest inner validation MAE.
   Those choices give the honest out-of-fold predictions of :mod:`cgcnn.study.crossval`.
4. The recipes that go to DS3 are chosen by the cross-validated MAE of the candidates:
   for each model its best learning rate; M2 the best policy.  ``cv.json`` records the
   table and the choices *before* any final model is trained.
5. Final models: each recipe fitted on all of DS2 once per seed (inner grouped validation
   split for early stopping), in ``<run>/models/m2/<policy>/seed-<s>/`` and
   ``<run>/models/control/seed-<s>/``; DS3 uses the mean over seeds.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cgcnn.fileio import write_json
from cgcnn.study.crossval import (
    cv_summary,
    run_baselines,
    within_fold_choices,
)
from cgcnn.study.profiles import StudyProfile
from cgcnn.study.rundir import run_paths, write_table

CONTROL = "control"


def model_key(policy: str) -> str:
    """Name of an adapted model (``m2_<policy>``) or ``control``."""
    return CONTROL if policy == CONTROL else f"m2_{policy}"


@dataclass
class AdaptationResult:
    """The cross-validation of every candidate and the final models.

    Attributes:
        candidates: one row per (repeat, fold, candidate): model, policy, lr, inner
            validation MAE, best epoch, epochs run, seconds.
        cv_predictions: long table model, repeat, fold, material_id, prediction (out of fold).
        cv_table: per model, CV MAE / RMSE / R² (mean ± std over repeats), MAE interval and
            paired differences (see :func:`cgcnn.study.crossval.cv_summary`).
        choices: per model (``m2_<policy>``, ``control``): the learning rate chosen by CV
            MAE; ``selected`` marks M2's policy.
        selected_policy: the freeze policy of M2.
        runs: the final fits: model, policy, lr, seed, best_val_mae, best_epoch, checkpoint.
    """

    run_dir: Path
    candidates: pd.DataFrame
    cv_predictions: pd.DataFrame
    cv_table: pd.DataFrame
    choices: pd.DataFrame
    selected_policy: str
    runs: pd.DataFrame
    seeds: list[int]

    def checkpoints(self, model: str) -> dict[int, Path]:
        """Seed -> best checkpoint of a final model (``m2``, ``m2_<policy>`` or ``control``)."""
        if model == "m2":
            model = model_key(self.selected_policy)
        rows = self.runs[self.runs["model"] == model]
        return {int(r.seed): self.run_dir / r.checkpoint for r in rows.itertuples()}


@dataclass
class _Fitter:
    """What every fit of one :func:`run_adaptation` call shares; :meth:`fit` runs one of them."""

    profile: StudyProfile
    base: Any  # cgcnn.checkpoint.Loaded
    dataset: Any  # cgcnn.dataset.CrystalDataset of DS2
    progress: bool

    def fit(self, policy: str, lr: float, seed: int, splits: tuple, out: Path):
        """Fine-tune M1 with ``policy`` frozen (or train the control) at ``lr``."""
        from cgcnn.adapt import adapt, train_control

        if policy == CONTROL:
            cfg = self.profile.control_config(lr=lr, seed=seed)
            return train_control(self.dataset, cfg, out, model_config=self.base.model_config, splits=splits, progress=self.progress)
        cfg = self.profile.adapt_config(policy, lr=lr, seed=seed)
        return adapt(self.base, self.dataset, cfg, out, splits=splits, progress=self.progress)

    def candidates(self) -> list[tuple[str, float]]:
        settings = self.profile.adapt
        return [(p, lr) for p in settings.policies for lr in settings.lr_grid] + [(CONTROL, lr) for lr in settings.control_grid]


def _cv_candidates(fitter: _Fitter, folds, groups, scratch: Path, echo) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fit every candidate in every outer fold; (candidate table, their out-of-fold predictions)."""
    from cgcnn.checkpoint import load_checkpoint
    from cgcnn.cv import inner_split
    from cgcnn.inference import predict

    ids = fitter.dataset.ids
    rows, preds = [], []
    for fold in folds:
        inner = inner_split(groups, fold.train, val_fraction=fitter.profile.cv.inner_val_fraction, seed=1000 * fold.seed + fold.fold)
        test_set = fitter.dataset.subset_positions(fold.test)
        for policy, lr in fitter.candidates():
            out = scratch / f"r{fold.repeat}-f{fold.fold}" / model_key(policy) / f"lr-{lr:g}"
            t0 = time.perf_counter()
            result = fitter.fit(policy, lr, fold.seed, inner, out)
            pred = predict(load_checkpoint(result.best_checkpoint), test_set, device=fitter.profile.device)
            rows.append({"model": model_key(policy), "policy": policy, "lr": lr, "repeat": fold.repeat, "fold": fold.fold,
                         "inner_val_mae": result.best_val_mae, "best_epoch": result.best_epoch,
                         "epochs_run": len(result.history), "seconds": round(time.perf_counter() - t0, 2)})
            preds.append(pd.DataFrame({"model": model_key(policy), "lr": lr, "repeat": fold.repeat, "fold": fold.fold,
                                       "material_id": [ids[k] for k in fold.test], "prediction": pred}))
            echo(f"repeat {fold.repeat} fold {fold.fold}  {model_key(policy):>14}  lr {lr:<8g} inner val MAE "
                 f"{result.best_val_mae:.4f} eV (best epoch {result.best_epoch}, {rows[-1]['seconds']:.1f} s)")
            shutil.rmtree(out, ignore_errors=True)  # only the predictions are kept
    return pd.DataFrame(rows), pd.concat(preds, ignore_index=True)


def choose_recipes(candidate_preds: pd.DataFrame, truth: pd.Series, policies: list[str]) -> tuple[pd.DataFrame, str]:
    """Per model the learning rate with the lowest cross-validated MAE; M2 = the policy whose
    model (at its rate) has the lowest CV MAE.  Returns (choices table, selected policy)."""
    err = (candidate_preds["prediction"] - truth.loc[candidate_preds["material_id"]].to_numpy()).abs()
    mae = candidate_preds.assign(err=err).groupby(["model", "lr", "repeat"])["err"].mean().groupby(["model", "lr"]).mean()
    rows = []
    for model, grp in mae.groupby(level="model", sort=False):
        lr = float(grp.idxmin()[1])
        rows.append({"model": model, "policy": CONTROL if model == CONTROL else model.removeprefix("m2_"), "lr": lr, "cv_mae": float(grp.min())})
    choices = pd.DataFrame(rows).set_index("model")
    adapted = choices.loc[[model_key(p) for p in policies]]
    selected = str(adapted["cv_mae"].idxmin()).removeprefix("m2_")
    choices["selected"] = choices.index == model_key(selected)
    return choices, selected


def _final_fits(fitter: _Fitter, choices: pd.DataFrame, groups, seeds: list[int], models_dir: Path, run: Path, echo) -> pd.DataFrame:
    """Each chosen recipe on all of DS2, once per seed (inner grouped split for early stopping)."""
    from cgcnn.cv import inner_split

    everything = np.arange(len(fitter.dataset))
    rows = []
    for model, choice in choices.iterrows():
        folder = models_dir / (CONTROL if model == CONTROL else f"m2/{choice['policy']}")
        for seed in seeds:
            splits = inner_split(groups, everything, val_fraction=fitter.profile.cv.inner_val_fraction, seed=seed)
            t0 = time.perf_counter()
            result = fitter.fit(choice["policy"], float(choice["lr"]), seed, splits, folder / f"seed-{seed}")
            rows.append({"model": model, "policy": choice["policy"], "lr": float(choice["lr"]), "seed": seed,
                         "best_val_mae": result.best_val_mae, "best_epoch": result.best_epoch, "epochs_run": len(result.history),
                         "seconds": round(time.perf_counter() - t0, 2), "checkpoint": os.path.relpath(result.best_checkpoint, run)})
            echo(f"final {model:>14}  lr {choice['lr']:<8g} seed {seed:<3} val MAE {result.best_val_mae:.4f} eV")
    return pd.DataFrame(rows)


def run_adaptation(run_dir: str | os.PathLike, profile: StudyProfile, *, progress: bool = False,
                   echo: Callable[[str], Any] = print) -> AdaptationResult:
    """Cross-validate every freeze policy and the control on DS2 (nested, grouped by formula),
    score the baselines on the same folds, write the CV table and choices, then train the
    chosen recipes on all of DS2 for every seed.  Nothing here looks at DS3."""
    from cgcnn.study.crossval import ds2_cv_setup

    run = Path(run_dir)
    paths = run_paths(run)
    setup = ds2_cv_setup(run, profile)
    base, dataset, frame, groups, truth, folds = setup.base, setup.dataset, setup.frame, setup.groups, setup.truth, setup.folds
    cv = profile.cv
    for folder in ("m2", CONTROL, "cv"):
        shutil.rmtree(paths["models"] / folder, ignore_errors=True)
    paths["cv"].unlink(missing_ok=True)

    fitter = _Fitter(profile, base, dataset, progress)
    candidates, candidate_preds = _cv_candidates(fitter, folds, groups, paths["models"] / "cv", echo)
    shutil.rmtree(paths["models"] / "cv", ignore_errors=True)  # the fits' scratch folders, emptied one by one
    model_preds = within_fold_choices(candidates, candidate_preds, list(profile.adapt.policies))
    baseline_preds, gbm_choices = run_baselines(frame, folds, cv)
    cv_predictions = pd.concat([baseline_preds, model_preds], ignore_index=True)
    cv_table = cv_summary(cv_predictions, truth, seed=cv.seed)
    choices, selected = choose_recipes(candidate_preds, truth, list(profile.adapt.policies))

    write_table(paths["tables"] / "cv_candidates.csv", candidates, index=False)
    write_table(paths["tables"] / "cv_predictions.csv", cv_predictions, index=False)
    write_table(paths["tables"] / "cv_metrics.csv", cv_table)
    write_table(paths["tables"] / "cv_gbm_choices.csv", gbm_choices, index=False)
    write_table(paths["tables"] / "adaptation_choices.csv", choices)
    write_json(paths["cv"], {
        "protocol": {"folds": cv.folds, "repeats": cv.repeats, "seed": cv.seed, "grouped_by": "reduced formula",
                     "inner_val_fraction": cv.inner_val_fraction, "n_ds2": len(frame)},
        "selected_policy": selected,
        "learning_rates": {k: float(v) for k, v in choices["lr"].items()},
        "cv_metrics": {str(k): {c: v for c, v in row.items()} for k, row in cv_table.iterrows()},
    })
    runs = _final_fits(fitter, choices, groups, list(profile.seeds), paths["models"], run, echo)
    write_table(paths["tables"] / "adaptation_runs.csv", runs, index=False)
    write_json(paths["models"] / "adaptation.json", {
        "selected_policy": selected, "seeds": list(profile.seeds),
        "learning_rates": {k: float(v) for k, v in choices["lr"].items()},
    })
    return AdaptationResult(run, candidates, cv_predictions, cv_table, choices, selected, runs, list(profile.seeds))


def load_adaptation(run_dir: str | os.PathLike) -> AdaptationResult:
    """Read back what :func:`run_adaptation` wrote."""
    run = Path(run_dir)
    paths = run_paths(run)
    meta_path = paths["models"] / "adaptation.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: run the domain-adaptation stage first")
    meta = json.loads(meta_path.read_text())
    table = lambda name, **kw: pd.read_csv(paths["tables"] / name, **kw)  # noqa: E731
    return AdaptationResult(
        run, table("cv_candidates.csv"), table("cv_predictions.csv", dtype={"material_id": str}),
        table("cv_metrics.csv").set_index("model"), table("adaptation_choices.csv").set_index("model"),
        meta["selected_policy"], table("adaptation_runs.csv"), list(meta["seeds"]),
    )
