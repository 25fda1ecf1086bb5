"""Step 02-ml-dev/04, first half: the recipes the cross-validation chose, trained on all of DS2.

* :func:`train_final_models` — every adapted model (``m2_<policy>`` at its chosen learning
  rate) and the control, once per seed, with early stopping on an inner grouped validation
  split of DS2; in ``<run>/models/m2/<policy>/seed-<s>/`` and ``<run>/models/control/seed-<s>/``
  (DS3 uses the mean over seeds).  The recipes are read from what the cross-validation step
  wrote (``tables/adaptation_choices.csv``, the CV record), never chosen here.
* :func:`train_final_ensemble` — the method the methods step selected (the methods record),
  its members trained on all of DS2 (``<run>/models/ensemble/member-<k>/``, plus the boosted
  trees when the selection is an average with them).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cgcnn.fileio import write_json
from cgcnn.prediction.backbone import save_backbone
from cgcnn.prediction.trees import save_trees
from cgcnn.study import engine
from cgcnn.study.candidates import candidate_recipe
from cgcnn.study.cross_validation import CONTROL, CvSetup, FineTuned, model_key, setup
from cgcnn.study.display import label
from cgcnn.study.fits import CachedFit
from cgcnn.study.methods import load_methods, prepare
from cgcnn.study.profiles import StudyProfile
from cgcnn.study.recipes import BACKBONES
from cgcnn.study.rundir import read_json, require_cv, run_paths, write_table


@dataclass
class AdaptationResult:
    """The final adapted models and the control.

    Attributes:
        choices: per model (``m2_<policy>``, ``control``): the learning rate chosen by CV
            MAE; ``selected`` marks M2's policy.
        selected_policy: the freeze policy of M2.
        runs: the final fits: model, policy, lr, seed, best_val_mae, best_epoch, checkpoint.
        seeds: the seeds of the final fits.
    """

    run_dir: Path
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


def _fit_recipes(cv: CvSetup, choices: pd.DataFrame, seeds: list[int], echo) -> pd.DataFrame:
    """Each chosen recipe on all of DS2, once per seed (inner grouped split for early stopping)."""
    models_dir = run_paths(cv.run)["models"]
    rows = []
    for model, choice in choices.iterrows():
        folder = models_dir / (CONTROL if model == CONTROL else f"m2/{choice['policy']}")
        recipe = FineTuned(cv, choice["policy"], float(choice["lr"]), echo=None)
        for seed in seeds:
            fitted = engine.fit_final(recipe, cv.materials, seed=seed, val_fraction=cv.profile.cv.inner_val_fraction)
            result = fitted.info["fit"]
            checkpoint = result.copy_to(folder / f"seed-{seed}")
            rows.append(
                {
                    "model": model,
                    "policy": choice["policy"],
                    "lr": float(choice["lr"]),
                    "seed": seed,
                    "best_val_mae": result.best_val_mae,
                    "best_epoch": result.best_epoch,
                    "epochs_run": result.epochs_run,
                    "seconds": result.seconds,
                    "checkpoint": os.path.relpath(checkpoint, cv.run),
                }
            )
            echo(f"final {model:>14}  lr {choice['lr']:<8g} seed {seed:<3} val MAE {result.best_val_mae:.4f} eV")
    return pd.DataFrame(rows)


def chosen_recipes(run_dir: str | os.PathLike) -> tuple[pd.DataFrame, str]:
    """(choices table, M2's policy) as the cross-validation step recorded them."""
    record = require_cv(run_dir)
    choices = pd.read_csv(run_paths(run_dir)["tables"] / "adaptation_choices.csv").set_index("model")
    return choices, record["selected_policy"]


def train_final_models(
    run_dir: str | os.PathLike, profile: StudyProfile, *, echo: Callable[[str], Any] = print
) -> AdaptationResult:
    """Train every recipe the cross-validation chose on all of DS2, once per seed of ``profile``."""
    run = Path(run_dir)
    paths = run_paths(run)
    choices, selected = chosen_recipes(run)
    for folder in ("m2", CONTROL):
        shutil.rmtree(paths["models"] / folder, ignore_errors=True)
    seeds = list(profile.seeds)
    runs = _fit_recipes(setup(run, profile), choices, seeds, echo)
    write_table(paths["tables"] / "adaptation_runs.csv", runs, index=False)
    write_json(
        paths["models"] / "adaptation.json",
        {
            "selected_policy": selected,
            "seeds": seeds,
            "learning_rates": {k: float(v) for k, v in choices["lr"].items()},
        },
    )
    return AdaptationResult(run, choices, selected, runs, seeds)


def load_adaptation(run_dir: str | os.PathLike) -> AdaptationResult:
    """Read back what :func:`train_final_models` wrote."""
    run = Path(run_dir)
    paths = run_paths(run)
    meta = read_json(paths["models"] / "adaptation.json")
    if meta is None:
        raise FileNotFoundError(
            f"{paths['models'] / 'adaptation.json'} not found: run the final-models stage "
            "(02-ml-dev/05-final-models-and-ds3.ipynb) first"
        )
    choices = pd.read_csv(paths["tables"] / "adaptation_choices.csv").set_index("model")
    runs = pd.read_csv(paths["tables"] / "adaptation_runs.csv")
    return AdaptationResult(run, choices, meta["selected_policy"], runs, list(meta["seeds"]))


def train_final_ensemble(
    run_dir: str | os.PathLike, profile: StudyProfile, *, echo: Callable[[str], Any] = print
) -> dict | None:
    """Train the method the methods step selected on all of DS2 (members, and the boosted
    trees for an average with them); writes ``models/ensemble/ensemble.json`` (what
    :func:`cgcnn.study.methods.load_methods` returns under ``"final"``) and returns the methods record with it.
    None when the run has no methods step."""
    run = Path(run_dir)
    summary = load_methods(run)
    if not summary:
        return None
    paths = run_paths(run)
    ens_dir = paths["models"] / "ensemble"
    shutil.rmtree(ens_dir, ignore_errors=True)
    m = prepare(run, profile)
    cv = m.cv
    network = m.build(summary["network"], echo=echo)
    recipe = candidate_recipe(summary["selected"], network, profile)
    fitted = engine.fit_final(recipe, m.materials, seed=profile.cv.seed, val_fraction=profile.cv.inner_val_fraction)
    fit = fitted.info.get("network", fitted.info)  # an average keeps its network's fit under "network"
    if summary["network"] in BACKBONES:  # a backbone's head, stored as cgcnn.prediction.backbone reads it
        spec = BACKBONES[summary["network"]]
        manifest = {
            "backbone": spec.backbone,
            "version": profile.methods.chgnet.version,
            "candidate": summary["network"],
        }
        folder = ens_dir / "backbone"
        save_backbone(
            folder,
            {**manifest, "train": spec.train, "magpie": spec.magpie},
            krr=[fit["model"], *fit["bagged"]] if "model" in fit else None,
            heads=fit.get("checkpoints"),
        )
        checkpoints = []
        final = pd.DataFrame(network.fits)
        summary["final"] = {
            "backbone": os.path.relpath(folder, run),
            "checkpoints": [],
            "train_ids": list(cv.dataset.ids),
        }
    else:
        checkpoints = [
            CachedFit(Path(c).parent, {}).copy_to(ens_dir / f"member-{k}") for k, c in enumerate(fit["checkpoints"])
        ]
        final = pd.DataFrame(network.fits).assign(checkpoint=[os.path.relpath(c, run) for c in checkpoints])
        summary["final"] = {
            "checkpoints": [os.path.relpath(c, run) for c in checkpoints],
            "train_ids": list(cv.dataset.ids),
            "inner_val_mae": final["inner_val_mae"].tolist(),
        }
    write_table(paths["tables"] / "methods_final_fits.csv", final, index=False)
    target = summary.get("trees_target")
    if target is not None:
        save_trees(fitted.info["trees_model"], ens_dir / "trees.skops")
        summary["final"]["trees"] = {
            "file": os.path.relpath(ens_dir / "trees.skops", run),
            "weight": recipe.weight,
            "target": target,
            "params": fitted.info["params"],
        }
    write_json(ens_dir / "ensemble.json", summary["final"])
    echo(f"final ensemble {summary['selected']}: in {ens_dir}")
    return summary


def adaptation_histories(adaptation: AdaptationResult, seed: int | None = None) -> dict[str, pd.DataFrame]:
    """Model -> training history (``history.csv``) of its final fit for ``seed`` (default: first)."""
    out = {}
    for model in adaptation.choices.index:
        ckpts = adaptation.checkpoints(model)
        if not ckpts:
            continue
        path = Path(ckpts[seed if seed is not None else min(ckpts)]).parent / "history.csv"
        if path.is_file():
            out[label(model)] = pd.read_csv(path)
    return out
