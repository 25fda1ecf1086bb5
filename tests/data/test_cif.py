"""Structures from the wild (cgcnn.data.cif, cgcnn.data.checks): every CIF read as pymatgen reads
it or refused in one line that names the file and the reason; never a crash, never a silently
different structure.  Every file is written here, in tmp_path, from textbook cells."""

from __future__ import annotations

import gzip
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from cgcnn.config import GraphConfig
from cgcnn.data.building import build_graphs
from cgcnn.data.checks import MIN_DISTANCE, structure_problem
from cgcnn.data.cif import cif_items, read_cif
from cgcnn.data.fast_cif import read_simple_cif
from cgcnn.errors import DatasetError

CFG = GraphConfig(radius=6, max_neighbors=12)


def rocksalt(a: float = 5.64) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


NACL = str(CifWriter(rocksalt()))  # P1, 8 sites, one symmetry loop: what the fast reader takes


def pymatgen_reading(text: str) -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_str(text, fmt="cif")


def same(a: Structure, b: Structure) -> bool:
    return (
        np.allclose(a.lattice.matrix, b.lattice.matrix)
        and [s.species_string for s in a] == [s.species_string for s in b]
        and np.allclose(a.frac_coords, b.frac_coords)
    )


def cgcnn(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cgcnn", *map(str, args)], capture_output=True, text=True, timeout=300)


# -- 1. dummy atoms --------------------------------------------------------------------------------
@pytest.mark.parametrize("symbol", ["X", "Q", "Xx"])
def test_a_dummy_atom_is_refused_by_name(symbol):
    reading = read_cif(NACL.replace("  Na  Na0  1", f"  {symbol}  {symbol}0  1"), "dummy")
    ((sid, structure),) = reading.structures
    assert (
        structure_problem(structure, 6.0)
        == f"site 0 is not a real element ({symbol}0+); replace the dummy atom or remove it"
    )


def test_a_folder_with_dummy_atoms_predicts_every_other_file(tmp_path):
    folder = tmp_path / "cifs"
    folder.mkdir()
    (folder / "NaCl.cif").write_text(NACL)
    (folder / "KCl.cif").write_text(
        str(
            CifWriter(
                Structure.from_spacegroup("Fm-3m", Lattice.cubic(6.29), ["K", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
            )
        )
    )
    for symbol in ("X", "Q", "Xx", "Du"):
        (folder / f"dummy-{symbol}.cif").write_text(NACL.replace("  Na  Na0  1", f"  {symbol}  {symbol}0  1"))
    out = tmp_path / "pred.csv"
    proc = cgcnn("predict", "--model", "base", folder, "--output", out)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    table = pd.read_csv(out)
    assert {"NaCl", "KCl"} <= set(table["material_id"])
    assert not {"dummy-X", "dummy-Q", "dummy-Xx"} & set(table["material_id"])
    for symbol in ("X", "Q", "Xx"):
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"warning: skipped dummy-{symbol}:")]
        assert len(lines) == 1 and str(folder / f"dummy-{symbol}.cif") in lines[0] and "not a real element" in lines[0]
    # "Du" is read by pymatgen as hydrogen: predicted, and the guess is said, naming the file
    assert any(
        ln.startswith("warning: dummy-Du:") and "'Du' is not an element symbol" in ln for ln in proc.stderr.splitlines()
    )


# -- 2. impossible cells ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "says"), [(0.564, "volume per atom is 0.0224 Å³"), (0.05, "volume per atom"), (0.02, "volume per atom")]
)
def test_a_cell_far_too_small_is_refused_before_any_neighbour_search(a, says):
    assert says in structure_problem(rocksalt(a), 7.0)


def test_two_atoms_nearly_on_top_of_each_other_are_refused_with_the_distance():
    s = Structure(Lattice.cubic(5.0), ["Na", "Na"], [[0, 0, 0], [0.0022, 0, 0]])
    assert (
        structure_problem(s, 7.0)
        == f"shortest distance 0.011 Å between sites 0 and 1 (at least {MIN_DISTANCE:g} Å expected)"
    )
    assert structure_problem(rocksalt(), 7.0) is None
    lonely = Structure(Lattice.from_parameters(0.3, 9, 9, 90, 90, 90), ["Na"], [[0, 0, 0]])
    assert "from its own periodic image" in structure_problem(lonely, 7.0)


