"""The committed test fixture (tests/fixtures/): reproducible, parseable, physically sensible."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import openpyxl
import pytest
from pymatgen.core import Composition, Structure

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FILES = (
    "mp_snapshot/summary.jsonl.gz",
    "mp_snapshot/metadata.json",
    "bucket/raw/ds1_material_ids.csv",
    "bucket/raw/experimental_gaps_borlido2019.xlsx",
    "bucket/raw/experimental_gaps_megnet2021.csv",
    "bucket/raw/validation_set.csv",
)


def _load(name: str, path: Path):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


make_fixture = _load("fixture_make", FIXTURES / "make_fixture.py")
MATERIALS = {m.material_id: m for m in make_fixture.materials.MATERIALS}


# -- readers ----------------------------------------------------------------------------


def read_snapshot(root: Path) -> list[dict]:
    with gzip.open(root / "mp_snapshot/summary.jsonl.gz", "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def read_xlsx(path: Path) -> tuple[list[tuple], list[str], list[str]]:
    wb = openpyxl.load_workbook(path)
    ws = wb.active
    rows = [tuple(r) for r in ws.iter_rows(values_only=True)]
    return rows, wb.sheetnames, sorted(str(r) for r in ws.merged_cells.ranges)


def read_content(root: Path, rel: str):
    path = root / rel
    if rel.endswith(".jsonl.gz"):
        return read_snapshot(root)
    if rel.endswith(".json"):
        return json.loads(path.read_text())
    if rel.endswith(".csv"):
        return path.read_text()
    return read_xlsx(path)


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fixture")
    make_fixture.write_fixture(out)
    return out


@pytest.fixture(scope="module")
def snapshot() -> list[dict]:
    return read_snapshot(FIXTURES)


@pytest.fixture(scope="module")
def structures(snapshot) -> dict[str, Structure]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {r["material_id"]: Structure.from_str(r["structure_cif"], fmt="cif") for r in snapshot}


# -- reproducibility ----------------------------------------------------------------------


@pytest.mark.parametrize("rel", FILES)
def test_committed_files_match_the_generator(regenerated, rel):
    assert (FIXTURES / rel).exists(), f"missing {rel}: run tests/fixtures/make_fixture.py"
    assert read_content(FIXTURES, rel) == read_content(regenerated, rel)


def test_gzip_header_has_no_timestamp():
    head = (FIXTURES / "mp_snapshot/summary.jsonl.gz").read_bytes()[:10]
    assert head[:2] == b"\x1f\x8b"
    assert head[3] == 0  # no FNAME / FEXTRA flags
    assert head[4:8] == b"\x00\x00\x00\x00"  # mtime 0


def test_generator_is_byte_reproducible(regenerated, tmp_path):
    make_fixture.write_fixture(tmp_path)
    for rel in FILES:
        assert (tmp_path / rel).read_bytes() == (regenerated / rel).read_bytes(), rel


# -- snapshot schema ----------------------------------------------------------------------


def test_snapshot_schema_and_order(snapshot):
    keys = [
        "material_id",
        "formula_pretty",
        "spacegroup_number",
        "spacegroup_symbol",
        "nsites",
        "band_gap",
        "band_gap_source",
        "structure_cif",
    ]
    assert all(list(r) == keys for r in snapshot)
    ids = [r["material_id"] for r in snapshot]
    assert ids == sorted(ids)  # plain string order: fx-1, fx-10, ...
    assert ids[:3] == ["fx-1", "fx-10", "fx-11"]
    assert len(ids) == len(set(ids)) == 43
    for r in snapshot:
        assert (r["band_gap"] is None) == (r["band_gap_source"] is None)
        assert r["band_gap_source"] in (None, "megnet", "krict", "roost", "shef")
    meta = json.loads((FIXTURES / "mp_snapshot/metadata.json").read_text())
    assert meta["n_materials"] == 43 and meta["n_band_gap_null"] == 2
    assert sum(meta["band_gap_source_counts"].values()) == 41


def test_every_cif_parses_and_matches_its_record(snapshot, structures):
    for r in snapshot:
        s = structures[r["material_id"]]
        assert len(s) == r["nsites"]
        assert s.composition.reduced_formula == r["formula_pretty"]
        m = MATERIALS[r["material_id"]]
        assert Composition(m.formula).reduced_composition == s.composition.reduced_composition
        assert "\r\n" in r["structure_cif"]


def test_space_groups_of_the_prototypes(snapshot):
    by_proto = {}
    for r in snapshot:
        by_proto.setdefault(MATERIALS[r["material_id"]].prototype, set()).add(r["spacegroup_number"])
    assert by_proto == {
        "diamond": {227},
        "zincblende": {216},
        "rocksalt": {225},
        "fluorite": {225},
        "fcc": {225},
        "wurtzite": {186},
        "cscl": {221},
        "perovskite": {221},
        "rutile": {136},
    }


# -- structures ---------------------------------------------------------------------------


def nearest(structure: Structure) -> tuple[float, np.ndarray]:
    """Shortest interatomic distance and each site's number of neighbours at that distance."""
    neighbours = structure.get_all_neighbors(r=4.5)
    d_min = min(n.nn_distance for site in neighbours for n in site)
    counts = np.array([sum(abs(n.nn_distance - d_min) < 1e-3 for n in site) for site in neighbours])
    return d_min, counts


