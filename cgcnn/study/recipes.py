"""The models the study compares, as recipes: one small object each, and one registry.

A recipe has a ``name`` (its key in every table), a ``label`` (what a reader sees), its
``settings()``, and ``fit(materials, train, seed=, split=)`` → a fitted model whose
``predict(materials, positions)`` gives a :class:`Prediction` (mean, spread, members).  The
study's one fold loop (:mod:`cgcnn.study.engine`) runs any recipe on any folds, and fits it on
all of DS2 for DS3; the tables, the report and the model card take names and labels from the
registry — nothing parses a name.

The registry holds the **baselines** every model must beat (scored on the same folds as the
networks, and on DS3): raw and linearly corrected PBE, boosted trees on Magpie composition
(with and without the PBE gap, and learning the correction to PBE).  A new baseline is one
class and one :func:`register` line::

    class MedianGap(Recipe):
        name, label = "median", "median experimental gap of the training materials"

        def fit(self, materials, train, *, seed, split=None):
            value = float(np.median(materials.y[train]))
            return Fitted(lambda m, positions: Prediction(np.full(len(positions), value)))

    register(MedianGap())

(see ``docs/extending.md``).  Materials without a PBE gap: the PBE baselines predict NaN for
them (left out of every paired comparison); the gap-target trees read the missing PBE gap as a
missing value; the correction-target trees train on the materials with a PBE gap.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from cgcnn.evaluation.baselines import GBM_GRID, BoostedTrees, magpie_features
from cgcnn.evaluation.metrics import LinearCorrection

__all__ = [
    "BACKBONES",
    "CANDIDATES",
    "NETWORKS",
    "Candidate",
    "candidate",
    "Fitted",
    "LinearPBE",
    "Materials",
    "Prediction",
    "RawPBE",
    "Recipe",
    "Trees",
    "baselines",
    "fit_recipe",
    "labels",
    "register",
    "registered",
]


@dataclass(frozen=True)
class Prediction:
    """A fitted recipe's answer for ``n`` materials: ``mean`` [n] (eV), the ``spread`` of an
    ensemble [n] and its ``members`` [k, n] (None for a single model)."""

    mean: np.ndarray
    spread: np.ndarray | None = None
    members: np.ndarray | None = None


@dataclass
class Materials:
    """What a recipe fits on or predicts: one row per material (``frame``: material_id,
    formula, group = reduced formula, bg_exp (NaN when unknown), bg_pbe (MP's, NaN when
    unknown)), and the PBE gap the PBE-aware models read (``pbe_inputs``: MP's, or M1's
    prediction where MP has none; default ``bg_pbe``)."""

    frame: pd.DataFrame
    pbe_inputs: np.ndarray | None = None

    @property
    def ids(self) -> list[str]:
        return list(self.frame["material_id"])

    @property
    def groups(self) -> list[str]:
        return list(self.frame["group"])

    @property
    def y(self) -> np.ndarray:
        return pd.to_numeric(self.frame["bg_exp"], errors="coerce").to_numpy(np.float64)

    @property
    def pbe(self) -> np.ndarray:
        """MP's PBE gap (NaN when unknown)."""
        return pd.to_numeric(self.frame["bg_pbe"], errors="coerce").to_numpy(np.float64)

    @property
    def pbe_read(self) -> np.ndarray:
        """The PBE gap a PBE-aware model reads (``pbe_inputs``, else MP's)."""
        return self.pbe if self.pbe_inputs is None else np.asarray(self.pbe_inputs, dtype=np.float64)

    @cached_property
    def magpie(self) -> np.ndarray:
        """Magpie composition features [n, 132]."""
        return magpie_features(list(self.frame["formula"]))

    def __len__(self) -> int:
        return len(self.frame)


@dataclass
class Fitted:
    """A fitted recipe: ``predict(materials, positions) -> Prediction``, and what the fit chose
    (``info``: hyper-parameters, per-fit records)."""

    predictor: Callable[[Materials, np.ndarray], Prediction]
    info: dict = field(default_factory=dict)

    def predict(self, materials: Materials, positions: Sequence[int] | None = None) -> Prediction:
        pos = np.arange(len(materials)) if positions is None else np.asarray(positions, dtype=np.int64)
        return self.predictor(materials, pos)


