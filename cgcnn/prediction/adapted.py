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

Intervals and the applicability domain (``trust.json``, ``domain.npz``) were recalibrated on the
lab's out-of-fold errors of that recipe, and the domain extended with the lab's materials.
The same functions compute the recipes' out-of-fold predictions in cross-validation, so what
was scored is what predicts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cgcnn.data.descriptors import composition_features
from cgcnn.prediction.ensemble import ensemble_predict
from cgcnn.prediction.trees import TreeMember, load_tree_member, load_trees
from cgcnn.prediction.trust import add_trust_columns, load_trust
from cgcnn.training.checkpoint import load_checkpoint

__all__ = [
    "COMPONENTS",
    "Adaptation",
    "average",
    "linear",
    "load_adapted",
    "residual_features",
    "residual",
    "tree_member_prediction",
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


def _adapted_class():
    from cgcnn.prediction.predictor import Predictor

    class AdaptedPredictor(Predictor):
        """The shipped ensemble with the adaptation of :class:`Adaptation` on top."""

        def __init__(self, members, *, adaptation: Adaptation, **kw):
            super().__init__(members, **kw)
            self.adaptation = adaptation

        def predict_dataset(self, ds, *, pbe=None) -> pd.DataFrame:
            base = dict(pbe_model=self.pbe_model, trees=self.trees, trees_weight=self.trees_weight)
            run = dict(batch_size=self.batch_size, device=self.device)
            table = ensemble_predict(self.members, ds, pbe=pbe, scale=1.0, **base, **run)
            zs, spread = table["prediction_ev"].to_numpy(), table["prediction_std_ev"].to_numpy()
            read = table["pbe_gap_ev"].to_numpy(np.float64)
            a = self.adaptation
            parts = []
            for comp in a.components:
                if comp == "zero_shot":
                    parts.append((zs, spread))
                elif comp == "recalibrated":
                    parts.append(linear(zs, spread, *a.line))
                elif comp == "residual_trees":
                    parts.append((residual(a.trees, composition_features(ds.graphs), read, zs), spread))
                else:  # finetuned: the members read the same PBE gaps
                    ft = ensemble_predict(
                        a.finetuned, ds, pbe=dict(zip(ds.ids, read)), scale=1.0, **base, trust=None, **run
                    )
                    parts.append((ft["prediction_ev"].to_numpy(), ft["prediction_std_ev"].to_numpy()))
            mean, raw = parts[0] if len(parts) == 1 else average(parts)
            table["prediction_ev"] = np.maximum(mean, 0.0)
            table["prediction_std_ev"] = self.scale * raw
            table["n_members"] = len(self.members) + (self.trees is not None) + len(a.finetuned)
            if self.trust is not None:
                level = self.interval_level
                add_trust_columns(table, raw, ds, self.trust, self.pbe_model, level=level, **run)
            return table

    return AdaptedPredictor


def load_adapted(folder: str | Path, *, device: str = "auto", batch_size: int = 256, interval_level=None):
    """The :class:`Predictor` of an adapted model folder written by ``cgcnn finetune``."""
    folder = Path(folder)
    info = json.loads((folder / "manifest.json").read_text())
    members = [load_checkpoint(folder / f, device="cpu") for f in info["member_files"]]
    pbe_model = load_checkpoint(folder / info["pbe_model"], device="cpu")
    trees = load_tree_member(folder, info["trees"]) if info.get("trees") else None
    return _adapted_class()(
        members,
        adaptation=Adaptation.load(folder, info["adaptation"]),
        device=device,
        batch_size=batch_size,
        source=f"adapted:{folder}",
        scale=float((info.get("calibration") or {}).get("scale", 1.0)),
        pbe_model=pbe_model,
        trees=trees,
        trees_weight=float(info["trees"]["weight"]) if info.get("trees") else 0.5,
        trust=load_trust(folder),
        interval_level=interval_level,
    )


def tree_member_prediction(trees: TreeMember | None, composition, pbe) -> np.ndarray | None:
    """The shipped tree member's gap for each crystal (None without trees)."""
    return None if trees is None else trees.predict(composition, pbe)
