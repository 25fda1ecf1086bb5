"""Raw rows -> material ids: the id cell, else the formula (+ space group) rule."""

from __future__ import annotations

import pandas as pd

from cgcnn.etl.resolve import MATCH_COLUMNS, formula_note, resolve_rows


def _candidates(toy_records):
    out: dict[str, list] = {}
    for r in toy_records:
        out.setdefault(r.formula, []).append(r)
    return out


def test_resolve_rows_of_a_three_row_table(toy_records):
    table = pd.DataFrame({"id": ["mp-149", "", ""], "formula": ["Si", "CdSe", "InSb"], "sg": ["", 186.0, ""]})
    ids, why, matches = resolve_rows(
        table,
        id_column="id",
        formula_column="formula",
        spacegroup_column="sg",
        formula_candidates=_candidates(toy_records),
        dataset="ds2",
        source="t",
        first_line=5,
    )
    assert ids == ["mp-149", "mp-1070", None]  # CdSe with space group 186: the wurtzite
    assert why == ["", "", "formula InSb: no material with formula InSb"]
    assert [(m["row"], m["formula"], m["spacegroup"], m["status"], m["material_id"]) for m in matches] == [
        (6, "CdSe", "186", "unique", "mp-1070"),
        (7, "InSb", "", "unmatched", ""),
    ]
    assert all(list(m) == MATCH_COLUMNS for m in matches)


def test_rows_without_id_or_formula_say_why():
    table = pd.DataFrame({"id": ["", None]})
    ids, why, matches = resolve_rows(
        table,
        id_column="id",
        formula_column=None,
        spacegroup_column=None,
        formula_candidates={},
        dataset="ds1",
        source="t",
        first_line=2,
    )
    assert (ids, why, matches) == ([None, None], ["no material id", "no material id"], [])


def test_formula_note(toy_records):
    si = next(r for r in toy_records if r.material_id == "mp-149")
    assert formula_note("ds2", "t", 3, si, "Si2") is None  # same reduced formula
    assert formula_note("ds2", "t", 3, si, "") is None
    assert formula_note("ds2", "t", 3, si, "Ge")["kind"] == "formula_mismatch"
    assert formula_note("ds2", "t", 3, si, "not a formula!")["kind"] == "formula_unparseable"
