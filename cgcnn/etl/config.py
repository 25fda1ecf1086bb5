"""Validated settings of the ETL; the defaults reproduce the study's datasets.

Every model rejects unknown keys (``extra="forbid"``), so a misspelt setting in a JSON file
is an error.  Nothing here reads environment variables.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from cgcnn.config import GraphConfig, StrictModel

__all__ = [
    "DS1Config",
    "DS2Config",
    "DS3Config",
    "EtlConfig",
    "ExperimentalSource",
    "GapWindow",
]



class GapWindow(StrictModel):
    """An interval of band gaps in eV; ``None`` leaves a side open."""

    min: float | None = None
    max: float | None = None
    min_inclusive: bool = True
    max_inclusive: bool = True

    @model_validator(mode="after")
    def _check(self) -> "GapWindow":
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
    def _check(self) -> "ExperimentalSource":
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

    @model_validator(mode="after")
    def _check(self) -> "DS2Config":
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
        description="local folder for a per-structure graph cache (cgcnn.data.building.GraphCache), e.g. "
        "inside the run folder; None: no per-structure cache (a dataset whose structures and graph "
        "settings are unchanged is still reused whole from the bucket's graphs/)",
    )
    mp_batch_size: int = Field(500, ge=1, le=10000)
