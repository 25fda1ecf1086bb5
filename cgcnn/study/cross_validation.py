"""Step 02-ml-dev/02: grouped cross-validation on DS2 of every freeze policy, the control and
the baselines; the CV table and the recipes it chooses (the CV record).

Protocol (no choice ever looks at DS3, and no out-of-fold prediction comes from a model
selected on its own test fold):

1. DS2 is split into ``cv.folds`` folds **grouped by reduced formula**, stratified by gap,
   repeated ``cv.repeats`` times (:func:`cgcnn.evaluation.folds.grouped_folds`) — :func:`setup`.
2. In every outer fold the training materials are split again by formula
   (:func:`cgcnn.evaluation.folds.inner_split`) into a fitting part and an inner validation
   part.  Every *candidate* — each freeze policy at each learning rate of ``adapt.lr_grid``,
   and the from-scratch control at each rate of its grid — is fitted with early stopping on
   the inner validation MAE and predicts the outer test fold — :func:`fit_candidates`, each
   candidate a recipe (:class:`FineTuned`) run by the study's fold loop (:mod:`cgcnn.study.engine`).
3. The baselines are scored on the same folds — :func:`fit_baselines`.
4. Within each fold, each model's learning rate is the candidate with the lowest inner
   validation MAE; ``m2`` is the policy (at its rate) with the lowest inner validation MAE.
   Those choices give the honest out-of-fold predictions of the CV table.  The recipes the
   final models use are chosen by the cross-validated MAE of the candidates: for each model
   its best learning rate, M2 the best policy — :func:`summarise`.
5. The CV table and the choices are written (``tables/cv_*.csv``, the CV record) before any
   final model is trained and before DS3 is touched — :func:`write_cv`.

The CV table is computed on the materials that **every** model predicts (DS2 materials
without a PBE gap have no raw / linear PBE prediction, so they are left out of every row,
keeping the rows paired); ``n`` says how many.  Per model: MAE / RMSE / R² as mean ± std
over the repeats, a bootstrap 95 % interval of the MAE (materials resampled; each
material's absolute error averaged over repeats), and paired differences against the best
baseline and (for M2) against the control.

(Over 400 lines: the module is one notebook step — setup, the fine-tuning candidates as recipes,
the baselines, the within-fold choices and CV table, the record — one function per cell; the
methods step reuses its setup, baselines and CV table.)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from cgcnn.evaluation.bootstrap import bootstrap_mean
from cgcnn.evaluation.folds import Fold, grouped_folds
from cgcnn.evaluation.metrics import regression_metrics
from cgcnn.fileio import write_json
from cgcnn.prediction.inference import predict, resolve_device
from cgcnn.study.base_model import base_checkpoint
from cgcnn.study.datasets import StudyData, load_data
from cgcnn.study.display import label
from cgcnn.study.engine import cross_validate
from cgcnn.study.fits import CachedFit, FitCache, dataset_digest, loaded_digest
from cgcnn.study.profiles import StudyProfile
from cgcnn.study.recipes import Fitted, Materials, Prediction, Recipe, baselines, registered
from cgcnn.study.rundir import clear, run_paths, write_table
from cgcnn.training.adapt import adapt, train_control
from cgcnn.training.checkpoint import Loaded, load_checkpoint

CONTROL = "control"


def model_key(policy: str) -> str:
    """Name of an adapted model (``m2_<policy>``) or ``control``."""
    return CONTROL if policy == CONTROL else f"m2_{policy}"


# --------------------------------------------------------------------------------------
# 1. the folds and what every fit starts from
# --------------------------------------------------------------------------------------
@dataclass
class CvSetup:
    """What every cross-validation step on DS2 starts from: the run's data, M1, the DS2
    dataset, its frame (``group`` = reduced formula, ``bg_exp`` = the truth) and the grouped
    folds of ``profile.cv``."""

    run: Path
    profile: StudyProfile
    data: StudyData
    base: Loaded
    dataset: Any  # cgcnn.data.dataset.CrystalDataset of DS2
    frame: pd.DataFrame
    folds: list[Fold]

    @property
    def groups(self) -> list[str]:
        return list(self.frame["group"])

    @property
    def truth(self) -> pd.Series:
        return self.frame["bg_exp"]

    @cached_property
    def materials(self) -> Materials:
        """DS2 as the recipes see it (:class:`cgcnn.study.recipes.Materials`)."""
        return Materials(self.frame)

    @property
    def cache(self) -> FitCache:
        """The fit cache every fit of this run goes through."""
        return FitCache.of_run(self.run)

    def candidates(self) -> list[tuple[str, float]]:
        """(policy or ``control``, learning rate) of every candidate, in fitting order."""
        settings = self.profile.adapt
        return [(p, lr) for p in settings.policies for lr in settings.lr_grid] + [
            (CONTROL, lr) for lr in settings.control_grid
        ]

    def fit(self, policy: str, lr: float, seed: int, splits: tuple) -> CachedFit:
        """Fine-tune M1 with ``policy`` frozen (or train the control) at ``lr`` on DS2 positions
        ``splits`` = (fit, validation), through the fit cache (:mod:`cgcnn.study.fits`)."""
        ids = self.dataset.ids
        spec = {
            "kind": "control" if policy == CONTROL else "adapt",
            "data": dataset_digest(self.dataset),
            "fit": [ids[k] for k in splits[0]],
            "val": [ids[k] for k in splits[1]],
            "device": resolve_device(self.profile.device).type,
        }
        if policy == CONTROL:
            cfg = self.profile.control_config(lr=lr, seed=seed)
            spec.update(train=cfg.to_dict(), model=self.base.model_config.model_dump())
            return self.cache.fit(
                spec,
                lambda out: train_control(
                    self.dataset,
                    cfg,
                    out,
                    model_config=self.base.model_config,
                    splits=splits,
                    progress=False,
                    resume=True,
                ),
            )
        cfg = self.profile.adapt_config(policy, lr=lr, seed=seed)
        spec.update(adapt=cfg.to_dict(), base=loaded_digest(self.base))
        return self.cache.fit(
            spec, lambda out: adapt(self.base, self.dataset, cfg, out, splits=splits, progress=False, resume=True)
        )

    def settings(self) -> dict[str, str]:
        """The settings of the fine-tuning study, for reading."""
        p = self.profile
        return {
            "freeze policies": ", ".join(p.adapt.policies),
            "learning-rate grid": ", ".join(f"{lr:g}" for lr in p.adapt.lr_grid),
            "control grid": ", ".join(f"{lr:g}" for lr in p.adapt.control_grid),
            "CV": f"{p.cv.folds} folds grouped by formula x {p.cv.repeats} repeat(s), seed {p.cv.seed}",
            "inner validation (formulas of a training fold)": str(p.cv.inner_val_fraction),
            "max epochs / patience": f"{p.adapt.train.epochs} / {p.adapt.train.patience}",
            "DS2 materials": str(len(self.frame)),
            "outer folds": str(len(self.folds)),
        }


def materials_frame(table: pd.DataFrame, ids: list[str]) -> pd.DataFrame:
    """Rows of a dataset table in ``ids`` order: material_id, formula, group (reduced formula),
    bg_exp, bg_pbe — what a recipe reads (:class:`cgcnn.study.recipes.Materials`)."""
    from pymatgen.core import Composition  # heavy; only when a frame is built

    rows = table.set_index("material_id").loc[ids]
    frame = pd.DataFrame(
        {
            "material_id": ids,
            "formula": rows["formula"].to_numpy(),
            "bg_exp": rows["bg_exp"].astype(float).to_numpy(),
            "bg_pbe": pd.to_numeric(rows["bg_pbe"], errors="coerce").to_numpy(),
        }
    )
    frame["group"] = [Composition(f).reduced_formula for f in frame["formula"]]
    return frame.set_index("material_id", drop=False)


def ds2_frame(data: StudyData, ids: list[str]) -> pd.DataFrame:
    """DS2 rows in ``ids`` order (:func:`materials_frame`)."""
    return materials_frame(data.ds2, ids)


def setup(run_dir: str | os.PathLike, profile: StudyProfile) -> CvSetup:
    """Load the run's data and M1, build the DS2 dataset and its grouped folds."""
    profile.apply_threads()
    run = Path(run_dir)
    data = load_data(run)
    base = load_checkpoint(base_checkpoint(run))
    dataset = data.dataset("ds2", "bg_exp", base.features)
    frame = ds2_frame(data, dataset.ids)
    cv = profile.cv
    folds = grouped_folds(
        list(frame["group"]), frame["bg_exp"].to_numpy(), k=cv.folds, repeats=cv.repeats, seed=cv.seed
    )
    return CvSetup(run, profile, data, base, dataset, frame, folds)


