"""The recipes ``cgcnn finetune`` compares on a lab's data, each a study recipe
(:class:`cgcnn.study.recipes.Recipe`) run by the study's one fold loop
(:func:`cgcnn.study.engine.cross_validate`):

* ``zero_shot`` — the shipped ensemble as it is (nothing is fitted);
* ``recalibrated`` — a line ``a + b · zero-shot`` fitted on the training materials;
* ``finetuned`` — the shipped ensemble's CGCNN members fine-tuned on the training materials
  (early stopping on the fold's inner grouped split; how much is frozen — each policy of
  ``settings.policies`` — chosen by the first member's inner validation MAE, then the other
  members fine-tuned under that policy), averaged with the
  shipped trees as the shipped ensemble is; every network fit through the fit cache;
* ``residual_trees`` — boosted trees learning the zero-shot residual from Magpie composition,
  the PBE gap and the zero-shot prediction (hyper-parameters by inner grouped CV);
* ``average`` — the equal-weight mean of the three adapted recipes;

and, where the lab gave PBE gaps, the PBE baselines (:class:`RawPBE`, :class:`LinearPBE`).
Prediction uses the same functions (:mod:`cgcnn.prediction.adapted`), so what was scored is what
the model folder predicts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from cgcnn.config import AdaptConfig, TrainConfig
from cgcnn.evaluation.baselines import BoostedTrees
from cgcnn.finetune.lab import Lab
from cgcnn.finetune.settings import FinetuneSettings
from cgcnn.prediction.adapted import average, linear, residual, residual_features
from cgcnn.prediction.ensemble import mix
from cgcnn.prediction.inference import predict
from cgcnn.study.fits import FitCache, dataset_digest, loaded_digest
from cgcnn.study.recipes import Fitted, LinearPBE, Prediction, RawPBE, Recipe
from cgcnn.training.adapt import adapt
from cgcnn.training.checkpoint import load_checkpoint

__all__ = ["ADAPTED", "LABELS", "SIMPLEST_FIRST", "lab_recipes"]

LABELS = {
    "zero_shot": "shipped ensemble as it is (zero-shot)",
    "recalibrated": "shipped ensemble + linear recalibration",
    "finetuned": "shipped ensemble's CGCNN members fine-tuned",
    "residual_trees": "shipped ensemble + boosted trees on its residual",
    "average": "average of recalibration, fine-tuning and residual trees",
    "pbe": "PBE (raw)",
    "pbe_linear": "PBE, linear correction",
}
# the order ties are broken in: the simplest recipe first
SIMPLEST_FIRST = ("zero_shot", "recalibrated", "residual_trees", "finetuned", "average")
ADAPTED = SIMPLEST_FIRST[1:]


class _LabRecipe(Recipe):
    """A recipe fitted on a :class:`Lab`'s materials; fits are remembered per training set, so
    the average reuses its components' fits."""

    def __init__(self, lab: Lab, settings: FinetuneSettings, memo: dict):
        self.lab, self.s, self.memo = lab, settings, memo

    @property
    def label(self) -> str:  # type: ignore[override]
        return LABELS[self.name]

    def fit(self, materials, train, *, seed: int, split=None, tag: dict | None = None) -> Fitted:
        """The fitted recipe; its gaps clipped at 0 eV, as a model folder's are."""
        raw = self.raw_fit(train, seed=seed, split=split, tag=tag)

        def predict_(m, pos):
            p = raw.predict(m, pos)
            return Prediction(np.maximum(p.mean, 0.0), p.spread)

        return Fitted(predict_, raw.info)

    def raw_fit(self, train, *, seed: int, split=None, tag: dict | None = None) -> Fitted:
        """The fitted recipe before clipping (what an average averages), fitted once per training set."""
        key = (self.name, np.asarray(train, np.int64).tobytes(), seed)
        if key not in self.memo:
            self.memo[key] = self._fit(np.asarray(train, np.int64), seed, split, tag or {})
        return self.memo[key]

    def _fit(self, train, seed, split, tag) -> Fitted:
        raise NotImplementedError


class ZeroShot(_LabRecipe):
    name = "zero_shot"

    def _fit(self, train, seed, split, tag) -> Fitted:
        lab = self.lab
        return Fitted(lambda m, pos: Prediction(lab.zero_shot[pos], lab.spread[pos]))


class Recalibrated(_LabRecipe):
    name = "recalibrated"

    def _fit(self, train, seed, split, tag) -> Fitted:
        lab = self.lab
        slope, intercept = np.polyfit(lab.zero_shot[train], lab.materials.y[train], 1)
        line = (float(intercept), float(slope))
        return Fitted(
            lambda m, pos: Prediction(*linear(lab.zero_shot[pos], lab.spread[pos], *line)),
            {"intercept": line[0], "slope": line[1]},
        )


class ResidualTrees(_LabRecipe):
    name = "residual_trees"

    def _fit(self, train, seed, split, tag) -> Fitted:
        lab, m = self.lab, self.lab.materials
        x = residual_features(m.magpie, m.pbe_read, lab.zero_shot)
        trees = BoostedTrees(
            x, m.y, m.groups, grid=dict(self.s.trees_grid), max_iter=self.s.trees_max_iter, offset=lab.zero_shot
        )
        with threadpool_limits(1):  # a few dozen rows: one thread is fastest, and never waits on a busy core
            model, params = trees.fit(train, seed)

        def predict_(mm, pos):
            with threadpool_limits(1):
                gap = residual(model, m.magpie[pos], m.pbe_read[pos], lab.zero_shot[pos])
            return Prediction(gap, lab.spread[pos])

        return Fitted(predict_, {"params": params, "model": model})


