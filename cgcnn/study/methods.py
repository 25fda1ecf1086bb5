"""Step 02-ml-dev/03: CGCNN ensembles that use the PBE gaps better than sequential fine-tuning,
cross-validated on the folds of the fine-tuning study; one is selected and calibrated.

Candidates (``profile.methods.candidates``; defined in :mod:`cgcnn.study.candidates`):
PBE-aware (``delta``), PBE-aware + composition (``delta_composition``) and multi-fidelity
(``multifidelity``) CGCNN ensembles fine-tuned from M1, the same trained with a Huber loss
(``<name>_huber``), and each of them averaged with boosted trees on composition + PBE that
learn the gap (``<name>_trees``) or the correction experiment − PBE (``<name>_ctrees``).  Every candidate is also scored on the rows each experimental source
labelled (``cv_mae_by_label_source``: e.g. the Borlido rows alone), on the same folds.

The PBE gap a DS2 / DS3 material reads is its Materials Project PBE gap, or M1's
prediction when MP has none (as at prediction time, :mod:`cgcnn.prediction.ensemble`).

Protocol: the outer folds of the fine-tuning study (same settings, same folds) —
:func:`setup`; in every fold ``members`` models (seeds) are fitted with early stopping on the
inner grouped validation split and the test fold gets their mean and spread —
:func:`cross_validate`; each candidate is also averaged with the boosted trees —
:func:`with_boosted_trees`.  The candidate with the lowest CV MAE is selected, the spread's
calibration factor is fitted on its out-of-fold predictions, and everything is written
(``tables/methods_*.csv``, the methods record, the CV table) — :func:`select`.  The selected
recipe is trained on all of DS2 by the next step (:func:`cgcnn.study.final_models.train_final_ensemble`).
DS3 is never looked at here.  Each candidate's CV is kept as soon as it finishes
(``tables/methods_cv_<name>.*``, with a key of its settings, the CV protocol, M1 and the DS2
ids): a step interrupted later resumes after the finished candidates.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from cgcnn.errors import CgcnnError
from cgcnn.fileio import write_json
from cgcnn.prediction.ensemble import calibration_scale, coverage
from cgcnn.study import engine
from cgcnn.study.backbone_question import backbone_comparisons
from cgcnn.study.candidates import (
    Averaged,
    ensemble_size_table,
    method_model_config,
    method_trees,
    network_ensemble,
    pbe_inputs,
)
from cgcnn.study.cross_validation import CvSetup, cv_summary, fit_baselines
from cgcnn.study.cross_validation import setup as cv_setup
from cgcnn.study.profiles import StudyProfile
from cgcnn.study.recipes import BACKBONES, CANDIDATES, NETWORKS, TREE_AVERAGES, Materials, candidate
from cgcnn.study.rundir import clear, read_json, run_paths, write_table


class CvMismatchError(CgcnnError, ValueError):
    """The methods step was asked to use other folds than the cross-validation step used."""


__all__ = [
    "CvMismatchError",
    "CandidateCV",
    "MethodsSetup",
    "calibration_rows",
    "cross_validate",
    "load_methods",
    "prepare",
    "usable_candidates",
    "run_methods",
    "select",
    "with_boosted_trees",
]


def calibration_rows(name: str, oof: pd.DataFrame, spreads: pd.DataFrame, truth: pd.Series) -> dict:
    """Coverage of ±1σ / ±2σ before and after the calibration factor (out-of-fold data)."""
    merged = oof.merge(spreads, on=["repeat", "material_id"])
    err = merged["prediction"].to_numpy() - truth.loc[merged["material_id"]].to_numpy()
    std = merged["std"].to_numpy()
    scale = calibration_scale(err, std)
    return {
        "method": name,
        "scale": scale,
        "mean_std_ev": float(np.mean(std)),
        "within_1sd_raw": coverage(err, std, 1),
        "within_2sd_raw": coverage(err, std, 2),
        "within_1sd": coverage(err, scale * std, 1),
        "within_2sd": coverage(err, scale * std, 2),
    }


@dataclass
class MethodsSetup:
    """The fine-tuning study's folds and data (``cv``) and the PBE gap every DS2 material reads
    (MP's, or M1's prediction: ``pbe_source`` says which)."""

    cv: CvSetup
    pbe: np.ndarray
    pbe_source: np.ndarray

    def build(self, name: str, *, echo: Callable[[str], Any] = print):
        """Candidate ``name`` without trees: a CGCNN ensemble with its training data
        (:func:`cgcnn.study.candidates.network_ensemble`), or a backbone recipe
        (:class:`cgcnn.study.backbone_recipes.ChgnetRecipe`)."""
        cv = self.cv
        if name in BACKBONES:
            from cgcnn.study.backbone_recipes import ChgnetRecipe

            return ChgnetRecipe(name, candidate(name).label, cv.profile, self.chgnet_records, cv.cache, echo)
        return network_ensemble(name, cv.profile, cv.data, cv.base, cv.dataset, self.pbe, cv.cache, echo)

    @cached_property
    def chgnet_records(self) -> dict:
        """id -> CHGNet record of every DS2 and DS3 material (computed once per crystal, kept in
        the fit cache's ``features/``: :class:`cgcnn.backbones.chgnet.FeatureStore`)."""
        from cgcnn.backbones.chgnet import FeatureStore

        cv = self.cv
        structures = {**cv.data.structures("ds2", cv.dataset.ids), **cv.data.structures("ds3")}
        store = FeatureStore(cv.cache.root / "features", cv.profile.methods.chgnet.version)

        def skipped(mid: str, why: str) -> None:
            print(f"warning: {mid}: {why}; it has no CHGNet prediction (left out of every paired row)")

        return store.records(structures, on_error=skipped)

    @cached_property
    def materials(self) -> Materials:
        """DS2 as the recipes see it, with the PBE gap the networks read."""
        return Materials(self.cv.frame, pbe_inputs=self.pbe)

    def cross_validate(self, recipe, **kw):
        """``recipe`` on the outer folds of the fine-tuning study (:func:`cgcnn.study.engine.cross_validate`)."""
        cv = self.cv
        return engine.cross_validate(
            recipe, self.materials, cv.folds, val_fraction=cv.profile.cv.inner_val_fraction, **kw
        )


def usable_candidates(profile: StudyProfile, *, echo: Callable[[str], Any] = print) -> list[str]:
    """The profile's candidates this machine can run: a backbone's are left out, with one line
    saying why, when its optional extra is not installed."""
    from cgcnn.backbones.chgnet import available

    names = list(profile.methods.candidates)
    why = available() if any(n in BACKBONES for n in names) else None
    if why:
        echo(f"note: {why}; left out: {', '.join(n for n in names if n in BACKBONES)}")
        names = [n for n in names if n not in BACKBONES]
    return names


def prepare(run_dir: str | os.PathLike, profile: StudyProfile) -> MethodsSetup:
    """The folds of the fine-tuning study and the PBE inputs of every DS2 material.

    Refuses (one line) when the profile's CV settings are not those the cross-validation step
    recorded in the CV record: the candidates must be scored on the same folds."""
    record = read_json(run_paths(run_dir)["cv"])
    if record is not None:
        done = {k: record["protocol"].get(k) for k in ("folds", "repeats", "seed", "inner_val_fraction")}
        now = {k: getattr(profile.cv, k) for k in done}
        if done != now:
            raise CvMismatchError(
                f"{run_paths(run_dir)['cv'].name} was written with cv settings {done} but this profile has {now}: "
                "rerun the cross-validation step with these settings, or give the methods step the same ones"
            )
    cv = cv_setup(run_dir, profile)
    pbe, source = pbe_inputs(cv.data.ds2, cv.dataset.ids, cv.base, cv.dataset, profile.device)
    return MethodsSetup(cv, pbe, source)


@dataclass
class CandidateCV:
    """One candidate's out-of-fold predictions (``table``: model, repeat, fold, material_id,
    prediction, std), its fits and the coverage of its spread (:func:`calibration_rows`)."""

    name: str
    table: pd.DataFrame
    fits: pd.DataFrame
    calibration: dict
    members: pd.DataFrame | None = None  # each member's predictions (repeat, fold, material_id, member, prediction)


def cross_validate(m: MethodsSetup, name: str, *, echo: Callable[[str], Any] = print) -> CandidateCV:
    """Candidate ``name``'s ensemble on every outer fold, by the study's fold loop (members
    through the fit cache: a rerun reads them back, an interrupted one resumes at the next
    unfinished member)."""
    tables = run_paths(m.cv.run)["tables"]
    network = m.build(name, echo=echo)
    result = m.cross_validate(network, name=f"ens_{name}")
    table, members = result.predictions, result.members
    fits = pd.DataFrame(network.fits)
    write_table(tables / f"methods_cv_{name}.csv", table, index=False)
    write_table(tables / f"methods_cv_{name}_fits.csv", fits, index=False)
    if members is not None:  # a single model (e.g. kernel ridge) has no members
        write_table(tables / f"methods_cv_{name}_members.csv", members, index=False)
    calibration = calibration_rows(name, table.drop(columns="std"), table[["repeat", "material_id", "std"]], m.cv.truth)
    return CandidateCV(name, table, fits, calibration, members)


def with_boosted_trees(
    m: MethodsSetup, results: dict[str, CandidateCV]
) -> tuple[dict[str, CandidateCV], dict[str, list[dict]]]:
    """Each candidate averaged with boosted trees on composition + the PBE inputs (refitted on
    the same folds), once with trees learning the gap (``_trees``) and once learning the
    correction to PBE (``_ctrees``): two more candidates each (:data:`cgcnn.study.recipes.CANDIDATES`),
    each a recipe run by the same fold loop.  The trees' own out-of-fold predictions are written to
    ``tables/methods_cv<suffix>.csv``.  Returns (those candidates, suffix -> the trees'
    hyper-parameters chosen per fold)."""
    profile = m.cv.profile
    hybrids, chosen = {}, {}
    for suffix, (target, _) in TREE_AVERAGES.items():
        trees = method_trees(next(c for c in CANDIDATES.values() if c.trees == target), profile)
        alone = m.cross_validate(trees)
        chosen[suffix] = [{"repeat": i["repeat"], "fold": i["fold"], **i["params"]} for i in alone.infos]
        write_table(
            run_paths(m.cv.run)["tables"] / f"methods_cv{suffix}.csv",
            alone.predictions.drop(columns="model"),
            index=False,
        )
        for name in results:
            hybrid = candidate(f"{name}{suffix}")
            network = m.build(name, echo=_quiet)
            table = m.cross_validate(Averaged(hybrid.name, hybrid.label, network, trees), name=f"ens_{hybrid.name}")
            table = table.predictions
            calibration = calibration_rows(
                hybrid.name, table.drop(columns="std"), table[["repeat", "material_id", "std"]], m.cv.truth
            )
            hybrids[hybrid.name] = CandidateCV(hybrid.name, table, pd.DataFrame(), calibration)
    return hybrids, chosen


def _quiet(_: str) -> None:
    """An echo that says nothing (an averaged candidate reads back fits already reported)."""


def _cv_mae(oof: pd.DataFrame, truth: pd.Series, names) -> dict[str, float]:
    """Each candidate's CV MAE (the mean over repeats) on the rows of ``oof``."""
    return {
        n: float(
            np.mean(
                [
                    np.abs(g["prediction"] - truth.loc[g["material_id"]].to_numpy()).mean()
                    for _, g in oof[oof["model"] == f"ens_{n}"].groupby("repeat")
                ]
            )
        )
        for n in names
    }


def select(
    m: MethodsSetup,
    results: dict[str, CandidateCV],
    hybrids: dict[str, CandidateCV],
    trees_chosen: dict[str, list[dict]],
) -> dict:
    """The candidate with the lowest CV MAE, its calibration, and the CV table of every model
    (the fine-tuning study's and the baselines' included, on the same paired rows).  Writes
    the methods record and the ``methods_*`` tables (``methods_cv_metrics.csv``: that CV table;
    ``methods_ensemble_size.csv``: each candidate's CV MAE with fewer of its members);
    the cross-validation step's files are only read.  Returns the methods record's contents."""
    cv, profile = m.cv, m.cv.profile
    paths = run_paths(cv.run)
    every = {**results, **hybrids}
    oof_table = pd.concat([r.table for r in every.values()], ignore_index=True)
    fits = pd.concat([r.fits for r in results.values()], ignore_index=True)
    calibration_table = pd.DataFrame([r.calibration for r in every.values()]).set_index("method")
    if (paths["tables"] / "cv_predictions.csv").is_file():  # written by the fine-tuning study
        previous = pd.read_csv(paths["tables"] / "cv_predictions.csv", dtype={"material_id": str})
        previous = previous[~previous["model"].isin({f"ens_{name}" for name in CANDIDATES})]
    else:
        previous = fit_baselines(cv)[0]
    cv_predictions = pd.concat([previous, oof_table.drop(columns="std")], ignore_index=True)
    cv_table = cv_summary(cv_predictions, cv.truth, seed=profile.cv.seed)
    truth = cv.truth
    mae = _cv_mae(oof_table, truth, every)
    selected = min(mae, key=mae.get)
    source = cv.data.ds2.set_index("material_id")["bg_exp_source"].astype(str)
    sources = source.loc[oof_table["material_id"]].to_numpy()
    mae_by_source = {
        src: _cv_mae(part, truth, every) for src, part in oof_table.assign(source=sources).groupby("source")
    }
    scale = float(calibration_table.loc[selected, "scale"])
    trees_oof = {  # written by with_boosted_trees
        suffix: pd.read_csv(paths["tables"] / f"methods_cv{suffix}.csv", dtype={"material_id": str})
        for suffix in TREE_AVERAGES
        if (paths["tables"] / f"methods_cv{suffix}.csv").is_file()
    }
    sizes = [
        ensemble_size_table(n, r.members, truth, trees_oof, seed=profile.cv.seed)
        for n, r in results.items()
        if r.members is not None
    ]

    backbones = backbone_comparisons(cv_predictions, truth, seed=profile.cv.seed)
    if len(backbones):
        write_table(paths["tables"] / "methods_backbones.csv", backbones, index=False)
    write_table(paths["tables"] / "methods_cv_metrics.csv", cv_table)
    write_table(paths["tables"] / "methods_cv_predictions.csv", oof_table, index=False)
    write_table(paths["tables"] / "methods_cv_fits.csv", fits, index=False)
    write_table(paths["tables"] / "methods_calibration.csv", calibration_table)
    if sizes:
        write_table(paths["tables"] / "methods_ensemble_size.csv", pd.concat(sizes, ignore_index=True), index=False)
    chosen_candidate = candidate(selected)
    network, trees_target = chosen_candidate.base, chosen_candidate.trees
    summary = {
        "candidates": list(results),
        "selected": selected,
        "network": network,
        "trees_target": trees_target,
        "cv_mae_all_ds2": mae,
        "cv_mae_by_label_source": mae_by_source,
        "calibration": {"scale": scale, **{k: float(v) for k, v in calibration_table.loc[selected].items()}},
        "trees_cv_choices": trees_chosen,
        "settings": profile.methods.to_dict(),
        "model_config": method_model_config(network, cv.base.model_config).to_dict() if network in NETWORKS else None,
        "backbone": BACKBONES[network].backbone if network in BACKBONES else "cgcnn",
        "backbone_question": backbones.to_dict(orient="records"),
        "pbe_sources_ds2": {k: int(v) for k, v in pd.Series(m.pbe_source).value_counts().items()},
    }
    write_json(paths["methods"], summary)
    return summary


def run_methods(
    run_dir: str | os.PathLike, profile: StudyProfile, *, echo: Callable[[str], Any] = print
) -> dict | None:
    """Every step of this module in order (what the notebook does cell by cell).  Returns
    the methods record's contents, or None when the profile names no candidate."""
    clear(run_dir, "methods")
    if not profile.methods.candidates:
        return None
    m = prepare(run_dir, profile)
    results = {name: cross_validate(m, name, echo=echo) for name in usable_candidates(profile, echo=echo)}
    hybrids, chosen = with_boosted_trees(m, results)
    summary = select(m, results, hybrids, chosen)
    echo(
        f"selected method: {summary['selected']} (CV MAE {summary['cv_mae_all_ds2'][summary['selected']]:.4f} eV); "
        f"spread calibration factor {summary['calibration']['scale']:.2f}"
    )
    return summary


def load_methods(run_dir: str | os.PathLike) -> dict | None:
    """The methods record (what :func:`select` wrote), with the final fit of the selected
    ensemble under ``"final"`` once it is trained (``models/ensemble/ensemble.json``,
    :func:`cgcnn.study.final_models.train_final_ensemble`); None when the run has no methods step."""
    summary = read_json(run_paths(run_dir)["methods"])
    final = read_json(run_paths(run_dir)["models"] / "ensemble" / "ensemble.json")
    if summary is not None and final is not None:
        summary["final"] = final
    return summary
