"""The study, step by step: profiles, ETL, base model, domain adaptation, DS3 evaluation.

The notebooks are thin: each calls one or two functions of this module with explicit paths,
settings and seeds, then shows the returned tables and figures.  Every function writes its
artefacts into a given *run folder*::

    <run>/config.json            resolved profile + inputs (written by scripts/run_pipeline.py)
    <run>/data/                  DS1/DS2/DS3 tables, graphs (.npz), ETL report (run_etl_stage)
    <run>/models/m1/             base model on DS1 (train_base)
    <run>/models/m2/<policy>/lr-<lr>/seed-<s>/   adapted models (run_adaptation)
    <run>/models/control/lr-<lr>/seed-<s>/       from-scratch control on DS2
    <run>/tables/*.csv           selection, per-seed and summary tables
    <run>/figures/*.png          figures
    <run>/metrics.json           DS3 metrics of every model and baseline (evaluate_ds3)

Protocol (Masood et al., Cell Rep. Phys. Sci. 2023, re-implemented):

* M1 is trained once on DS1 (PBE gaps), seed ``base.train.seed``.
* For every seed, DS2 (experimental gaps) is split into an adaptation training part and a
  validation part (``adapt.train.val_fraction``); that seed also seeds initialisation and
  shuffling.  DS3 is never used for any choice.
* For every freeze policy and for the from-scratch control, the learning rate is chosen
  from ``lr_grid`` by the mean validation MAE over ``selection_seeds`` seeds; the number of
  epochs is chosen by early stopping on the same validation split (best checkpoint).
* The adapted model "M2" is the policy with the lowest mean validation MAE over all seeds.
* DS3 is scored for raw PBE, linear-corrected PBE (fitted on each seed's adaptation training
  split), HSE06, G0W0, M1, every M2 variant and the control: mean ± std over seeds.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cgcnn.config import FreezePolicy, GraphConfig, ModelConfig, NormalizerPolicy, TrainConfig
from cgcnn.etl.config import EtlConfig

PROFILE_NAMES = ("fixture", "default", "paper")


# --------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


class BaseSettings(_Strict):
    """Base model M1 on DS1."""

    train: TrainConfig
    max_crystals: int | None = Field(
        None, ge=10, description="train on a random subset of DS1 of this size (seeded); None = all of DS1"
    )


class AdaptSettings(_Strict):
    """Domain adaptation on DS2 and the from-scratch control."""

    policies: list[FreezePolicy] = Field(default_factory=lambda: ["none", "embedding", "convs", "head"], min_length=1)
    normalizer: NormalizerPolicy = "refit"
    train: TrainConfig = Field(description="epochs = upper bound; patience = early stopping on DS2 validation")
    lr_grid: list[float] = Field(min_length=1)
    control_train: TrainConfig | None = Field(None, description="control settings; default: same as train")
    control_lr_grid: list[float] | None = Field(None, description="default: lr_grid")
    selection_seeds: int | None = Field(
        1, ge=1, description="learning rates are compared on the first N seeds (None = all seeds)"
    )

    @model_validator(mode="after")
    def _check(self) -> "AdaptSettings":
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


class TsneSettings(_Strict):
    """openTSNE settings.  ``perplexity=None`` -> ``min(30, (n - 1) / 3)`` for n fitted points."""

    perplexity: float | None = Field(None, gt=0)
    n_iter: int = Field(500, ge=10)
    early_exaggeration_iter: int = Field(250, ge=0)
    standardize: bool = True
    seed: int = 0
    models: list[Literal["m1", "m2", "control"]] = Field(default_factory=lambda: ["m1", "m2"], min_length=1)


class StudyProfile(_Strict):
    """Everything the pipeline needs besides the data location.

    ``graph`` is the single source of the graph settings: it is copied into ``etl.graph``
    (an ``etl`` section naming different graph settings is rejected).
    """

    name: str
    description: str = ""
    graph: GraphConfig
    model: ModelConfig
    etl: EtlConfig = Field(default_factory=EtlConfig)
    base: BaseSettings
    adapt: AdaptSettings
    seeds: list[int] = Field(min_length=1)
    tsne: TsneSettings = Field(default_factory=TsneSettings)
    workers: int | None = Field(None, ge=1, description="graph-building processes; None = all cores")
    device: str = "auto"

    @model_validator(mode="before")
    @classmethod
    def _graph_into_etl(cls, data):
        if isinstance(data, dict) and "graph" in data:
            graph = GraphConfig.model_validate(data["graph"]) if not isinstance(data["graph"], GraphConfig) else data["graph"]
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
    def _check(self) -> "StudyProfile":
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be unique, got {self.seeds}")
        return self

    def with_overrides(self, *, seeds: list[int] | None = None, device: str | None = None) -> "StudyProfile":
        """A copy with other seeds and/or device (validated again)."""
        data = self.to_dict()
        if seeds is not None:
            data["seeds"] = list(seeds)
        if device is not None:
            data["device"] = device
        return StudyProfile.model_validate(data)

    def train_config(self, cfg: TrainConfig, **update) -> TrainConfig:
        """``cfg`` with this profile's device (and any other updates) applied."""
        return TrainConfig.model_validate({**cfg.to_dict(), "device": self.device, **update})


def profile_path(name: str) -> Path:
    """Path of a bundled profile (``fixture``, ``default``, ``paper``)."""
    if name not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {name!r}; bundled profiles: {', '.join(PROFILE_NAMES)} (or give a JSON path)")
    return Path(str(resources.files("cgcnn") / "profiles" / f"{name}.json"))


def load_profile(name_or_path: str | os.PathLike, *, seeds: list[int] | None = None, device: str | None = None) -> StudyProfile:
    """Load a bundled profile by name, a profile JSON file, or a run's ``config.json``.

    A run's ``config.json`` (written by ``scripts/run_pipeline.py``) holds the resolved
    profile under ``"settings"``.
    """
    text = str(name_or_path)
    path = profile_path(text) if text in PROFILE_NAMES else Path(text)
    if not path.is_file():
        raise FileNotFoundError(f"profile {text!r}: no such file (bundled profiles: {', '.join(PROFILE_NAMES)})")
    data = json.loads(path.read_text())
    if "settings" in data and "name" not in data:
        data = data["settings"]
    profile = StudyProfile.model_validate(data)
    if seeds is not None or device is not None:
        profile = profile.with_overrides(seeds=seeds, device=device)
    return profile
