import pandas as pd
import pytest

from cgcnn.data.material_classes import (
    ANION_CLASSES,
    CRYSTAL_SYSTEMS,
    anion_analysis,
    anion_class,
    classify_frame,
    crystal_system,
    n_elements,
)


@pytest.mark.parametrize(
    "formula, expected",
    [
        ("ZnO", "oxide"),
        ("SrTiO3", "oxide"),
        ("BaSO4", "oxide"),  # Ba2+ cannot balance O4 and S: S is the sulfate's cation
        ("Ba3(PO4)2", "oxide"),  # phosphate P is a cation
        ("Mg(OH)2", "oxide"),  # hydroxide H is a cation
        ("CdSe", "chalcogenide"),
        ("Bi2Te3", "chalcogenide"),  # Bi is the least electronegative element: cation
        ("NaCl", "halide"),
        ("PbFCl", "halide"),  # two halogens: still one group
        ("GaAs", "pnictide"),
        ("BN", "pnictide"),
        ("Cs3Sb", "pnictide"),
        ("BiOCl", "double anion"),
        ("La2O2S", "double anion"),
        ("TaON", "double anion"),
        ("LiH", "hydride"),
        ("SiC", "tetrelide"),
        ("MgB2", "boride"),
        ("NiAl", "intermetallic"),
        ("CsAu", "intermetallic"),
        ("Si", "elemental"),
        ("He", "elemental"),
    ],
)
def test_anion_class_of_textbook_compounds(formula, expected):
    assert anion_class(formula) == expected


def test_double_anion_subclass_names_both_groups():
    assert anion_analysis("BiOCl").subclass == "oxyhalide"
    assert anion_analysis("La2O2S").subclass == "oxychalcogenide"
    assert anion_analysis("TaON").subclass == "oxypnictide"
    assert anion_analysis("LaSCl").subclass == "chalcohalide"


def test_anions_and_cations_are_listed_by_electronegativity():
    result = anion_analysis("BiOCl")
    assert result.anions == ("O", "Cl")  # X(O) = 3.44 > X(Cl) = 3.16
    assert result.cations == ("Bi",)
    assert anion_analysis("BaSO4").cations == ("S", "Ba")


def test_every_class_is_in_the_display_order():
    for formula in ("ZnO", "BiOCl", "NiAl", "Si", "MgB2", "SiC", "LiH"):
        assert anion_class(formula) in ANION_CLASSES


@pytest.mark.parametrize(
    "number, system",
    [
        (1, "triclinic"),
        (2, "triclinic"),
        (3, "monoclinic"),
        (15, "monoclinic"),
        (16, "orthorhombic"),
        (74, "orthorhombic"),
        (75, "tetragonal"),
        (142, "tetragonal"),
        (143, "trigonal"),
        (167, "trigonal"),
        (168, "hexagonal"),
        (186, "hexagonal"),
        (194, "hexagonal"),
        (195, "cubic"),
        (216, "cubic"),
        (225, "cubic"),
        (230, "cubic"),
    ],
)
def test_crystal_system_boundaries(number, system):
    assert crystal_system(number) == system


@pytest.mark.parametrize("bad", [0, 231, -5])
def test_crystal_system_rejects_numbers_outside_1_to_230(bad):
    with pytest.raises(ValueError, match="1..230"):
        crystal_system(bad)


def test_crystal_system_of_an_unknown_space_group_is_none():
    assert crystal_system(None) is None


def test_importing_classes_does_not_load_pymatgen():
    import subprocess
    import sys

    code = "import cgcnn.data.material_classes, sys; assert 'pymatgen' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_n_elements_counts_distinct_elements():
    assert n_elements("Si") == 1
    assert n_elements("GaAs") == 2
    assert n_elements("Ba3(PO4)2") == 3
    assert n_elements("CuInSe2") == 3


def test_classify_frame_adds_columns_and_marks_missing_space_groups():
    df = pd.DataFrame({"formula": ["GaAs", "ZnO", "BiOCl"], "spacegroup_number": [216, 186, None]})
    out = classify_frame(df)
    assert list(out["anion_class"]) == ["pnictide", "oxide", "double anion"]
    assert list(out["n_elements"]) == [2, 2, 3]
    assert list(out["crystal_system"]) == ["cubic", "hexagonal", "unknown"]
    assert list(out["crystal_system"].cat.categories) == [*CRYSTAL_SYSTEMS, "unknown"]
    assert "anion_class" not in df.columns  # input left unchanged


def test_classify_frame_keeps_the_crystal_system_column_the_etl_wrote():
    # as read back from processed/ds*.csv: the ETL wrote crystal_system with the same function
    df = pd.DataFrame(
        {
            "formula": ["GaAs", "ZnO", "Si"],
            "spacegroup_number": [216, 186, None],
            "crystal_system": ["cubic", "hexagonal", None],
        }
    )
    out = classify_frame(df)
    assert list(out["crystal_system"]) == ["cubic", "hexagonal", "unknown"]
    assert list(out["crystal_system"].cat.categories) == [*CRYSTAL_SYSTEMS, "unknown"]
    with pytest.raises(ValueError, match="not crystal systems"):
        classify_frame(df.assign(crystal_system=["cubic", "hexagonal", "rhombic"]))
