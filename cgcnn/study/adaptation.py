"""Stage 4: domain adaptation of M1 on DS2 for every freeze policy, and the from-scratch control.

For each seed DS2 is split once (``adapt.train.val_fraction`` for validation); every model of
that seed sees the same split.  Each model's learning rate is chosen once, from its grid fits
on the first ``adapt.selection_seeds`` seeds (lowest mean validation MAE); the other seeds are
trained at that rate only.  Nothing here looks at DS3.

Folders: ``<run>/models/m2/<policy>/lr-<lr>/seed-<s>/`` and ``<run>/models/control/lr-<lr>/seed-<s>/``.
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
from cgcnn.study.base import base_checkpoint
from cgcnn.study.data import load_data
from cgcnn.study.profiles import StudyProfile
from cgcnn.study.rundir import run_paths, write_table

CONTROL = "control"


def model_key(policy: str) -> str:
    """Name of an adapted model (``m2_<policy>``) or ``control``."""
    return CONTROL if policy == CONTROL else f"m2_{policy}"


@dataclass
class AdaptationResult:
    """Every adaptation / control fit and the choices made on DS2 validation MAE.

    Attributes:
        runs: one row per fit: model, policy, lr, seed, phase (``grid`` / ``seeds``),
            best_val_mae, best_epoch, epochs_run, seconds, checkpoint (relative to the run).
        choices: one row per model: chosen lr, mean / std validation MAE over all seeds,
            mean best epoch.
        selected_policy: the freeze policy whose model has the lowest mean validation MAE.
        splits: long table material_id, seed, split (train / val / test) of DS2.
    """

    run_dir: Path
    runs: pd.DataFrame
    choices: pd.DataFrame
    selected_policy: str
    splits: pd.DataFrame
    seeds: list[int]

    def checkpoints(self, model: str) -> dict[int, Path]:
        """Seed -> best checkpoint of ``model`` (``m2``, ``m2_<policy>`` or ``control``) at its chosen lr."""
        if model == "m2":
            model = model_key(self.selected_policy)
        lr = float(self.choices.loc[model, "lr"])
        rows = self.runs[(self.runs["model"] == model) & np.isclose(self.runs["lr"], lr)]
        return {int(r.seed): self.run_dir / r.checkpoint for r in rows.itertuples()}


@dataclass
class _Fits:
    """What every fit of one :func:`run_adaptation` call shares; :meth:`fit` runs one of them."""

    run: Path
    profile: StudyProfile
    base: Any  # cgcnn.checkpoint.Loaded
    dataset: Any  # cgcnn.dataset.CrystalDataset of DS2
    splits: dict[int, tuple]
    progress: bool
    echo: Callable[[str], Any]

    def fit(self, policy: str, lr: float, seed: int, phase: str) -> dict:
        """Fine-tune M1 with ``policy`` frozen (or train the control) at ``lr`` on ``seed``'s split."""
        from cgcnn.adapt import adapt, train_control

        folder = CONTROL if policy == CONTROL else f"m2/{policy}"
        out = run_paths(self.run)["models"] / folder / f"lr-{lr:g}" / f"seed-{seed}"
        t0 = time.perf_counter()
        if policy == CONTROL:
            cfg = self.profile.control_config(lr=lr, seed=seed)
            result = train_control(self.dataset, cfg, out, model_config=self.base.model_config,
                                   splits=self.splits[seed], progress=self.progress)
        else:
            cfg = self.profile.adapt_config(policy, lr=lr, seed=seed)
            result = adapt(self.base, self.dataset, cfg, out, splits=self.splits[seed], progress=self.progress)
        row = _fit_row(policy, lr, seed, phase, result, time.perf_counter() - t0, self.run)
        self.echo(f"{row['model']:>14}  lr {lr:<8g} seed {seed:<3} val MAE {row['best_val_mae']:.4f} eV "
                  f"(best epoch {row['best_epoch']}, {row['epochs_run']} run, {row['seconds']:.1f} s)")
        return row


def _fit_row(policy: str, lr: float, seed: int, phase: str, result, seconds: float, run: Path) -> dict:
    return {
        "model": model_key(policy),
        "policy": policy,
        "lr": lr,
        "seed": seed,
        "phase": phase,
        "best_val_mae": result.best_val_mae,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "seconds": round(seconds, 2),
        "checkpoint": os.path.relpath(result.best_checkpoint, run),
    }


def choose_lr(grid_rows: list[dict] | pd.DataFrame) -> float:
    """The learning rate with the lowest mean ``best_val_mae`` over its grid fits (ties: the first rate)."""
    mean_by_lr = pd.DataFrame(grid_rows).groupby("lr", sort=False)["best_val_mae"].mean()
    return float(mean_by_lr.idxmin())


