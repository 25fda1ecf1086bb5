"""The candidates of the methods stage (:mod:`cgcnn.study.methods`): what each one is, the
data it trains on, and how it is fitted and scored inside one cross-validation fold.

* ``delta`` — PBE-aware CGCNN: the head also reads the PBE gap, with a direct linear path
  from it to the output, so the network learns the correction from PBE to experiment;
* ``delta_composition`` — the same, the head also reading Magpie composition features;
* ``multifidelity`` — one network with a learned fidelity embedding (``pbe``,
  ``experiment``), trained on ``pbe_crystals`` DS1 crystals (PBE labels, PBE input unknown)
  together with the DS2 training crystals (experimental labels, each seen
  ``experiment_weight`` times per epoch), also reading the PBE gap;
* ``<candidate>_huber`` — the same network trained with a Huber loss (``huber_delta`` of
  the methods' training settings, in target standard deviations): quadratic for small
  errors, linear for large ones, so a few wrong labels pull less;
* ``<candidate>_trees`` — a candidate's ensemble averaged (equal weights, fixed in advance)
  with boosted trees on Magpie composition + the PBE gap, refitted on the same folds with
  the same inputs (their errors are only partly correlated, so the average can beat both);
* ``<candidate>_ctrees`` — the same with trees that learn the correction experiment − PBE
  (the PBE gap still one of their inputs) instead of the gap itself.

Each network is M1 with new inputs (new layers start at zero) fine-tuned on DS2 as an
ensemble of ``members`` seeds, with early stopping on the fold's inner grouped split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cgcnn.config import AdaptConfig, ModelConfig
from cgcnn.data.dataset import CrystalDataset
from cgcnn.data.descriptors import attach_inputs
from cgcnn.evaluation.bootstrap import paired_difference_ci
from cgcnn.prediction.ensemble import mix
from cgcnn.prediction.inference import predict, resolve_device
from cgcnn.study.fits import FitCache, dataset_digest, loaded_digest
from cgcnn.study.profiles import StudyProfile
from cgcnn.study.recipes import NETWORKS, Fitted, Materials, Prediction, Recipe, Trees, candidate, fit_recipe
from cgcnn.training.adapt import adapt
from cgcnn.training.checkpoint import load_checkpoint

PBE, EXPERIMENT = "pbe", "experiment"
__all__ = [
    "EXPERIMENT",
    "PBE",
    "TREES_WEIGHT",
    "Averaged",
    "NetworkEnsemble",
    "candidate_recipe",
    "ensemble_size_table",
    "method_model_config",
    "method_trees",
    "network_ensemble",
    "pbe_inputs",
]
# Fixed, equal weights: nothing is tuned on the out-of-fold predictions.  Checked on run ship-8
# (delta_composition): choosing the weight in steps of 0.05 on the other folds picks 0.5 in four
# of five folds (0.55 in one), nested CV MAE 0.3656 eV vs 0.3650 at 0.5 — nothing to gain.
TREES_WEIGHT = 0.5


def method_model_config(name: str, base: ModelConfig) -> ModelConfig:
    """The architecture of candidate ``name`` (:data:`cgcnn.study.recipes.CANDIDATES`): M1's,
    plus its network's per-crystal inputs."""
    return base.model_copy(update=NETWORKS[candidate(name).network].inputs)


def pbe_inputs(frame: pd.DataFrame, ids: list[str], base, dataset, device) -> tuple[np.ndarray, np.ndarray]:
    """(PBE gap, source) per material: MP's ``bg_pbe`` where known, else M1's prediction
    clipped at 0 eV (as :mod:`cgcnn.prediction.ensemble` does at prediction time)."""
    known = pd.to_numeric(frame.set_index("material_id").loc[ids, "bg_pbe"], errors="coerce").to_numpy(np.float64)
    source = np.where(np.isfinite(known), "given", "predicted").astype(object)
    if (~np.isfinite(known)).any():
        todo = np.flatnonzero(~np.isfinite(known))
        known[todo] = np.maximum(predict(base, dataset.subset_positions(todo), device=device), 0.0)  # as at prediction
    return known, source