class Recipe:
    """A model of the study (see the module docstring).  Subclasses set ``name`` and
    ``label`` and implement :meth:`fit`; ``split`` is the (fit, validation) positions an
    early-stopping fit may use (the fold loop makes it, the same for every recipe)."""

    name: str  # set by every subclass (a class attribute, or a field of a dataclass recipe)
    label: str

    def settings(self) -> dict:
        return {}

    def fit(self, materials: Materials, train: np.ndarray, *, seed: int, split=None) -> Fitted:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def fit_recipe(
    recipe: Recipe, materials: Materials, train, *, seed: int, split=None, tag: dict | None = None
) -> Fitted:
    """``recipe.fit``, passing ``tag`` (which fit this is: repeat and fold, or final) only to a
    recipe whose ``fit`` takes it, so a simple recipe need not."""
    params = inspect.signature(recipe.fit).parameters
    if "tag" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return recipe.fit(materials, train, seed=seed, split=split, tag=tag)
    return recipe.fit(materials, train, seed=seed, split=split)


class RawPBE(Recipe):
    """The PBE gap itself."""

    name, label = "pbe", "PBE (raw)"

    def fit(self, materials, train, *, seed, split=None) -> Fitted:
        return Fitted(lambda m, pos: Prediction(m.pbe[pos]))


class LinearPBE(Recipe):
    """PBE corrected by a straight line fitted on the training materials with a PBE gap."""

    name, label = "pbe_linear", "PBE, linear correction"

    def fit(self, materials, train, *, seed, split=None) -> Fitted:
        line = LinearCorrection.fit(materials.pbe[train], materials.y[train])
        return Fitted(lambda m, pos: Prediction(line.predict(m.pbe[pos])), {"slope": line.slope})


@dataclass(repr=False)
class Trees(Recipe):
    """Gradient-boosted trees (:class:`cgcnn.evaluation.baselines.BoostedTrees`, hyper-parameters
    by inner grouped CV on the training materials) on Magpie composition, optionally with the PBE
    gap (``pbe``: ``"mp"`` MP's gap, NaN when unknown; ``"read"`` the gap the PBE-aware networks
    read; None: composition only), learning the gap or the correction to PBE (``target``)."""

    name: str
    label: str
    pbe: str | None = None
    target: str = "gap"
    grid: dict = field(default_factory=lambda: dict(GBM_GRID))

    def settings(self) -> dict:
        return {"pbe": self.pbe, "target": self.target, "grid": self.grid}

    def _pbe(self, m: Materials) -> np.ndarray:
        return m.pbe_read if self.pbe == "read" else m.pbe

    def features(self, m: Materials) -> np.ndarray:
        return m.magpie if self.pbe is None else np.column_stack([m.magpie, self._pbe(m)])

    def model(self, m: Materials) -> BoostedTrees:
        offset = self._pbe(m) if self.target == "correction" else None
        return BoostedTrees(self.features(m), m.y, m.groups, grid=dict(self.grid), offset=offset)

    def fit(self, materials, train, *, seed, split=None) -> Fitted:
        # the same trees on the same materials and training positions are fitted once per
        # process (several averaged candidates share them)
        key = (repr(self.settings()), id(materials), hash(np.asarray(train, dtype=np.int64).tobytes()), seed)
        known = _TREE_FITS.get(key)
        if known is not None and known[0] is materials:
            return known[1]
        trees = self.model(materials)
        model, params = trees.fit(train, seed)

        def predict(m: Materials, pos: np.ndarray) -> Prediction:
            offset = self._pbe(m)[pos] if self.target == "correction" else None
            return Prediction(trees.predict(model, self.features(m)[pos], offset))

        fitted = Fitted(predict, {"params": params, "model": model})
        _TREE_FITS[key] = (materials, fitted)
        return fitted


_TREE_FITS: dict[tuple, tuple[Materials, Fitted]] = {}


# --------------------------------------------------------------------------------------
# the methods candidates: names and labels follow from three small tables
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Network:
    """A CGCNN ensemble candidate's architecture: M1's plus ``inputs`` (a ModelConfig update)."""

    inputs: dict
    label: str


NETWORKS: dict[str, Network] = {
    "delta": Network({"pbe_input": True}, "CGCNN ensemble, PBE-aware (Δ head)"),
    "delta_composition": Network(
        {"pbe_input": True, "composition": "magpie"}, "CGCNN ensemble, PBE-aware + composition"
    ),
    "multifidelity": Network(
        {"pbe_input": True, "fidelities": ["pbe", "experiment"]}, "CGCNN ensemble, multi-fidelity + PBE-aware"
    ),
}


# Pretrained universal backbones (cgcnn.backbones; optional extras): how much of each is trained
# on DS2, and what else the head reads.  Every one learns the correction to PBE.
@dataclass(frozen=True)
class Backbone:
    """A backbone candidate: ``backbone`` (``chgnet``), ``train`` (``frozen``: a kernel ridge
    head on its frozen crystal representation; ``readout`` / ``block``: its readout, or its last
    interaction block and readout, fine-tuned), ``magpie`` (the head also reads Magpie)."""

    backbone: str
    train: str
    magpie: bool
    label: str