# --------------------------------------------------------------------------------------
# 2. every candidate in one outer fold
# --------------------------------------------------------------------------------------
@dataclass(repr=False)
class FineTuned(Recipe):
    """M1 fine-tuned on DS2 with ``policy`` frozen (M2) at learning rate ``lr``, or the control:
    M1's architecture trained from random weights (``policy`` = ``"control"``).  Early stopping
    on the inner split; every fit through the fit cache (:meth:`CvSetup.fit`)."""

    cv: CvSetup
    policy: str
    lr: float
    echo: Callable[[str], Any] | None = print

    @property
    def name(self) -> str:  # type: ignore[override]
        return model_key(self.policy)

    @property
    def label(self) -> str:  # type: ignore[override]
        return label(self.name)

    def settings(self) -> dict:
        return {"policy": self.policy, "lr": self.lr}

    def fit(self, materials, train, *, seed: int, split=None, tag: dict | None = None) -> Fitted:
        result = self.cv.fit(self.policy, self.lr, seed, split)
        loaded = load_checkpoint(result.checkpoint)
        if self.echo is not None and tag and "repeat" in tag:
            self.echo(
                f"repeat {tag['repeat']} fold {tag['fold']}  {self.name:>14}  lr {self.lr:<8g} inner val MAE "
                f"{result.best_val_mae:.4f} eV (best epoch {result.best_epoch}, {result.seconds:.1f} s)"
            )

        def predict_(m, pos):
            return Prediction(predict(loaded, self.cv.dataset.subset_positions(pos), device=self.cv.profile.device))

        info = result.summary()
        return Fitted(predict_, {**info, "fit": result})


