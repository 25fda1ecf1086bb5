"""The protocol of ``cgcnn finetune``: grouped cross-validation of every recipe on the same
folds, the CV table with bootstrap intervals and paired differences against zero-shot, the
selection, and the verdict in plain words.

* Folds are grouped by reduced formula (polymorphs never straddle training and test) and
  stratified by gap (:func:`cgcnn.evaluation.folds.grouped_folds`); a small table gets fewer
  folds (:func:`cgcnn.finetune.settings.folds_for`).
* Every recipe is run by the study's fold loop (:func:`cgcnn.study.engine.cross_validate`) on
  those folds, with the same inner (fit, validation) split for early stopping.
* Per recipe: MAE over the materials (each material's absolute error averaged over repeats)
  with a bootstrap 95 % interval, RMSE, and the paired difference of MAE against the shipped
  model as it is (zero-shot), with its bootstrap 95 % interval (:mod:`cgcnn.evaluation.bootstrap`).
* Selected: the recipe with the lowest CV MAE (recipes within ``tie_ev`` of it count as tied;
  the simplest wins).  It is **shipped** only when its paired interval against zero-shot lies
  wholly below 0 and it lowers the MAE by at least ``min_gain_ev`` (a few meV are not worth a
  new model); otherwise the honest answer is the shipped model as it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cgcnn.evaluation.bootstrap import bootstrap_mean
from cgcnn.evaluation.folds import Fold, grouped_folds
from cgcnn.finetune.lab import Lab
from cgcnn.finetune.recipes import LABELS, SIMPLEST_FIRST
from cgcnn.finetune.settings import FinetuneSettings, folds_for
from cgcnn.study.engine import OutOfFold, cross_validate
from cgcnn.study.recipes import Recipe

__all__ = ["Comparison", "compare", "cv_table", "make_folds", "select"]

ACTIONS = {
    "recalibrated": "recalibrating the shipped ensemble (a line fitted on your gaps)",
    "finetuned": "fine-tuning the shipped ensemble's CGCNN members",
    "residual_trees": "boosted trees on the shipped ensemble's residual",
    "average": "averaging recalibration, fine-tuning and residual trees",
}


@dataclass
class Comparison:
    """Every recipe on the same folds: ``oof`` (name -> :class:`OutOfFold`), the CV ``table``,
    the ``selected`` recipe (lowest CV MAE), the recipe that ships (``final``), the ``verdict``
    and the seconds each recipe took."""

    folds: list[Fold]
    oof: dict[str, OutOfFold]
    table: pd.DataFrame
    selected: str
    final: str
    verdict: str
    seconds: dict[str, float]


def make_folds(lab: Lab, settings: FinetuneSettings) -> list[Fold]:
    """Grouped (reduced formula), gap-stratified folds of the lab's materials."""
    groups = lab.materials.groups
    k = folds_for(len(lab), len(set(groups)), settings.folds)
    return grouped_folds(groups, lab.materials.y, k=k, repeats=settings.repeats, seed=settings.seed)


def _errors(lab: Lab, oof: dict[str, OutOfFold]) -> pd.DataFrame:
    """material x recipe: absolute error averaged over repeats (NaN where not predicted)."""
    truth = pd.Series(lab.materials.y, index=lab.ids)
    parts = []
    for name, result in oof.items():
        p = result.predictions
        err = (p["prediction"] - truth.loc[p["material_id"]].to_numpy()).abs()
        parts.append(p.assign(err=err.to_numpy(), model=name))
    long = pd.concat(parts, ignore_index=True)
    return long.groupby(["material_id", "model"])["err"].mean().unstack("model").reindex(lab.ids)


