"""Materials Project records: the formula-matching rule and the offline snapshot."""

from __future__ import annotations

import gzip
import hashlib
import json

import pytest
from etl_helpers import make_record

from cgcnn.etl.materials import (
    MaterialsError,
    SnapshotSource,
    match_formula,
    open_materials,
    read_snapshot,
    reduced_formula,
    write_snapshot,
)


def _write_snapshot_file(path, records, metadata=None):
    lines = [json.dumps(r.to_snapshot()) for r in records]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))
    if metadata is not None:
        (path.parent / "metadata.json").write_text(json.dumps(metadata))


# ------------------------------------------------------------------------------ helpers
def test_reduced_formula_is_materials_project_style():
    assert reduced_formula("Cd2Ga4Se8") == "Cd(GaSe2)2"
    assert reduced_formula("PbTe") == "TePb"  # MP orders by electronegativity
    assert reduced_formula(" Zn2S2 ") == "ZnS"
    with pytest.raises(ValueError):
        reduced_formula("")


# ------------------------------------------------------------------------------ matching rule
def test_match_formula_rules(toy_records):
    # CdSe: mp-2691 (F-43m, 0 eV/atom above hull) and mp-1070 (P6_3mc, 0.002 eV/atom)
    m = match_formula(toy_records, "CdSe")
    assert (m.material_id, m.status, m.candidates) == ("mp-2691", "ambiguous", ("mp-2691", "mp-1070"))
    assert "lowest energy above hull" in m.detail

    by_number = match_formula(toy_records, "Cd2Se2", 186)
    assert (by_number.material_id, by_number.status) == ("mp-1070", "unique")
    by_symbol = match_formula(toy_records, "CdSe", "P6_3 m c")
    assert by_symbol.material_id == "mp-1070"
    by_text_number = match_formula(toy_records, "CdSe", "216")
    assert by_text_number.material_id == "mp-2691"

    wrong_sg = match_formula(toy_records, "CdSe", 225)
    assert wrong_sg.status == "unmatched" and wrong_sg.material_id is None
    assert "space group 225" in wrong_sg.detail and wrong_sg.candidates == ("mp-2691", "mp-1070")

    assert match_formula(toy_records, "InSb").status == "unmatched"
    assert match_formula(toy_records, "not a formula!").status == "unmatched"


def test_match_formula_prefers_known_hull_energy_then_smallest_id(crystals):
    recs = [
        make_record(crystals, "GaAs", "mp-20", 0.1, ehull=None),
        make_record(crystals, "GaAs", "mp-3", 0.1, ehull=0.01),
        make_record(crystals, "GaAs", "mp-10", 0.1, ehull=0.01),
    ]
    # equal hull energy -> smallest id in natural order (mp-3 < mp-10), unknown hull energy last
    assert match_formula(recs, "GaAs").candidates == ("mp-3", "mp-10", "mp-20")
    no_hull = [make_record(crystals, "GaAs", i, 0.1, ehull=None) for i in ("fx-12", "fx-9")]
    pick = match_formula(no_hull, "GaAs")
    assert pick.material_id == "fx-9" and "smallest id" in pick.detail


# ------------------------------------------------------------------------------ snapshot
def test_snapshot_source_serves_ids_and_formulas(tmp_path, toy_records):
    path = tmp_path / "summary.jsonl.gz"
    _write_snapshot_file(path, toy_records, {"description": "toy snapshot", "database_version": None})
    src = SnapshotSource(path)
    got = src.by_ids(["mp-149", "fx-7", "mp-0"])
    assert list(got) == ["mp-149", "fx-7"]
    assert got["mp-149"].formula == "Si" and got["mp-149"].spacegroup_number == 227
    assert got["fx-7"].band_gap == 5.1 and got["fx-7"].nsites == 2
    assert sorted(r.material_id for r in src.by_formula(["GaAs"])["GaAs"]) == ["fx-2534", "mp-2534"]
    assert src.by_formula(["Se2Cd2"])["CdSe"][0].formula == "CdSe"
    prov = src.provenance()
    assert prov["description"] == "toy snapshot"
    assert prov["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert prov["database_version"] is None


def test_snapshot_source_errors_name_the_file(tmp_path):
    with pytest.raises(MaterialsError, match="snapshot file .*absent.jsonl.gz does not exist"):
        SnapshotSource(tmp_path / "absent.jsonl.gz")
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(gzip.compress(b'{"material_id": "mp-1"}\nnot json\n'))
    with pytest.raises(MaterialsError, match="bad.jsonl.gz"):
        SnapshotSource(bad).by_ids(["mp-1"])


def test_open_materials_specs(tmp_path, toy_records, monkeypatch):
    path = tmp_path / "s.jsonl.gz"
    _write_snapshot_file(path, toy_records)
    assert isinstance(open_materials(f"snapshot:{path}"), SnapshotSource)
    assert isinstance(open_materials(str(path)), SnapshotSource)
    monkeypatch.delenv("MP_API_KEY", raising=False)
    with pytest.raises(MaterialsError, match="MP_API_KEY"):
        open_materials("mp")
    with pytest.raises(MaterialsError, match="unknown materials source"):
        open_materials("ftp://x")


def test_snapshot_line_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "summary.jsonl"
    path.write_text('{"material_id": "mp-1"}\n{not json\n')
    with pytest.raises(MaterialsError, match="line 2"):
        list(read_snapshot(path))


def test_write_snapshot_from_a_snapshot_is_sorted_and_byte_reproducible(tmp_path, toy_records):
    path = tmp_path / "src" / "summary.jsonl.gz"
    path.parent.mkdir()
    _write_snapshot_file(path, toy_records, {"database_version": "toy-1"})
    out = tmp_path / "out" / "summary.jsonl.gz"
    meta = write_snapshot(SnapshotSource(path), out, ids=["mp-149", "fx-7"], formulas=["CdSe"])
    assert (meta["n_materials"], meta["database_version"]) == (4, "toy-1")
    lines = gzip.decompress(out.read_bytes()).decode().splitlines()
    assert [json.loads(x)["material_id"] for x in lines] == ["fx-7", "mp-1070", "mp-149", "mp-2691"]
    again = tmp_path / "again" / "summary.jsonl.gz"
    write_snapshot(SnapshotSource(path), again, ids=["fx-7", "mp-149"], formulas=["CdSe"])
    assert again.read_bytes() == out.read_bytes()
