"""Fixtures for the ETL tests: toy crystals, a loopback Materials Project and a moto S3 server.

Every server listens on 127.0.0.1 and speaks real HTTP, so the production code paths
(boto3/botocore, mp-api's ``MPRester``) run unmodified.
"""

from __future__ import annotations

import uuid

import pytest
from etl_helpers import FakeMP, make_record, moto_server, point_aws_at


# --------------------------------------------------------------------------------------------
# toy crystals, named by formula
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def crystals():
    """Conventional cells of tests/fixtures/crystals.py: formula -> (Structure, space-group number, symbol)."""
    from crystals import caesium_chloride, conventional

    return {
        "NaCl": (conventional("rocksalt", ("Na", "Cl"), 5.64), 225, "Fm-3m"),
        "CsCl": (caesium_chloride(4.12), 221, "Pm-3m"),
        "Si": (conventional("diamond", ("Si",), 5.43), 227, "Fd-3m"),
        "CdSe-zb": (conventional("zincblende", ("Cd", "Se"), 6.05), 216, "F-43m"),
        "CdSe-wz": (conventional("wurtzite", ("Cd", "Se"), 4.30, 7.01, u=0.375), 186, "P6_3mc"),
        "GaAs": (conventional("zincblende", ("Ga", "As"), 5.65), 216, "F-43m"),
    }


@pytest.fixture(scope="session")
def toy_records(crystals):
    """Seven records; ``fx-…`` and ``mp-…`` ids mixed on purpose."""
    return [
        make_record(crystals, "NaCl", "mp-22862", 5.0),
        make_record(crystals, "CsCl", "fx-7", 5.1),
        make_record(crystals, "Si", "mp-149", 0.61),
        make_record(crystals, "CdSe-zb", "mp-2691", 0.51),
        make_record(crystals, "CdSe-wz", "mp-1070", 0.60, ehull=0.002),
        make_record(crystals, "GaAs", "mp-2534", 0.19),
        make_record(crystals, "GaAs", "fx-2534", None, ehull=None),
    ]


# --------------------------------------------------------------------------------------------
# a loopback Materials Project API
# --------------------------------------------------------------------------------------------
@pytest.fixture
def fake_mp(toy_records, monkeypatch):
    key = uuid.uuid4().hex  # MPRester insists on 32 characters
    server = FakeMP(toy_records, key)
    server.thread.start()
    monkeypatch.setenv("MP_API_KEY", key)
    monkeypatch.setenv("MP_API_ENDPOINT", server.url)
    yield server
    server.server.shutdown()
    server.server.server_close()


# --------------------------------------------------------------------------------------------
# moto's S3 server on loopback
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def moto_endpoint():
    """moto's server (ThreadedMotoServer, real HTTP) on 127.0.0.1; yields its URL."""
    with moto_server() as url:
        yield url


@pytest.fixture
def s3_env(moto_endpoint, monkeypatch, tmp_path):
    """Point boto3 at moto with dummy credentials; isolate from any real AWS config."""
    point_aws_at(monkeypatch, moto_endpoint, tmp_path)
    return moto_endpoint


@pytest.fixture
def s3_bucket_name(s3_env):
    """A fresh, empty bucket on the moto server."""
    import boto3

    name = "etl-" + uuid.uuid4().hex[:12]
    boto3.client("s3").create_bucket(Bucket=name)
    return name
