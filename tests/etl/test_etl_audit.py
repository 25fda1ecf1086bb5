"""The ETL's reports: polymorphs, the report tables, counts and the JSON report."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cgcnn.config import DS1Config, DS3Config, EtlConfig
from cgcnn.etl.audit import (
    REPORT_FORMAT,
    build_report,
    collect_reports,
    count_outputs,
    find_polymorphs,
    load_report,
    write_report,
    write_report_tables,
)
from cgcnn.etl.rules import Outcome, build_ds1, build_ds3
from cgcnn.etl.storage import LocalBucket


@pytest.fixture(scope="module")
def records(toy_records):
    return {r.material_id: r for r in toy_records}


def test_polymorphs_pair_ds3_with_same_formula_elsewhere(records):
    ds3 = build_ds3(
        pd.DataFrame(
            {
                "material_id": ["mp-2691"],
                "formula": ["CdSe"],
                "bg_exp": [1.74],
                "bg_exp_source": ["b"],
                "bg_hse06": [None],
                "bg_g0w0": [None],
            }
        ),
        records,
        {},
        DS3Config(),
    ).table
    ds1 = build_ds1(
        pd.DataFrame({"material_id": ["mp-1070", "mp-149", "mp-2691"]}), records, {"mp-2691"}, DS1Config()
    ).table
    ds2 = ds1[ds1["material_id"] == "mp-1070"]
    poly = find_polymorphs(ds3, {"ds2": ds2, "ds1": ds1})
    assert poly.to_dict(orient="records") == [
        {
            "formula": "CdSe",
            "ds3_id": "mp-2691",
            "ds3_spacegroup": "F-43m",
            "dataset": "ds1",
            "material_id": "mp-1070",
            "spacegroup_symbol": "P6_3mc",
        },
        {
            "formula": "CdSe",
            "ds3_id": "mp-2691",
            "ds3_spacegroup": "F-43m",
            "dataset": "ds2",
            "material_id": "mp-1070",
            "spacegroup_symbol": "P6_3mc",
        },
    ]


def _drop(ds, mid, reason, row=2):
    return {"dataset": ds, "source": "t", "row": row, "material_id": mid, "reason": reason, "detail": "", "value": ""}


def _match(status, mid):
    return {
        "dataset": "ds2",
        "source": "t",
        "row": 3,
        "formula": "CdSe",
        "spacegroup": "",
        "status": status,
        "material_id": mid,
        "candidates": mid,
        "detail": "",
    }


@pytest.fixture
def toy_outcomes():
    """DS1 with 3 materials, DS2 with one (and one conflict), DS3 with one; 3 drops, 2 matches."""
    ds1 = pd.DataFrame(
        {
            "material_id": ["a", "b", "c"],
            "formula": ["Si", "CdSe", "GaAs"],
            "spacegroup_symbol": ["Fd-3m", "P6_3mc", "F-43m"],
        }
    )
    ds2 = ds1.iloc[:1].copy()
    ds3 = pd.DataFrame({"material_id": ["d"], "formula": ["CdSe"], "spacegroup_symbol": ["F-43m"]})
    conflicts = pd.DataFrame({"material_id": ["a", "x"], "in_ds2": [True, True]})
    outcomes = {
        "ds1": Outcome(ds1, [_drop("ds1", "e", "no_label"), _drop("ds1", "d", "overlap_ds3")]),
        "ds2": Outcome(
            ds2,
            [_drop("ds2", "f", "not_in_mp")],
            [],
            [_match("unique", "b"), _match("unmatched", "")],
            conflicts=conflicts,
        ),
        "ds3": Outcome(
            ds3, [], [{"dataset": "ds3", "source": "t", "row": 2, "material_id": "d", "kind": "k", "detail": ""}]
        ),
    }
    return outcomes, {ds: o.table for ds, o in outcomes.items()}


def test_collect_reports_and_counts_of_toy_outcomes(toy_outcomes):
    outcomes, tables = toy_outcomes
    graph_drops = [{**_drop("ds1", "c", "graph_error"), "row": None}]
    tables = {**tables, "ds1": tables["ds1"].iloc[:2]}  # "c" has no graph
    reports = collect_reports(outcomes, tables, graph_drops)
    assert reports.drops["material_id"].tolist() == ["e", "d", "f", "c"]  # ds1, ds2, ds3, then graphs
    assert str(reports.drops["row"].dtype) == "Int64" and reports.drops["row"].isna().tolist() == [False] * 3 + [True]
    assert reports.conflicts["in_ds2"].tolist() == [True, False]  # "x" is not in the final DS2
    assert reports.polymorphs[["ds3_id", "dataset", "material_id"]].values.tolist() == [["d", "ds1", "b"]]
    counts = count_outputs(tables, reports)
    assert (counts["ds1"], counts["ds2"], counts["ds3"], counts["dropped"]) == (2, 1, 1, 4)
    assert counts["drops_by_reason"] == {
        "not_in_mp": 1,
        "no_label": 1,
        "unparseable": 0,
        "out_of_range": 0,
        "duplicate": 0,
        "overlap_ds3": 1,
        "graph_error": 1,
    }
    assert counts["drops_by_dataset"]["ds2"]["not_in_mp"] == 1 and sum(counts["drops_by_dataset"]["ds3"].values()) == 0
    assert (counts["conflicts"], counts["polymorphs"], counts["notes"]) == (2, 1, 1)
    assert counts["formula_matches"] == {"unique": 1, "ambiguous": 0, "unmatched": 1}


def test_report_tables_and_json_report_round_trip(tmp_path, toy_outcomes):
    outcomes, tables = toy_outcomes
    bucket = LocalBucket(tmp_path)
    reports = collect_reports(outcomes, tables, [])
    paths = write_report_tables(bucket, reports)
    assert list(paths) == ["drops", "conflicts", "polymorphs", "formula_matches", "notes", "suspicious_labels"]
    assert pd.read_csv(tmp_path / "reports" / "drops.csv")["material_id"].tolist() == ["e", "d", "f"]
    config = EtlConfig(build_graphs=False)
    report = build_report(
        bucket_uri=bucket.uri,
        provenance={"kind": "snapshot", "database_version": "v1"},
        checksums={},
        config=config,
        counts=count_outputs(tables, reports),
        graph_entries={},
        timings={"rules": 0.123},
        reports=reports,
    )
    assert (report["format"], report["database_version"], report["graphs"]) == (REPORT_FORMAT, "v1", None)
    assert report["timings_s"] == {"rules": 0.12}
    assert [m["status"] for m in report["formula_matches"]] == ["unmatched"]  # unique matches stay in the CSV only
    assert report["gap_windows"] == {"ds1": "[0, 5) eV", "ds2": "(0, 5] eV"}
    assert write_report(bucket, report) == str(tmp_path / "reports" / "etl_report.json")
    assert load_report(tmp_path) == json.loads((tmp_path / "reports" / "etl_report.json").read_text())


def test_suspicious_labels_name_conflicting_sources_and_gaps_far_below_pbe():
    from cgcnn.etl.audit import suspicious_labels

    ds2 = pd.DataFrame(
        {
            "material_id": ["ok", "low", "both", "no-pbe"],
            "formula": ["Si", "ZnO", "CuCl", "GaN"],
            "bg_exp": [1.17, 1.0, 0.5, 3.4],
            "bg_exp_source": ["a", "a", "a", "b"],
            "bg_pbe": [0.6, 1.6, 1.2, None],
        }
    )
    conflicts = pd.DataFrame({"material_id": ["both"], "bg_exp_a": [0.5], "bg_exp_b": [3.4], "in_ds2": [True]})
    table = suspicious_labels(ds2, conflicts, below_pbe_ev=0.5).set_index("material_id")
    assert list(table.index) == ["low", "both"]  # 1.17 above 0.6 is normal; no PBE gap: nothing to compare
    assert table.loc["low", "reasons"] == "0.60 eV below its PBE gap (1.60)"
    assert table.loc["both", "reasons"] == "sources disagree: a 0.50, b 3.40; 0.70 eV below its PBE gap (1.20)"
