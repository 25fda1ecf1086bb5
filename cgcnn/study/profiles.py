"""Study profiles: every setting of a run besides the data location.

A profile (``cgcnn/profiles/<name>.json``, or any JSON file of the same shape) names the graph
and model settings, the ETL rules, the base model's training, the adaptation grid, the seeds
the t-SNE settings and the trust step's (intervals, domain).  (Just over 400 lines: one
schema, one section per step.)  The adaptation grid composes the package's adaptation concepts
(:class:`cgcnn.config.AdaptConfig`: freeze policy, normaliser policy, training settings);
:meth:`StudyProfile.adapt_config` is the one place that turns a grid point into an
``AdaptConfig``.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from cgcnn.config import (
    AdaptConfig,
    EtlConfig,
    FreezePolicy,
    GraphConfig,
    ModelConfig,
    NormalizerPolicy,
    StrictModel,
    TrainConfig,
)
from cgcnn.errors import CgcnnError
from cgcnn.study.recipes import CANDIDATES
from cgcnn.training.freeze import POLICIES

PROFILE_NAMES = ("fixture", "default", "study", "paper", "ship")


class ProfileNotFoundError(CgcnnError, FileNotFoundError):
    """A profile name or file that does not exist."""


class SettingError(CgcnnError, ValueError):
    """An override names no setting of the profile, or gives it a value it cannot take."""


class M1Settings(StrictModel):
    """Base model M1 on DS1."""

    source: Literal["train", "shipped"] = Field(
        "train",
        description="'train': train M1 on DS1 with 'train'; 'shipped': use the M1 packaged with cgcnn (models/base)",
    )
    train: TrainConfig
    max_crystals: int | None = Field(
        None, ge=10, description="train on a random subset of DS1 of this size (seeded); None = all of DS1"
    )


class AdaptSettings(StrictModel):
    """Domain adaptation on DS2 and the from-scratch control: a grid of :class:`AdaptConfig`.

    Each fit of the grid is one ``AdaptConfig`` (``freeze`` = one of ``policies``,
    ``normalizer``, ``train`` with the grid's learning rate and seed); its freeze and
    normaliser policies are the package's types, with the package's default normaliser.
    """

    policies: list[FreezePolicy] = Field(
        default_factory=lambda: list(POLICIES), min_length=1, description="default: every policy of the table"
    )
    normalizer: NormalizerPolicy = AdaptConfig.model_fields["normalizer"].default
    train: TrainConfig = Field(description="epochs = upper bound; patience = early stopping on DS2 validation")
    lr_grid: list[float] = Field(min_length=1)
    control_train: TrainConfig | None = Field(None, description="control settings; default: same as train")
    control_lr_grid: list[float] | None = Field(None, description="default: lr_grid")

    @model_validator(mode="after")
    def _check(self) -> AdaptSettings:
        if len(set(self.policies)) != len(self.policies):
            raise ValueError(f"freeze policies must be unique, got {self.policies}")
        for grid in (self.lr_grid, self.control_lr_grid or []):
            if any(lr <= 0 for lr in grid):
                raise ValueError(f"learning rates must be positive, got {grid}")
        if self.train.val_fraction <= 0:
            raise ValueError("adaptation needs a DS2 validation split (adapt.train.val_fraction > 0)")
        return self

    @property
    def control(self) -> TrainConfig:
        return self.control_train or self.train

    @property
    def control_grid(self) -> list[float]:
        return list(self.control_lr_grid or self.lr_grid)


class CVSettings(StrictModel):
    """Grouped K-fold cross-validation on DS2 (see :mod:`cgcnn.study.cross_validation`)."""

    folds: int = Field(5, ge=2)
    repeats: int = Field(2, ge=1)
    seed: int = 0
    inner_val_fraction: float = Field(
        0.15, gt=0, lt=0.5, description="formulas of a training fold kept for early stopping and choices"
    )
    gbm_grid: dict[str, list[float | int]] = Field(
        default_factory=lambda: {"learning_rate": [0.05, 0.1], "max_leaf_nodes": [15, 31]},
        description="hyper-parameter grid of the boosted-tree baselines (chosen by inner CV per fold)",
    )


# the methods candidates a profile may name: each network with each loss (cgcnn.study.recipes.CANDIDATES;
# their averages with the trees are added by the methods stage)
MethodName = Literal[tuple(name for name, c in CANDIDATES.items() if c.trees is None)]


class ChgnetSettings(StrictModel):
    """The CHGNet candidates (:mod:`cgcnn.study.backbone_recipes`; ``pip install -e ".[chgnet]"``)."""

    version: str = Field("0.3.0", description="pretrained CHGNet weights (shipped in the chgnet wheel)")
    krr_alpha: list[float] = Field([0.01, 0.1, 1.0], description="frozen: kernel ridge alphas (inner CV)")
    krr_gamma: list[float] = Field(
        [0.25, 0.5, 1.0, 2.0], description="frozen: RBF gammas, times 1 / number of features (inner CV)"
    )
    lr: float = Field(1e-3, gt=0, description="readout fine-tuning: learning rate")
    block_lr: float = Field(3e-4, gt=0, description="last block + readout fine-tuning: learning rate")
    epochs: int = Field(200, ge=1, description="readout fine-tuning: at most this many epochs")
    block_epochs: int = Field(
        20, ge=1, description="last block + readout: at most this many epochs (an epoch costs ~30x a readout epoch)"
    )
    patience: int = Field(20, ge=1)
    batch_size: int = Field(32, ge=1)


class MethodSettings(StrictModel):
    """PBE-aware and multi-fidelity CGCNN ensembles (:mod:`cgcnn.study.methods`), scored by
    the same grouped CV as the fine-tuning study; the best by CV MAE is trained on all of DS2
    and is the model that can ship.  ``candidates`` empty: the stage is skipped."""

    candidates: list[MethodName] = Field(default_factory=list)
    members: int = Field(3, ge=1, description="ensemble members (seeds) per fit")
    freeze: FreezePolicy = "none"
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(
            epochs=40,
            batch_size=32,
            optimizer="adamw",
            lr=1e-3,
            scheduler="none",
            patience=8,
            val_fraction=0.15,
            test_fraction=0.0,
        )
    )
    pbe_crystals: int = Field(
        3000, ge=0, description="multifidelity: DS1 crystals (PBE labels) trained beside DS2 (random, seeded)"
    )
    experiment_weight: int = Field(
        3, ge=1, description="multifidelity: each DS2 training crystal is seen this many times per epoch"
    )
    chgnet: ChgnetSettings = Field(default_factory=ChgnetSettings)

    @model_validator(mode="after")
    def _check(self) -> MethodSettings:
        if len(set(self.candidates)) != len(self.candidates):
            raise ValueError(f"method candidates must be unique, got {self.candidates}")
        return self


class TrustSettings(StrictModel):
    """Intervals and applicability domain of the selected ensemble (:mod:`cgcnn.study.trust`),
    calibrated on its out-of-fold predictions under the grouped folds and under
    chemistry-shift folds (whole composition clusters held out) and folds that hold out whole
    anion classes."""

    level: float = Field(0.9, gt=0, lt=1, description="the central interval's default level")
    clusters: int = Field(25, ge=2, description="k-means composition clusters of the chemistry-shift folds")
    min_element_count: int = Field(5, ge=1, description="an element in fewer training materials is out of domain")
    distance_percentile: float = Field(
        95.0,
        gt=0,
        lt=100,
        description="percentile of the out-of-fold nearest-neighbour distances beyond which a crystal is out of domain",
    )
    near_zero_ev: float = Field(0.1, ge=0, description="a predicted gap below this is out of domain (perhaps a metal)")
    calibrate_on: list[Literal["grouped", "chemistry_shift", "class_held_out"]] = Field(
        default_factory=lambda: ["grouped", "chemistry_shift", "class_held_out"],
        min_length=1,
        description="the protocols whose out-of-fold errors calibrate the intervals (those the run has): by default "
        "all three, so the interval holds from materials like the training ones to a class the model never saw "
        "(in run ship-17, calibrated on the chemistry-shift folds alone, a held-out class was covered 87.4 %; pooled, "
        "grouped / chemistry shift / class held out 91.9 / 89.7 / 88.1 %); coverage is reported for each",
    )
    min_class_scores: int = Field(
        30,
        ge=0,
        description="fewest calibration scores an anion class needs (within a domain category) for its own interval "
        "quantile; kept only if CV favours it; 0: categories alone",
    )
    held_out_class_min: int = Field(
        30,
        ge=0,
        description="a third protocol holding out whole anion classes (each with at least this many DS2 materials "
        "one fold, the rarer ones together); 0: off",
    )
    beyond_interval: float = Field(
        1.5,
        gt=1,
        description="a label whose out-of-fold error exceeds this many half-widths of the interval is suspicious",
    )


class TsneSettings(StrictModel):
    """openTSNE settings.  ``perplexity=None`` -> ``min(30, (n - 1) / 3)`` for n fitted points."""

    perplexity: float | None = Field(None, gt=0)
    n_iter: int = Field(500, ge=10)
    early_exaggeration_iter: int = Field(250, ge=0)
    standardize: bool = True
    seed: int = 0
    models: list[Literal["m1", "m2", "control"]] = Field(default_factory=lambda: ["m1", "m2"], min_length=1)


class StudyProfile(StrictModel):
    """Everything the pipeline needs besides the data location.

    ``graph`` is the single source of the graph settings: it is copied into ``etl.graph``
    (an ``etl`` section naming different graph settings is rejected).
    """

    name: str
    description: str = ""
    graph: GraphConfig
    model: ModelConfig
    etl: EtlConfig = Field(default_factory=EtlConfig)
    base: M1Settings
    adapt: AdaptSettings
    cv: CVSettings = Field(default_factory=CVSettings)
    methods: MethodSettings = Field(default_factory=MethodSettings)
    trust: TrustSettings = Field(default_factory=TrustSettings)
    seeds: list[int] = Field(min_length=1)
    tsne: TsneSettings = Field(default_factory=TsneSettings)
    workers: int | None = Field(None, ge=1, description="graph-building processes; None = all cores")
    nproc: int = Field(
        1,
        ge=1,
        description="processes for training M1 (> 1: DistributedDataParallel via "
        "python -m torch.distributed.run; one GPU each on CUDA)",
    )
    torch_threads: int | None = Field(
        None, ge=1, description="torch.set_num_threads for training and inference; None = torch's default"
    )
    device: str = "auto"

    @model_validator(mode="before")
    @classmethod
    def _graph_into_etl(cls, data):
        if isinstance(data, dict) and "graph" in data:
            graph = (
                GraphConfig.model_validate(data["graph"])
                if not isinstance(data["graph"], GraphConfig)
                else data["graph"]
            )
            etl = data.get("etl") or {}
            etl = etl.to_dict() if isinstance(etl, EtlConfig) else dict(etl)
            if "graph" in etl and GraphConfig.model_validate(etl["graph"]) != graph:
                raise ValueError("etl.graph differs from graph; give the graph settings once, under 'graph'")
            etl["graph"] = graph.model_dump(mode="json")
            data = {**data, "etl": etl}
            model = data.get("model")
            if isinstance(model, dict) and "nbr_fea_len" not in model:
                data["model"] = {**model, "nbr_fea_len": graph.n_gaussians}
        return data

    @model_validator(mode="after")
    def _check(self) -> StudyProfile:
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be unique, got {self.seeds}")
        return self

    def with_overrides(
        self,
        *,
        seeds: list[int] | None = None,
        device: str | None = None,
        workers: int | None = None,
        nproc: int | None = None,
    ) -> StudyProfile:
        """A copy with other seeds, device, workers and/or nproc (validated again; ``None`` = keep)."""
        return StudyProfile.model_validate(
            _overridden(self.to_dict(), seeds=seeds, device=device, workers=workers, nproc=nproc)
        )

    def train_config(self, cfg: TrainConfig, **update) -> TrainConfig:
        """``cfg`` with this profile's device (and any other updates) applied."""
        return TrainConfig.model_validate({**cfg.to_dict(), "device": self.device, **update})

    def adapt_config(self, policy: FreezePolicy, *, lr: float, seed: int) -> AdaptConfig:
        """The :class:`AdaptConfig` of one adaptation fit: ``policy`` frozen, learning rate ``lr``, ``seed``."""
        train = self.train_config(self.adapt.train, lr=lr, seed=seed)
        return AdaptConfig(freeze=policy, normalizer=self.adapt.normalizer, train=train)

    def control_config(self, *, lr: float, seed: int) -> TrainConfig:
        """The training settings of one from-scratch control fit."""
        return self.train_config(self.adapt.control, lr=lr, seed=seed)

    def apply_threads(self) -> None:
        """Apply ``torch_threads`` (tiny models run faster on one thread than on several)."""
        if self.torch_threads is not None:
            import torch

            torch.set_num_threads(self.torch_threads)


def parse_value(text):
    """A setting's value as given on a command line or as a papermill parameter: JSON when it
    parses as JSON (``[0.001, 0.003]``, ``3``, ``true``, ``null``, ``"x"``), else the text
    itself; a value that is not a string is returned as it is."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignment(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` (``--set``) -> (dotted key, parsed value)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SettingError(f"--set {text!r}: expected KEY=VALUE, e.g. adapt.lr_grid=[0.001,0.003]")
    return key.strip(), parse_value(value.strip())


def set_setting(data: dict, key: str, value) -> dict:
    """A copy of the profile dict ``data`` with the dotted ``key`` (e.g. ``adapt.lr_grid``) set
    to ``value``.  Every part of the key must name a setting the profile has."""
    out = json.loads(json.dumps(data))
    node, parts = out, key.split(".")
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if not isinstance(node, dict) or (part not in node and not _may_add(node, parts[:depth])):
            where = ".".join(parts[:depth]) or "the profile"
            known = ", ".join(sorted(node)) if isinstance(node, dict) else "no sub-settings"
            raise SettingError(f"setting {key!r}: {where} has no setting {part!r} (it has: {known}); check the key")
        if last:
            node[part] = value
        else:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
    return out


def _may_add(node: dict, path: list[str]) -> bool:
    """Free-form mappings (the boosted trees' grid) take new keys; settings objects do not."""
    return path[-1:] == ["gbm_grid"]


def with_settings(profile: StudyProfile, overrides: dict[str, object]) -> StudyProfile:
    """``profile`` with dotted-key overrides applied (``None`` keeps a setting; strings are
    parsed as JSON, see :func:`parse_value`), validated again by the schema."""
    data = profile.to_dict()
    changed = False
    for key, value in overrides.items():
        if value is None:
            continue
        data = set_setting(data, key, parse_value(value))
        changed = True
    if not changed:
        return profile
    from pydantic import ValidationError

    try:
        return StudyProfile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise SettingError(
            f"setting {where!r}: {first['msg']} (overrides: "
            + ", ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items() if v is not None)
            + ")"
        ) from None


def _overridden(data: dict, **overrides) -> dict:
    """``data`` with the given top-level keys replaced (``None`` means "not given", as in ``load_config``)."""
    return {**data, **{k: (list(v) if k == "seeds" else v) for k, v in overrides.items() if v is not None}}


def profile_path(name: str) -> Path:
    """Path of a bundled profile (``fixture``, ``default``, ``paper``)."""
    if name not in PROFILE_NAMES:
        raise ValueError(
            f"unknown profile {name!r}; bundled profiles: {', '.join(PROFILE_NAMES)} (or give a JSON path)"
        )
    return Path(str(resources.files("cgcnn") / "profiles" / f"{name}.json"))


def _run_settings(path: Path) -> dict | None:
    """The profile a run's ``config.json`` holds under ``"settings"``; None for a profile file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # StrictModel.load reports it, naming the file
    if isinstance(data, dict) and "settings" in data and "name" not in data:
        return data["settings"]
    return None


def load_profile(
    name_or_path: str | os.PathLike,
    *,
    seeds: list[int] | None = None,
    device: str | None = None,
    workers: int | None = None,
    nproc: int | None = None,
    overrides: dict[str, object] | None = None,
) -> StudyProfile:
    """Load a bundled profile by name, a profile JSON file, or a run's ``config.json``.

    A run's ``config.json`` (written by ``scripts/run_pipeline.py``) holds the resolved
    profile under ``"settings"``.  ``seeds``, ``device``, ``workers`` and ``nproc`` override the file's
    values (``None``: keep them).
    """
    text = str(name_or_path)
    path = profile_path(text) if text in PROFILE_NAMES else Path(text)
    if not path.is_file() and path.name == "config.json" and not path.parent.is_dir():  # a notebook's default
        raise ProfileNotFoundError(
            f"no run folder {path.parent}: run the pipeline once first (`.venv/bin/python scripts/run_pipeline.py` "
            "from the repository root makes runs/latest), or give the notebook run_dir and config of a run folder"
        )
    if not path.is_file():
        raise ProfileNotFoundError(f"profile {text!r}: no such file (bundled profiles: {', '.join(PROFILE_NAMES)})")
    settings = _run_settings(path)
    if settings is not None:
        profile = StudyProfile.model_validate(
            _overridden(settings, seeds=seeds, device=device, workers=workers, nproc=nproc)
        )
    else:
        profile = StudyProfile.load(
            path, seeds=None if seeds is None else list(seeds), device=device, workers=workers, nproc=nproc
        )
    return with_settings(profile, overrides or {})