@dataclass(repr=False)
class _Members:
    """The shipped CGCNN members fine-tuned on some positions of a lab, per freeze policy."""

    lab: Lab
    s: FinetuneSettings
    cache: FitCache
    echo: Callable[[str], Any] | None = None
    fits: list[dict] = field(default_factory=list)

    def fit(self, policy: str, fit, val, seed: int, which: list[int]) -> tuple[list, list[float]]:
        """Members ``which`` fine-tuned with ``policy`` frozen on positions ``fit`` (early stopping
        on ``val``), through the fit cache: (checkpoints, inner validation MAEs)."""
        ds, ids = self.lab.dataset, self.lab.dataset.ids
        train = TrainConfig(
            epochs=self.s.epochs,
            batch_size=self.s.batch_size,
            optimizer="adamw",
            lr=self.s.lr,
            scheduler="none",
            patience=self.s.patience,
            val_fraction=0.0,
            test_fraction=0.0,
            device=self.s.device,
        )
        paths, maes = [], []
        for k in which:
            member = self.lab.model.members[k]
            cfg = AdaptConfig(freeze=policy, normalizer="keep", train=train.model_copy(update={"seed": seed + k}))
            spec = {
                "kind": "lab_member",
                "base": loaded_digest(member),
                "data": dataset_digest(ds),
                "fit": [ids[p] for p in fit],
                "val": [ids[p] for p in val],
                "adapt": cfg.to_dict(),
                "model": member.model_config.model_dump(),
                "device": self.s.device,
            }
            result = self.cache.fit(
                spec,
                lambda out, member=member, cfg=cfg: adapt(
                    member,
                    ds,
                    cfg,
                    out,
                    splits=(fit, val),
                    model_config=member.model_config,
                    progress=False,
                    resume=True,
                ),
            )
            paths.append(result.checkpoint)
            maes.append(result.best_val_mae)
            self.fits.append(
                {
                    "policy": policy,
                    "member": k,
                    **result.summary(),
                }
            )
        return paths, maes


class FineTuned(_LabRecipe):
    name = "finetuned"

    def __init__(self, lab, settings, memo, members: _Members):
        super().__init__(lab, settings, memo)
        self.members = members

    def _fit(self, train, seed, split, tag) -> Fitted:
        fit, val = split
        # the freeze policy: the first member fine-tuned under each, the lowest inner validation MAE
        scores = {p: self.members.fit(p, fit, val, seed, [0]) for p in self.s.policies}
        policy = min(scores, key=lambda p: scores[p][1][0])
        rest = list(range(1, len(self.lab.model.members)))
        more = self.members.fit(policy, fit, val, seed, rest) if rest else ([], [])
        checkpoints = scores[policy][0] + more[0]
        if self.members.echo is not None and "fold" in tag:
            self.members.echo(
                f"  fold {tag['fold']}: freeze policy by inner validation MAE of member 0: "
                + ", ".join(f"{p} {v[1][0]:.3f}" for p, v in scores.items())
                + f" eV -> {policy}"
            )
        loaded = [load_checkpoint(c, device="cpu") for c in checkpoints]
        lab, weight = self.lab, self.lab.model.trees_weight

        def predict_(m, pos):
            sub = lab.dataset.subset_positions(pos)
            preds = np.vstack([predict(x, sub, device=self.s.device) for x in loaded])
            mean, std = preds.mean(axis=0), preds.std(axis=0)
            if lab.model.trees is not None:
                mean, std = mix(mean, std, lab.tree_gap[pos], weight)
            return Prediction(np.maximum(mean, 0.0), std)  # as ensemble_predict: the members' mean clipped

        info = {"policy": policy, "inner_val_mae": {p: v[1][0] for p, v in scores.items()}}
        return Fitted(
            predict_, {**info, "members_inner_val_mae": scores[policy][1] + more[1], "checkpoints": checkpoints}
        )


class Average(_LabRecipe):
    name = "average"

    def __init__(self, lab, settings, memo, parts: list[_LabRecipe]):
        super().__init__(lab, settings, memo)
        self.parts = parts

    def _fit(self, train, seed, split, tag) -> Fitted:
        fitted = [r.raw_fit(train, seed=seed, split=split, tag=tag) for r in self.parts]

        def predict_(m, pos):
            return Prediction(*average([(p.mean, p.spread) for p in (f.predict(m, pos) for f in fitted)]))

        return Fitted(predict_, {"components": [r.name for r in self.parts]})


def lab_recipes(
    lab: Lab, settings: FinetuneSettings, cache: FitCache, echo: Callable[[str], Any] | None = None
) -> list[Recipe]:
    """The recipes to compare on ``lab`` (see the module docstring), zero-shot first; the PBE
    baselines when at least one PBE gap was given."""
    memo: dict = {}
    made = {
        "zero_shot": ZeroShot(lab, settings, memo),
        "recalibrated": Recalibrated(lab, settings, memo),
        "residual_trees": ResidualTrees(lab, settings, memo),
        "finetuned": FineTuned(lab, settings, memo, _Members(lab, settings, cache, echo)),
    }
    chosen = [made["zero_shot"]] + [made[n] for n in ADAPTED if n in settings.recipes and n != "average"]
    if "average" in settings.recipes:
        parts = [made[n] for n in ("recalibrated", "finetuned", "residual_trees")]
        chosen.append(Average(lab, settings, memo, parts))
    if np.isfinite(lab.materials.pbe).any():
        chosen += [RawPBE(), LinearPBE()]
    return chosen
