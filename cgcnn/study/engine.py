"""The study's one fold loop: any recipe, any protocol's folds, and the final fit.

:func:`cross_validate` fits a recipe (:mod:`cgcnn.study.recipes`) on the training part of
every fold and predicts its test part — grouped folds, chemistry shift and class held out
alike; the inner (fit, validation) split an early-stopping fit uses is made here, once, by
:func:`cgcnn.evaluation.folds.fold_inner_split`.  :func:`fit_final` fits a recipe on every
material (its inner split seeded by the fit's seed) for DS3 and for shipping.  Expensive fits
inside a recipe go through the fit cache (:mod:`cgcnn.study.fits`), so asking again is cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cgcnn.evaluation.folds import Fold, fold_inner_split, inner_split
from cgcnn.study.recipes import Fitted, Materials, Recipe, fit_recipe

__all__ = ["OutOfFold", "cross_validate", "fit_final", "final_split"]


@dataclass
class OutOfFold:
    """One recipe on every fold: ``predictions`` (model, repeat, fold, material_id, prediction,
    and ``std`` for an ensemble) and what each fold's fit chose (``infos``: one dict per fold,
    with repeat and fold)."""

    name: str
    predictions: pd.DataFrame
    infos: list[dict]
    members: pd.DataFrame | None = None  # repeat, fold, material_id, member, prediction (ensembles)


def cross_validate(
    recipe: Recipe,
    materials: Materials,
    folds: Sequence[Fold],
    *,
    val_fraction: float = 0.15,
    name: str | None = None,
    also: dict[str, Materials] | None = None,
    echo: Callable[[str], Any] | None = None,
) -> OutOfFold:
    """Fit ``recipe`` on each fold's training materials (early stopping, where it stops early,
    on the fold's inner grouped split) and predict the fold's test materials.

    ``also``: other views of the same materials (e.g. with M1's PBE gap in place of MP's) that
    the same fitted model predicts too: columns ``prediction_<view>`` (and ``std_<view>``), and
    a ``view`` column in the members' table."""
    name = name or recipe.name
    views = {"": materials, **{f"_{k}": v for k, v in (also or {}).items()}}
    rows, infos, members = [], [], []
    for fold in folds:
        split = fold_inner_split(materials.groups, fold, val_fraction)
        tag = {"repeat": fold.repeat, "fold": fold.fold}
        fitted = fit_recipe(recipe, materials, fold.train, seed=fold.seed, split=split, tag=tag)
        ids = [materials.ids[p] for p in fold.test]
        part = pd.DataFrame({"repeat": fold.repeat, "fold": fold.fold, "material_id": ids})
        for view, seen in views.items():
            pred = fitted.predict(seen, fold.test)
            if np.shape(pred.mean) != (len(fold.test),):
                raise ValueError(
                    f"recipe {name!r} returned {np.shape(pred.mean)} predictions for {len(fold.test)} materials"
                )
            part[f"prediction{view}"] = np.asarray(pred.mean, float)
            if pred.spread is not None:
                part[f"std{view}"] = np.asarray(pred.spread, float)
            if pred.members is not None:
                k, n = np.shape(pred.members)
                table = pd.DataFrame(
                    {
                        "repeat": fold.repeat,
                        "fold": fold.fold,
                        "material_id": np.tile(ids, k),
                        "member": np.repeat(np.arange(k), n),
                        "prediction": np.asarray(pred.members, float).reshape(-1),
                    }
                )
                members.append(table.assign(view=view.lstrip("_") or "given") if also else table)
        rows.append(part)
        infos.append({**tag, **fitted.info})
        if echo is not None:
            echo(f"repeat {fold.repeat} fold {fold.fold}  {name}: {len(fold.test)} test materials")
    table = pd.concat(rows, ignore_index=True)
    table.insert(0, "model", name)
    return OutOfFold(name, table, infos, pd.concat(members, ignore_index=True) if members else None)


def final_split(groups: Sequence[str], seed: int, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The inner (fit, validation) split of a fit on every material, seeded by the fit's seed."""
    return inner_split(groups, np.arange(len(groups)), val_fraction=val_fraction, seed=seed)


def fit_final(recipe: Recipe, materials: Materials, *, seed: int, val_fraction: float = 0.15) -> Fitted:
    """``recipe`` fitted on every material of ``materials`` (for DS3 and for shipping)."""
    split = final_split(materials.groups, seed, val_fraction)
    return fit_recipe(recipe, materials, np.arange(len(materials)), seed=seed, split=split, tag={"final": True})
