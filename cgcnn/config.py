"""Validated configurations for graphs, models, training and adaptation.

Every config is a pydantic model with ``extra="forbid"``: a misspelt key is an error,
never a silently ignored setting.  Configs are plain data; nothing reads environment
variables.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cgcnn.errors import CgcnnError
from cgcnn.training.freeze import POLICIES

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
    def _check(self) -> GraphConfig:
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
    fidelities: list[str] = Field(
        default_factory=list,
        description="fidelity names (e.g. ['pbe', 'experiment']); "
        "a learned embedding of each; the last is the default at prediction",
    )
    fidelity_dim: int = Field(8, ge=1)
    pbe_input: bool = Field(False, description="the head also receives the PBE gap (eV) and whether it is known")
    composition: Literal["none", "magpie"] = Field(
        "none", description="the head also receives Magpie composition features"
    )

    @model_validator(mode="after")
    def _check_fidelities(self) -> ModelConfig:
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
    loss: Literal["mse", "huber"] = Field(
        "mse", description="training loss on normalised targets; 'huber' is quadratic within huber_delta, linear beyond"
    )
    huber_delta: float = Field(0.5, gt=0, description="Huber threshold in normalised target units (target stds)")
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.1, ge=0, lt=1)
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    shuffle: bool = Field(True, description="reshuffle the training crystals every epoch")
    sync_batchnorm: bool = Field(
        True,
        description="under DDP (torchrun), batch-norm statistics over the global batch, as in one process; "
        "False: each process normalises with its own share (no effect in one process)",
    )

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be < 1")
        return self


FreezePolicy = Literal[POLICIES]  # the policies of cgcnn.training.freeze.POLICY_TABLE
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


# --------------------------------------------------------------------------------------
# the ETL's rules
# --------------------------------------------------------------------------------------
# Validated settings of the ETL; the defaults reproduce the study's datasets.
#
# Every model rejects unknown keys (``extra="forbid"``), so a misspelt setting in a JSON file
# is an error.  Nothing here reads environment variables.


class GapWindow(StrictModel):
    """An interval of band gaps in eV; ``None`` leaves a side open."""

    min: float | None = None
    max: float | None = None
    min_inclusive: bool = True
    max_inclusive: bool = True

    @model_validator(mode="after")
    def _check(self) -> GapWindow:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"gap window min ({self.min}) is above max ({self.max})")
        return self

    def contains(self, value: float) -> bool:
        if value is None or not math.isfinite(value):
            return False
        if self.min is not None and (value < self.min or (value == self.min and not self.min_inclusive)):
            return False
        if self.max is not None and (value > self.max or (value == self.max and not self.max_inclusive)):
            return False
        return True

    def describe(self) -> str:
        lo = "(-inf" if self.min is None else f"{'[' if self.min_inclusive else '('}{self.min:g}"
        hi = "inf)" if self.max is None else f"{self.max:g}{']' if self.max_inclusive else ')'}"
        return f"{lo}, {hi} eV"


class ExperimentalSource(StrictModel):
    """One experimental band-gap table and how to read it.

    A row is located by ``id_column`` when that cell holds an id; otherwise by
    ``formula_column`` (+ ``spacegroup_column``) through the formula-matching rule.
    ``header_rows`` > 1 joins stacked header rows: each column is named by its lowest
    non-empty header cell (Borlido et al.'s sheet has a caption row above the functional
    names).
    """

    name: str = Field(min_length=1)
    key: str = Field(min_length=1, description="object key in the bucket, e.g. raw/x.csv")
    format: Literal["auto", "csv", "xlsx"] = "auto"
    sheet: str | int = 0
    header_rows: int = Field(1, ge=1, le=5)
    id_column: str | None = "material_id"
    gap_column: str = "bg_exp"
    formula_column: str | None = None
    spacegroup_column: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ExperimentalSource:
        if self.id_column is None and self.formula_column is None:
            raise ValueError(f"source {self.name!r} needs an id_column or a formula_column")
        return self


class DS1Config(StrictModel):
    """DS1: PBE gaps of the listed Materials Project ids."""

    ids_key: str = "raw/ds1_material_ids.csv"
    id_column: str = "material_id"
    gap_window: GapWindow = GapWindow(min=0.0, max=5.0, min_inclusive=True, max_inclusive=False)


def _default_sources() -> list[ExperimentalSource]:
    return [
        ExperimentalSource(
            name="borlido2019",
            key="raw/experimental_gaps_borlido2019.xlsx",
            header_rows=2,
            id_column="MP_ID",
            gap_column="Experimental",
            formula_column="Material",
        ),
        ExperimentalSource(
            name="megnet2021",
            key="raw/experimental_gaps_megnet2021.csv",
            id_column="material_id",
            gap_column="bg_exp",
        ),
    ]


class DS2Config(StrictModel):
    """DS2: experimental gaps merged over ``sources`` (first = highest priority)."""

    sources: list[ExperimentalSource] = Field(default_factory=_default_sources, min_length=1)
    gap_window: GapWindow = GapWindow(min=0.0, max=5.0, min_inclusive=False, max_inclusive=True)
    conflict_threshold: float = Field(0.5, ge=0, description="eV; larger source disagreements are reported")
    below_pbe_threshold: float = Field(
        0.5, gt=0, description="eV; a label this far below its PBE gap is reported as suspicious"
    )

    @model_validator(mode="after")
    def _check(self) -> DS2Config:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"DS2 source names must be unique, got {names}")
        return self


class DS3Config(StrictModel):
    """DS3: the validation table (experimental, HSE06 and G0W0 gaps)."""

    key: str = "raw/validation_set.csv"
    id_column: str | None = "material_id"
    formula_column: str | None = "formula"
    spacegroup_column: str | None = None
    exp_column: str = "bg_exp"
    exp_source_column: str | None = "bg_exp_source"
    hse06_column: str | None = "bg_hse06"
    g0w0_column: str | None = "bg_g0w0"


class EtlConfig(StrictModel):
    """All ETL settings.  ``EtlConfig.load(path)`` reads one from JSON.

    ``graph`` defaults to the package's CGCNN defaults (8 Å, 12 neighbours); the original
    domain-adaptation study used ``{"radius": 7, "max_neighbors": 14}``.
    """

    ds1: DS1Config = Field(default_factory=DS1Config)
    ds2: DS2Config = Field(default_factory=DS2Config)
    ds3: DS3Config = Field(default_factory=DS3Config)
    graph: GraphConfig = Field(default_factory=GraphConfig)
    build_graphs: bool = True
    write_xlsx: bool = True
    graph_cache_dir: str | None = Field(
        None,
        description="local folder for a per-structure graph cache (cgcnn.data.graph_cache.GraphCache), e.g. "
        "inside the run folder; None: no per-structure cache (a dataset whose structures and graph "
        "settings are unchanged is still reused whole from the bucket's graphs/)",
    )
    mp_batch_size: int = Field(500, ge=1, le=10000)