def test_impossible_cells_in_a_folder_are_skipped_and_the_rest_built(tmp_path):
    (tmp_path / "good.cif").write_text(NACL)
    (tmp_path / "nm.cif").write_text(str(CifWriter(rocksalt(0.564))))
    (tmp_path / "tiny.cif").write_text(str(CifWriter(rocksalt(0.02))))
    graphs, problems = build_graphs(cif_items([tmp_path]), CFG, progress=False)
    assert graphs.ids == ["good"]
    assert sorted(p.item_id for p in problems) == ["nm", "tiny"]
    assert all(str(tmp_path) in p.reason and "volume per atom" in p.reason for p in problems)


# -- 3. the parser's warnings ----------------------------------------------------------------------
def test_a_declared_formula_that_differs_is_a_warning_and_strict_refuses_it(tmp_path):
    text = NACL.replace("'Na4 Cl4'", "'Na4 Cl8'")
    notes: list = []
    graphs, problems = build_graphs([("f", text)], CFG, progress=False, notes=notes)
    assert graphs.ids == ["f"] and not problems
    assert len(notes) == 1 and notes[0].kind == "warning" and "stoichiometry" in notes[0].reason
    graphs, problems = build_graphs([("f", text)], CFG, progress=False, strict=True)
    assert len(graphs) == 0 and problems[0].reason.startswith("refused (--strict): ")


def test_an_unknown_space_group_read_as_p1_is_said(tmp_path):
    text = (
        "data_Ni\n_symmetry_space_group_name_H-M 'F m -3 m x'\n_cell_length_a 3.52\n_cell_length_b 3.52\n"
        "_cell_length_c 3.52\n_cell_angle_alpha 90\n_cell_angle_beta 90\n_cell_angle_gamma 90\n"
        "loop_\n_atom_site_label\n_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n"
        "Ni1 Ni 0 0 0\n"
    )
    reading = read_cif(text, "Ni")
    if reading.structures:
        assert reading.warnings, "pymatgen's guess must be said"
    else:
        assert reading.problems and "Ni" == reading.problems[0].item_id


# -- 4. one meaning for a CIF ----------------------------------------------------------------------
TWO_LOOPS = """data_NaCl
_cell_length_a 5.64
_cell_length_b 5.64
_cell_length_c 5.64
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
loop_
_symmetry_equiv_pos_as_xyz
'x, y, z'
'x, y+1/2, z+1/2'
'x+1/2, y, z+1/2'
'x+1/2, y+1/2, z'
loop_
_space_group_symop_operation_xyz
'x, y, z'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
Na1 Na 0 0 0 1
Cl1 Cl 0.5 0.5 0.5 1
"""


def test_two_symmetry_loops_are_read_as_pymatgen_reads_them():
    assert read_simple_cif(TWO_LOOPS) is None
    ((_, structure),) = read_cif(TWO_LOOPS, "x").structures
    assert same(structure, pymatgen_reading(TWO_LOOPS)) and len(structure) == 8


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: t.replace("0.00000000  0.00000000  0.00000000  1", "nan  0.00000000  0.00000000  1", 1),
        lambda t: t.replace(" _atom_site_label\n", "").replace("  Na  Na0  1", "  Na  1", 1),
        lambda t: t.replace("_atom_site_fract_x", "_ATOM_SITE_FRACT_X"),
        lambda t: t.replace("_cell_length_a   5.64000000", "_cell_length_a   0"),
    ],
)
def test_the_fast_reader_declines_what_pymatgen_reads_otherwise(edit):
    assert read_simple_cif(edit(NACL)) is None


def test_a_zero_cell_length_is_refused_in_one_line():
    graphs, problems = build_graphs(
        [("z", NACL.replace("_cell_length_a   5.64000000", "_cell_length_a   0"))], CFG, progress=False
    )
    assert len(graphs) == 0 and len(problems) == 1
    assert problems[0].reason == "cannot parse the structure: cell length a is 0 Å; a cell length must be positive"


