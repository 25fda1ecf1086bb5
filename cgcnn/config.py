"""Validated configurations for graphs, models, training and adaptation.

Every config is a pydantic model with ``extra="forbid"``: a misspelt key is an error,
never a silently ignored setting.  Configs are plain data; nothing reads environment
variables.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cgcnn.errors import CgcnnError

FORMAT_VERSION = 1


class ConfigError(CgcnnError, ValueError):
    """A configuration file that cannot be read."""


class StrictModel(BaseModel):
    """Base of every configuration in the package (graph, model, training, adaptation, ETL,
    study profile): unknown keys are rejected, instances are frozen, ``to_dict`` gives the
    JSON form and ``load`` reads a JSON file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides):
        """Same as ``load_config(cls, path, **overrides)``."""
        return load_config(cls, path, **overrides)


class GraphConfig(StrictModel):
    """How a crystal becomes a graph.

    Each atom keeps its ``max_neighbors`` nearest neighbours within ``radius`` Å (periodic
    images included).  Distances are expanded in Gaussians centred at
    ``dmin, dmin + step, …, radius`` with width ``step`` (CGCNN defaults: 8 Å, 12
    neighbours; the domain-adaptation study used 7 Å, 14 neighbours).
    """

    radius: float = Field(8.0, gt=0)
    max_neighbors: int = Field(12, ge=1)
    dmin: float = Field(0.0, ge=0)
    step: float = Field(0.2, gt=0)

    @model_validator(mode="after")
    def _check(self) -> "GraphConfig":
        if self.dmin >= self.radius:
            raise ValueError(f"dmin ({self.dmin}) must be below radius ({self.radius})")
        return self

    @property
    def n_gaussians(self) -> int:
        return int(np.floor((self.radius - self.dmin) / self.step + 1e-6)) + 1

    @property
    def centers(self) -> np.ndarray:
        return self.dmin + self.step * np.arange(self.n_gaussians)

    def key(self) -> str:
        """Short, stable text form used in cache keys."""
        return f"r{self.radius:g}-n{self.max_neighbors}-d{self.dmin:g}-s{self.step:g}"


class ModelConfig(StrictModel):
    """CGCNN architecture (names follow Xie & Grossman's implementation)."""

    orig_atom_fea_len: int = Field(92, ge=1)
    nbr_fea_len: int = Field(41, ge=1)
    atom_fea_len: int = Field(64, ge=1)
    n_conv: int = Field(3, ge=1)
    h_fea_len: int = Field(128, ge=1)
    n_h: int = Field(1, ge=1)
    # Per-crystal inputs joined to the crystal representation before the head (all off:
    # the original CGCNN).  See cgcnn.nn.model.CGCNN and cgcnn.data.descriptors.
    fidelities: list[str] = Field(default_factory=list, description="fidelity names (e.g. ['pbe', 'experiment']); "
                                  "a learned embedding of each; the last is the default at prediction")
    fidelity_dim: int = Field(8, ge=1)
    pbe_input: bool = Field(False, description="the head also receives the PBE gap (eV) and whether it is known")
    composition: Literal["none", "magpie"] = Field("none", description="the head also receives Magpie composition features")

    @model_validator(mode="after")
    def _check_fidelities(self) -> "ModelConfig":
        if len(set(self.fidelities)) != len(self.fidelities):
            raise ValueError(f"fidelities must be distinct names, got {self.fidelities}")
        return self

    @property
    def conditioned(self) -> bool:
        """Whether the model takes per-crystal inputs beside the graph."""
        return bool(self.fidelities) or self.pbe_input or self.composition != "none"

    @property
    def default_fidelity(self) -> str | None:
        return self.fidelities[-1] if self.fidelities else None


class TrainConfig(StrictModel):
    """Optimisation settings for ``cgcnn.training.fit.fit``."""

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(256, ge=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    scheduler: Literal["none", "multistep", "cosine"] = "multistep"
    lr_milestones: list[int] = Field(default_factory=lambda: [100])
    lr_gamma: float = Field(0.1, gt=0)
    patience: int | None = Field(None, ge=1, description="early stopping on validation MAE")
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.1, ge=0, lt=1)
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    shuffle: bool = Field(True, description="reshuffle the training crystals every epoch")
    sync_batchnorm: bool = Field(
        True, description="under DDP (torchrun), batch-norm statistics over the global batch, as in one process; "
                          "False: each process normalises with its own share (no effect in one process)")

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be < 1")
        return self


FreezePolicy = Literal["none", "embedding", "convs", "head"]
NormalizerPolicy = Literal["keep", "refit"]


class AdaptConfig(StrictModel):
    """Domain adaptation: fine-tune a base checkpoint on a new dataset."""

    freeze: FreezePolicy = "none"
    normalizer: NormalizerPolicy = "refit"
    train: TrainConfig = Field(default_factory=TrainConfig)


def load_config(cls: type[StrictModel], path: str | Path | None = None, **overrides) -> StrictModel:
    """The one config loader: read a JSON file (unknown keys rejected), apply top-level
    keyword overrides (``None`` means "not given"), validate.

    Raises:
        ConfigError: the file does not exist or is not JSON (the message names the file).
        pydantic.ValidationError: a key is unknown or a value is out of range.
    """
    data: dict = {}
    if path is not None:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config file {path} is not JSON (line {exc.lineno}: {exc.msg})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a JSON object, not {type(data).__name__}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return cls.model_validate(data)