def expected_nn(m) -> float:
    a, c, u = m.a, m.c, m.u
    return {
        "diamond": a * math.sqrt(3) / 4,
        "zincblende": a * math.sqrt(3) / 4,
        "fluorite": a * math.sqrt(3) / 4,
        "rocksalt": a / 2,
        "perovskite": a / 2,
        "cscl": a * math.sqrt(3) / 2,
        "fcc": a / math.sqrt(2),
        "wurtzite": min(u * c, math.sqrt(a**2 / 3 + ((0.5 - u) * c) ** 2)) if c else 0.0,
        "rutile": min(math.sqrt(2) * u * a, math.sqrt(2 * ((0.5 - u) * a) ** 2 + c**2 / 4)) if c else 0.0,
    }[m.prototype]


def test_nearest_neighbour_distances_follow_the_prototypes(structures):
    for mid, s in structures.items():
        d_min, _ = nearest(s)
        assert d_min == pytest.approx(expected_nn(MATERIALS[mid]), abs=1e-6), mid
        assert 1.4 < d_min < 4.0, mid  # no overlapping or isolated atoms


def test_hand_checked_distances_and_coordination(structures):
    # NaCl: Na-Cl = a/2 = 5.640/2, 6 neighbours
    d, counts = nearest(structures["fx-18"])
    assert d == pytest.approx(2.820, abs=1e-6) and set(counts) == {6}
    # Si: a*sqrt(3)/4 = 5.431 * 0.4330 = 2.3517, 4 neighbours
    d, counts = nearest(structures["fx-1"])
    assert d == pytest.approx(2.3517, abs=1e-4) and set(counts) == {4}
    # CsCl: a*sqrt(3)/2 = 4.123 * 0.8660 = 3.5706, 8 neighbours
    d, counts = nearest(structures["fx-31"])
    assert d == pytest.approx(3.5706, abs=1e-4) and set(counts) == {8}
    # Cu (fcc): a/sqrt(2) = 2.5562, 12 neighbours
    d, counts = nearest(structures["fx-43"])
    assert d == pytest.approx(2.5562, abs=1e-4) and set(counts) == {12}
    # CaF2: Ca has 8 F, F has 4 Ca
    _, counts = nearest(structures["fx-34"])
    assert sorted(counts) == [4] * 8 + [8] * 4


# -- the wrangling outcome described in README.md ------------------------------------------


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def test_intended_dataset_counts(snapshot):
    raw = FIXTURES / "bucket/raw"
    in_snapshot = {r["material_id"] for r in snapshot}
    ds1 = {r["material_id"] for r in snapshot if r["band_gap"] is not None and r["band_gap"] < 5}
    assert len(ds1) == 37
    assert len({i for i in ds1 if next(r for r in snapshot if r["material_id"] == i)["band_gap"] > 0}) == 31
    assert [r["material_id"] for r in read_csv(raw / "ds1_material_ids.csv")] == [r["material_id"] for r in snapshot]

    rows, sheets, merged = read_xlsx(raw / "experimental_gaps_borlido2019.xlsx")
    assert sheets == ["Sheet1"] and merged == ["A1:A2", "B1:B2", "C1:C2", "D1:S1", "T1:T2"]
    assert rows[0][:3] == ("Material", "MP_ID", "ICSD_ID") and rows[1][18] == "Experimental"
    borlido = {r[1]: r[18] for r in rows[2:]}
    assert borlido["fx-39"] == "3.8-3.7" and "fx-99" not in in_snapshot
    megnet = {r["material_id"]: float(r["bg_exp"]) for r in read_csv(raw / "experimental_gaps_megnet2021.csv")}
    ds3 = {r["material_id"] for r in read_csv(raw / "validation_set.csv")}
    assert ds3 == {"fx-17", "fx-26", "fx-28", "fx-29", "fx-30", "fx-41"}

    merged_gaps = {i: v for i, v in megnet.items()}
    merged_gaps.update({i: _number(v) for i, v in borlido.items() if _number(v) is not None})
    ds2 = {i: v for i, v in merged_gaps.items() if 0 < v <= 5 and i in in_snapshot and i not in ds3}
    assert len(ds2) == 23
    assert ds2["fx-1"] == 1.12 and ds2["fx-13"] == 3.40  # Borlido priority (agreeing / conflicting)
    assert abs(borlido["fx-13"] - megnet["fx-13"]) > 0.5 and abs(borlido["fx-1"] - megnet["fx-1"]) <= 0.5
    assert {"fx-26", "fx-17"} <= (set(borlido) | set(megnet)) & ds3  # removed from DS2
    formulas = {r["material_id"]: r["formula_pretty"] for r in snapshot}
    assert formulas["fx-10"] == formulas["fx-29"] == "ZnS" and "fx-10" in ds2 and "fx-29" in ds3