@dataclass
class CandidateFits:
    """Every fine-tuning candidate on every outer fold: ``candidates`` (one row per fit: model,
    policy, lr, repeat, fold, inner validation MAE, best epoch, epochs run, seconds) and
    ``predictions`` (model, lr, repeat, fold, material_id, prediction on the test fold), both
    fold by fold."""

    candidates: pd.DataFrame
    predictions: pd.DataFrame


def fit_candidates(cv: CvSetup, *, echo: Callable[[str], Any] = print) -> CandidateFits:
    """Every candidate of ``cv`` (each freeze policy at each learning rate, the control at each
    of its rates) through the study's fold loop: fitted on each fold's training part (early
    stopping on its inner grouped split), predicting its test part.  Each fit comes from the fit
    cache when it was done before (an interrupted stage resumes at the next unfinished fit)."""
    fold_index = {(f.repeat, f.fold): k for k, f in enumerate(cv.folds)}
    rows, preds = [], []
    for order, (policy, lr) in enumerate(cv.candidates()):
        recipe = FineTuned(cv, policy, lr, echo)
        result = cross_validate(recipe, cv.materials, cv.folds, val_fraction=cv.profile.cv.inner_val_fraction)
        for info in result.infos:
            rows.append(
                {
                    "model": recipe.name,
                    "policy": policy,
                    "lr": lr,
                    **{k: info[k] for k in ("repeat", "fold", "inner_val_mae", "best_epoch", "epochs_run", "seconds")},
                    "_order": (fold_index[(info["repeat"], info["fold"])], order),
                }
            )
        table = result.predictions
        table.insert(1, "lr", lr)
        preds.append(table.assign(_order=[(fold_index[(r, f)], order) for r, f in zip(table["repeat"], table["fold"])]))
    # fold by fold, the candidates in order within a fold (as the tables have always been written)
    candidates = pd.DataFrame(rows).sort_values("_order", kind="stable").drop(columns="_order")
    predictions = pd.concat(preds, ignore_index=True).sort_values("_order", kind="stable").drop(columns="_order")
    return CandidateFits(candidates.reset_index(drop=True), predictions.reset_index(drop=True))


