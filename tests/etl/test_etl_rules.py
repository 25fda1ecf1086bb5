"""Wrangling rules on small tables written here; every drop reason is exercised."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from etl_helpers import make_record

from cgcnn.config import (
    DS1Config,
    DS2Config,
    DS3Config,
    ExperimentalSource,
    GapWindow,
)
from cgcnn.data.material_classes import crystal_system
from cgcnn.etl.materials import MaterialRecord
from cgcnn.etl.parsing import EtlError
from cgcnn.etl.rules import (
    Label,
    SourceLabels,
    SourceTable,
    build_ds1,
    build_ds2,
    build_ds3,
    merge_labels,
    read_source_labels,
)


@pytest.fixture(scope="module")
def records(toy_records, crystals):
    """id -> record: the shared toy records (NaCl 5.0, CsCl 5.1, Si 0.61, CdSe 0.51 / 0.60,
    GaAs 0.19 / none) plus a metal (gap 0)."""
    recs = [*toy_records, make_record(crystals, "NaCl", "fx-0", 0.0, ehull=0.3)]
    return {r.material_id: r for r in recs}


def candidates_for(records):
    out: dict[str, list] = {}
    for r in records.values():
        out.setdefault(r.formula, []).append(r)
    return out


def drops_by_id(outcome, dataset=None):
    return {(d["material_id"], d["source"]): d["reason"] for d in outcome.drops if dataset in (None, d["dataset"])}


# ------------------------------------------------------------------------------ DS1
def test_ds1_rules_and_drop_reasons(records):
    ids = pd.DataFrame(
        {
            "material_id": [
                "mp-149",
                "mp-149",
                "",
                "mp-404",
                "fx-2534",
                "mp-22862",
                "fx-7",
                "mp-2691",
                "mp-1070",
                "fx-0",
                "mp-2534",
            ]
        }
    )
    out = build_ds1(ids, records, {"mp-2691"}, DS1Config())
    assert out.table["material_id"].tolist() == ["mp-149", "mp-1070", "fx-0", "mp-2534"]  # input order
    reasons = [(d["row"], d["material_id"], d["reason"]) for d in out.drops]
    assert reasons == [
        (3, "mp-149", "duplicate"),
        (4, "", "not_in_mp"),
        (5, "mp-404", "not_in_mp"),
        (6, "fx-2534", "no_label"),
        (7, "mp-22862", "out_of_range"),  # exactly 5.0 eV: DS1 keeps gaps < 5
        (8, "fx-7", "out_of_range"),
        (9, "mp-2691", "overlap_ds3"),
    ]
    assert len(out.table) + len(out.drops) == len(ids)
    si = out.table.iloc[0]
    assert (si["formula"], si["spacegroup_number"], si["crystal_system"], si["nsites"], si["bg_pbe"]) == (
        "Si",
        227,
        "cubic",
        8,
        0.61,
    )
    assert list(out.table.columns)[0] == "material_id"


def test_crystal_system_column_uses_the_one_crystal_system_function(records, crystals):
    table = build_ds1(
        pd.DataFrame({"material_id": list(records)}), records, set(), DS1Config(gap_window=GapWindow())
    ).table
    assert table["crystal_system"].tolist() == [crystal_system(n) for n in table["spacegroup_number"]]
    # unknown space group -> empty cell; a number outside 1..230 is a corrupt record
    unknown = MaterialRecord("x-1", "Si", None, None, 2, 1.0, "")
    corrupt = MaterialRecord("x-2", "Si", 231, None, 2, 1.0, "")
    ids = pd.DataFrame({"material_id": ["x-1"]})
    assert build_ds1(ids, {"x-1": unknown}, set(), DS1Config()).table["crystal_system"].tolist() == [None]
    with pytest.raises(EtlError, match="x-2.*1..230, got 231"):
        build_ds1(pd.DataFrame({"material_id": ["x-2"]}), {"x-2": corrupt}, set(), DS1Config())


def test_ds1_missing_column_is_a_clear_error(records):
    with pytest.raises(EtlError, match="has no column 'material_id'"):
        build_ds1(pd.DataFrame({"id": ["mp-149"]}), records, set(), DS1Config())


# ------------------------------------------------------------------------------ DS2
LIT = ExperimentalSource(
    name="lit", key="raw/lit.csv", id_column="mp", gap_column="gap", formula_column="formula", spacegroup_column="sg"
)
MEG = ExperimentalSource(name="meg", key="raw/meg.csv", id_column="material_id", gap_column="bg_exp")


def lit_table():
    return pd.DataFrame(
        {
            "mp": ["mp-149", "mp-2534", "fx-7", "mp-404", "mp-1070", "mp-149", "", "", "mp-22862", "mp-2691"],
            "formula": ["Si", "GaAs", "CsCl", "X", "CdSe", "Si", "CdSe", "InSb", "NaCl", "CdSe"],
            "sg": ["", "", "", "", "", "", "186", "", "", ""],
            "gap": ["1.12", "1.52", "3.8-3.7", "2.0", "", "1.3", "1.74", "0.24", "8.5", "1.74"],
        }
    )


def meg_table():
    return pd.DataFrame({"material_id": ["mp-149", "mp-2534", "fx-7", "fx-2534"], "bg_exp": [1.17, 0.9, 4.0, 0.0]})


def build(records, order=("lit", "meg")):
    tables = {"lit": SourceTable(LIT, lit_table(), 2), "meg": SourceTable(MEG, meg_table(), 2)}
    cfg = DS2Config(sources=[tables[n].config for n in order])
    return build_ds2([tables[n] for n in order], records, candidates_for(records), {"mp-2691"}, cfg)


def test_ds2_merges_by_priority_and_applies_the_window_to_the_merged_value(records):
    out = build(records)
    t = out.table.set_index("material_id")
    assert list(t.index) == ["fx-7", "mp-1070", "mp-149", "mp-2534"]  # one row per id, sorted
    assert (t.loc["mp-149", "bg_exp"], t.loc["mp-149", "bg_exp_source"]) == (1.12, "lit")
    assert (t.loc["mp-2534", "bg_exp"], t.loc["mp-2534", "bg_exp_source"]) == (1.52, "lit")
    # the literature label is unparseable, so the next source gives the value
    assert (t.loc["fx-7", "bg_exp"], t.loc["fx-7", "bg_exp_source"]) == (4.0, "meg")
    # resolved from formula + space group (no id in the row)
    assert (t.loc["mp-1070", "bg_exp"], t.loc["mp-1070", "bg_exp_source"]) == (1.74, "lit")
    assert t.loc["mp-149", "bg_pbe"] == 0.61


def test_ds2_drop_reasons(records):
    out = build(records)
    got = sorted((d["source"], d["row"], d["material_id"], d["reason"]) for d in out.drops)
    assert got == sorted(
        [
            ("lit", 4, "fx-7", "unparseable"),
            ("lit", 5, "mp-404", "not_in_mp"),
            ("lit", 6, "mp-1070", "no_label"),
            ("lit", 7, "mp-149", "duplicate"),  # repeats row 2 of the same table
            ("lit", 9, "", "not_in_mp"),  # InSb: no material with that formula
            ("lit", 10, "mp-22862", "out_of_range"),
            ("lit", 11, "mp-2691", "overlap_ds3"),
            ("meg", 2, "mp-149", "duplicate"),  # superseded by lit
            ("meg", 3, "mp-2534", "duplicate"),
            ("meg", 5, "fx-2534", "out_of_range"),  # 0 eV: metals are not in (0, 5]
        ]
    )
    unparseable = next(d for d in out.drops if d["reason"] == "unparseable")
    assert unparseable["value"] == "3.8-3.7"  # reported as written, never coerced
    # every raw row is accounted for: in DS2 (as the chosen source) or in the drop report
    chosen = out.table["bg_exp_source"].value_counts().to_dict()
    assert chosen.get("lit", 0) + sum(d["source"] == "lit" for d in out.drops) == len(lit_table())
    assert chosen.get("meg", 0) + sum(d["source"] == "meg" for d in out.drops) == len(meg_table())


def test_ds2_conflicts_and_formula_matches(records):
    out = build(records)
    c = out.conflicts
    assert c["material_id"].tolist() == ["mp-2534"]  # |1.52 - 0.9| > 0.5; Si differs by only 0.05
    row = c.iloc[0]
    assert (row["bg_exp_lit"], row["bg_exp_meg"], row["chosen_source"], bool(row["in_ds2"])) == (1.52, 0.9, "lit", True)
    assert math.isclose(row["spread"], 0.62)
    statuses = {(m["formula"], m["status"], m["material_id"]) for m in out.matches}
    assert statuses == {("CdSe", "unique", "mp-1070"), ("InSb", "unmatched", "")}


def test_ds2_priority_is_configurable(records):
    t = build(records, order=("meg", "lit")).table.set_index("material_id")
    assert (t.loc["mp-149", "bg_exp"], t.loc["mp-149", "bg_exp_source"]) == (1.17, "meg")
    assert t.loc["mp-2534", "bg_exp"] == 0.9


def test_read_source_labels_of_a_three_row_table(records):
    src = ExperimentalSource(name="t", key="raw/t.csv", id_column="mp", gap_column="gap", formula_column="formula")
    table = pd.DataFrame({"mp": ["mp-149", "mp-149", ""], "formula": ["Si", "Si", "CdSe"], "gap": ["1.12", "1.3", "x"]})
    out = read_source_labels(SourceTable(src, table, 2), records, candidates_for(records))
    assert out.name == "t"
    assert out.labels == {"mp-149": Label(1.12, 2, "1.12")}  # no window applied here
    assert [(d["row"], d["material_id"], d["reason"]) for d in out.drops] == [
        (3, "mp-149", "duplicate"),  # second Si row of the same table
        (4, "mp-2691", "unparseable"),  # CdSe resolved by formula; "x" is not a number
    ]
    assert [(m["formula"], m["material_id"]) for m in out.matches] == [("CdSe", "mp-2691")]
    assert out.notes == []  # the table's formula agrees with the Materials Project


def test_merge_labels_by_hand(records):
    # two sources, three materials: the first source wins; the window applies to its value
    first = SourceLabels("a", {"mp-149": Label(1.12, 2, "1.12"), "mp-2534": Label(6.0, 3, "6.0")})
    second = SourceLabels("b", {"mp-149": Label(2.0, 5, 2.0), "mp-1070": Label(1.7, 6, 1.7)})
    rows, drops, conflicts = merge_labels([first, second], records, {"mp-1070"}, DS2Config())
    assert [(r["material_id"], r["bg_exp"], r["bg_exp_source"]) for r in rows] == [("mp-149", 1.12, "a")]
    assert [(d["source"], d["row"], d["material_id"], d["reason"]) for d in drops] == [
        ("b", 6, "mp-1070", "overlap_ds3"),
        ("b", 5, "mp-149", "duplicate"),
        ("a", 3, "mp-2534", "out_of_range"),  # 6 eV is outside (0, 5]
    ]
    assert conflicts == [
        {
            "material_id": "mp-149",
            "formula": "Si",
            "bg_exp_a": 1.12,
            "bg_exp_b": 2.0,
            "chosen_source": "a",
            "bg_exp": 1.12,
            "spread": 0.88,
            "in_ds2": True,
        }
    ]


def test_ds2_of_a_three_row_table(records):
    src = ExperimentalSource(name="t", key="raw/t.csv", id_column="material_id", gap_column="gap")
    table = pd.DataFrame({"material_id": ["mp-149", "mp-2691", "mp-404"], "gap": [1.12, 1.74, 2.0]})
    out = build_ds2([SourceTable(src, table, 2)], records, {}, {"mp-2691"}, DS2Config(sources=[src]))
    assert out.table[
        ["material_id", "formula", "crystal_system", "bg_pbe", "bg_exp", "bg_exp_source"]
    ].values.tolist() == [["mp-149", "Si", "cubic", 0.61, 1.12, "t"]]
    assert [(d["material_id"], d["reason"]) for d in out.drops] == [("mp-404", "not_in_mp"), ("mp-2691", "overlap_ds3")]
    assert list(out.conflicts.columns) == [
        "material_id",
        "formula",
        "bg_exp_t",
        "chosen_source",
        "bg_exp",
        "spread",
        "in_ds2",
    ]
    assert out.conflicts.empty


def test_ds2_formula_without_space_group_picks_lowest_hull_energy(records):
    src = ExperimentalSource(name="f", key="raw/f.csv", id_column=None, formula_column="formula", gap_column="gap")
    table = pd.DataFrame({"formula": ["CdSe", "NaCl"], "gap": [1.7, 8.5]})
    cfg = DS2Config(sources=[src])
    out = build_ds2([SourceTable(src, table, 2)], records, candidates_for(records), set(), cfg)
    assert out.table["material_id"].tolist() == ["mp-2691"]  # zinc blende: 0 eV/atom above hull
    ambiguous = {m["formula"]: m for m in out.matches}
    assert ambiguous["CdSe"]["status"] == "ambiguous" and ambiguous["CdSe"]["candidates"] == "mp-2691 mp-1070"
    assert ambiguous["NaCl"]["material_id"] == "mp-22862"  # 0 < 0.3 eV/atom (fx-0)


# ------------------------------------------------------------------------------ DS3
def test_ds3_keeps_every_resolved_material(records):
    table = pd.DataFrame(
        {
            "material_id": ["mp-2691", "mp-149", "mp-404", "mp-2691", "fx-2534", "mp-2534", "", "mp-22862"],
            "formula": ["CdSe", "Si", "X", "CdSe", "GaAs", "GaSb", "CsCl", "NaCl"],
            "bg_exp": ["1.74", "1.12", "1", "1.74", "", "1.5", "6.9", "8.5"],
            "bg_exp_source": ["borlido2019", "borlido2019", "", "", "", "megnet2021", "x", "y"],
            "bg_hse06": ["1.72", "n/a", "", "", "", "", "", ""],
            "bg_g0w0": ["1.75", "", "", "", "", "", "", ""],
        }
    )
    out = build_ds3(table, records, candidates_for(records), DS3Config())
    t = out.table.set_index("material_id")
    assert list(t.index) == ["mp-2691", "mp-149", "mp-2534", "fx-7", "mp-22862"]
    assert (t.loc["mp-2691", "bg_exp"], t.loc["mp-2691", "bg_hse06"], t.loc["mp-2691", "bg_g0w0"]) == (1.74, 1.72, 1.75)
    assert t.loc["mp-2691", "bg_exp_source"] == "borlido2019"
    assert math.isnan(t.loc["mp-149", "bg_hse06"]) and math.isnan(t.loc["mp-149", "bg_g0w0"])
    assert t.loc["mp-22862", "bg_exp"] == 8.5  # no window on DS3
    assert [(d["row"], d["reason"]) for d in out.drops] == [(4, "not_in_mp"), (5, "duplicate"), (6, "no_label")]
    kinds = {(n["material_id"], n["kind"]) for n in out.notes}
    assert kinds == {("mp-149", "unparseable_secondary"), ("mp-2534", "formula_mismatch")}
