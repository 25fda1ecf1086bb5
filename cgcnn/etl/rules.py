"""Wrangling rules: raw tables + Materials Project records -> DS1, DS2, DS3 and their drops.

Pure functions over DataFrames; nothing here touches storage or the network.  Every raw
row ends up either in a dataset or in the drop report with one of :data:`DROP_REASONS`:

``not_in_mp``     the id (or formula) is not known to the Materials Project source
``no_label``      the gap cell is empty (DS1: no PBE gap)
``unparseable``   the gap cell is not a number (e.g. ``"3.8-3.7"``); never coerced
``out_of_range``  the gap lies outside the configured window
``duplicate``     the id appeared earlier in the same table, or a higher-priority DS2 source
                  already gives this material
``overlap_ds3``   the material is in the validation set DS3
``graph_error``   no crystal graph could be built from the structure

Cells become values in :mod:`cgcnn.etl.parsing`; rows become material ids in
:mod:`cgcnn.etl.resolve`; the report tables are assembled in :mod:`cgcnn.etl.audit`.
DS2 is built in two steps that can be run alone:
:func:`read_source_labels` (one source table -> one label per material) and
:func:`merge_labels` (every source -> one row per material, by source priority).

(A little over 400 lines: every rule that decides whether a raw row becomes a dataset row, and
with which drop reason, is read in one place.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import pandas as pd

from cgcnn.config import DS1Config, DS2Config, DS3Config, ExperimentalSource
from cgcnn.data.material_classes import crystal_system
from cgcnn.etl.materials import MaterialRecord
from cgcnn.etl.parsing import EtlError, cell_text, parse_gap, require_columns
from cgcnn.etl.resolve import formula_note, resolve_rows

__all__ = [
    "BASE_COLUMNS",
    "DATASETS",
    "DROP_COLUMNS",
    "DROP_REASONS",
    "Label",
    "NOTE_COLUMNS",
    "Outcome",
    "SourceLabels",
    "SourceTable",
    "build_ds1",
    "build_ds2",
    "build_ds3",
    "merge_labels",
    "read_source_labels",
]

DATASETS = ("ds1", "ds2", "ds3")
DROP_REASONS = (
    "not_in_mp",
    "no_label",
    "unparseable",
    "out_of_range",
    "duplicate",
    "overlap_ds3",
    "graph_error",
)
DROP_COLUMNS = ["dataset", "source", "row", "material_id", "reason", "detail", "value"]
NOTE_COLUMNS = ["dataset", "source", "row", "material_id", "kind", "detail"]
BASE_COLUMNS = [
    "material_id",
    "formula",
    "spacegroup_number",
    "spacegroup_symbol",
    "crystal_system",
    "nsites",
    "bg_pbe",
]
DS2_COLUMNS = BASE_COLUMNS + ["bg_exp", "bg_exp_source"]
DS3_COLUMNS = BASE_COLUMNS + ["bg_exp", "bg_exp_source", "bg_hse06", "bg_g0w0"]


@dataclass
class Outcome:
    """One dataset built by a rule, with everything that did not make it in."""

    table: pd.DataFrame
    drops: list[dict] = field(default_factory=list)
    notes: list[dict] = field(default_factory=list)
    matches: list[dict] = field(default_factory=list)
    conflicts: pd.DataFrame | None = None

    def drops_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.drops, columns=DROP_COLUMNS)


def _drop(dataset, source, row, material_id, reason, detail="", value="") -> dict:
    assert reason in DROP_REASONS, reason
    return {
        "dataset": dataset,
        "source": source,
        "row": row,
        "material_id": material_id or "",
        "reason": reason,
        "detail": detail,
        "value": cell_text(value),
    }


def _base(rec: MaterialRecord) -> dict:
    """The dataset columns every material has (:data:`BASE_COLUMNS`)."""
    try:
        system = crystal_system(rec.spacegroup_number)  # None when the space group is unknown
    except ValueError as exc:
        raise EtlError(f"Materials Project record {rec.material_id}: {exc}") from None
    return {
        "material_id": rec.material_id,
        "formula": rec.formula,
        "spacegroup_number": rec.spacegroup_number,
        "spacegroup_symbol": rec.spacegroup_symbol,
        "crystal_system": system,
        "nsites": rec.nsites,
        "bg_pbe": rec.band_gap,
    }


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=columns)
    df["spacegroup_number"] = df["spacegroup_number"].astype("Int64")
    df["nsites"] = df["nsites"].astype("Int64")
    for col in columns:
        if col.startswith("bg_") and not col.endswith("_source"):
            df[col] = pd.to_numeric(df[col], errors="raise").astype(float)
    return df


def build_ds1(
    ids_table: pd.DataFrame,
    records: Mapping[str, MaterialRecord],
    ds3_ids: set[str],
    cfg: DS1Config,
    *,
    source: str = "ds1_material_ids",
    first_line: int = 2,
) -> Outcome:
    """DS1: listed ids with a known PBE gap inside ``cfg.gap_window``, minus DS3."""
    require_columns(ids_table, [cfg.id_column], cfg.ids_key)
    rows, drops, seen = [], [], {}
    for i, raw in enumerate(ids_table[cfg.id_column].tolist()):
        line = first_line + i
        mid = cell_text(raw)
        if not mid:
            drops.append(_drop("ds1", source, line, "", "not_in_mp", "empty material id"))
            continue
        if mid in seen:
            drops.append(_drop("ds1", source, line, mid, "duplicate", f"repeats row {seen[mid]}"))
            continue
        seen[mid] = line
        rec = records.get(mid)
        if rec is None:
            drops.append(_drop("ds1", source, line, mid, "not_in_mp", "id not found in the Materials Project source"))
            continue
        if rec.band_gap is None:
            drops.append(_drop("ds1", source, line, mid, "no_label", "no PBE band gap"))
            continue
        if not cfg.gap_window.contains(rec.band_gap):
            drops.append(
                _drop(
                    "ds1",
                    source,
                    line,
                    mid,
                    "out_of_range",
                    f"PBE gap {rec.band_gap:g} eV outside {cfg.gap_window.describe()}",
                    rec.band_gap,
                )
            )
            continue
        if mid in ds3_ids:
            drops.append(_drop("ds1", source, line, mid, "overlap_ds3", "material is in DS3", rec.band_gap))
            continue
        rows.append(_base(rec))
    return Outcome(_frame(rows, BASE_COLUMNS), drops)


@dataclass
class SourceTable:
    """An experimental table as read, with the line number of its first data row."""

    config: ExperimentalSource
    table: pd.DataFrame
    first_line: int


class Label(NamedTuple):
    """One usable experimental gap: its value, the line it is on and the cell as written."""

    value: float
    line: int
    raw: object


@dataclass
class SourceLabels:
    """What one DS2 source table says: material id -> its first usable label, and the rest."""

    name: str
    labels: dict[str, Label] = field(default_factory=dict)
    drops: list[dict] = field(default_factory=list)
    notes: list[dict] = field(default_factory=list)
    matches: list[dict] = field(default_factory=list)


def read_source_labels(
    st: SourceTable,
    records: Mapping[str, MaterialRecord],
    formula_candidates: Mapping[str, list[MaterialRecord]],
) -> SourceLabels:
    """One experimental table -> a label per material, rows without one dropped.

    A row is dropped when its material cannot be resolved (``not_in_mp``), its gap cell is
    empty (``no_label``) or not a number (``unparseable``), or its material already has a
    label earlier in the same table (``duplicate``).  No gap window is applied here.
    """
    sc = st.config
    require_columns(st.table, [sc.id_column, sc.gap_column, sc.formula_column, sc.spacegroup_column], sc.key)
    ids, why, matches = resolve_rows(
        st.table,
        id_column=sc.id_column,
        formula_column=sc.formula_column,
        spacegroup_column=sc.spacegroup_column,
        formula_candidates=formula_candidates,
        dataset="ds2",
        source=sc.name,
        first_line=st.first_line,
    )
    out = SourceLabels(sc.name, matches=matches)
    gaps = st.table[sc.gap_column].tolist()
    formulas = st.table[sc.formula_column].tolist() if sc.formula_column else [None] * len(gaps)
    for i, (mid, raw) in enumerate(zip(ids, gaps)):
        line = st.first_line + i
        if mid is None:
            out.drops.append(_drop("ds2", sc.name, line, "", "not_in_mp", why[i], raw))
            continue
        rec = records.get(mid)
        if rec is None:
            out.drops.append(
                _drop("ds2", sc.name, line, mid, "not_in_mp", "id not found in the Materials Project source", raw)
            )
            continue
        value, status = parse_gap(raw)
        if status == "missing":
            out.drops.append(_drop("ds2", sc.name, line, mid, "no_label", f"empty {sc.gap_column!r} cell"))
            continue
        if status == "unparseable":
            out.drops.append(_drop("ds2", sc.name, line, mid, "unparseable", f"{sc.gap_column!r} is not a number", raw))
            continue
        if mid in out.labels:
            out.drops.append(
                _drop("ds2", sc.name, line, mid, "duplicate", f"repeats row {out.labels[mid].line} of {sc.name}", raw)
            )
            continue
        out.labels[mid] = Label(value, line, raw)
        if sc.id_column and cell_text(st.table.iat[i, st.table.columns.get_loc(sc.id_column)]):
            note = formula_note("ds2", sc.name, line, rec, formulas[i])
            if note:
                out.notes.append(note)
    return out


def _conflict(
    mid: str,
    given: list[tuple[str, Label]],
    sources: list[SourceLabels],
    records: Mapping[str, MaterialRecord],
    cfg: DS2Config,
    in_ds2: bool,
) -> dict | None:
    """The conflict-report row of a material whose sources differ by more than the threshold."""
    values = [label.value for _, label in given]
    spread = max(values) - min(values)
    if not (len(given) > 1 and spread > cfg.conflict_threshold):
        return None
    chosen_name, chosen = given[0]
    conflict = {"material_id": mid, "formula": records[mid].formula}
    for src in sources:
        conflict[f"bg_exp_{src.name}"] = src.labels[mid].value if mid in src.labels else math.nan
    conflict.update(
        {"chosen_source": chosen_name, "bg_exp": chosen.value, "spread": round(spread, 6), "in_ds2": in_ds2}
    )
    return conflict


def merge_labels(
    sources: list[SourceLabels],
    records: Mapping[str, MaterialRecord],
    ds3_ids: set[str],
    cfg: DS2Config,
) -> tuple[list[dict], list[dict], list[dict]]:
    """Every source's labels -> one DS2 row per material (ids sorted).

    The first source (in ``sources`` order) that labels a material gives its value; the others
    are dropped as ``duplicate``.  The gap window applies to that chosen value
    (``out_of_range``), then DS3 materials are removed (``overlap_ds3``).

    Returns (DS2 rows, drops, conflict-report rows).
    """
    all_ids: dict[str, None] = {}
    for src in sources:
        all_ids.update(dict.fromkeys(src.labels))
    rows, drops, conflicts = [], [], []
    for mid in sorted(all_ids):
        given = [(src.name, src.labels[mid]) for src in sources if mid in src.labels]
        chosen_name, chosen = given[0]
        for name, label in given[1:]:
            drops.append(
                _drop(
                    "ds2",
                    name,
                    label.line,
                    mid,
                    "duplicate",
                    f"superseded by {chosen_name} row {chosen.line} ({chosen.value:g} eV)",
                    label.raw,
                )
            )
        in_window = cfg.gap_window.contains(chosen.value)
        conflict = _conflict(mid, given, sources, records, cfg, in_window and mid not in ds3_ids)
        if conflict:
            conflicts.append(conflict)
        if not in_window:
            drops.append(
                _drop(
                    "ds2",
                    chosen_name,
                    chosen.line,
                    mid,
                    "out_of_range",
                    f"experimental gap {chosen.value:g} eV outside {cfg.gap_window.describe()}",
                    chosen.raw,
                )
            )
            continue
        if mid in ds3_ids:
            drops.append(_drop("ds2", chosen_name, chosen.line, mid, "overlap_ds3", "material is in DS3", chosen.raw))
            continue
        rows.append({**_base(records[mid]), "bg_exp": chosen.value, "bg_exp_source": chosen_name})
    return rows, drops, conflicts


def build_ds2(
    sources: list[SourceTable],
    records: Mapping[str, MaterialRecord],
    formula_candidates: Mapping[str, list[MaterialRecord]],
    ds3_ids: set[str],
    cfg: DS2Config,
) -> Outcome:
    """DS2: experimental gaps merged by source priority, window applied to the merged value.

    Also returns (as ``conflicts``) every material whose sources differ by more than
    ``cfg.conflict_threshold`` eV.
    """
    per_source = [read_source_labels(st, records, formula_candidates) for st in sources]
    rows, merge_drops, conflicts = merge_labels(per_source, records, ds3_ids, cfg)
    names = [src.name for src in per_source]
    conflict_columns = [
        "material_id",
        "formula",
        *[f"bg_exp_{n}" for n in names],
        "chosen_source",
        "bg_exp",
        "spread",
        "in_ds2",
    ]
    return Outcome(
        _frame(rows, DS2_COLUMNS),
        [d for src in per_source for d in src.drops] + merge_drops,
        [n for src in per_source for n in src.notes],
        [m for src in per_source for m in src.matches],
        conflicts=pd.DataFrame(conflicts, columns=conflict_columns),
    )


def build_ds3(
    table: pd.DataFrame,
    records: Mapping[str, MaterialRecord],
    formula_candidates: Mapping[str, list[MaterialRecord]],
    cfg: DS3Config,
    *,
    source: str = "validation_set",
    first_line: int = 2,
) -> Outcome:
    """DS3: the validation materials with their experimental, HSE06 and G0W0 gaps.

    No gap window applies (the study keeps BeSe at 5.5 eV).  A row needs a resolvable
    material and a numeric experimental gap; HSE06/G0W0 may be empty.
    """
    require_columns(
        table,
        [
            cfg.id_column,
            cfg.formula_column,
            cfg.spacegroup_column,
            cfg.exp_column,
            cfg.exp_source_column,
            cfg.hse06_column,
            cfg.g0w0_column,
        ],
        cfg.key,
    )
    ids, why, matches = resolve_rows(
        table,
        id_column=cfg.id_column,
        formula_column=cfg.formula_column,
        spacegroup_column=cfg.spacegroup_column,
        formula_candidates=formula_candidates,
        dataset="ds3",
        source=source,
        first_line=first_line,
    )
    rows, drops, notes, seen = [], [], [], {}
    for i, mid in enumerate(ids):
        line = first_line + i

        def cell(col, i=i):
            return table.iat[i, table.columns.get_loc(col)] if col else None

        raw = cell(cfg.exp_column)
        if mid is None:
            drops.append(_drop("ds3", source, line, "", "not_in_mp", why[i], raw))
            continue
        rec = records.get(mid)
        if rec is None:
            drops.append(
                _drop("ds3", source, line, mid, "not_in_mp", "id not found in the Materials Project source", raw)
            )
            continue
        if mid in seen:
            drops.append(_drop("ds3", source, line, mid, "duplicate", f"repeats row {seen[mid]}", raw))
            continue
        value, status = parse_gap(raw)
        if status == "missing":
            drops.append(_drop("ds3", source, line, mid, "no_label", f"empty {cfg.exp_column!r} cell"))
            continue
        if status == "unparseable":
            drops.append(_drop("ds3", source, line, mid, "unparseable", f"{cfg.exp_column!r} is not a number", raw))
            continue
        seen[mid] = line
        row = {
            **_base(rec),
            "bg_exp": value,
            "bg_exp_source": cell_text(cell(cfg.exp_source_column)) if cfg.exp_source_column else source,
        }
        for name, col in (("bg_hse06", cfg.hse06_column), ("bg_g0w0", cfg.g0w0_column)):
            extra, extra_status = parse_gap(cell(col)) if col else (None, "missing")
            if extra_status == "unparseable":
                notes.append(
                    {
                        "dataset": "ds3",
                        "source": source,
                        "row": line,
                        "material_id": mid,
                        "kind": "unparseable_secondary",
                        "detail": f"{col!r} = {cell_text(cell(col))!r} kept as empty",
                    }
                )
            row[name] = math.nan if extra is None else extra
        if cfg.id_column and cfg.formula_column and cell_text(cell(cfg.id_column)):
            note = formula_note("ds3", source, line, rec, cell(cfg.formula_column))
            if note:
                notes.append(note)
        rows.append(row)
    return Outcome(_frame(rows, DS3_COLUMNS), drops, notes, matches)
