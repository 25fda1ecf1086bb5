"""The notebook 04-your-data/01-finetune-own-data.ipynb: committed without outputs with a
tagged parameters cell, and run through papermill on a lab built from the fixture, it writes
the model folder ``cgcnn finetune`` writes."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import papermill as pm
from conftest import FAST, SNAPSHOT, write_lab

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "04-your-data" / "01-finetune-own-data.ipynb"


def test_the_committed_notebook_has_a_tagged_parameters_cell_and_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert all(c.get("outputs") == [] and c.get("execution_count") is None for c in code)
    assert (NOTEBOOK.parent / "example" / "gaps.csv").is_file()


def test_the_notebook_runs_the_protocol_and_writes_a_model_folder(tmp_path, zero_shot, records):
    table = write_lab(tmp_path / "lab.csv", zero_shot, records, offset=0.3)
    out = tmp_path / "model"
    pm.execute_notebook(
        str(NOTEBOOK),
        str(tmp_path / "executed.ipynb"),
        parameters={
            "table": str(table),
            "structures": str(SNAPSHOT),
            "output": str(out),
            "settings": FAST,
            "cache": str(tmp_path / "cache"),
        },
        kernel_name="python3",
        cwd=str(NOTEBOOK.parent),
        progress_bar=False,
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["adaptation"]["recipe"] == "recalibrated"
    assert manifest["verdict"].startswith("recalibrating the shipped ensemble")