@dataclass(repr=False)
class NetworkEnsemble(Recipe):
    """A methods candidate's CGCNN ensemble as a recipe: ``members`` seeds of M1 with the
    candidate's inputs, fine-tuned through the fit cache, predicting their mean, spread and each
    member.  ``dataset`` holds the DS2 crystals at positions ``offset + k`` (k = DS2 position)
    and, for the multi-fidelity network, ``offset`` DS1 crystals first.  ``views``: the same
    networks reading other per-crystal inputs (e.g. M1's PBE gap for every material), keyed by
    the id of the :class:`~cgcnn.study.recipes.Materials` object that carries those inputs."""

    name: str
    label: str
    profile: StudyProfile
    base: Any  # cgcnn.training.checkpoint.Loaded
    dataset: Any  # cgcnn.data.dataset.CrystalDataset
    cache: FitCache
    offset: int = 0
    echo: Callable[[str], Any] = print
    views: dict = field(default_factory=dict)
    fits: list[dict] = field(default_factory=list)

    @property
    def model_config(self) -> ModelConfig:
        return method_model_config(self.name, self.base.model_config)

    def settings(self) -> dict:
        return {"candidate": self.name, "methods": self.profile.methods.to_dict()}

    def fit(self, materials: Materials, train, *, seed: int, split=None, tag: dict | None = None) -> Fitted:
        """Fit ``members`` seeds on the DS2 positions of ``split`` = (fit, validation) through the
        fit cache; their checkpoints are under ``info["checkpoints"]``."""
        s = self.profile.methods
        fit = np.asarray(split[0], dtype=np.int64) + self.offset
        if self.offset:  # multi-fidelity: the PBE crystals, and the DS2 ones weighted
            fit = np.concatenate([np.arange(self.offset), np.repeat(fit, s.experiment_weight)])
        val = np.asarray(split[1], dtype=np.int64) + self.offset
        ids = self.dataset.ids
        common = {
            "kind": "member",
            "model": self.model_config.model_dump(),
            "base": loaded_digest(self.base),
            "data": dataset_digest(self.dataset),
            "fit": [ids[k] for k in fit],
            "val": [ids[k] for k in val],
            "device": resolve_device(self.profile.device).type,
        }
        checkpoints = []
        for k in range(s.members):
            train_cfg = self.profile.train_config(s.train, seed=100 * seed + k)
            if candidate(self.name).loss is not None:
                train_cfg = train_cfg.model_copy(update={"loss": candidate(self.name).loss})
            cfg = AdaptConfig(freeze=s.freeze, normalizer="refit", train=train_cfg)
            result = self.cache.fit(
                {**common, "adapt": cfg.to_dict()},
                lambda folder, cfg=cfg: adapt(
                    self.base,
                    self.dataset,
                    cfg,
                    folder,
                    splits=(fit, val),
                    model_config=self.model_config,
                    progress=False,
                    resume=True,
                ),
            )
            self.fits.append(
                {
                    "method": self.name,
                    **(tag or {}),
                    "seed": 100 * seed + k,
                    "member": k,
                    **result.summary(),
                }
            )
            checkpoints.append(result.checkpoint)
        if tag and "repeat" in tag:
            maes = ", ".join(f"{r['inner_val_mae']:.3f}" for r in self.fits[-len(checkpoints) :])
            self.echo(f"repeat {tag['repeat']} fold {tag['fold']}  {self.name:>18}  inner val MAE of members {maes} eV")

        def predict_(m: Materials, pos: np.ndarray) -> Prediction:
            net = self.views.get(id(m), self)
            sub = net.dataset.subset_positions(np.asarray(pos, dtype=np.int64) + net.offset)
            preds = np.vstack([predict(load_checkpoint(c), sub, device=self.profile.device) for c in checkpoints])
            return Prediction(preds.mean(axis=0), preds.std(axis=0), preds)

        return Fitted(predict_, {"checkpoints": checkpoints})


def ensemble_size_table(
    name: str, members: pd.DataFrame, truth: pd.Series, trees: dict[str, pd.DataFrame] | None = None, *, seed: int = 0
) -> pd.DataFrame:
    """CV MAE of candidate ``name`` with only its first ``k`` members (k = 1 … K: the same seeds,
    folds and fits — a smaller ensemble of this run), alone and averaged with the trees
    (``trees``: suffix -> their out-of-fold table), and MAE(k) − MAE(K) on the same materials with a
    paired bootstrap 95 % interval: whether the ensemble is large enough.  ``members``: each
    member's out-of-fold predictions (repeat, fold, material_id, member, prediction)."""
    wide = members.pivot_table(index=["repeat", "material_id"], columns="member", values="prediction").sort_index(
        axis=1
    )
    y = truth.loc[wide.index.get_level_values("material_id")].to_numpy(np.float64)
    variants = {name: None}
    for suffix, table in (trees or {}).items():
        variants[f"{name}{suffix}"] = (
            table.set_index(["repeat", "material_id"])["prediction"].loc[wide.index].to_numpy()
        )
    rows = []
    for label, other in variants.items():
        preds = [wide.iloc[:, :k].mean(axis=1).to_numpy() for k in range(1, wide.shape[1] + 1)]
        if other is not None:
            preds = [mix(p, np.zeros_like(p), other, TREES_WEIGHT)[0] for p in preds]
        for k, p in enumerate(preds, start=1):
            diff = paired_difference_ci(y, p, preds[-1], seed=seed)
            rows.append(
                {
                    "method": label,
                    "members": k,
                    "mae": float(np.abs(p - y).mean()),
                    "vs_all_members": diff.value,
                    "lo": diff.lo,
                    "hi": diff.hi,
                }
            )
    return pd.DataFrame(rows)


