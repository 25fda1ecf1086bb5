"""cgcnn.study.ds3: DS3 only after the CV, scores with intervals, display tables."""

import numpy as np
import pandas as pd
import pytest

from cgcnn.study import display, ds3, profiles, rundir
from cgcnn.study.ds3 import error_by, score


def test_ds3_is_refused_before_the_cv_table_exists(tmp_path):
    with pytest.raises(rundir.CvMissingError, match="only after the cross-validation"):
        ds3.evaluate_ds3(tmp_path, profiles.load_profile("fixture"))


def test_score_uses_the_mean_prediction_over_seeds_and_keeps_the_per_seed_spread():
    truth = pd.Series({"a": 1.0, "b": 2.0})
    preds = pd.DataFrame(
        {
            "material_id": ["a", "b", "a", "b", "a", "b", "a", "b"],
            "model": ["m2", "m2", "m2", "m2", "pbe_linear", "pbe_linear", "control", "control"],
            "seed": [0, 0, 1, 1, np.nan, np.nan, 0, 0],
            "prediction": [1.5, 2.5, 0.5, 1.5, 0.0, 1.0, 1.2, 2.2],  # m2 seeds: +0.5 and -0.5 -> mean exact
        }
    )
    table = score(preds, truth, ["a", "b"], "pbe_linear")
    assert table.loc["m2", "mae"] == pytest.approx(0.0)
    assert table.loc["m2", "seed_mae"] == pytest.approx(0.5) and table.loc["m2", "seeds"] == 2
    assert table.loc["pbe_linear", "mae"] == pytest.approx(1.0) and np.isnan(table.loc["pbe_linear", "seed_mae_std"])
    assert table.loc["m2", "diff_vs_best_baseline"] == pytest.approx(-1.0)
    assert table.loc["m2", "diff_vs_control"] == pytest.approx(-0.2)
    assert table.loc["m2", "mae_lo"] <= table.loc["m2", "mae"] <= table.loc["m2", "mae_hi"]


def test_error_by_class_counts_and_averages():
    frame = pd.DataFrame(
        {"bg_exp": [1.0, 2.0, 3.0], "pred_m2": [1.5, 2.0, 2.0], "anion_class": ["oxide", "oxide", "halide"]}
    )
    table = error_by(frame, "anion_class", ["m2"])
    assert table.loc["oxide", "n"] == 2 and table.loc["oxide", "m2"] == pytest.approx(0.25)
    assert table.loc["halide", "m2"] == pytest.approx(1.0)


def test_display_table_shows_the_interval_and_the_paired_difference():
    summary = pd.DataFrame(
        {
            "label": ["M2"],
            "mae": [0.5],
            "mae_lo": [0.4],
            "mae_hi": [0.6],
            "rmse": [0.6],
            "r2": [0.75],
            "n": [29],
            "seeds": [3],
            "diff_vs_control": [-0.1],
            "diff_vs_control_lo": [-0.2],
            "diff_vs_control_hi": [0.05],
        },
        index=["m2"],
    )
    table = display.display_table(summary)
    assert table.loc["m2", "MAE [95% CI]"] == "0.500 [0.400, 0.600]"
    assert table.loc["m2", "Δ vs control"] == "-0.100 [-0.200, +0.050]"
