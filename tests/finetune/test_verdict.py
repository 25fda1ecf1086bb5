"""The protocol's verdict on labs whose right answer is known: gaps that are the shipped model's
own predictions plus a constant (recalibration must win and be said to help), and gaps that
are exactly its predictions (nothing can help: keep the shipped model)."""

from __future__ import annotations

import json

import pytest
from conftest import FAST, SNAPSHOT, write_lab

from cgcnn.finetune.run import finetune
from cgcnn.finetune.settings import FinetuneSettings, folds_for


def test_an_offset_lab_is_told_that_recalibration_helps(tmp_path, zero_shot, records):
    table = write_lab(tmp_path / "lab.csv", zero_shot, records, offset=0.3)
    out, comparison, lab = finetune(
        table, str(SNAPSHOT), tmp_path / "model", settings=FAST, cache=tmp_path / "cache", echo=None
    )
    t = comparison.table
    assert len(lab) == 43 and list(t.index[:3]) == ["zero_shot", "recalibrated", "residual_trees"]
    assert t.loc["zero_shot", "mae"] == pytest.approx(0.3, abs=1e-9)
    assert t.loc["recalibrated", "mae"] < 1e-6
    assert t.loc["recalibrated", "diff_hi"] < 0  # the paired interval excludes 0
    assert comparison.selected == comparison.final == "recalibrated"
    assert comparison.verdict.startswith("recalibrating the shipped ensemble")
    assert "lowers the error by 0.30 [0.30, 0.30] eV" in comparison.verdict
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["adaptation"]["linear"]["intercept"] == pytest.approx(0.3, abs=1e-6)
    assert manifest["adaptation"]["linear"]["slope"] == pytest.approx(1.0, abs=1e-6)
    assert "recalibrating" in (out / "MODEL_CARD.md").read_text()


def test_a_lab_whose_gaps_are_the_zero_shot_predictions_keeps_the_shipped_model(tmp_path, zero_shot, records):
    table = write_lab(tmp_path / "lab.csv", zero_shot, records)
    out, comparison, _ = finetune(
        table, str(SNAPSHOT), tmp_path / "model", settings=FAST, cache=tmp_path / "cache", echo=None
    )
    assert comparison.table.loc["zero_shot", "mae"] < 1e-9
    assert comparison.final == "zero_shot"
    assert comparison.verdict.startswith("no evidence that adapting helps: keep the shipped model")
    assert json.loads((out / "manifest.json").read_text())["adaptation"]["recipe"] == "zero_shot"


def test_small_tables_get_fewer_folds_and_never_more_than_their_formulas():
    assert folds_for(20, 20) == 3 and folds_for(45, 45) == 4 and folds_for(300, 300) == 5
    assert folds_for(300, 2) == 2 and folds_for(300, 300, wanted=7) == 7


def test_settings_reject_an_unknown_key():
    with pytest.raises(ValueError, match="epoch"):
        FinetuneSettings.model_validate({"epoch": 3})


def _table(**adapted):
    import pandas as pd

    rows = {
        "zero_shot": dict(mae=0.30, mae_lo=0.25, mae_hi=0.35, n=100, diff_vs_zero_shot=0.0, diff_lo=0.0, diff_hi=0.0)
    }
    rows["recalibrated"] = dict(mae=0.30, mae_lo=0.25, mae_hi=0.35, n=100, **adapted)
    return pd.DataFrame.from_dict(rows, orient="index")


@pytest.mark.parametrize(
    ("diff", "final", "start"),
    [
        (
            (-0.08, -0.13, -0.03),
            "recalibrated",
            "recalibrating the shipped ensemble (a line fitted on your gaps) lowers the error by 0.08 [0.03, 0.13] eV",
        ),
        ((-0.05, -0.12, 0.02), "zero_shot", "no evidence that adapting helps: keep the shipped model. The best"),
        ((-0.003, -0.005, -0.001), "zero_shot", "no adaptation helps enough to matter: keep the shipped model"),
    ],
)
def test_the_verdict_ships_an_adaptation_only_when_its_paired_interval_lies_below_zero(diff, final, start):
    from cgcnn.finetune.protocol import select

    table = _table(diff_vs_zero_shot=diff[0], diff_lo=diff[1], diff_hi=diff[2])
    table.loc["recalibrated", "mae"] = 0.30 + diff[0]
    selected, shipped, verdict = select(table, FinetuneSettings())
    assert selected == "recalibrated" and shipped == final and verdict.startswith(start)