BACKBONES: dict[str, Backbone] = {
    "chgnet_frozen": Backbone("chgnet", "frozen", False, "CHGNet frozen features + PBE, kernel ridge"),
    "chgnet_frozen_magpie": Backbone("chgnet", "frozen", True, "CHGNet frozen features + Magpie + PBE, kernel ridge"),
    "chgnet_readout": Backbone("chgnet", "readout", False, "CHGNet, readout fine-tuned (rest frozen)"),
    "chgnet_block": Backbone("chgnet", "block", False, "CHGNet, last interaction block + readout fine-tuned"),
}
# suffix -> (training loss, label suffix): a Huber loss pulls less on a few wrong labels
LOSSES: dict[str, tuple[str | None, str]] = {"": (None, ""), "_huber": ("huber", ", Huber loss")}
# suffix -> (what the averaged trees learn, label suffix)
TREE_AVERAGES: dict[str, tuple[str, str]] = {
    "_trees": ("gap", ", averaged with boosted trees (composition + PBE)"),
    "_ctrees": ("correction", ", averaged with boosted trees learning the correction to PBE"),
}


@dataclass(frozen=True)
class Candidate:
    """One methods candidate: its network, loss and (for an average) what its trees learn."""

    name: str
    network: str
    loss: str | None
    trees: str | None
    label: str

    @property
    def base(self) -> str:
        """The candidate without trees (whose members an average reuses)."""
        return f"{self.network}{next(k for k, v in LOSSES.items() if v[0] == self.loss)}"


def _candidates() -> dict[str, Candidate]:
    out = {}
    for suffix, (loss, loss_label) in LOSSES.items():
        for net, spec in NETWORKS.items():
            out[f"{net}{suffix}"] = Candidate(f"{net}{suffix}", net, loss, None, spec.label + loss_label)
    for name, spec in BACKBONES.items():
        out[name] = Candidate(name, name, None, None, spec.label)
    bases = list(out.values())
    for suffix, (target, trees_label) in TREE_AVERAGES.items():
        for b in bases:
            out[f"{b.name}{suffix}"] = Candidate(f"{b.name}{suffix}", b.network, b.loss, target, b.label + trees_label)
    return out


CANDIDATES: dict[str, Candidate] = _candidates()


def candidate(name: str) -> Candidate:
    """The methods candidate called ``name`` (a key of :data:`CANDIDATES`)."""
    if name not in CANDIDATES:
        raise ValueError(f"unknown methods candidate {name!r}; choose from {', '.join(CANDIDATES)}")
    return CANDIDATES[name]


# --------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------
_REGISTRY: dict[str, Callable[[Any], Recipe]] = {}


def register(recipe: Recipe | Callable[[Any], Recipe], name: str | None = None):
    """Add a baseline to the registry: a recipe, or a function ``profile -> recipe`` (for one
    that reads the profile's settings).  Every later CV table, DS3 table and report includes it."""
    key = name or getattr(recipe, "name", None)
    if not key:
        raise ValueError("a registered recipe needs a name")
    _REGISTRY[key] = recipe if callable(recipe) and not isinstance(recipe, Recipe) else (lambda profile: recipe)
    return recipe


def registered() -> list[str]:
    return list(_REGISTRY)


def baselines(profile=None) -> list[Recipe]:
    """The registered baselines, built for ``profile`` (its boosted trees' grid), in
    registration order."""
    return [make(profile) for make in _REGISTRY.values()]


def _trees(name: str, label: str, pbe: str | None, target: str = "gap"):
    def make(profile) -> Trees:
        grid = dict(profile.cv.gbm_grid) if profile is not None else dict(GBM_GRID)
        return Trees(name, label, pbe, target, grid)

    return make


register(RawPBE())
register(LinearPBE())
register(_trees("gbm_composition", "boosted trees, Magpie composition", None), "gbm_composition")
register(_trees("gbm_composition_pbe", "boosted trees, Magpie composition + PBE", "mp"), "gbm_composition_pbe")
register(
    _trees(
        "gbm_composition_pbe_correction",
        "boosted trees, Magpie composition + PBE, learning the correction to PBE",
        "mp",
        "correction",
    ),
    "gbm_composition_pbe_correction",
)


def labels(profile=None) -> dict[str, str]:
    """Name -> label of every registered baseline."""
    return {r.name: r.label for r in baselines(profile)}
