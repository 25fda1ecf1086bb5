"""Storage: a local folder and S3 (moto's server over real HTTP) behind one interface."""

from __future__ import annotations

import http.client
import os
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import pandas as pd
import pytest

from cgcnn.etl.storage import (
    LocalBucket,
    MissingObjectError,
    S3Bucket,
    StorageError,
    open_bucket,
    protected_roots,
)

TABLE = pd.DataFrame({"material_id": ["mp-149", "fx-7"], "formula": ["Si", "CsCl"], "bg_exp": [1.12, float("nan")]})


def _roundtrip(bucket) -> None:
    bucket.write_csv("processed/t.csv", TABLE)
    back = bucket.read_csv("processed/t.csv")
    assert list(back.columns) == ["material_id", "formula", "bg_exp"]
    assert back["material_id"].tolist() == ["mp-149", "fx-7"]
    assert back["bg_exp"].iloc[0] == 1.12 and pd.isna(back["bg_exp"].iloc[1])

    bucket.write_xlsx("processed/t.xlsx", TABLE, sheet_name="ds1")
    xl = bucket.read_excel("processed/t.xlsx", sheet_name="ds1")
    assert xl["formula"].tolist() == ["Si", "CsCl"]
    assert xl["bg_exp"].iloc[0] == 1.12

    doc = {"mp-149": {"bg_exp": 1.12, "missing": float("nan")}, "n": 2}
    bucket.write_json("json/t.json", doc)
    bucket.write_json("json/t.json.gz", doc)
    expected = {"mp-149": {"bg_exp": 1.12, "missing": None}, "n": 2}
    assert bucket.read_json("json/t.json") == expected
    assert bucket.read_json("json/t.json.gz") == expected
    assert bucket.read_bytes("json/t.json.gz")[:2] == b"\x1f\x8b"

    assert bucket.exists("json/t.json") and not bucket.exists("json/nope.json")
    assert bucket.list("json") == ["json/t.json", "json/t.json.gz"]
    assert bucket.list() == ["json/t.json", "json/t.json.gz", "processed/t.csv", "processed/t.xlsx"]


# ------------------------------------------------------------------------------ local
def test_local_roundtrip_csv_xlsx_json(tmp_path):
    _roundtrip(LocalBucket(tmp_path / "b"))


def test_local_writes_are_atomic_and_leave_no_temp_files(tmp_path):
    bucket = LocalBucket(tmp_path)
    bucket.write_bytes("raw/a.txt", b"one")
    bucket.write_bytes("raw/a.txt", b"two")
    assert (tmp_path / "raw" / "a.txt").read_bytes() == b"two"
    assert os.listdir(tmp_path / "raw") == ["a.txt"]
    mode = stat.S_IMODE((tmp_path / "raw" / "a.txt").stat().st_mode)
    assert mode & stat.S_IRGRP  # not the 0600 of a bare temporary file


def test_local_missing_key_names_bucket_and_key(tmp_path):
    bucket = LocalBucket(tmp_path)
    with pytest.raises(MissingObjectError, match=r"no such key: .*raw/absent\.csv"):
        bucket.read_csv("raw/absent.csv")
    with pytest.raises(FileNotFoundError):  # MissingObjectError is a FileNotFoundError too
        bucket.read_bytes("raw/absent.csv")


def test_local_missing_bucket_folder(tmp_path):
    bucket = LocalBucket(tmp_path / "not-there")
    with pytest.raises(MissingObjectError, match="bucket folder .*not-there"):
        bucket.check()
    with pytest.raises(MissingObjectError, match="no such bucket folder"):
        bucket.read_bytes("raw/x.csv")


def test_local_refuses_keys_outside_the_bucket(tmp_path):
    with pytest.raises(StorageError, match="escapes the bucket"):
        LocalBucket(tmp_path / "b").write_bytes("../evil.txt", b"x")


def test_local_refuses_to_write_under_shared(tmp_path):
    shared = protected_roots()[0]
    bucket = LocalBucket(shared / "data" / "bucket")
    with pytest.raises(StorageError, match="shared data folder"):
        bucket.write_bytes("processed/x.csv", b"a\n")
    with pytest.raises(StorageError, match="shared data folder"):
        bucket.create()


def test_read_only_bucket_refuses_writes(tmp_path):
    with pytest.raises(StorageError, match="read-only"):
        LocalBucket(tmp_path, writable=False).write_bytes("x", b"1")


def test_unreadable_tables_are_storage_errors(tmp_path):
    bucket = LocalBucket(tmp_path)
    bucket.write_bytes("raw/bad.xlsx", b"this is not a zip file")
    with pytest.raises(StorageError, match=r"raw/bad\.xlsx is not a readable XLSX"):
        bucket.read_excel("raw/bad.xlsx")
    bucket.write_bytes("raw/bad.json", b"{nope")
    with pytest.raises(StorageError, match="not valid JSON"):
        bucket.read_json("raw/bad.json")


