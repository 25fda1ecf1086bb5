"""Which material a raw row names: its id cell, or else its formula (+ space group).

A row with a filled id cell names that id.  A row without one is resolved by
:func:`cgcnn.etl.materials.match_formula` over the Materials Project records with the same
reduced formula; every such attempt is reported (``formula_matches``) whatever its status.
:func:`formula_note` then checks a row's formula cell against the material its id names.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from cgcnn.etl.materials import MaterialRecord, match_formula, reduced_formula
from cgcnn.etl.parsing import cell_text, is_missing

__all__ = ["MATCH_COLUMNS", "formula_note", "resolve_rows"]

MATCH_COLUMNS = ["dataset", "source", "row", "formula", "spacegroup", "status", "material_id", "candidates", "detail"]


def _spacegroup_cell(df: pd.DataFrame, i: int, spacegroup_column: str | None):
    """The row's space group as the table gives it (a whole float becomes an int), or None."""
    cell = df.iat[i, df.columns.get_loc(spacegroup_column)] if spacegroup_column else None
    sg = None if is_missing(cell) else cell
    if isinstance(sg, float) and sg.is_integer():
        sg = int(sg)
    return sg


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
    ids: list[str | None] = []
    why: list[str] = []
    matches: list[dict] = []
    for i in range(len(df)):
        mid = cell_text(df.iat[i, df.columns.get_loc(id_column)]) if id_column else ""
        if mid:
            ids.append(mid)
            why.append("")
            continue
        formula = cell_text(df.iat[i, df.columns.get_loc(formula_column)]) if formula_column else ""
        if not formula:
            ids.append(None)
            why.append("no material id" + (" and no formula" if formula_column else ""))
            continue
        sg = _spacegroup_cell(df, i, spacegroup_column)
        try:
            key = reduced_formula(formula)
        except ValueError:
            key = formula
        result = match_formula(formula_candidates.get(key, []), formula, sg)
        matches.append(
            {
                "dataset": dataset,
                "source": source,
                "row": first_line + i,
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


def formula_note(dataset, source, line, rec: MaterialRecord, table_formula) -> dict | None:
    """A note when a row's formula cell disagrees with (or cannot be compared to) ``rec``."""
    text = cell_text(table_formula)
    if not text:
        return None
    try:
        ours = reduced_formula(text)
    except ValueError:
        return {
            "dataset": dataset,
            "source": source,
            "row": line,
            "material_id": rec.material_id,
            "kind": "formula_unparseable",
            "detail": f"table formula {text!r} could not be parsed",
        }
    if ours != rec.formula:
        return {
            "dataset": dataset,
            "source": source,
            "row": line,
            "material_id": rec.material_id,
            "kind": "formula_mismatch",
            "detail": f"table says {text} ({ours}), Materials Project says {rec.formula}",
        }
    return None
