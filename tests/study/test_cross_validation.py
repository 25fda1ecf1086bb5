"""cgcnn.study.cross_validation and final_models: model names, within-fold choices, recipes chosen by CV,
the CV table.  The fits themselves run in tests/test_notebooks.py (02-ml-dev/02-cross-validation)."""

import numpy as np
import pandas as pd
import pytest

from cgcnn.study import cross_validation, display, final_models
from cgcnn.study.cross_validation import (
    choose_recipes,
    common_materials,
    cv_summary,
    within_fold_choices,
)


def test_model_keys():
    assert cross_validation.model_key("convs") == "m2_convs"
    assert cross_validation.model_key("control") == "control"
    assert set(display.MODEL_LABELS) >= {
        "pbe",
        "pbe_linear",
        "gbm_composition",
        "gbm_composition_pbe",
        "hse06",
        "g0w0",
        "m1",
        "m2",
        "control",
    }


def _cand(model, lr, fold, inner):
    return {
        "model": model,
        "policy": model.removeprefix("m2_"),
        "lr": lr,
        "repeat": 0,
        "fold": fold,
        "inner_val_mae": inner,
    }


def _pred(model, lr, fold, ids, values):
    return pd.DataFrame({"model": model, "lr": lr, "repeat": 0, "fold": fold, "material_id": ids, "prediction": values})


def test_within_fold_choices_use_only_the_inner_validation_mae():
    # fold 0 tests a, b; fold 1 tests c.  Inner MAE picks lr 0.1 for none in fold 0, 0.01 in fold 1;
    # m2 is 'head' in fold 0 (0.1 < 0.2) and 'none' in fold 1.
    candidates = pd.DataFrame(
        [
            _cand("m2_none", 0.1, 0, 0.2),
            _cand("m2_none", 0.01, 0, 0.3),
            _cand("m2_head", 0.1, 0, 0.1),
            _cand("m2_none", 0.1, 1, 0.5),
            _cand("m2_none", 0.01, 1, 0.4),
            _cand("m2_head", 0.1, 1, 0.9),
        ]
    )
    preds = pd.concat(
        [
            _pred("m2_none", 0.1, 0, ["a", "b"], [1.0, 1.0]),
            _pred("m2_none", 0.01, 0, ["a", "b"], [2.0, 2.0]),
            _pred("m2_head", 0.1, 0, ["a", "b"], [3.0, 3.0]),
            _pred("m2_none", 0.1, 1, ["c"], [4.0]),
            _pred("m2_none", 0.01, 1, ["c"], [5.0]),
            _pred("m2_head", 0.1, 1, ["c"], [6.0]),
        ]
    )
    out = within_fold_choices(candidates, preds, ["none", "head"]).set_index(["model", "material_id"])["prediction"]
    assert out[("m2_none", "a")] == 1.0 and out[("m2_none", "c")] == 5.0
    assert out[("m2", "a")] == 3.0 and out[("m2", "c")] == 5.0
    assert out[("m2_head", "c")] == 6.0


def test_recipes_are_chosen_by_cv_mae_and_the_control_is_never_m2():
    truth = pd.Series({"a": 1.0, "b": 2.0})
    preds = pd.concat(
        [
            _pred("m2_none", 0.1, 0, ["a", "b"], [1.5, 2.5]),  # MAE 0.5
            _pred("m2_none", 0.01, 0, ["a", "b"], [1.1, 2.1]),  # MAE 0.1
            _pred("m2_head", 0.1, 0, ["a", "b"], [1.3, 2.3]),  # MAE 0.3
            _pred("control", 0.1, 0, ["a", "b"], [1.0, 2.0]),  # MAE 0.0
        ]
    )
    choices, selected = choose_recipes(preds, truth, ["none", "head"])
    assert choices.loc["m2_none", "lr"] == 0.01 and choices.loc["m2_none", "cv_mae"] == pytest.approx(0.1)
    assert selected == "none"
    assert choices["selected"].to_dict() == {"m2_none": True, "m2_head": False, "control": False}


def test_cv_table_is_paired_on_the_materials_every_model_predicts():
    truth = pd.Series({"a": 1.0, "b": 2.0, "c": 3.0})
    rows = []
    for r in (0, 1):
        rows += [
            ("pbe", r, "a", 0.5),
            ("pbe", r, "b", 1.0),
            ("pbe", r, "c", np.nan),  # no PBE gap for c
            ("pbe_linear", r, "a", 1.2),
            ("pbe_linear", r, "b", 2.2),
            ("pbe_linear", r, "c", np.nan),
            ("m2", r, "a", 1.0 + 0.1 * r),
            ("m2", r, "b", 2.0),
            ("m2", r, "c", 3.0),
            ("control", r, "a", 1.5),
            ("control", r, "b", 2.5),
            ("control", r, "c", 3.5),
        ]
    preds = pd.DataFrame(rows, columns=["model", "repeat", "material_id", "prediction"]).assign(fold=0)
    assert common_materials(preds) == ["a", "b"]
    table = cv_summary(preds, truth)
    assert (table["n"] == 2).all()
    assert table.loc["pbe_linear", "mae"] == pytest.approx(0.2)
    assert table.loc["m2", "mae"] == pytest.approx(0.025) and table.loc["m2", "mae_std"] == pytest.approx(
        np.std([0, 0.05], ddof=1)
    )
    assert (table["best_baseline"] == "pbe_linear").all()
    assert table.loc["m2", "diff_vs_best_baseline"] == pytest.approx(0.025 - 0.2)
    assert table.loc["m2", "diff_vs_control"] == pytest.approx(0.025 - 0.5)
    assert table.index[0] == "m2"  # sorted by MAE


def test_missing_adaptation_names_the_stage_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="final-models stage"):
        final_models.load_adaptation(tmp_path)
