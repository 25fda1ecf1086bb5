"""Regression metrics and baselines (cgcnn.evaluation.metrics), checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cgcnn.evaluation.metrics import (
    LinearCorrection,
    baseline_table,
    regression_metrics,
    summarise_seeds,
)


def test_metrics_by_hand():
    m = regression_metrics([1, 2, 3], [1, 2, 4])
    assert m["mae"] == pytest.approx(1 / 3)
    assert m["rmse"] == pytest.approx(math.sqrt(1 / 3))
    assert m["max_error"] == 1.0
    assert m["r2"] == pytest.approx(0.5)  # 1 - 1 / ((1-2)² + 0 + (3-2)²)
    assert m["n"] == 3


def test_perfect_prediction():
    m = regression_metrics([0.5, 1.5, 4.0], [0.5, 1.5, 4.0])
    assert (m["mae"], m["rmse"], m["max_error"], m["r2"], m["n"]) == (0.0, 0.0, 0.0, 1.0, 3)


def test_pairs_with_a_missing_value_are_dropped_and_counted():
    m = regression_metrics([1.0, np.nan, 3.0, 4.0], [1.0, 2.0, np.nan, 5.0])
    assert m["n"] == 2  # only (1, 1) and (4, 5) are scored
    assert m["mae"] == pytest.approx(0.5)
    assert m["max_error"] == 1.0


def test_no_scorable_pair_gives_nan_and_zero():
    m = regression_metrics([np.nan], [1.0])
    assert m["n"] == 0 and math.isnan(m["mae"]) and math.isnan(m["rmse"])


def test_constant_truth_has_no_r2_and_shapes_must_agree():
    assert math.isnan(regression_metrics([2.0, 2.0], [1.0, 3.0])["r2"])
    with pytest.raises(ValueError, match="shapes differ"):
        regression_metrics([1, 2], [1, 2, 3])


def test_linear_correction_recovers_an_exact_line():
    pbe = np.array([0.0, 0.5, 1.0, 2.0, 3.5])
    exp = 1.3 * pbe + 0.4
    fit = LinearCorrection.fit(np.append(pbe, np.nan), np.append(exp, 9.0))  # the NaN pair is ignored
    assert fit.slope == pytest.approx(1.3) and fit.intercept == pytest.approx(0.4)
    assert fit.predict([10.0]) == pytest.approx([13.4])


def test_linear_correction_needs_two_points():
    with pytest.raises(ValueError, match="at least two"):
        LinearCorrection.fit([1.0, np.nan], [2.0, 3.0])


def test_baseline_table_skips_absent_columns_and_counts_present_values():
    df = pd.DataFrame(
        {
            "exp": [1.0, 2.0, 3.0, 4.0],
            "pbe": [0.5, 1.5, 2.5, 3.5],  # always 0.5 eV low
            "hse": [1.0, 2.0, np.nan, "n/a"],  # two values, both right
        }
    )
    table = baseline_table(df, "exp", {"PBE": "pbe", "HSE06": "hse", "G0W0": "g0w0"})
    assert table.index.tolist() == ["PBE", "HSE06"]
    assert table.loc["PBE", "mae"] == pytest.approx(0.5) and table.loc["PBE", "n"] == 4
    assert table.loc["HSE06", "mae"] == 0.0 and table.loc["HSE06", "n"] == 2
    assert baseline_table(df, "exp", ["pbe"]).index.tolist() == ["pbe"]
    assert baseline_table(df, "exp", ["absent"]).empty


def test_summarise_seeds_gives_mean_and_spread():
    per_seed = pd.DataFrame(
        {
            "model": ["M2", "M2", "control", "control"],
            "mae": [0.2, 0.4, 0.5, 0.5],
            "rmse": [0.3, 0.5, 0.6, 0.6],
            "r2": [0.9, 0.7, 0.5, 0.5],
            "n": [29] * 4,
        }
    )
    s = summarise_seeds(per_seed)
    assert s.loc["M2", "mae"] == pytest.approx(0.3)
    assert s.loc["M2", "mae_std"] == pytest.approx(math.sqrt(0.02))  # sample std of 0.2, 0.4
    assert s.loc["control", "mae_std"] == 0.0
    assert s.loc["M2", "seeds"] == 2 and s.loc["M2", "n"] == 29
