"""Fixtures for the ETL tests: toy crystals, a loopback Materials Project and a moto S3 server.

Every server listens on 127.0.0.1 and speaks real HTTP, so the production code paths
(boto3/botocore, mp-api's ``MPRester``) run unmodified.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from cgcnn.etl.materials import MaterialRecord

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


# --------------------------------------------------------------------------------------------
# toy crystals, named by formula
# --------------------------------------------------------------------------------------------
def _cif(structure) -> str:
    from pymatgen.io.cif import CifWriter

    return str(CifWriter(structure))


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


def make_record(crystals, name: str, material_id: str, band_gap: float | None, ehull: float | None = 0.0) -> MaterialRecord:
    structure, number, symbol = crystals[name]
    return MaterialRecord(
        material_id=material_id,
        formula=structure.composition.reduced_formula,
        spacegroup_number=number,
        spacegroup_symbol=symbol,
        nsites=len(structure),
        band_gap=band_gap,
        structure_cif=_cif(structure),
        energy_above_hull=ehull,
        band_gap_source="test",
    )


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
class FakeMP:
    """Answers ``/heartbeat`` and ``/materials/summary/`` like the Materials Project API.

    Documents are built from MaterialRecords (structure as a pymatgen dict, symmetry
    nested as in the summary document).  ``requests`` logs (path, query) of every call.
    """

    db_version = "2099.01.01.fixture"

    def __init__(self, records: list[MaterialRecord], api_key: str):
        from mp_api.client.core.utils import validate_ids
        from pymatgen.core import Structure

        self.api_key = api_key
        self.docs = {}
        self.alias = {}
        for rec in records:
            with warnings.catch_warnings():  # "coordinates rounded to ideal values"
                warnings.simplefilter("ignore")
                structure = Structure.from_str(rec.structure_cif, fmt="cif")
            self.docs[rec.material_id] = {
                "material_id": rec.material_id,
                "formula_pretty": rec.formula,
                "symmetry": {"number": rec.spacegroup_number, "symbol": rec.spacegroup_symbol},
                "nsites": rec.nsites,
                "band_gap": rec.band_gap,
                "energy_above_hull": rec.energy_above_hull,
                "structure": structure.as_dict(),
            }
            self.alias[validate_ids([rec.material_id])[0]] = rec.material_id
        self.requests: list[tuple[str, dict]] = []
        self.fail_next = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _send(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                fake.requests.append((url.path, query))
                if url.path.rstrip("/") == "/heartbeat":
                    return self._send(200, {"db_version": fake.db_version, "access_controlled_batch_ids": [], "version": "0.87.3"})
                if self.headers.get("x-api-key") != fake.api_key:
                    return self._send(401, {"detail": "invalid API key"})
                if url.path.rstrip("/") != "/materials/summary":
                    return self._send(404, {"detail": f"no route {url.path}"})
                docs = list(fake.docs.values())
                if "material_ids" in query:
                    wanted = {fake.alias.get(i, i) for i in query["material_ids"].split(",")}
                    docs = [d for d in docs if d["material_id"] in wanted]
                if "formula" in query:
                    wanted = set(query["formula"].split(","))
                    docs = [d for d in docs if d["formula_pretty"] in wanted]
                fields = query.get("_fields", "").split(",") if query.get("_fields") else None
                skip, limit = int(query.get("_skip", 0)), int(query.get("_limit", 1000))
                page = docs[skip : skip + limit]
                if fields:
                    page = [{k: d[k] for k in fields if k in d} for d in page]
                return self._send(200, {"data": page, "meta": {"total_doc": len(docs)}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def summary_requests(self) -> list[dict]:
        return [q for p, q in self.requests if p.startswith("/materials/summary")]


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
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(moto_endpoint, monkeypatch, tmp_path):
    """Point boto3 at moto with dummy credentials; isolate from any real AWS config."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return moto_endpoint


@pytest.fixture
def s3_bucket_name(s3_env):
    """A fresh, empty bucket on the moto server."""
    import boto3

    name = "etl-" + uuid.uuid4().hex[:12]
    boto3.client("s3").create_bucket(Bucket=name)
    return name