def test_open_bucket_parses_uris(tmp_path):
    s3 = open_bucket("s3://my-bucket/some/prefix/")
    assert isinstance(s3, S3Bucket) and (s3.bucket, s3.prefix) == ("my-bucket", "some/prefix")
    assert s3.uri == "s3://my-bucket/some/prefix"
    assert open_bucket("s3://my-bucket").prefix == ""
    assert isinstance(open_bucket(f"file://{tmp_path}"), LocalBucket)
    assert open_bucket(str(tmp_path)).root == tmp_path.resolve()
    with pytest.raises(StorageError, match="unsupported bucket URI"):
        open_bucket("gs://elsewhere/x")
    with pytest.raises(StorageError, match="no bucket name"):
        open_bucket("s3:///x")


# ------------------------------------------------------------------------------ S3 (moto)
def test_s3_roundtrip_csv_xlsx_json(s3_bucket_name):
    _roundtrip(S3Bucket(s3_bucket_name, "study/run1"))


def test_s3_keys_live_under_the_prefix(s3_bucket_name):
    import boto3

    S3Bucket(s3_bucket_name, "study").write_bytes("raw/a.csv", b"x\n1\n")
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=s3_bucket_name)["Contents"]]
    assert keys == ["study/raw/a.csv"]
    assert open_bucket(f"s3://{s3_bucket_name}/study").read_bytes("raw/a.csv") == b"x\n1\n"


def test_s3_missing_key(s3_bucket_name):
    bucket = S3Bucket(s3_bucket_name, "p")
    with pytest.raises(MissingObjectError, match=rf"s3://{s3_bucket_name}/p/raw/absent\.csv: no such key"):
        bucket.read_csv("raw/absent.csv")
    assert bucket.exists("raw/absent.csv") is False


def test_s3_missing_bucket(s3_env):
    bucket = S3Bucket("no-such-bucket-here")
    with pytest.raises(MissingObjectError, match="bucket 'no-such-bucket-here' does not exist"):
        bucket.read_bytes("raw/x.csv")
    with pytest.raises(MissingObjectError, match="bucket 'no-such-bucket-here' does not exist"):
        bucket.write_bytes("raw/x.csv", b"1")
    with pytest.raises(MissingObjectError, match="does not exist"):
        bucket.check()


def test_s3_bad_credentials(s3_bucket_name, monkeypatch):
    from moto import settings

    S3Bucket(s3_bucket_name).write_bytes("raw/x.csv", b"a\n1\n")
    # From now on the moto server authenticates requests; "testing" is no known access key.
    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    with pytest.raises(
        StorageError, match=rf"s3://{s3_bucket_name}/raw/x\.csv: credentials rejected .*InvalidAccessKeyId"
    ):
        S3Bucket(s3_bucket_name).read_bytes("raw/x.csv")


def test_s3_missing_credentials(s3_bucket_name, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageError, match=rf"cannot read s3://{s3_bucket_name}/raw/x\.csv: no AWS credentials"):
        S3Bucket(s3_bucket_name).read_bytes("raw/x.csv")


class FlakyProxy:
    """Loopback HTTP proxy: answers the first ``failures`` requests with 503 SlowDown,
    then forwards everything to ``upstream`` unchanged (headers, body, signature)."""

    def __init__(self, upstream: str, failures: int):
        self.upstream = urlparse(upstream)
        self.failures = failures
        self.seen: list[int] = []
        self.paths: list = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                proxy.paths.append((self.command, self.path))
                if len(proxy.seen) < proxy.failures:
                    proxy.seen.append(503)
                    payload = b"<?xml version='1.0'?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                conn.request(self.command, self.path, body=body, headers=dict(self.headers))
                resp = conn.getresponse()
                data = resp.read()
                proxy.seen.append(resp.status)
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in {"content-length", "transfer-encoding", "connection", "server", "date"}:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_s3_transient_errors_are_retried(s3_bucket_name, s3_env, monkeypatch):
    S3Bucket(s3_bucket_name).write_bytes("raw/x.csv", b"a\n1\n")
    proxy = FlakyProxy(s3_env, failures=2)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        assert S3Bucket(s3_bucket_name).read_bytes("raw/x.csv") == b"a\n1\n"
        assert proxy.seen == [503, 503, 200]
    finally:
        proxy.close()


def test_s3_gives_up_after_max_attempts_with_a_clear_error(s3_bucket_name, s3_env, monkeypatch):
    proxy = FlakyProxy(s3_env, failures=10)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        with pytest.raises(StorageError, match=rf"s3://{s3_bucket_name}/raw/x\.csv: .*SlowDown"):
            S3Bucket(s3_bucket_name, max_attempts=2).read_bytes("raw/x.csv")
        assert proxy.seen == [503, 503], proxy.paths
    finally:
        proxy.close()
