"""A shipped ensemble adapted to a lab's own measurements (``cgcnn finetune``), for prediction.

An adapted model folder holds the shipped ensemble as it is (``member-<k>.pt``, ``trees.skops``,
``pbe-model.pt``: its prediction is the *zero-shot* gap) and what ``cgcnn finetune`` chose on
the lab's data by grouped cross-validation (:mod:`cgcnn.finetune`), in ``manifest.json``'s
``"adaptation"``:

* ``zero_shot`` — the shipped ensemble's prediction, unchanged;
* ``recalibrated`` — ``a + b · zero-shot`` (a line fitted on the lab's gaps; the spread × |b|);
* ``finetuned`` — the shipped CGCNN members fine-tuned on the lab's gaps
  (``finetuned-<k>.pt``), averaged with the shipped trees as the shipped ensemble is;
* ``residual_trees`` — zero-shot plus boosted trees on the zero-shot residual, reading Magpie
  composition, the PBE gap and the zero-shot prediction (``residual-trees.skops``);
* ``average`` — the equal-weight mean of several of those (``components``); its spread is
  the mixture's (the components' variances and their disagreement).

Intervals and the applicability domain (the calibration files of :mod:`cgcnn.prediction.trust`) were recalibrated on the
lab's out-of-fold errors of that recipe, and the domain extended with the lab's materials.
``load_model(folder)`` gives a :class:`~cgcnn.prediction.predictor.Predictor` carrying the
:class:`Adaptation`, whose :meth:`Adaptation.predict` makes its table.  The same functions
compute the recipes' out-of-fold predictions in cross-validation, so what was scored is what
predicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cgcnn.data.descriptors import composition_features
from cgcnn.prediction.ensemble import ensemble_predict
from cgcnn.prediction.trees import load_trees
from cgcnn.prediction.trust import add_trust_columns
from cgcnn.training.checkpoint import load_checkpoint

__all__ = [
    "COMPONENTS",
    "Adaptation",
    "average",
    "linear",
    "residual_features",
    "residual",
]

COMPONENTS = ("zero_shot", "recalibrated", "finetuned", "residual_trees")


def linear(zero_shot: np.ndarray, spread: np.ndarray, intercept: float, slope: float) -> tuple[np.ndarray, np.ndarray]:
    """(``intercept + slope · zero_shot``, ``|slope| · spread``)."""
    return intercept + slope * np.asarray(zero_shot, float), abs(slope) * np.asarray(spread, float)


def residual_features(composition: np.ndarray, pbe: np.ndarray, zero_shot: np.ndarray) -> np.ndarray:
    """[n, 134]: Magpie composition (132), the PBE gap the ensemble read, the zero-shot gap."""
    return np.column_stack(
        [np.asarray(composition, np.float64), np.asarray(pbe, np.float64), np.asarray(zero_shot, np.float64)]
    )


def residual(model, composition, pbe, zero_shot) -> np.ndarray:
    """The zero-shot gap plus the residual the trees learnt."""
    return np.asarray(zero_shot, float) + model.predict(residual_features(composition, pbe, zero_shot))


def average(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Equal-weight mixture of (mean, spread) parts: the mean of the means; the spread
    ``sqrt(mean of variances + variance of the means)``."""
    means = np.vstack([np.asarray(m, float) for m, _ in parts])
    var = np.vstack([np.asarray(s, float) ** 2 for _, s in parts])
    return means.mean(axis=0), np.sqrt(var.mean(axis=0) + means.var(axis=0))


@dataclass
class Adaptation:
    """What a model folder's ``"adaptation"`` entry says, loaded: the recipe, its components
    and what each needs (a line, fine-tuned members, residual trees)."""

    recipe: str
    components: list[str]
    line: tuple[float, float] | None = None
    finetuned: list = field(default_factory=list)  # Loaded members
    trees: object | None = None  # the residual trees (a HistGradientBoostingRegressor)

    def predict(self, model, ds, pbe=None) -> pd.DataFrame:
        """The prediction table of ``model`` (a :class:`~cgcnn.prediction.predictor.Predictor`
        holding the shipped ensemble) with this adaptation on top; the columns of
        :meth:`Predictor.predict_dataset`."""
        base = dict(pbe_model=model.pbe_model, trees=model.trees, trees_weight=model.trees_weight)
        run = dict(batch_size=model.batch_size, device=model.device)
        table = ensemble_predict(model.members, ds, pbe=pbe, scale=1.0, **base, **run)
        zs, spread = table["prediction_ev"].to_numpy(), table["prediction_std_ev"].to_numpy()
        read = table["pbe_gap_ev"].to_numpy(np.float64)
        parts = []
        for comp in self.components:
            if comp == "zero_shot":
                parts.append((zs, spread))
            elif comp == "recalibrated":
                parts.append(linear(zs, spread, *self.line))
            elif comp == "residual_trees":
                parts.append((residual(self.trees, composition_features(ds.graphs), read, zs), spread))
            else:  # finetuned: the members read the same PBE gaps
                ft = ensemble_predict(self.finetuned, ds, pbe=dict(zip(ds.ids, read)), scale=1.0, **base, **run)
                parts.append((ft["prediction_ev"].to_numpy(), ft["prediction_std_ev"].to_numpy()))
        mean, raw = parts[0] if len(parts) == 1 else average(parts)
        table["prediction_ev"] = np.maximum(mean, 0.0)
        table["prediction_std_ev"] = model.scale * raw
        table["n_members"] = len(model.members) + (model.trees is not None) + len(self.finetuned)
        if model.trust is not None:
            add_trust_columns(table, raw, ds, model.trust, model.pbe_model, level=model.interval_level, **run)
        return table

    @classmethod
    def load(cls, folder: Path, entry: dict) -> Adaptation:
        comps = list(entry.get("components") or [entry["recipe"]])
        unknown = [c for c in comps if c not in COMPONENTS]
        if unknown:
            from cgcnn.errors import CgcnnError

            raise CgcnnError(f"{folder}: unknown adaptation component {unknown[0]!r}; rebuild it with cgcnn finetune")
        line = entry.get("linear")
        ft = [load_checkpoint(folder / f, device="cpu") for f in (entry.get("finetuned") or {}).get("files", [])]
        trees = entry.get("residual_trees")
        return cls(
            entry["recipe"],
            comps,
            (float(line["intercept"]), float(line["slope"])) if line else None,
            ft,
            load_trees(folder / trees["file"]) if trees else None,
        )
