"""The live Materials Project client (real mp-api) against a loopback server."""

from __future__ import annotations

import gzip
import hashlib
import json

import pytest

from cgcnn.etl.materials import (
    MaterialsError,
    SnapshotSource,
    match_formula,
    write_snapshot,
)
from cgcnn.etl.mp_live import MPSource


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
