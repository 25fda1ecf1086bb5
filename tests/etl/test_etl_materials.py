"""Materials Project: offline snapshot and the real mp-api client against a loopback server."""

from __future__ import annotations

import gzip
import hashlib
import json

import pytest
from etl_helpers import make_record

from cgcnn.etl.materials import (
    MaterialsError,
    MPSource,
    SnapshotSource,
    crystal_system,
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
@pytest.mark.parametrize(
    "number, system",
    [(1, "triclinic"), (2, "triclinic"), (3, "monoclinic"), (15, "monoclinic"), (16, "orthorhombic"),
     (74, "orthorhombic"), (75, "tetragonal"), (142, "tetragonal"), (143, "trigonal"), (167, "trigonal"),
     (168, "hexagonal"), (186, "hexagonal"), (194, "hexagonal"), (195, "cubic"), (225, "cubic"), (230, "cubic")],
)
def test_crystal_system_from_space_group_number(number, system):
    assert crystal_system(number) == system


def test_crystal_system_outside_range_is_none():
    assert crystal_system(None) is None
    assert crystal_system(0) is None and crystal_system(231) is None


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


# ------------------------------------------------------------------------------ live client
def test_mp_source_queries_by_id_over_http(fake_mp):
    src = MPSource()  # key and endpoint from MP_API_KEY / MP_API_ENDPOINT
    got = src.by_ids(["mp-149", "fx-7", "mp-999999", "not an id", "fx-2534"])
    assert list(got) == ["mp-149", "fx-7", "fx-2534"]
    si = got["mp-149"]
    assert (si.formula, si.spacegroup_number, si.spacegroup_symbol, si.nsites) == ("Si", 227, "Fd-3m", 8)
    assert si.band_gap == 0.61 and si.energy_above_hull == 0.0
    assert got["fx-2534"].band_gap is None
    assert "_cell_length_a" in si.structure_cif
    assert src.database_version == fake_mp.db_version
    requests = fake_mp.summary_requests()
    assert len(requests) == 1
    assert set(requests[0]["material_ids"].split(",")) == {"mp-149", "fx-7", "mp-999999", "fx-2534"}
    assert "structure" in requests[0]["_fields"].split(",")


def test_mp_source_batches_ids(fake_mp):
    src = MPSource(batch_size=2)
    got = src.by_ids(["mp-149", "fx-7", "mp-2691", "mp-1070", "mp-2534"])
    assert len(got) == 5
    assert [len(q["material_ids"].split(",")) for q in fake_mp.summary_requests()] == [2, 2, 1]


def test_mp_source_queries_by_formula(fake_mp):
    got = MPSource().by_formula(["Cd2Se2", "GaAs", "InSb"])
    assert sorted(r.material_id for r in got["CdSe"]) == ["mp-1070", "mp-2691"]
    assert sorted(r.material_id for r in got["GaAs"]) == ["fx-2534", "mp-2534"]
    assert got["InSb"] == []
    assert match_formula(got["CdSe"], "CdSe", "P6_3mc").material_id == "mp-1070"
    assert fake_mp.summary_requests()[0]["formula"] == "CdSe,GaAs,InSb"


def test_mp_source_rejected_key_is_a_clear_error_without_the_key(fake_mp):
    wrong = "f" * 32
    src = MPSource(api_key=wrong)
    with pytest.raises(MaterialsError, match="401") as info:
        src.by_ids(["mp-149"])
    assert wrong not in str(info.value)
    assert wrong not in repr(src)


def test_snapshot_from_live_client_serves_the_same_records(fake_mp, tmp_path):
    out = tmp_path / "frozen" / "summary.jsonl.gz"
    meta = write_snapshot(MPSource(), out, ids=["mp-149", "fx-7"], formulas=["CdSe"])
    assert meta["database_version"] == fake_mp.db_version
    assert meta["n_materials"] == 4
    assert meta["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    saved = json.loads((out.parent / "metadata.json").read_text())
    assert saved["database_version"] == fake_mp.db_version
    assert fake_mp.api_key not in out.read_bytes().decode("latin-1") + json.dumps(saved)

    offline = SnapshotSource(out)
    live = MPSource().by_ids(["mp-149", "fx-7", "mp-1070", "mp-2691"])
    assert offline.by_ids(live) == live
    assert offline.database_version == fake_mp.db_version
    lines = gzip.decompress(out.read_bytes()).decode().splitlines()
    assert [json.loads(x)["material_id"] for x in lines] == ["fx-7", "mp-1070", "mp-149", "mp-2691"]
    # byte-reproducible
    write_snapshot(MPSource(), tmp_path / "again" / "summary.jsonl.gz", ids=["mp-149", "fx-7"], formulas=["CdSe"])
    assert (tmp_path / "again" / "summary.jsonl.gz").read_bytes() == out.read_bytes()


def test_mp_source_unreachable_endpoint(monkeypatch):
    monkeypatch.setenv("MP_API_KEY", "0" * 32)
    src = MPSource(endpoint="http://127.0.0.1:1/")  # nothing listens on port 1
    with pytest.raises(MaterialsError, match=r"cannot connect to the Materials Project at http://127\.0\.0\.1:1/"):
        src.by_ids(["mp-149"])


def test_snapshot_line_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "summary.jsonl"
    path.write_text('{"material_id": "mp-1"}\n{not json\n')
    with pytest.raises(MaterialsError, match="line 2"):
        list(read_snapshot(path))