@pytest.mark.parametrize(
    "edit, says",
    [
        (
            lambda t: (
                t.replace("_cell_angle_alpha   90", "_cell_angle_alpha   120")
                .replace("_cell_angle_beta   90", "_cell_angle_beta   120")
                .replace("_cell_angle_gamma   90", "_cell_angle_gamma   120")
            ),
            "cell angles alpha 120°, beta 120°, gamma 120° close no cell",  # a flat cell: volume 0
        ),
        (
            lambda t: t.replace("_cell_angle_alpha   90", "_cell_angle_alpha   10").replace(
                "_cell_angle_beta   90", "_cell_angle_beta   10"
            ),
            "cell angles alpha 10°, beta 10°, gamma 90° close no cell",
        ),
        (lambda t: t.replace("_atom_site_fract_y", "_atom_site_fract_q"), "the block has no _atom_site_fract_y"),
        (
            lambda t: t.replace("_atom_site_fract_", "_atom_site_Cartn_"),
            "pymatgen reads fractional coordinates only; convert the Cartesian ones",
        ),
    ],
)
def test_a_broken_cell_or_site_loop_is_refused_saying_what_is_wrong(edit, says):
    text = edit(NACL)
    assert text != NACL
    reading = read_cif(text, "broken", where="broken.cif")
    assert not reading.structures and len(reading.problems) == 1
    (problem,) = reading.problems
    assert problem.item_id == "broken" and problem.reason.startswith("broken.cif: cannot parse the structure")
    assert says in problem.reason and "\n" not in problem.reason


def _variants(text: str) -> dict[str, str]:
    loop_a, loop_b = text.split("loop_\n")[1:3]
    header = text.split("loop_\n")[0]
    return {
        "crlf": text.replace("\n", "\r\n"),
        "cr": text.replace("\n", "\r"),
        "tabs": text.replace("  ", "\t"),
        "bom": "\ufeff" + text,
        "comments": text.replace("loop_\n", "# a comment\nloop_\n"),
        "uncertainty": text.replace("5.64000000", "5.640(2)"),
        "loop order": header + "loop_\n" + loop_b + "loop_\n" + loop_a,
        "tag case": text.replace("_cell_length_a", "_Cell_Length_A"),
    }


@pytest.mark.parametrize("name", list(_variants(NACL)))
@pytest.mark.parametrize(
    "structure",
    [
        rocksalt(),
        Structure.from_spacegroup(
            "P6_3mc", Lattice.hexagonal(3.82, 6.26), ["Zn", "S"], [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.375]]
        ),
    ],
)
def test_every_variant_reads_as_pymatgen_reads_it_or_fails_as_it_does(structure, name):
    text = _variants(str(CifWriter(structure)))[name]
    assert_reads_as_pymatgen(read_cif(text, "v"), lambda: pymatgen_reading(text))