# --------------------------------------------------------------------------------------
# 3. the baselines on the same folds
# --------------------------------------------------------------------------------------
class BaselineFits(NamedTuple):
    predictions: pd.DataFrame  # model, repeat, fold, material_id, prediction
    gbm_choices: pd.DataFrame  # the boosted trees' hyper-parameters per fold


def fit_baselines(cv: CvSetup) -> BaselineFits:
    """Every registered baseline (:func:`cgcnn.study.recipes.baselines`) on the folds of ``cv``:
    out-of-fold predictions (model, repeat, fold, material_id, prediction) and the
    hyper-parameters each fold's boosted trees chose."""
    parts, chosen = [], []
    for recipe in baselines(cv.profile):
        result = cross_validate(recipe, cv.materials, cv.folds, val_fraction=cv.profile.cv.inner_val_fraction)
        parts.append(result.predictions)
        chosen += [
            {**{k: i[k] for k in ("repeat", "fold")}, **i["params"], "model": recipe.name}
            for i in result.infos
            if "params" in i
        ]
    predictions = pd.concat(parts, ignore_index=True)[["model", "repeat", "fold", "material_id", "prediction"]]
    return BaselineFits(predictions, pd.DataFrame(chosen))


# --------------------------------------------------------------------------------------
# 4. the within-fold choices, the CV table and the recipes
# --------------------------------------------------------------------------------------
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
    keep = set(common_materials(predictions))
    preds = predictions[predictions["material_id"].isin(keep)]
    rows = {}
    for model, grp in preds.groupby("model", sort=False):
        per_repeat = pd.DataFrame(
            [
                regression_metrics(truth.loc[g["material_id"]].to_numpy(), g["prediction"].to_numpy())
                for _, g in grp.groupby("repeat")
            ]
        )
        row = {k: per_repeat[k].mean() for k in ("mae", "rmse", "r2")}
        row.update(
            {f"{k}_std": per_repeat[k].std(ddof=1) if len(per_repeat) > 1 else np.nan for k in ("mae", "rmse", "r2")}
        )
        row.update(n=int(per_repeat["n"].max()), repeats=len(per_repeat))
        rows[model] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    errors = _abs_error_by_material(preds, truth)
    for model in table.index:
        ci = bootstrap_mean(errors[model], seed=seed)
        table.loc[model, ["mae_lo", "mae_hi"]] = ci.lo, ci.hi
    names = [m for m in registered() if m in table.index]
    if names:
        best = str(table.loc[names, "mae"].idxmin())
        table["best_baseline"] = best
        for model in table.index:
            d = bootstrap_mean(errors[model] - errors[best], seed=seed)
            table.loc[model, ["diff_vs_best_baseline", "diff_vs_best_baseline_lo", "diff_vs_best_baseline_hi"]] = (
                d.value,
                d.lo,
                d.hi,
            )
    if "m2" in table.index and "control" in table.index:
        d = bootstrap_mean(errors["m2"] - errors["control"], seed=seed)
        table.loc["m2", ["diff_vs_control", "diff_vs_control_lo", "diff_vs_control_hi"]] = d.value, d.lo, d.hi
    table.index.name = "model"
    return table.sort_values("mae")


def choose_recipes(candidate_preds: pd.DataFrame, truth: pd.Series, policies: list[str]) -> tuple[pd.DataFrame, str]:
    """Per model the learning rate with the lowest cross-validated MAE; M2 = the policy whose
    model (at its rate) has the lowest CV MAE.  Returns (choices table, selected policy)."""
    err = (candidate_preds["prediction"] - truth.loc[candidate_preds["material_id"]].to_numpy()).abs()
    mae = (
        candidate_preds.assign(err=err).groupby(["model", "lr", "repeat"])["err"].mean().groupby(["model", "lr"]).mean()
    )
    policy_of = {model_key(p): p for p in [*policies, CONTROL]}  # model key -> what it freezes (or the control)
    rows = []
    for model, grp in mae.groupby(level="model", sort=False):
        lr = float(grp.idxmin()[1])
        rows.append(
            {
                "model": model,
                "policy": policy_of[model],
                "lr": lr,
                "cv_mae": float(grp.min()),
            }
        )
    choices = pd.DataFrame(rows).set_index("model")
    adapted = choices.loc[[model_key(p) for p in policies]]
    selected = policy_of[str(adapted["cv_mae"].idxmin())]
    choices["selected"] = choices.index == model_key(selected)
    return choices, selected


