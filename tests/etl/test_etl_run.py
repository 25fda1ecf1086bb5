"""End to end: the tiny fixture through run_etl (local bucket, S3, live client) and the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest
from etl_helpers import FakeMP

from cgcnn.config import GraphConfig
from cgcnn.data.graphset import GraphSet
from cgcnn.etl import (
    EtlConfig,
    SnapshotSource,
    StorageError,
    prepare_work_bucket,
    run_etl,
)
from cgcnn.etl.commands import main as etl_main
from cgcnn.etl.raw import read_raw_tables
from cgcnn.etl.run import apply_rules, fetch_materials, open_work_bucket
from cgcnn.etl.storage import S3Bucket, protected_roots

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
FIXTURE_BUCKET = FIXTURES / "bucket"
FIXTURE_SNAPSHOT = FIXTURES / "mp_snapshot" / "summary.jsonl.gz"
SNAPSHOT_SPEC = f"snapshot:{FIXTURE_SNAPSHOT}"


@pytest.fixture
def work_bucket(tmp_path):
    out = prepare_work_bucket(FIXTURE_BUCKET, tmp_path / "bucket")
    assert len(out["copied"]) == 4
    return tmp_path / "bucket"


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory):
    """One ETL run over the fixture, shared by the read-only checks below."""
    root = tmp_path_factory.mktemp("fixture-run") / "bucket"
    prepare_work_bucket(FIXTURE_BUCKET, root)
    return root, run_etl(root, SNAPSHOT_SPEC, progress=False)


def test_fixture_counts(fixture_run):
    _, result = fixture_run
    assert (result.counts["ds1"], result.counts["ds2"], result.counts["ds3"]) == (31, 23, 6)
    assert set(result.ds3["material_id"]) == {"fx-17", "fx-26", "fx-28", "fx-29", "fx-30", "fx-41"}
    assert not set(result.ds3["material_id"]) & (set(result.ds1["material_id"]) | set(result.ds2["material_id"]))


def test_fixture_drop_report(fixture_run):
    _, result = fixture_run
    d = result.drops
    reason = {(r.dataset, r.material_id, r.source): r.reason for r in d.itertuples()}
    assert reason[("ds2", "fx-39", "borlido2019")] == "unparseable"
    assert d.loc[d["material_id"] == "fx-39", "value"].tolist() == ["3.8-3.7"]
    assert reason[("ds2", "fx-99", "borlido2019")] == "not_in_mp"
    assert reason[("ds2", "fx-26", "borlido2019")] == "overlap_ds3"
    assert reason[("ds2", "fx-17", "megnet2021")] == "overlap_ds3"
    assert reason[("ds2", "fx-43", "megnet2021")] == "out_of_range"
    assert reason[("ds2", "fx-13", "megnet2021")] == "duplicate"
    assert reason[("ds1", "fx-31", "ds1_material_ids")] == "no_label"
    assert reason[("ds1", "fx-18", "ds1_material_ids")] == "out_of_range"
    assert result.counts["drops_by_dataset"]["ds1"]["overlap_ds3"] == 6
    assert result.conflicts["material_id"].tolist() == ["fx-13"]
    assert result.ds2.set_index("material_id").loc["fx-13", "bg_exp"] == 3.40
    poly = result.polymorphs
    assert set(zip(poly["ds3_id"], poly["dataset"], poly["material_id"])) == {
        ("fx-29", "ds1", "fx-10"),
        ("fx-29", "ds2", "fx-10"),
    }


def test_fixture_outputs(fixture_run):
    root, result = fixture_run
    for ds in ("ds1", "ds2", "ds3"):
        csv = pd.read_csv(root / "processed" / f"{ds}.csv")
        assert csv.columns[0] == "material_id"
        assert csv["material_id"].tolist() == getattr(result, ds)["material_id"].tolist()
        xlsx = pd.read_excel(root / "processed" / f"{ds}.xlsx")
        assert xlsx["material_id"].tolist() == csv["material_id"].tolist()
        doc = json.loads((root / "json" / f"{ds}.json").read_text())
        assert list(doc) == csv["material_id"].tolist()
    ds3 = pd.read_csv(root / "processed" / "ds3.csv")
    assert list(ds3.columns) == [
        "material_id",
        "formula",
        "spacegroup_number",
        "spacegroup_symbol",
        "crystal_system",
        "nsites",
        "bg_pbe",
        "bg_exp",
        "bg_exp_source",
        "bg_hse06",
        "bg_g0w0",
    ]
    doc = json.loads((root / "json" / "ds3.json").read_text())
    gan = doc["fx-26"]
    assert (gan["formula"], gan["spacegroup_symbol"], gan["crystal_system"], gan["bg_exp"]) == (
        "GaN",
        "P6_3mc",
        "hexagonal",
        3.5,
    )
    assert gan["bg_g0w0"] == 3.27 and "_cell_length_a" in gan["cif"]
    assert doc["fx-28"]["bg_g0w0"] is None  # blank in the table -> null, not NaN
    for name in ("drops", "conflicts", "polymorphs", "formula_matches", "notes", "suspicious_labels"):
        assert (root / "reports" / f"{name}.csv").is_file()
    suspicious = pd.read_csv(root / "reports" / "suspicious_labels.csv")
    assert "fx-13" in set(suspicious["material_id"])  # CuCl: Borlido 3.40 vs megnet 2.60


def test_fixture_graphs_round_trip(fixture_run):
    root, result = fixture_run
    for ds in ("ds1", "ds2", "ds3"):
        graphs = GraphSet.read_json(root / "graphs" / f"{ds}.json.gz")
        assert graphs.ids == getattr(result, ds)["material_id"].tolist()
        assert graphs.config == GraphConfig()
        assert graphs.equals(GraphSet.load_npz(root / "graphs" / f"{ds}.npz"))
    si = GraphSet.read_json(root / "graphs" / "ds2.json.gz")["fx-1"]
    assert si.n_atoms == 8 and si.n_edges == 8 * 12


def test_fixture_report(fixture_run):
    root, result = fixture_run
    report = json.loads((root / "reports" / "etl_report.json").read_text())
    assert report["counts"]["ds1"] == 31 and report["counts"]["dropped"] == len(result.drops)
    for key in (
        "raw/ds1_material_ids.csv",
        "raw/experimental_gaps_borlido2019.xlsx",
        "raw/experimental_gaps_megnet2021.csv",
        "raw/validation_set.csv",
    ):
        assert report["inputs"][key]["sha256"] == hashlib.sha256((root / key).read_bytes()).hexdigest()
    meta = json.loads((FIXTURES / "mp_snapshot" / "metadata.json").read_text())
    assert report["materials"]["sha256"] == hashlib.sha256(FIXTURE_SNAPSHOT.read_bytes()).hexdigest()
    assert report["materials"]["description"] == meta["description"]
    assert report["database_version"] == meta.get("database_version")
    assert report["config"] == EtlConfig().to_dict()
    assert len(report["drops"]) == len(result.drops)
    assert {d["reason"] for d in report["drops"]} >= {
        "not_in_mp",
        "no_label",
        "unparseable",
        "out_of_range",
        "duplicate",
        "overlap_ds3",
    }


def test_rerun_reuses_graphs_and_new_settings_rebuild(work_bucket):
    first = run_etl(work_bucket, SNAPSHOT_SPEC, progress=False)
    assert first.graphs_reused == {"ds1": False, "ds2": False, "ds3": False}
    stamp = (work_bucket / "graphs" / "ds1.json.gz").stat().st_mtime_ns
    again = run_etl(work_bucket, SNAPSHOT_SPEC, progress=False)
    assert again.graphs_reused == {"ds1": True, "ds2": True, "ds3": True}
    assert (work_bucket / "graphs" / "ds1.json.gz").stat().st_mtime_ns == stamp
    assert again.counts == first.counts

    study = EtlConfig(graph=GraphConfig(radius=7, max_neighbors=14))
    third = run_etl(work_bucket, SNAPSHOT_SPEC, study, progress=False)
    assert third.graphs_reused == {"ds1": False, "ds2": False, "ds3": False}
    graphs = GraphSet.read_json(work_bucket / "graphs" / "ds3.json.gz")
    assert (graphs.config.radius, graphs.config.max_neighbors) == (7, 14)


# ------------------------------------------------------------------------------ phases
class ToySource:
    """A MaterialsSource over the toy records that logs its queries."""

    kind = "toy"

    def __init__(self, records):
        self.records = {r.material_id: r for r in records}
        self.asked = []

    def by_ids(self, ids):
        ids = list(ids)
        self.asked.append(("ids", ids))
        return {i: self.records[i] for i in ids if i in self.records}

    def by_formula(self, formulas):
        formulas = list(formulas)
        self.asked.append(("formulas", formulas))
        return {f: [r for r in self.records.values() if r.formula == f] for f in formulas}

    def provenance(self):
        return {"kind": "toy", "database_version": "toy-1"}


@pytest.fixture
def toy_raw(tmp_path):
    """Raw tables naming the toy materials: 3 DS1 ids, 2 DS2 rows (one by formula), 1 DS3 row."""
    raw = tmp_path / "b" / "raw"
    raw.mkdir(parents=True)
    (raw / "ids.csv").write_text("material_id\nmp-149\nmp-2691\nmp-1070\n")
    (raw / "exp.csv").write_text("material_id,formula,bg_exp\nmp-149,Si,1.12\n,GaAs,1.52\n")
    (raw / "val.csv").write_text("material_id,formula,bg_exp\nmp-2691,CdSe,1.74\n")
    config = EtlConfig.model_validate(
        {
            "ds1": {"ids_key": "raw/ids.csv"},
            "ds2": {"sources": [{"name": "exp", "key": "raw/exp.csv", "formula_column": "formula"}]},
            "ds3": {"key": "raw/val.csv", "exp_source_column": None, "hse06_column": None, "g0w0_column": None},
            "build_graphs": False,
        }
    )
    return read_raw_tables(open_work_bucket(tmp_path / "b"), config), config


def test_fetch_materials_asks_once_by_id_and_once_by_formula(toy_raw, toy_records):
    raw, config = toy_raw
    source, said = ToySource(toy_records), []
    found = fetch_materials(source, raw, config, say=said.append)
    assert source.asked == [("ids", ["mp-149", "mp-2691", "mp-1070"]), ("formulas", ["GaAs"])]
    assert said == ["querying toy for 3 ids and 1 formulas"]
    assert sorted(found.records) == ["fx-2534", "mp-1070", "mp-149", "mp-2534", "mp-2691"]  # + GaAs candidates
    assert [r.material_id for r in found.candidates["GaAs"]] == ["mp-2534", "fx-2534"]
    assert found.provenance == {"kind": "toy", "database_version": "toy-1"}


def test_apply_rules_takes_ds3_out_of_ds1_and_ds2(toy_raw, toy_records):
    raw, config = toy_raw
    outcomes = apply_rules(raw, fetch_materials(ToySource(toy_records), raw, config), config)
    assert list(outcomes) == ["ds1", "ds2", "ds3"]
    assert outcomes["ds3"].table["material_id"].tolist() == ["mp-2691"]
    assert outcomes["ds1"].table["material_id"].tolist() == ["mp-149", "mp-1070"]
    assert [(d["material_id"], d["reason"]) for d in outcomes["ds1"].drops] == [("mp-2691", "overlap_ds3")]
    assert outcomes["ds2"].table["material_id"].tolist() == ["mp-149", "mp-2534"]  # GaAs: lowest hull energy


def test_open_work_bucket_needs_an_existing_folder(tmp_path):
    with pytest.raises(StorageError, match="bucket folder"):
        open_work_bucket(tmp_path / "absent")
    assert open_work_bucket(tmp_path).uri == str(tmp_path)


def test_run_refuses_the_shared_folder():
    target = protected_roots()[0] / "data" / "bucket"
    with pytest.raises(StorageError, match="shared data folder"):
        run_etl(target, SNAPSHOT_SPEC, progress=False)
    with pytest.raises(StorageError, match="shared data folder"):
        prepare_work_bucket(FIXTURE_BUCKET, target)


def test_missing_raw_table_is_a_clear_error(tmp_path):
    prepare_work_bucket(FIXTURE_BUCKET, tmp_path / "b")
    (tmp_path / "b" / "raw" / "validation_set.csv").unlink()
    with pytest.raises(StorageError, match=r"raw/validation_set\.csv"):
        run_etl(tmp_path / "b", SNAPSHOT_SPEC, EtlConfig(build_graphs=False), progress=False)


# ------------------------------------------------------------------------------ S3
def test_end_to_end_on_s3(s3_bucket_name, tmp_path):
    uri = f"s3://{s3_bucket_name}/study"
    prepare_work_bucket(FIXTURE_BUCKET, uri)
    result = run_etl(uri, SNAPSHOT_SPEC, progress=False)
    assert (result.counts["ds1"], result.counts["ds2"], result.counts["ds3"]) == (31, 23, 6)
    bucket = S3Bucket(s3_bucket_name, "study")
    keys = bucket.list()
    for key in (
        "processed/ds2.csv",
        "processed/ds2.xlsx",
        "json/ds2.json",
        "graphs/ds2.json.gz",
        "graphs/manifest.json",
        "reports/etl_report.json",
        "reports/drops.csv",
    ):
        assert key in keys
    assert result.paths["ds2_graphs"] == f"{uri}/graphs/ds2.json.gz"
    bucket.download_file("graphs/ds2.json.gz", tmp_path / "ds2.json.gz")
    assert GraphSet.read_json(tmp_path / "ds2.json.gz").ids == result.ds2["material_id"].tolist()
    assert bucket.read_csv("processed/ds3.csv")["material_id"].tolist() == result.ds3["material_id"].tolist()
    assert run_etl(uri, SNAPSHOT_SPEC, progress=False).graphs_reused["ds1"] is True


# ------------------------------------------------------------------------------ live client
def test_end_to_end_with_the_live_client(work_bucket, monkeypatch):
    records = list(SnapshotSource(FIXTURE_SNAPSHOT).by_ids([f"fx-{i}" for i in range(1, 100)]).values())
    key = uuid.uuid4().hex
    server = FakeMP(records, key)
    server.thread.start()
    try:
        monkeypatch.setenv("MP_API_KEY", key)
        result = run_etl(work_bucket, "mp:" + server.url, EtlConfig(build_graphs=False), progress=False)
    finally:
        server.server.shutdown()
        server.server.server_close()
    assert (result.counts["ds1"], result.counts["ds2"], result.counts["ds3"]) == (31, 23, 6)
    assert result.report["database_version"] == FakeMP.db_version
    assert result.report["materials"] == {"kind": "mp", "endpoint": server.url, "database_version": FakeMP.db_version}
    for path in work_bucket.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path


# ------------------------------------------------------------------------------ command line
def test_cli_run_through_the_package_command(tmp_path):
    config = tmp_path / "etl.json"
    config.write_text(json.dumps({"build_graphs": False, "write_xlsx": False}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cgcnn",
            "etl",
            "run",
            "--bucket",
            str(tmp_path / "b"),
            "--raw-from",
            str(FIXTURE_BUCKET),
            "--materials",
            SNAPSHOT_SPEC,
            "--config",
            str(config),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "DS1 31 materials, DS2 23, DS3 6" in proc.stdout
    assert (tmp_path / "b" / "processed" / "ds1.csv").is_file()
    assert not (tmp_path / "b" / "processed" / "ds1.xlsx").exists()


def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    assert etl_main(["run", "--bucket", str(tmp_path / "absent"), "--materials", SNAPSHOT_SPEC, "--quiet"]) == 2
    assert "bucket folder" in capsys.readouterr().err
    prepare_work_bucket(FIXTURE_BUCKET, tmp_path / "b")
    monkeypatch.delenv("MP_API_KEY", raising=False)
    assert etl_main(["run", "--bucket", str(tmp_path / "b"), "--materials", "mp", "--quiet"]) == 2
    assert "MP_API_KEY" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"ds1": {"idz_key": "x"}}')
    assert etl_main(["run", "--bucket", str(tmp_path / "b"), "--materials", SNAPSHOT_SPEC, "--config", str(bad)]) == 2
    assert "idz_key" in capsys.readouterr().err


def test_cli_snapshot_then_offline_run(fake_mp, tmp_path, crystals, capsys):
    # a bucket whose raw tables name the toy materials served by the loopback MP
    bucket = tmp_path / "b"
    (bucket / "raw").mkdir(parents=True)
    (bucket / "raw" / "ids.csv").write_text("material_id\nmp-149\nmp-2534\nmp-1070\nfx-7\n")
    (bucket / "raw" / "exp.csv").write_text("material_id,formula,bg_exp\nmp-149,Si,1.12\n,GaAs,1.52\n")
    (bucket / "raw" / "val.csv").write_text("material_id,formula,bg_exp\nmp-2691,CdSe,1.74\n")
    config = tmp_path / "etl.json"
    config.write_text(
        json.dumps(
            {
                "ds1": {"ids_key": "raw/ids.csv"},
                "ds2": {"sources": [{"name": "exp", "key": "raw/exp.csv", "formula_column": "formula"}]},
                "ds3": {"key": "raw/val.csv", "exp_source_column": None, "hse06_column": None, "g0w0_column": None},
                "build_graphs": False,
            }
        )
    )
    snap = tmp_path / "snap" / "summary.jsonl.gz"
    assert etl_main(["snapshot", "--out", str(snap), "--bucket", str(bucket), "--config", str(config)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["database_version"] == fake_mp.db_version
    assert printed["n_materials"] == 6  # 5 ids + fx-2534, the GaAs polymorph found by formula

    result = run_etl(bucket, f"snapshot:{snap}", EtlConfig.load(config), progress=False)
    assert result.ds2["material_id"].tolist() == ["mp-149", "mp-2534"]
    match = result.formula_matches.iloc[0]
    assert (match["formula"], match["status"], match["material_id"]) == ("GaAs", "ambiguous", "mp-2534")
    assert result.report["database_version"] == fake_mp.db_version
    assert result.ds1["material_id"].tolist() == ["mp-149", "mp-2534", "mp-1070"]  # fx-7: 5.1 eV


@pytest.mark.parametrize("dataset, key", [("ds1", "raw/ds1_material_ids.csv"), ("ds3", "raw/validation_set.csv")])
def test_an_empty_dataset_stops_the_etl_naming_its_input_and_retires_the_old_report(work_bucket, dataset, key):
    run_etl(work_bucket, SNAPSHOT_SPEC, progress=False)
    report = work_bucket / "reports" / "etl_report.json"
    assert report.is_file()
    path = work_bucket / key
    path.write_text(path.read_text().splitlines()[0] + "\n")  # header only
    proc = subprocess.run(
        [sys.executable, "-m", "cgcnn", "etl", "run", "--bucket", str(work_bucket), "--materials", SNAPSHOT_SPEC],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and f"{dataset.upper()} is empty" in last and key in last, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not report.exists()  # the previous run's report no longer claims the outputs are current
