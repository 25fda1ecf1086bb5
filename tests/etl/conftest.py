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
    """Small structures built in code: formula -> (Structure, space-group number, symbol)."""
    from pymatgen.core import Lattice, Structure

    return {
        "NaCl": (Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]), 225, "Fm-3m"),
        "CsCl": (Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]), 221, "Pm-3m"),
        "Si": (Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]]), 227, "Fd-3m"),
        "CdSe-zb": (Structure.from_spacegroup("F-43m", Lattice.cubic(6.05), ["Cd", "Se"], [[0, 0, 0], [0.25, 0.25, 0.25]]), 216, "F-43m"),
        "CdSe-wz": (
            Structure.from_spacegroup("P6_3mc", Lattice.hexagonal(4.30, 7.01), ["Cd", "Se"], [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.375]]),
            186,
            "P6_3mc",
        ),
        "GaAs": (Structure.from_spacegroup("F-43m", Lattice.cubic(5.65), ["Ga", "As"], [[0, 0, 0], [0.25, 0.25, 0.25]]), 216, "F-43m"),
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