def assert_reads_as_pymatgen(reading, parse) -> Structure | None:
    """``reading`` holds the one structure ``parse()`` gives, or refuses the file as pymatgen
    does (``parse`` raises); returns pymatgen's structure."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            expected = parse()
        except Exception:
            expected = None
    if expected is None:
        assert not reading.structures and reading.problems
    else:
        ((_, got),) = reading.structures
        assert same(got, expected)
    return expected


@pytest.mark.parametrize("name", [*_variants(NACL), "comment in a row"])
def test_every_variant_in_a_file_reads_as_structure_from_file_reads_it(tmp_path, name):
    # a file is read as pymatgen reads a file (text mode: a lone carriage return ends a line)
    text = (
        NACL.replace("  Na  Na0  1", "  Na  #K9  1  0.25  0.25  0.25  1  K\n  Na0  1")
        if name == "comment in a row"
        else _variants(NACL)[name]
    )
    path = tmp_path / "variant.cif"
    path.write_bytes(text.encode())
    expected = assert_reads_as_pymatgen(read_cif(path, "v"), lambda: Structure.from_file(path))
    if name in ("cr", "comment in a row"):
        assert expected is not None and len(expected) == 8  # pymatgen reads both as the 8-site cell


# -- 5. several blocks -----------------------------------------------------------------------------
def test_every_block_of_a_multi_block_cif_is_a_structure(tmp_path):
    path = tmp_path / "pressures.cif"
    path.write_text(NACL + "\n" + NACL.replace("data_NaCl", "data_NaCl_5GPa").replace("5.64000000", "5.40000000"))
    graphs, problems = build_graphs(cif_items([path]), CFG, progress=False)
    assert graphs.ids == ["pressures:NaCl", "pressures:NaCl_5GPa"] and not problems


def test_each_block_is_checked_against_its_own_atoms_not_the_first_block_s():
    # pymatgen compares every block with the file's first one ("Missing elements Na" for a KCl
    # block after a NaCl block); read here, the KCl block has nothing that alters it
    kcl = NACL.replace("data_NaCl", "data_KCl").replace("Na", "K").replace("5.64000000", "6.29000000")
    reading = read_cif(NACL + "\n" + kcl, "salts")
    assert [i for i, _ in reading.structures] == ["salts:NaCl", "salts:KCl"]
    assert [s.composition.reduced_formula for _, s in reading.structures] == ["NaCl", "KCl"]
    assert not any("Missing elements" in w.reason for w in reading.warnings)


# -- 6. encodings and compression ------------------------------------------------------------------
def test_latin1_bytes_and_gzip_read_as_pymatgen_reads_them(tmp_path):
    (tmp_path / "latin1.cif").write_bytes("# Kristallstruktur f\xfcr NaCl\n".encode("latin-1") + NACL.encode())
    with gzip.open(tmp_path / "zipped.cif.gz", "wt") as fh:
        fh.write(NACL)
    graphs, problems = build_graphs(cif_items([tmp_path]), CFG, progress=False)
    assert graphs.ids == ["latin1", "zipped"] and not problems
    assert same(read_cif(tmp_path / "zipped.cif.gz", "z").structures[0][1], pymatgen_reading(NACL))


# -- 7. folders ------------------------------------------------------------------------------------
def test_folders_are_searched_recursively_for_every_cif_suffix_and_hidden_files_skipped(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    (tmp_path / "top.CIF").write_text(NACL)
    (tmp_path / "a" / "deep" / "x.cif.gz").write_bytes(gzip.compress(NACL.encode()))
    (tmp_path / "a" / "m.mcif").write_text(NACL)
    (tmp_path / ".git" / "y.cif").write_text(NACL)
    (tmp_path / ".hidden.cif").write_text(NACL)
    (tmp_path / "notes.txt").write_text("not a CIF")
    assert [i for i, _ in cif_items([tmp_path])] == ["a/deep/x", "a/m", "top"]


def test_the_same_id_from_two_folders_is_reported_with_both_paths(tmp_path):
    for d in ("one", "two"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "x.cif").write_text(NACL)
    items = cif_items([tmp_path / "one", tmp_path / "two"])
    graphs, problems = build_graphs(items, CFG, progress=False)
    assert graphs.ids == ["x"]
    (p,) = problems
    assert str(tmp_path / "one" / "x.cif") in p.reason and str(tmp_path / "two" / "x.cif") in p.reason
    assert "the first is kept" in p.reason
    proc = cgcnn(
        "predict",
        "--model",
        "base",
        tmp_path / "one",
        tmp_path / "two",
        "--on-error",
        "error",
        "--output",
        tmp_path / "p.csv",
    )
    assert proc.returncode != 0
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: x: duplicate material id") and "first is kept" not in line


# -- 8. messages -----------------------------------------------------------------------------------
def test_a_refusal_gives_pymatgen_s_reason_not_no_structures():
    no_label = NACL.replace(" _atom_site_label\n", "").replace("Na0  1", "1").replace("Cl4  1", "1")
    reading = read_cif(no_label.replace("_atom_site_fract_x", "_atom_site_fract_q"), "x")
    for p in reading.problems:
        assert "Invalid CIF file with no structures" not in p.reason


def test_a_partial_occupancy_is_reported_with_its_digits():
    ((_, s),) = read_cif(
        NACL.replace("0.00000000  0.00000000  0.00000000  1", "0.00000000  0.00000000  0.00000000  0.9999", 1), "occ"
    ).structures
    assert structure_problem(s, 6.0) == "site 3 is partially occupied (Na 0.9999)"


# -- 10. output ------------------------------------------------------------------------------------
def test_output_naming_a_folder_is_one_line_and_a_short_run_prints_no_rate(tmp_path):
    (tmp_path / "NaCl.cif").write_text(NACL)
    proc = cgcnn("predict", "--model", "base", tmp_path / "NaCl.cif", "--output", tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        f"error: --output {tmp_path} is a folder; give a file name, e.g. {tmp_path / 'predictions.csv'}"
    ]
    proc = cgcnn("predict", "--model", "base", tmp_path / "NaCl.cif", "--output", tmp_path / "p.csv")
    assert proc.returncode == 0, proc.stderr
    assert "structures/s" not in proc.stderr and "RuntimeWarning" not in proc.stderr


# -- 9. disorder, opt-in ---------------------------------------------------------------------------
def _solid_solution(tmp_path):
    folder = tmp_path / "ss"
    folder.mkdir()
    cell = Lattice.cubic(5.965)
    for name, site in (("NaKCl2", {"Na": 0.5, "K": 0.5}), ("NaCl", "Na"), ("KCl", "K")):
        s = Structure.from_spacegroup("Fm-3m", cell, [site, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
        (folder / f"{name}.cif").write_text(str(CifWriter(s)))
    return folder


def test_disorder_is_refused_by_default_with_the_occupancies(tmp_path):
    graphs, problems = build_graphs(cif_items([_solid_solution(tmp_path)]), CFG, progress=False)
    assert sorted(graphs.ids) == ["KCl", "NaCl"]
    (p,) = problems
    assert p.item_id == "NaKCl2" and "partially occupied (K 0.5, Na 0.5)" in p.reason


def test_a_50_50_solid_solution_lies_between_its_end_members(tmp_path):
    folder = _solid_solution(tmp_path)
    out = tmp_path / "p.csv"
    proc = cgcnn("predict", "--model", "base", folder, "--disorder", "end-members", "--output", out)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(out, keep_default_na=False).set_index("material_id")
    lo, hi = sorted([table.loc["NaCl", "prediction_ev"], table.loc["KCl", "prediction_ev"]])
    assert lo <= table.loc["NaKCl2", "prediction_ev"] <= hi
    # 50/50: the midpoint. The end members are scored in a different batch from NaCl.cif and KCl.cif, and
    # float32 sums over a batch depend on its make-up (CI saw 2e-5 eV), so the bound is float32 noise, not exact.
    assert table.loc["NaKCl2", "prediction_ev"] == pytest.approx((lo + hi) / 2, abs=1e-4)
    assert (
        table.loc["NaKCl2", "disorder"] == "end-members (2 ordered structures)" and table.loc["NaCl", "disorder"] == ""
    )


def test_orderings_keep_the_composition_in_a_supercell():
    from cgcnn.data.disorder import ordered_structures

    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.965), [{"Na": 0.75}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    ordered, weights, how = ordered_structures(s, "orderings")
    assert how == "mean over 8 orderings in a 4-cell supercell" and sum(weights) == pytest.approx(1)
    assert {o.composition.formula for o in ordered} == {"Na12 Cl16"}  # 4 cells: 16 Na sites, a quarter empty
    assert all(o.is_ordered and structure_problem(o, 6.0) is None for o in ordered)


def test_the_python_api_takes_the_disorder_method_too():
    from cgcnn import load_model

    mix = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.965), [{"Na": 0.5, "K": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    model = load_model("base", device="cpu")
    table = model.predict({"mix": mix}, disorder="orderings")
    assert list(table["material_id"]) == ["mix"] and table.loc[0, "disorder"] == "orderings (8 ordered structures)"
    assert table.loc[0, "prediction_std_ev"] > 0  # the orderings disagree a little: the mixture's spread
    with pytest.raises(DatasetError, match="site 0 is partially occupied"):  # refused by default
        model.predict({"mix": mix})


def test_progress_moves_once_per_structure(tmp_path):
    ticks = []
    items = [(f"s{k}", NACL) for k in range(5)]
    build_graphs(items, CFG, progress=False, on_item=lambda: ticks.append(1))
    assert len(ticks) == 5
