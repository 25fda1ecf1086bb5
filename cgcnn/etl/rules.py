"""Wrangling rules: raw tables + Materials Project records -> DS1, DS2, DS3 and reports.

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
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

from cgcnn.errors import CgcnnError
from cgcnn.etl.config import DS1Config, DS2Config, DS3Config, ExperimentalSource
from cgcnn.etl.materials import (
    FormulaMatch,
    MaterialRecord,
    crystal_system,
    reduced_formula,
)

__all__ = [
    "BASE_COLUMNS",
    "DROP_COLUMNS",
    "DROP_REASONS",
    "EtlError",
    "Outcome",
    "build_ds1",
    "build_ds2",
    "build_ds3",
    "find_polymorphs",
    "parse_gap",
    "table_from_cells",
]

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
MATCH_COLUMNS = ["dataset", "source", "row", "formula", "spacegroup", "status", "material_id", "candidates", "detail"]

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


class EtlError(CgcnnError, ValueError):
    """The inputs or the configuration do not fit together (e.g. a missing column)."""


def _is_missing(value) -> bool:
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip() == ""


def _cell_text(value) -> str:
    return "" if _is_missing(value) else str(value).strip()


def parse_gap(value) -> tuple[float | None, str]:
    """A band-gap cell -> (eV, status) with status ``ok``, ``missing`` or ``unparseable``.

    Numbers and plain decimal text (``"1.5"``, ``" 2e0 "``) are accepted; ranges such as
    ``"3.8-3.7"``, units, booleans and non-finite values are ``unparseable``.
    """
    if _is_missing(value):
        return None, "missing"
    if isinstance(value, bool):
        return None, "unparseable"
    if isinstance(value, (int, float)) or hasattr(value, "dtype"):
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None, "unparseable"
        return (number, "ok") if math.isfinite(number) else (None, "unparseable")
    text = str(value).strip()
    if _NUMBER.fullmatch(text):
        return float(text), "ok"
    return None, "unparseable"


def table_from_cells(cells: pd.DataFrame, header_rows: int, where: str) -> tuple[pd.DataFrame, int]:
    """Name the columns of a header-less sheet from its first ``header_rows`` rows.

    Each column takes the lowest non-empty header cell above it (so a caption row spanning
    the functional names is skipped).  Returns the body and the 1-based line number of its
    first row.
    """
    if len(cells) < header_rows:
        raise EtlError(f"{where} has fewer than {header_rows} header rows")
    names: list[str] = []
    for j in range(cells.shape[1]):
        name = ""
        for i in range(header_rows):
            text = _cell_text(cells.iat[i, j])
            if text:
                name = text
        name = name or f"column_{j + 1}"
        base, n = name, 1
        while name in names:  # repeated header text: "PBE", "PBE_2", …
            n += 1
            name = f"{base}_{n}"
        names.append(name)
    body = cells.iloc[header_rows:].reset_index(drop=True)
    body.columns = names
    return body, header_rows + 1


def _require(df: pd.DataFrame, columns: list[str | None], where: str) -> None:
    missing = [c for c in columns if c is not None and c not in df.columns]
    if missing:
        raise EtlError(f"{where} has no column {missing[0]!r} (columns: {list(df.columns)})")


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
        "value": _cell_text(value),
    }


def _base(rec: MaterialRecord) -> dict:
    return {
        "material_id": rec.material_id,
        "formula": rec.formula,
        "spacegroup_number": rec.spacegroup_number,
        "spacegroup_symbol": rec.spacegroup_symbol,
        "crystal_system": crystal_system(rec.spacegroup_number),
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


def resolve_rows(
    df: pd.DataFrame,
    *,
    id_column: str | None,
    formula_column: str | None,
    spacegroup_column: str | None,
    formula_candidates: Mapping[str, list[MaterialRecord]],
    dataset: str,
    source: str,
    first_line: int,
) -> tuple[list[str | None], list[str], list[dict]]:
    """Material id per row: the id cell if filled, else the formula-matching rule.

    Returns (ids, why-unresolved per row, formula-match report rows).
    """
    from cgcnn.etl.materials import match_formula

    ids: list[str | None] = []
    why: list[str] = []
    matches: list[dict] = []
    for i in range(len(df)):
        line = first_line + i
        mid = _cell_text(df.iat[i, df.columns.get_loc(id_column)]) if id_column else ""
        if mid:
            ids.append(mid)
            why.append("")
            continue
        formula = _cell_text(df.iat[i, df.columns.get_loc(formula_column)]) if formula_column else ""
        if not formula:
            ids.append(None)
            why.append("no material id" + (" and no formula" if formula_column else ""))
            continue
        sg_cell = df.iat[i, df.columns.get_loc(spacegroup_column)] if spacegroup_column else None
        sg = None if _is_missing(sg_cell) else sg_cell
        if isinstance(sg, float) and sg.is_integer():
            sg = int(sg)
        try:
            key = reduced_formula(formula)
        except ValueError:
            key = formula
        result: FormulaMatch = match_formula(formula_candidates.get(key, []), formula, sg)
        matches.append(
            {
                "dataset": dataset,
                "source": source,
                "row": line,
                "formula": formula,
                "spacegroup": "" if sg is None else str(sg),
                "status": result.status,
                "material_id": result.material_id or "",
                "candidates": " ".join(result.candidates),
                "detail": result.detail,
            }
        )
        ids.append(result.material_id)
        why.append("" if result.material_id else f"formula {formula}: {result.detail}")
    return ids, why, matches


def _formula_note(dataset, source, line, rec: MaterialRecord, table_formula: str) -> dict | None:
    text = _cell_text(table_formula)
    if not text:
        return None
    try:
        ours = reduced_formula(text)
    except ValueError:
        return {"dataset": dataset, "source": source, "row": line, "material_id": rec.material_id,
                "kind": "formula_unparseable", "detail": f"table formula {text!r} could not be parsed"}
    if ours != rec.formula:
        return {"dataset": dataset, "source": source, "row": line, "material_id": rec.material_id,
                "kind": "formula_mismatch", "detail": f"table says {text} ({ours}), Materials Project says {rec.formula}"}
    return None


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
    _require(ids_table, [cfg.id_column], cfg.ids_key)
    rows, drops, seen = [], [], {}
    for i, raw in enumerate(ids_table[cfg.id_column].tolist()):
        line = first_line + i
        mid = _cell_text(raw)
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
            drops.append(_drop("ds1", source, line, mid, "out_of_range",
                               f"PBE gap {rec.band_gap:g} eV outside {cfg.gap_window.describe()}", rec.band_gap))
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
    drops, notes, matches = [], [], []
    # source name -> id -> (value, line)
    labels: dict[str, dict[str, tuple[float, int, object]]] = {}
    for st in sources:
        sc = st.config
        _require(st.table, [sc.id_column, sc.gap_column, sc.formula_column, sc.spacegroup_column], sc.key)
        ids, why, found = resolve_rows(
            st.table,
            id_column=sc.id_column,
            formula_column=sc.formula_column,
            spacegroup_column=sc.spacegroup_column,
            formula_candidates=formula_candidates,
            dataset="ds2",
            source=sc.name,
            first_line=st.first_line,
        )
        matches.extend(found)
        per_id: dict[str, tuple[float, int, object]] = {}
        gaps = st.table[sc.gap_column].tolist()
        formulas = st.table[sc.formula_column].tolist() if sc.formula_column else [None] * len(gaps)
        for i, (mid, raw) in enumerate(zip(ids, gaps)):
            line = st.first_line + i
            if mid is None:
                drops.append(_drop("ds2", sc.name, line, "", "not_in_mp", why[i], raw))
                continue
            rec = records.get(mid)
            if rec is None:
                drops.append(_drop("ds2", sc.name, line, mid, "not_in_mp", "id not found in the Materials Project source", raw))
                continue
            value, status = parse_gap(raw)
            if status == "missing":
                drops.append(_drop("ds2", sc.name, line, mid, "no_label", f"empty {sc.gap_column!r} cell"))
                continue
            if status == "unparseable":
                drops.append(_drop("ds2", sc.name, line, mid, "unparseable", f"{sc.gap_column!r} is not a number", raw))
                continue
            if mid in per_id:
                drops.append(_drop("ds2", sc.name, line, mid, "duplicate", f"repeats row {per_id[mid][1]} of {sc.name}", raw))
                continue
            per_id[mid] = (value, line, raw)
            if sc.id_column and _cell_text(st.table.iat[i, st.table.columns.get_loc(sc.id_column)]):
                note = _formula_note("ds2", sc.name, line, rec, formulas[i])
                if note:
                    notes.append(note)
        labels[sc.name] = per_id

    order = [st.config.name for st in sources]
    all_ids: dict[str, None] = {}
    for name in order:
        all_ids.update(dict.fromkeys(labels[name]))

    rows, conflicts = [], []
    for mid in sorted(all_ids):
        given = [(name, *labels[name][mid]) for name in order if mid in labels[name]]
        chosen_name, chosen_value, chosen_line, chosen_raw = given[0]
        for name, value, line, raw in given[1:]:
            drops.append(_drop("ds2", name, line, mid, "duplicate",
                               f"superseded by {chosen_name} row {chosen_line} ({chosen_value:g} eV)", raw))
        values = [g[1] for g in given]
        spread = max(values) - min(values)
        in_window = cfg.gap_window.contains(chosen_value)
        if len(given) > 1 and spread > cfg.conflict_threshold:
            conflict = {"material_id": mid, "formula": records[mid].formula}
            for name in order:
                conflict[f"bg_exp_{name}"] = labels[name][mid][0] if mid in labels[name] else math.nan
            conflict.update({
                "chosen_source": chosen_name,
                "bg_exp": chosen_value,
                "spread": round(spread, 6),
                "in_ds2": in_window and mid not in ds3_ids,
            })
            conflicts.append(conflict)
        if not in_window:
            drops.append(_drop("ds2", chosen_name, chosen_line, mid, "out_of_range",
                               f"experimental gap {chosen_value:g} eV outside {cfg.gap_window.describe()}", chosen_raw))
            continue
        if mid in ds3_ids:
            drops.append(_drop("ds2", chosen_name, chosen_line, mid, "overlap_ds3", "material is in DS3", chosen_raw))
            continue
        rows.append({**_base(records[mid]), "bg_exp": chosen_value, "bg_exp_source": chosen_name})

    conflict_columns = ["material_id", "formula", *[f"bg_exp_{n}" for n in order], "chosen_source", "bg_exp", "spread", "in_ds2"]
    return Outcome(
        _frame(rows, DS2_COLUMNS),
        drops,
        notes,
        matches,
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
    _require(table, [cfg.id_column, cfg.formula_column, cfg.spacegroup_column, cfg.exp_column,
                     cfg.exp_source_column, cfg.hse06_column, cfg.g0w0_column], cfg.key)
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
        cell = lambda col: table.iat[i, table.columns.get_loc(col)] if col else None  # noqa: E731
        raw = cell(cfg.exp_column)
        if mid is None:
            drops.append(_drop("ds3", source, line, "", "not_in_mp", why[i], raw))
            continue
        rec = records.get(mid)
        if rec is None:
            drops.append(_drop("ds3", source, line, mid, "not_in_mp", "id not found in the Materials Project source", raw))
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
        row = {**_base(rec), "bg_exp": value,
               "bg_exp_source": _cell_text(cell(cfg.exp_source_column)) if cfg.exp_source_column else source}
        for name, col in (("bg_hse06", cfg.hse06_column), ("bg_g0w0", cfg.g0w0_column)):
            extra, extra_status = parse_gap(cell(col)) if col else (None, "missing")
            if extra_status == "unparseable":
                notes.append({"dataset": "ds3", "source": source, "row": line, "material_id": mid,
                              "kind": "unparseable_secondary", "detail": f"{col!r} = {_cell_text(cell(col))!r} kept as empty"})
            row[name] = math.nan if extra is None else extra
        if cfg.id_column and cfg.formula_column and _cell_text(cell(cfg.id_column)):
            note = _formula_note("ds3", source, line, rec, cell(cfg.formula_column))
            if note:
                notes.append(note)
        rows.append(row)
    return Outcome(_frame(rows, DS3_COLUMNS), drops, notes, matches)


def find_polymorphs(ds3: pd.DataFrame, others: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """DS3 materials that share a reduced formula with a different material elsewhere.

    E.g. CdSe: mp-2691 (zinc blende) in DS3 and mp-1070 (wurtzite) in DS2.  One row per
    (DS3 material, other material) pair.
    """
    columns = ["formula", "ds3_id", "ds3_spacegroup", "dataset", "material_id", "spacegroup_symbol"]
    rows = []
    for name, df in others.items():
        by_formula = df.groupby("formula", sort=False)
        groups = {f: g for f, g in by_formula}
        for _, r in ds3.iterrows():
            match = groups.get(r["formula"])
            if match is None:
                continue
            for _, o in match.iterrows():
                if o["material_id"] == r["material_id"]:
                    continue
                rows.append({
                    "formula": r["formula"],
                    "ds3_id": r["material_id"],
                    "ds3_spacegroup": r["spacegroup_symbol"],
                    "dataset": name,
                    "material_id": o["material_id"],
                    "spacegroup_symbol": o["spacegroup_symbol"],
                })
    df = pd.DataFrame(rows, columns=columns)
    return df.sort_values(["dataset", "formula", "ds3_id", "material_id"], kind="stable").reset_index(drop=True)
