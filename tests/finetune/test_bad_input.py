"""Bad input to ``cgcnn finetune`` is one line per item, and the rest is used; what cannot be
used at all is one ``error:`` line and a non-zero exit, never a traceback, with nothing written."""

from __future__ import annotations

import json

import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from cgcnn.cli import main

FAST = {"recipes": ["recalibrated"], "n_boot": 200}


@pytest.fixture
def lab(tmp_path, records, zero_shot):
    """CIFs of 25 fixture materials and one crystal the checks refuse (two atoms 0.05 Å apart),
    a settings file, and the good rows of a table (gaps = zero-shot + 0.1 eV)."""
    cifs = tmp_path / "cifs"
    cifs.mkdir()
    ids = list(zero_shot["material_id"][:25])
    for m in ids:
        (cifs / f"{m}.cif").write_text(records[m]["structure_cif"])
    crushed = Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0, 0, 0], [0.01, 0, 0]])
    CifWriter(crushed).write_file(cifs / "crushed.cif")
    gaps = zero_shot.set_index("material_id")["prediction_ev"] + 0.1
    rows = [f"{m},{gaps[m]:.6f}" for m in ids]
    config = tmp_path / "settings.json"
    config.write_text(json.dumps(FAST))
    return cifs, rows, config


def _table(path, rows):
    path.write_text("material_id,bg_exp\n" + "\n".join(rows) + "\n")
    return path


def _fail(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    message = str(info.value.code)
    assert message.startswith("error: ") and "\n" not in message and "Traceback" not in capsys.readouterr().err
    return message


def test_every_bad_row_and_structure_is_named_and_the_rest_is_used(tmp_path, lab, capsys):
    cifs, rows, config = lab
    bad = ["fx-900,1.2", "crushed,2.0", f"{rows[0].split(',')[0]},9.9", "abc-gap,n/a", "negative,-0.4", ",1.0"]
    table = _table(tmp_path / "lab.csv", rows + bad)
    out = tmp_path / "model"
    argv = ["finetune", table, cifs, "--output", out, "--config", config, "--quiet"]
    assert main([str(a) for a in argv]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("verdict: ")
    left = {
        line.removeprefix("warning: left out ").split(": ")[0]: line
        for line in captured.err.splitlines()
        if line.startswith("warning: left out ")
    }
    assert set(left) == {"fx-900", "crushed", rows[0].split(",")[0], "abc-gap", "negative", "line 32"}
    assert "no structure among the inputs" in left["fx-900"]
    assert "0.5" in left["crushed"]  # two atoms closer than 0.5 Å
    assert "listed 2 times" in left[rows[0].split(",")[0]]
    assert "not a number" in left["abc-gap"] and "negative" in left["negative"]
    assert "no material_id" in left["line 32"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["lab"]["n_used"] == 24 and manifest["lab"]["n_listed"] == 31
    assert len(manifest["lab"]["left_out"]) == 6


def test_on_error_error_stops_at_the_first_bad_row_and_writes_nothing(tmp_path, lab, capsys):
    cifs, rows, config = lab
    table = _table(tmp_path / "lab.csv", rows + ["negative,-0.4"])
    out = tmp_path / "model"
    message = _fail(capsys, "finetune", table, cifs, "--output", out, "--config", config, "--on-error", "error")
    assert "negative" in message and "-0.4" in message
    assert not out.exists()


def test_a_structure_the_checks_refuse_stops_the_run_under_on_error_error(tmp_path, lab, capsys):
    cifs, rows, config = lab
    table = _table(tmp_path / "lab.csv", rows + ["crushed,2.0"])
    message = _fail(
        capsys, "finetune", table, cifs, "--output", tmp_path / "model", "--config", config, "--on-error", "error"
    )
    assert "crushed" in message


def test_too_few_materials_are_refused_saying_how_many_there_are_and_are_needed(tmp_path, lab, capsys):
    cifs, rows, config = lab
    table = _table(tmp_path / "lab.csv", rows[:12])
    message = _fail(capsys, "finetune", table, cifs, "--output", tmp_path / "model", "--config", config)
    assert "12 usable material(s) of 12 listed" in message and "at least 20" in message
    assert not (tmp_path / "model").exists()


def test_an_existing_folder_that_is_not_a_model_is_never_overwritten(tmp_path, lab, capsys):
    cifs, rows, config = lab
    table = _table(tmp_path / "lab.csv", rows)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    message = _fail(capsys, "finetune", table, cifs, "--output", mine, "--config", config)
    assert "not a model folder" in message and (mine / "thesis.tex").read_text() == "precious"


def test_missing_columns_and_unknown_settings_are_one_line(tmp_path, lab, capsys):
    cifs, rows, config = lab
    table = tmp_path / "lab.csv"
    table.write_text("id,gap\nfx-1,1.0\n")
    assert "no column 'material_id'" in _fail(capsys, "finetune", table, cifs, "--output", tmp_path / "m")
    config.write_text(json.dumps({"epoch": 3}))
    assert "epoch" in _fail(
        capsys, "finetune", _table(table, rows), cifs, "--output", tmp_path / "m", "--config", config
    )


def test_an_adapted_folder_is_not_adapted_again(tmp_path, lab, capsys):
    cifs, rows, config = lab
    table = _table(tmp_path / "lab.csv", rows)
    assert (
        main([str(a) for a in ["finetune", table, cifs, "--output", tmp_path / "m", "--config", config, "--quiet"]])
        == 0
    )
    message = _fail(capsys, "finetune", table, cifs, "--output", tmp_path / "m2", "--base", tmp_path / "m")
    assert "already adapted" in message and "--base ensemble" in message
