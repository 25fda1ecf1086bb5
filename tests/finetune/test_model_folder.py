"""The model folder round trip: what cross-validation scored is what ``load_model(MODEL_DIR)``
and ``cgcnn predict --model MODEL_DIR`` predict, with intervals and the domain columns."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from conftest import SNAPSHOT, write_lab

from cgcnn import load_model
from cgcnn.cli import main
from cgcnn.finetune.calibrate import calibrate
from cgcnn.finetune.lab import load_lab
from cgcnn.finetune.protocol import compare, make_folds
from cgcnn.finetune.recipes import lab_recipes
from cgcnn.finetune.run import final_fit, start, write
from cgcnn.study.engine import fit_final

TINY = {"epochs": 1, "patience": 1, "policies": ["head", "convs"], "n_boot": 200}


def test_every_recipe_round_trips_through_load_model_and_predict(tmp_path, zero_shot, records, capsys):
    table = write_lab(tmp_path / "lab.csv", zero_shot, records, offset=0.2)
    setup = start(tmp_path / "model", settings=TINY, cache=tmp_path / "cache")
    lab = load_lab(table, str(SNAPSHOT), setup.model)
    folds = make_folds(lab, setup.settings)
    recipes = lab_recipes(lab, setup.settings, setup.cache)
    comparison = compare(lab, recipes, folds, setup.settings, echo=None)
    assert set(comparison.table.index) == {
        "zero_shot",
        "recalibrated",
        "residual_trees",
        "finetuned",
        "average",
        "pbe",
        "pbe_linear",
    }
    comparison.final = "average"  # the recipe that needs every part: fine-tuned members, a line, residual trees
    parts = final_fit(setup, lab, comparison, recipes)
    trust, scale, report = calibrate(lab, comparison.oof["average"], folds, level=0.9, min_class_scores=30)
    out = write(setup, lab, comparison, parts, trust, scale, report, (table, str(SNAPSHOT)))

    names = {p.name for p in out.iterdir()}
    assert {"manifest.json", "MODEL_CARD.md", "pbe-model.pt", "trees.skops", "trust.json", "domain.npz"} <= names
    assert {"member-0.pt", "finetuned-0.pt", "residual-trees.skops", "cv.csv", "left_out.csv"} <= names
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "adapted" and manifest["lab"]["ids"] == lab.ids
    assert manifest["settings"]["epochs"] == 1 and manifest["made_with"]["versions"]["torch"]
    assert set(manifest["files"]) == names - {"manifest.json", "MODEL_CARD.md"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model.")]  # no temporary folder left

    average = next(r for r in recipes if r.name == "average")
    expected = fit_final(average, lab.materials, seed=0, val_fraction=setup.settings.inner_val_fraction)
    want = pd.Series(expected.predict(lab.materials).mean, index=lab.ids)

    model = load_model(out, device="cpu")
    got = model.predict(str(SNAPSHOT)).set_index("material_id")
    assert np.allclose(got.loc[lab.ids, "prediction_ev"], want, atol=1e-5)
    assert (got["prediction_lo_ev"] <= got["prediction_ev"]).all() and (
        got["prediction_hi_ev"] >= got["prediction_ev"]
    ).all()
    assert got["in_domain"].dtype == bool

    csv = tmp_path / "predictions.csv"
    assert main(["predict", "--model", str(out), str(SNAPSHOT), "--output", str(csv), "--device", "cpu"]) == 0
    cli = pd.read_csv(csv).set_index("material_id")
    assert np.allclose(cli.loc[lab.ids, "prediction_ev"], want, atol=1e-5)
    assert list(cli.columns) == list(got.columns)
    capsys.readouterr()


def test_a_rerun_replaces_a_model_folder_whole(tmp_path, zero_shot, records):
    from cgcnn.finetune.run import finetune

    table = write_lab(tmp_path / "lab.csv", zero_shot, records, offset=0.3)
    settings = {"recipes": ["recalibrated"], "n_boot": 200}
    out, *_ = finetune(table, str(SNAPSHOT), tmp_path / "model", settings=settings, echo=None)
    (out / "stray.txt").write_text("from an earlier run")
    out, comparison, _ = finetune(table, str(SNAPSHOT), tmp_path / "model", settings=settings, echo=None)
    assert not (out / "stray.txt").exists() and comparison.final == "recalibrated"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".model.")) == []


def test_a_run_that_fails_while_writing_leaves_the_earlier_folder_as_it_was(tmp_path, zero_shot, records, monkeypatch):
    import pytest

    from cgcnn.finetune import folder
    from cgcnn.finetune.run import finetune

    table = write_lab(tmp_path / "lab.csv", zero_shot, records, offset=0.3)
    settings = {"recipes": ["recalibrated"], "n_boot": 200}
    out, *_ = finetune(table, str(SNAPSHOT), tmp_path / "model", settings=settings, echo=None)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(folder, "atomic_write_text", broken)  # fails after every other file is written
    with pytest.raises(OSError, match="disk full"):
        finetune(write_lab(table, zero_shot, records, offset=0.5), str(SNAPSHOT), out, settings=settings, echo=None)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".model")] == []