def cv_table(lab: Lab, oof: dict[str, OutOfFold], settings: FinetuneSettings, seconds: dict) -> pd.DataFrame:
    """Per recipe: label, n, mae (+ 95 % lo, hi), rmse, the paired difference against zero-shot
    (+ lo, hi) and seconds; in the order the recipes ran."""
    errors = _errors(lab, oof)
    truth = pd.Series(lab.materials.y, index=lab.ids)
    rows = {}
    for name, result in oof.items():
        e = errors[name]
        ci = bootstrap_mean(e, n_boot=settings.n_boot, seed=settings.seed)
        p = result.predictions.dropna(subset=["prediction"])
        sq = (p["prediction"] - truth.loc[p["material_id"]].to_numpy()) ** 2
        d = bootstrap_mean(e - errors["zero_shot"], n_boot=settings.n_boot, seed=settings.seed)
        rows[name] = {
            "label": LABELS.get(name, name),
            "n": ci.n,
            "mae": ci.value,
            "mae_lo": ci.lo,
            "mae_hi": ci.hi,
            "rmse": float(np.sqrt(sq.mean())) if len(sq) else np.nan,
            "diff_vs_zero_shot": d.value,
            "diff_lo": d.lo,
            "diff_hi": d.hi,
            "seconds": round(seconds.get(name, 0.0), 2),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "recipe"
    return table


def _ev(*values: float, sign: str = "") -> list[str]:
    """Values in eV with two decimals, or three when the largest is below 0.05 eV."""
    digits = 3 if max(abs(v) for v in values) < 0.05 else 2
    return [f"{v:{sign}.{digits}f}" for v in values]


def select(table: pd.DataFrame, settings: FinetuneSettings) -> tuple[str, str, str]:
    """(selected, final, verdict): the lowest CV MAE among zero-shot and the adaptations (ties
    within ``tie_ev``: the simplest), shipped only when its paired interval against zero-shot
    lies below 0 and it lowers the MAE by at least ``min_gain_ev`` (see the module docstring)."""
    models = [n for n in SIMPLEST_FIRST if n in table.index]
    best = float(table.loc[models, "mae"].min())
    selected = next(n for n in models if table.loc[n, "mae"] <= best + settings.tie_ev)
    zs = table.loc["zero_shot"]
    n = int(zs["n"])
    zs_text = "{} [{}, {}] eV".format(*_ev(zs["mae"], zs["mae_lo"], zs["mae_hi"]))
    keep = "no evidence that adapting helps: keep the shipped model"
    if selected == "zero_shot":
        others = [m for m in models if m != "zero_shot"]
        tail = ""
        if others:
            runner = min(others, key=lambda m: table.loc[m, "mae"])
            r = table.loc[runner]
            tail = "; the best adaptation ({}) changes it by {} [{}, {}] eV".format(
                LABELS[runner], *_ev(r["diff_vs_zero_shot"], r["diff_lo"], r["diff_hi"], sign="+")
            )
        return selected, "zero_shot", f"{keep} (its cross-validated MAE on your {n} materials is {zs_text}{tail})."
    s = table.loc[selected]
    gain, lo, hi = -s["diff_vs_zero_shot"], -s["diff_hi"], -s["diff_lo"]
    if s["diff_hi"] < 0 and gain >= settings.min_gain_ev:
        verdict = (
            "{} lowers the error by {} [{}, {}] eV (cross-validated MAE on your {} materials {} -> {} eV): "
            "use the adapted model.".format(ACTIONS[selected], *_ev(gain, lo, hi), n, *_ev(zs["mae"], s["mae"]))
        )
        return selected, selected, verdict
    if s["diff_hi"] < 0:
        verdict = (
            "no adaptation helps enough to matter: keep the shipped model. The best, {}, lowers the cross-validated "
            "MAE by only {} [{}, {}] eV, less than {:g} eV (zero-shot MAE {} on {} materials)."
        ).format(ACTIONS[selected], *_ev(gain, lo, hi), settings.min_gain_ev, zs_text, n)
        return selected, "zero_shot", verdict
    verdict = (
        "{}. The best adaptation, {}, changes the cross-validated MAE by {} [{}, {}] eV, an interval that "
        "includes 0 (zero-shot MAE {} on {} materials)."
    ).format(keep, ACTIONS[selected], *_ev(s["diff_vs_zero_shot"], s["diff_lo"], s["diff_hi"], sign="+"), zs_text, n)
    return selected, "zero_shot", verdict


def compare(
    lab: Lab,
    recipes: list[Recipe],
    folds: list[Fold],
    settings: FinetuneSettings,
    *,
    echo: Callable[[str], Any] | None = print,
) -> Comparison:
    """Every recipe on the same folds (progress per fold through ``echo``), the CV table, the
    selection and the verdict."""
    oof, seconds = {}, {}
    for recipe in recipes:
        t0 = time.perf_counter()
        if echo is not None:
            echo(f"{recipe.name}: {LABELS.get(recipe.name, recipe.label)} on {len(folds)} folds")
        oof[recipe.name] = cross_validate(
            recipe, lab.materials, folds, val_fraction=settings.inner_val_fraction, echo=echo
        )
        seconds[recipe.name] = time.perf_counter() - t0
    table = cv_table(lab, oof, settings, seconds)
    selected, final, verdict = select(table, settings)
    pbe = [n for n in ("pbe", "pbe_linear") if n in table.index]
    if pbe:
        b = min(pbe, key=lambda n: table.loc[n, "mae"])
        if table.loc[b, "mae"] < table.loc[final, "mae"]:
            verdict += (
                f" Note: {LABELS[b]} has a lower CV MAE ({table.loc[b, 'mae']:.2f} eV on the {int(table.loc[b, 'n'])} "
                "materials with a PBE gap): the model adds little where your PBE gaps are good."
            )
    return Comparison(folds, oof, table, selected, final, verdict, seconds)
