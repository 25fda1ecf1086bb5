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
from pathlib import Path
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
    "EnsembleMethod",
    "NetworkEnsemble",
    "build_method",
    "candidate_recipe",
    "ensemble_size_table",
    "member_table",
    "method_model_config",
    "method_trees",
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


@dataclass
class EnsembleMethod:
    """One candidate's network: its training data and how its members are fitted and predict.

    ``dataset`` holds the DS2 crystals at positions ``offset + k`` (k = DS2 position) and,
    for the multi-fidelity method, ``n_pbe`` DS1 crystals first.
    """

    name: str
    profile: StudyProfile
    base: Any  # cgcnn.training.checkpoint.Loaded
    dataset: Any  # cgcnn.data.dataset.CrystalDataset
    groups: list[str]
    cache: FitCache
    offset: int = 0
    echo: Callable[[str], Any] = print
    fits: list[dict] = field(default_factory=list)

    @property
    def model_config(self) -> ModelConfig:
        return method_model_config(self.name, self.base.model_config)

    def fit_members(self, fit: np.ndarray, val: np.ndarray, tag: dict, out: Path | None = None) -> list[Path]:
        """Fit ``members`` seeds on DS2 positions ``fit`` (early stopping on ``val``) through the
        fit cache; their checkpoints (copied into ``out/member-<k>/`` when ``out`` is given)."""
        s = self.profile.methods
        train = np.asarray(fit, dtype=np.int64) + self.offset
        if self.offset:  # multi-fidelity: the PBE crystals, and the DS2 ones weighted
            train = np.concatenate([np.arange(self.offset), np.repeat(train, s.experiment_weight)])
        val = np.asarray(val, dtype=np.int64) + self.offset
        ids = self.dataset.ids
        common = {
            "kind": "member",
            "model": self.model_config.model_dump(),
            "base": loaded_digest(self.base),
            "data": dataset_digest(self.dataset),
            "fit": [ids[k] for k in train],
            "val": [ids[k] for k in val],
            "device": resolve_device(self.profile.device).type,
        }
        paths = []
        for k in range(s.members):
            seed = 100 * int(tag.get("seed", 0)) + k
            train_cfg = self.profile.train_config(s.train, seed=seed)
            loss = candidate(self.name).loss
            if loss is not None:
                train_cfg = train_cfg.model_copy(update={"loss": loss})
            cfg = AdaptConfig(freeze=s.freeze, normalizer="refit", train=train_cfg)
            result = self.cache.fit(
                {**common, "adapt": cfg.to_dict()},
                lambda folder, cfg=cfg: adapt(
                    self.base,
                    self.dataset,
                    cfg,
                    folder,
                    splits=(train, val),
                    model_config=self.model_config,
                    progress=False,
                    resume=True,
                ),
            )
            self.fits.append(
                {
                    "method": self.name,
                    **tag,
                    "member": k,
                    "seed": seed,
                    "inner_val_mae": result.best_val_mae,
                    "best_epoch": result.best_epoch,
                    "epochs_run": result.epochs_run,
                    "seconds": result.seconds,
                }
            )
            paths.append(result.checkpoint if out is None else result.copy_to(out / f"member-{k}"))
        return paths

    def predict_members(self, checkpoints: list[Path], positions: np.ndarray) -> np.ndarray:
        """[members, n] predictions (eV) for DS2 ``positions`` at the experimental fidelity."""
        sub = self.dataset.subset_positions(np.asarray(positions, dtype=np.int64) + self.offset)
        return np.vstack([predict(load_checkpoint(c), sub, device=self.profile.device) for c in checkpoints])


def member_table(preds: np.ndarray, ids: list[str], **tag) -> pd.DataFrame:
    """Long table of each member's out-of-fold predictions ([members, n] -> one row per pair),
    so that a smaller ensemble (its first members: the same seeds) can be scored afterwards."""
    k, n = preds.shape
    return pd.DataFrame(
        {
            **tag,
            "material_id": np.tile(ids, k),
            "member": np.repeat(np.arange(k), n),
            "prediction": preds.reshape(-1),
        }
    )