def network_ensemble(
    name: str, profile: StudyProfile, data, base, ds2, pbe: np.ndarray, cache: FitCache, echo=print
) -> NetworkEnsemble:
    """Candidate network ``name`` (a key of :data:`cgcnn.study.recipes.CANDIDATES` without trees)
    with its training dataset: DS2 reading ``pbe`` as its PBE gap, and DS1 crystals for
    multi-fidelity."""
    cfg = method_model_config(name, base.model_config)
    ds2 = ds2.subset_positions(np.arange(len(ds2)))  # a copy: inputs differ per method
    attach_inputs(ds2, cfg, fidelity=EXPERIMENT if cfg.fidelities else None, pbe=pbe)
    label = candidate(name).label
    if not cfg.fidelities:
        return NetworkEnsemble(name, label, profile, base, ds2, cache, echo=echo)
    ds1_ids = list(data.ds1["material_id"])
    n = min(profile.methods.pbe_crystals, len(ds1_ids))
    pick = sorted(np.random.default_rng(profile.cv.seed).choice(len(ds1_ids), size=n, replace=False).tolist())
    ds1 = data.dataset("ds1", "bg_pbe", base.features, ids=[ds1_ids[k] for k in pick])
    attach_inputs(ds1, cfg, fidelity=PBE, pbe=None)  # the PBE label is the target: never an input
    both = CrystalDataset.concat([(ds1, PBE), (ds2, EXPERIMENT)])
    return NetworkEnsemble(name, label, profile, base, both, cache, offset=len(ds1), echo=echo)


def method_trees(c, profile: StudyProfile) -> Trees | None:
    """The trees an averaged candidate averages with (None for a network alone): boosted trees on
    Magpie composition + the PBE gap the networks read, learning what the candidate's name says."""
    c = candidate(c) if isinstance(c, str) else c
    if c.trees is None:
        return None
    return Trees(
        f"trees_{c.trees}", f"boosted trees learning the {c.trees}", "read", c.trees, dict(profile.cv.gbm_grid)
    )


@dataclass(repr=False)
class Averaged(Recipe):
    """A network ensemble averaged (fixed, equal weights) with boosted trees refitted on the same
    training materials: one more member beside the networks, so the mean and the spread are
    those of the mixture (:func:`cgcnn.prediction.ensemble.mix`)."""

    name: str
    label: str
    network: Recipe
    trees: Trees
    weight: float = TREES_WEIGHT

    def settings(self) -> dict:
        return {"network": self.network.settings(), "trees": self.trees.settings(), "weight": self.weight}

    def fit(self, materials: Materials, train, *, seed: int, split=None, tag: dict | None = None) -> Fitted:
        net = fit_recipe(self.network, materials, train, seed=seed, split=split, tag=tag)
        trees = fit_recipe(self.trees, materials, train, seed=seed, split=split, tag=tag)

        def predict_(m: Materials, pos: np.ndarray) -> Prediction:
            a, b = net.predict(m, pos), trees.predict(m, pos)
            mean, std = mix(a.mean, a.spread, b.mean, self.weight)
            return Prediction(np.asarray(mean), np.asarray(std), a.members)

        return Fitted(
            predict_, {"params": trees.info.get("params"), "trees_model": trees.info.get("model"), "network": net.info}
        )


def candidate_recipe(name: str, network: NetworkEnsemble, profile: StudyProfile) -> Recipe:
    """The recipe of methods candidate ``name``: its ``network``, averaged with its trees when the
    candidate is an average."""
    trees = method_trees(name, profile)
    return network if trees is None else Averaged(name, candidate(name).label, network, trees)
