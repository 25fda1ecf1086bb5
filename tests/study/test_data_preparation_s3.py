"""The study's remote-data route over real protocols on loopback.

``work_bucket`` -> ``run_etl_stage(run, "s3://…", "mp:<endpoint>", load_profile("fixture"))``
-> ``load_data(run)``, with the bucket on moto's S3 server (real HTTP, boto3 unmodified) and
the Materials Project served by the ETL tests' loopback API (``FakeMP``, mp-api's client
unmodified), both on 127.0.0.1.  The inputs are the bundled fixture (tests/fixtures).
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
FIXTURE_RAW = FIXTURES / "bucket" / "raw"
FIXTURE_SNAPSHOT = FIXTURES / "mp_snapshot" / "summary.jsonl.gz"

# The ETL tests import their helpers as a top-level module (tests/etl has no __init__.py and
# pytest's default "prepend" import mode puts that folder on sys.path); do the same here so
# this file also runs on its own.
if str(REPO / "tests" / "etl") not in sys.path:
    sys.path.insert(0, str(REPO / "tests" / "etl"))
from etl_helpers import FakeMP, moto_server, point_aws_at  # noqa: E402


@pytest.fixture(scope="module")
def moto_endpoint():
    """moto's server (ThreadedMotoServer, real HTTP) on 127.0.0.1; yields its URL."""
    with moto_server() as url:
        yield url


@pytest.fixture
def secrets(moto_endpoint, monkeypatch, tmp_path):
    """Fresh random credentials in the environment (AWS for moto, MP for FakeMP); no real AWS config."""
    aws_key_id = "AKIA" + uuid.uuid4().hex[:16].upper()
    aws_secret = uuid.uuid4().hex + uuid.uuid4().hex[:8]  # 40 characters, like a real secret key
    mp_key = uuid.uuid4().hex  # MPRester insists on 32 characters
    point_aws_at(
        monkeypatch, moto_endpoint, tmp_path, key_id=aws_key_id, secret=aws_secret, clear_prefixes=("AWS_", "MP_API")
    )
    monkeypatch.setenv("MP_API_KEY", mp_key)
    return {"aws_secret": aws_secret, "mp_key": mp_key}


@pytest.fixture
def fixture_bucket(secrets):
    """A fresh moto bucket holding the fixture's raw/ files (uploaded with plain boto3)."""
    import boto3

    name = "study-" + uuid.uuid4().hex[:12]
    client = boto3.client("s3")
    client.create_bucket(Bucket=name)
    raw = {}
    for path in sorted(FIXTURE_RAW.iterdir()):
        key = f"raw/{path.name}"
        raw[key] = path.read_bytes()
        client.put_object(Bucket=name, Key=key, Body=raw[key])
    assert len(raw) == 4
    return name, client, raw


@pytest.fixture
def fixture_mp(secrets):
    """The fixture snapshot served by the loopback Materials Project API."""
    from cgcnn.etl import SnapshotSource

    records = list(SnapshotSource(FIXTURE_SNAPSHOT).by_ids([f"fx-{i}" for i in range(1, 100)]).values())
    assert len(records) == 43
    server = FakeMP(records, secrets["mp_key"])
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def _keys(client, bucket: str, prefix: str = "") -> list[str]:
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [obj["Key"] for obj in page.get("Contents", [])]
    return sorted(keys)


def _plain(name: str, blob: bytes) -> bytes:
    """The bytes as stored, plus their decompressed form for ``.gz`` files."""
    return blob + gzip.decompress(blob) if name.endswith(".gz") else blob


def test_etl_stage_on_s3_and_live_mp(tmp_path, secrets, fixture_bucket, fixture_mp):
    from cgcnn.data.graphset import GraphSet
    from cgcnn.study.data_preparation import load_data, run_etl_stage, work_bucket
    from cgcnn.study.profiles import load_profile

    name, client, raw = fixture_bucket
    run = tmp_path / "run"
    uri = f"s3://{name}"

    # An s3:// bucket is used as it is: no local copy of raw/.
    assert work_bucket(run, uri) == uri
    assert not (run / "bucket").exists()

    profile = load_profile("fixture")
    result = run_etl_stage(run, uri, "mp:" + fixture_mp.url, profile, progress=False)

    # counts (tests/fixtures/README.md), and the materials really came over HTTP
    assert (result.counts["ds1"], result.counts["ds2"], result.counts["ds3"]) == (31, 23, 6)
    assert fixture_mp.summary_requests(), "no /materials/summary request reached the loopback MP API"
    assert result.report["materials"]["kind"] == "mp"
    assert result.report["database_version"] == FakeMP.db_version

    # ETL outputs in the S3 bucket; raw/ untouched (same keys, same bytes)
    keys = _keys(client, name)
    for key in (
        "processed/ds1.csv",
        "processed/ds2.csv",
        "processed/ds3.csv",
        "graphs/ds1.json.gz",
        "graphs/ds1.npz",
        "reports/etl_report.json",
    ):
        assert key in keys, key
    assert [k for k in keys if k.startswith("raw/")] == sorted(raw)
    for key, data in raw.items():
        assert client.get_object(Bucket=name, Key=key)["Body"].read() == data, key
    report = json.loads(client.get_object(Bucket=name, Key="reports/etl_report.json")["Body"].read())
    assert report["counts"]["ds1"] == 31

    # local copies in <run>/data/, recorded relative to the run folder
    meta = json.loads((run / "data" / "etl.json").read_text())
    assert meta["counts"]["ds1"] == 31 and meta["materials"] == "mp:" + fixture_mp.url
    for rel in meta["files"].values():
        assert not os.path.isabs(rel) and rel.startswith("data" + os.sep), rel
        assert (run / rel).is_file(), rel
    s3_ds1 = client.get_object(Bucket=name, Key="processed/ds1.csv")["Body"].read()
    assert (run / meta["files"]["ds1_csv"]).read_bytes() == s3_ds1

    # load_data reads everything from the local copies
    data = load_data(run)
    assert (len(data.ds1), len(data.ds2), len(data.ds3)) == (31, 23, 6)
    for ds in ("ds1", "ds2", "ds3"):
        path = data.files[f"{ds}_csv"]
        assert run.resolve() / "data" in path.resolve().parents, path
        assert getattr(data, ds)["material_id"].tolist() == getattr(result, ds)["material_id"].tolist()
    assert set(data.ds3["material_id"]) == {"fx-17", "fx-26", "fx-28", "fx-29", "fx-30", "fx-41"}
    graphs = data.graphs("ds3")
    assert isinstance(graphs, GraphSet) and graphs.ids == data.ds3["material_id"].tolist()
    assert pd.read_csv(run / "tables" / "etl_counts.csv", index_col=0)["materials"].tolist() == [31, 23, 6]

    # no secret in any file of the run folder, nor in any object the ETL wrote
    needles = {secrets["mp_key"].encode(), secrets["aws_secret"].encode()}
    files = [p for p in run.rglob("*") if p.is_file()]
    assert len(files) >= len(meta["files"]) + 1
    for path in files:
        blob = _plain(path.name, path.read_bytes())
        for needle in needles:
            assert needle not in blob, f"a secret was written to {path}"
    for key in keys:
        if key.startswith("raw/"):
            continue
        blob = _plain(key, client.get_object(Bucket=name, Key=key)["Body"].read())
        for needle in needles:
            assert needle not in blob, f"a secret was written to s3://{name}/{key}"