def ensemble_size_table(
    name: str, members: pd.DataFrame, truth: pd.Series, trees: dict[str, pd.DataFrame] | None = None, *, seed: int = 0
) -> pd.DataFrame:
    """CV MAE of candidate ``name`` with only its first ``k`` members (k = 1 … K: the same seeds,
    folds and fits — a smaller ensemble of this run), alone and averaged with the trees
    (``trees``: suffix -> their out-of-fold table), and MAE(k) − MAE(K) on the same materials with a
    paired bootstrap 95 % interval: whether the ensemble is large enough.  ``members``: the
    long table of :func:`member_table`."""
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


def build_method(
    name: str, profile: StudyProfile, data, base, ds2, pbe: np.ndarray, groups, cache: FitCache, echo
) -> EnsembleMethod:
    """The candidate ``name`` with its training dataset (DS2, and DS1 crystals for multi-fidelity)."""
    cfg = method_model_config(name, base.model_config)
    ds2 = ds2.subset_positions(np.arange(len(ds2)))  # a copy: inputs differ per method
    attach_inputs(ds2, cfg, fidelity=EXPERIMENT if cfg.fidelities else None, pbe=pbe)
    if not cfg.fidelities:
        return EnsembleMethod(name, profile, base, ds2, groups, cache, echo=echo)
    ds1_ids = list(data.ds1["material_id"])
    n = min(profile.methods.pbe_crystals, len(ds1_ids))
    pick = sorted(np.random.default_rng(profile.cv.seed).choice(len(ds1_ids), size=n, replace=False).tolist())
    ds1 = data.dataset("ds1", "bg_pbe", base.features, ids=[ds1_ids[k] for k in pick])
    attach_inputs(ds1, cfg, fidelity=PBE, pbe=None)  # the PBE label is the target: never an input
    both = CrystalDataset.concat([(ds1, PBE), (ds2, EXPERIMENT)])
    return EnsembleMethod(name, profile, base, both, groups, cache, offset=len(ds1), echo=echo)


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
class NetworkEnsemble(Recipe):
    """A methods candidate's CGCNN ensemble as a recipe: ``members`` networks fine-tuned from M1
    (through the fit cache), predicting their mean, spread and each member.  ``views``: the same
    networks reading other per-crystal inputs (e.g. M1's PBE gap for every material), keyed by
    the :class:`~cgcnn.study.recipes.Materials` object that carries those inputs."""

    method: EnsembleMethod
    label: str
    views: dict = field(default_factory=dict)

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.method.name

    def settings(self) -> dict:
        return {"candidate": self.method.name, "methods": self.method.profile.methods.to_dict()}

    def fit(self, materials: Materials, train, *, seed: int, split=None, tag: dict | None = None) -> Fitted:
        fit, val = split
        checkpoints = self.method.fit_members(fit, val, {**(tag or {}), "seed": seed})
        maes = [r["inner_val_mae"] for r in self.method.fits[-len(checkpoints) :]]
        if tag and "repeat" in tag:
            self.method.echo(
                f"repeat {tag['repeat']} fold {tag['fold']}  {self.name:>18}  inner val MAE of members "
                + ", ".join(f"{m:.3f}" for m in maes)
                + " eV"
            )

        def predict_(m: Materials, pos: np.ndarray) -> Prediction:
            method = self.views.get(id(m), self.method)
            preds = method.predict_members(checkpoints, pos)
            return Prediction(preds.mean(axis=0), preds.std(axis=0), preds)

        return Fitted(predict_, {"checkpoints": checkpoints})


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


def candidate_recipe(name: str, method: EnsembleMethod, profile: StudyProfile) -> Recipe:
    """The recipe of methods candidate ``name`` on ``method``'s data (its network; for an
    averaged candidate, with its trees)."""
    c = candidate(name)
    network = NetworkEnsemble(method, candidate(c.base).label)
    trees = method_trees(c, profile)
    return network if trees is None else Averaged(c.name, c.label, network, trees)