def _split_ds2(dataset, settings, seeds: list[int]) -> tuple[dict[int, tuple], pd.DataFrame]:
    """One train / val / test split of DS2 per seed, and the same as a long table."""
    from cgcnn.train import split_indices

    splits = {s: split_indices(len(dataset), settings.train.val_fraction, settings.train.test_fraction, s) for s in seeds}
    rows = [
        {"material_id": dataset.ids[k], "seed": s, "split": name}
        for s, parts in splits.items() for name, pos in zip(("train", "val", "test"), parts) for k in pos
    ]
    return splits, pd.DataFrame(rows)


def _fit_all(fits: _Fits, selection_seeds: list[int], other_seeds: list[int]) -> tuple[pd.DataFrame, dict[str, float]]:
    """Every model: its learning-rate grid on the selection seeds, then the chosen rate on the other seeds.

    Returns the table of fits and model -> chosen learning rate.
    """
    settings = fits.profile.adapt
    rows: list[dict] = []
    chosen: dict[str, float] = {}
    for policy in [*settings.policies, CONTROL]:
        grid = settings.control_grid if policy == CONTROL else settings.lr_grid
        grid_rows = [fits.fit(policy, lr, seed, "grid") for lr in grid for seed in selection_seeds]
        lr = chosen[model_key(policy)] = choose_lr(grid_rows)
        rows += grid_rows + [fits.fit(policy, lr, seed, "seeds") for seed in other_seeds]
    return pd.DataFrame(rows), chosen


def _choices_table(runs: pd.DataFrame, chosen: dict[str, float]) -> tuple[pd.DataFrame, str]:
    """Per model: the chosen lr and the validation MAE / best epoch of its fits at that rate (all seeds).

    Returns the table and the selected policy (M2): the adapted model with the lowest mean MAE.
    """
    rows = []
    for key, lr in chosen.items():
        grp = runs[runs["model"] == key]
        at_lr = grp[np.isclose(grp["lr"], lr)]
        rows.append({
            "model": key, "policy": grp["policy"].iloc[0], "lr": lr,
            "val_mae": at_lr["best_val_mae"].mean(), "val_mae_std": at_lr["best_val_mae"].std(),
            "best_epoch": at_lr["best_epoch"].mean(), "seeds": len(at_lr),
        })
    choices = pd.DataFrame(rows).set_index("model")
    adapted = choices[choices.index != CONTROL]
    selected = str(adapted["val_mae"].idxmin()).removeprefix("m2_")
    choices["selected"] = choices.index == model_key(selected)
    return choices, selected


def run_adaptation(run_dir: str | os.PathLike, profile: StudyProfile, *, progress: bool = False,
                   echo=print) -> AdaptationResult:
    """Fine-tune M1 on DS2 for every freeze policy, and train the control from scratch.

    For each seed, DS2 is split once (``adapt.train.val_fraction`` for validation); every
    model of that seed sees the same split.  Learning rates are compared on the first
    ``adapt.selection_seeds`` seeds; the remaining seeds are trained at the chosen rate only.
    Nothing here looks at DS3.
    """
    from cgcnn.checkpoint import load_checkpoint

    profile.apply_threads()

    run = Path(run_dir)
    paths = run_paths(run)
    data = load_data(run)
    base = load_checkpoint(base_checkpoint(run))
    dataset = data.dataset("ds2", "bg_exp", base.features)
    seeds = list(profile.seeds)
    selection_seeds, other_seeds = profile.adapt.split_seeds(seeds)
    splits, split_table = _split_ds2(dataset, profile.adapt, seeds)
    for folder in ("m2", CONTROL):
        shutil.rmtree(paths["models"] / folder, ignore_errors=True)

    runs, chosen = _fit_all(_Fits(run, profile, base, dataset, splits, progress, echo), selection_seeds, other_seeds)
    choices, selected = _choices_table(runs, chosen)
    write_table(paths["tables"] / "adaptation_runs.csv", runs, index=False)
    write_table(paths["tables"] / "adaptation_choices.csv", choices)
    write_table(paths["tables"] / "ds2_splits.csv", split_table, index=False)
    write_json(paths["models"] / "adaptation.json", {
        "selected_policy": selected, "seeds": seeds, "selection_seeds": selection_seeds,
        "learning_rates": {k: float(v) for k, v in choices["lr"].items()},
    })
    return AdaptationResult(run, runs, choices, selected, split_table, seeds)


def load_adaptation(run_dir: str | os.PathLike) -> AdaptationResult:
    """Read back what :func:`run_adaptation` wrote."""
    run = Path(run_dir)
    paths = run_paths(run)
    meta_path = paths["models"] / "adaptation.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: run the domain-adaptation stage first")
    meta = json.loads(meta_path.read_text())
    runs = pd.read_csv(paths["tables"] / "adaptation_runs.csv")
    choices = pd.read_csv(paths["tables"] / "adaptation_choices.csv").set_index("model")
    splits = pd.read_csv(paths["tables"] / "ds2_splits.csv", dtype={"material_id": str})
    return AdaptationResult(run, runs, choices, meta["selected_policy"], splits, list(meta["seeds"]))
