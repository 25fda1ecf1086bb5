"""The fast CIF reader builds exactly the structure pymatgen's parser builds, or declines."""

import gzip
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from cgcnn.data.fast_cif import read_simple_cif

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
FIXTURE_SNAPSHOT = Path(__file__).resolve().parents[1] / "fixtures" / "mp_snapshot" / "summary.jsonl.gz"


def pymatgen_parse(text: str) -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_str(text, fmt="cif")


def assert_same(a: Structure, b: Structure) -> None:
    assert np.array_equal(a.lattice.matrix, b.lattice.matrix)
    assert [s.species_string for s in a] == [s.species_string for s in b]
    assert np.array_equal(a.frac_coords, b.frac_coords)


def test_rock_salt_written_by_pymatgen_reads_back_identically():
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    text = str(CifWriter(nacl))
    fast = read_simple_cif(text)
    assert fast is not None and len(fast) == 8
    assert_same(fast, pymatgen_parse(text))


def test_coordinates_near_thirds_are_snapped_like_pymatgen():
    # wurtzite-like cell written with 4-decimal thirds: both readers snap 0.3333 -> 1/3
    zno = Structure(
        Lattice.hexagonal(3.25, 5.21),
        ["Zn", "Zn", "O", "O"],
        [[0.3333, 0.6667, 0], [0.6667, 0.3333, 0.5], [0.3333, 0.6667, 0.382], [0.6667, 0.3333, 0.882]],
    )
    text = str(CifWriter(zno))
    fast = read_simple_cif(text)
    assert fast is not None
    assert fast.frac_coords[0, 0] == 1 / 3
    assert_same(fast, pymatgen_parse(text))


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: t.replace("'x, y, z'", "'x, y, z'\n  2  '-x, -y, -z'"),  # a real symmetry operation
        lambda t: t.replace(
            "  Na  Na0  1  0.00000000  0.00000000  0.00000000  1",
            "  Na  Na0  1  0.00000000  0.00000000  0.00000000  0.5",
        ),
        lambda t: t + "data_second\n_cell_length_a 1\n",  # two blocks
    ],
)
def test_unusual_cifs_are_declined(edit):
    nacl = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    text = edit(str(CifWriter(nacl)))
    assert read_simple_cif(text) is None


@pytest.mark.skipif(not FIXTURE_SNAPSHOT.exists(), reason="fixture snapshot not generated")
def test_fixture_snapshot_structures_match_pymatgen():
    with gzip.open(FIXTURE_SNAPSHOT, "rt") as fh:
        records = [json.loads(line) for line in fh]
    assert records
    for rec in records:
        fast = read_simple_cif(rec["structure_cif"])
        if fast is not None:
            assert_same(fast, pymatgen_parse(rec["structure_cif"]))


@pytest.mark.shared_data
@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data not present")
def test_original_sample_cifs_match_pymatgen_or_are_declined():
    for path in sorted((SHARED / "cgcnn_reference" / "sample-regression").glob("*.cif")):
        text = path.read_text()
        fast = read_simple_cif(text)
        if fast is not None:
            assert_same(fast, pymatgen_parse(text))


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data not present")
def test_whole_snapshot_matches_pymatgen():
    mismatched, accepted = [], 0
    with gzip.open(SHARED / "mp_snapshot" / "summary.jsonl.gz", "rt") as fh:
        for line in fh:
            rec = json.loads(line)
            fast = read_simple_cif(rec["structure_cif"])
            if fast is None:
                continue
            accepted += 1
            ref = pymatgen_parse(rec["structure_cif"])
            same = (
                np.array_equal(fast.lattice.matrix, ref.lattice.matrix)
                and [s.species_string for s in fast] == [s.species_string for s in ref]
                and np.array_equal(fast.frac_coords, ref.frac_coords)
            )
            if not same:
                mismatched.append(rec["material_id"])
    assert accepted > 20000
    assert mismatched == []


def test_crlf_line_ends_as_the_materials_project_writes_them_take_the_fast_path():
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    text = str(CifWriter(nacl)).replace("\n", "\r\n")
    fast = read_simple_cif(text)
    assert fast is not None
    assert_same(fast, pymatgen_parse(text))
    assert read_simple_cif(text.replace("\r\n", "\r")) is None  # a lone carriage return: pymatgen's business


def test_a_comment_after_a_value_is_left_to_pymatgen():
    # '#' starts a comment anywhere on a line: the rest of the row is not a site
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    text = str(CifWriter(nacl))
    # a row split over two lines with a comment in between that looks like a site
    trap = text.replace("  Na  Na0  1", "  Na  #K9  1  0.25  0.25  0.25  1  K\n  Na0  1", 1)
    assert trap != text
    assert read_simple_cif(trap) is None
    assert pymatgen_parse(trap).composition.reduced_formula == "NaCl" and len(pymatgen_parse(trap)) == 8
    assert read_simple_cif(text.replace("_cell_length_a", "_cell_length_a  # in Å\n_cell_length_a", 1)) is None


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: t.replace("_cell_angle_alpha   90", "_cell_angle_alpha   10").replace(
            "_cell_angle_beta   90", "_cell_angle_beta   10"
        ),  # angles that close no cell
        lambda t: t.replace(" _atom_site_fract_y\n", ""),  # a coordinate column missing
    ],
)
def test_a_file_the_reader_cannot_handle_is_declined_not_raised(edit):
    nacl = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    text = edit(str(CifWriter(nacl)))
    assert text != str(CifWriter(nacl))
    assert read_simple_cif(text) is None