@dataclass
class CvResult:
    """The cross-validation of every candidate and baseline.

    Attributes:
        candidates: one row per (repeat, fold, candidate) (see :class:`CandidateFits`).
        candidate_predictions: every candidate's out-of-fold predictions.
        cv_predictions: long table model, repeat, fold, material_id, prediction of every
            model (within-fold choices) and baseline.
        cv_table: per model, CV MAE / RMSE / R², interval and paired differences (:func:`cv_summary`).
        choices: per model (``m2_<policy>``, ``control``) the learning rate chosen by CV MAE;
            ``selected`` marks M2's policy.
        selected_policy: the freeze policy of M2.
        gbm_choices: the boosted trees' hyper-parameters per fold.
    """

    candidates: pd.DataFrame
    candidate_predictions: pd.DataFrame
    cv_predictions: pd.DataFrame
    cv_table: pd.DataFrame
    choices: pd.DataFrame
    selected_policy: str
    gbm_choices: pd.DataFrame


def summarise(cv: CvSetup, fits: CandidateFits, baselines: BaselineFits) -> CvResult:
    """Within-fold choices, the CV table of every model and baseline (``baselines``: what
    :func:`fit_baselines` returns), the recipes by CV MAE."""
    candidates, candidate_preds = fits.candidates, fits.predictions
    policies = list(cv.profile.adapt.policies)
    model_preds = within_fold_choices(candidates, candidate_preds, policies)
    cv_predictions = pd.concat([baselines[0], model_preds], ignore_index=True)
    table = cv_summary(cv_predictions, cv.truth, seed=cv.profile.cv.seed)
    choices, selected = choose_recipes(candidate_preds, cv.truth, policies)
    return CvResult(candidates, candidate_preds, cv_predictions, table, choices, selected, baselines[1])


# --------------------------------------------------------------------------------------
# 5. the record
# --------------------------------------------------------------------------------------
def write_cv(cv: CvSetup, result: CvResult) -> Path:
    """Write the CV tables and the CV record (protocol, chosen recipes, CV table); returns its path."""
    paths = run_paths(cv.run)
    settings = cv.profile.cv
    write_table(paths["tables"] / "cv_candidates.csv", result.candidates, index=False)
    write_table(paths["tables"] / "cv_predictions.csv", result.cv_predictions, index=False)
    write_table(paths["tables"] / "cv_metrics.csv", result.cv_table)
    write_table(paths["tables"] / "cv_gbm_choices.csv", result.gbm_choices, index=False)
    write_table(paths["tables"] / "adaptation_choices.csv", result.choices)
    write_json(
        paths["cv"],
        {
            "protocol": {
                "folds": settings.folds,
                "repeats": settings.repeats,
                "seed": settings.seed,
                "grouped_by": "reduced formula",
                "inner_val_fraction": settings.inner_val_fraction,
                "n_ds2": len(cv.frame),
            },
            "selected_policy": result.selected_policy,
            "learning_rates": {k: float(v) for k, v in result.choices["lr"].items()},
            "cv_metrics": {str(k): dict(row.items()) for k, row in result.cv_table.iterrows()},
        },
    )
    return paths["cv"]


def run_cross_validation(
    run_dir: str | os.PathLike, profile: StudyProfile, *, echo: Callable[[str], Any] = print
) -> CvResult:
    """Every step of this module in order (what the notebook does cell by cell)."""
    clear(run_dir, "cross-validation")
    cv = setup(run_dir, profile)
    result = summarise(cv, fit_candidates(cv, echo=echo), fit_baselines(cv))
    write_cv(cv, result)
    return result
