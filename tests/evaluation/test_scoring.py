"""What `cgcnn evaluate` reports, on a table small enough to check by hand."""

import pandas as pd
import pytest

from cgcnn.evaluation.scoring import scored_metrics, scored_sentence


def test_mae_interval_coverage_and_domain_split_of_four_materials():
    table = pd.DataFrame(
        {
            "material_id": ["a", "b", "c", "d"],
            "target_ev": [1.0, 2.0, 3.0, 4.0],
            "prediction_ev": [1.5, 2.0, 2.0, 4.5],  # errors 0.5, 0, 1, 0.5
            "prediction_lo_ev": [0.5, 1.0, 2.5, 4.4],
            "prediction_hi_ev": [1.6, 3.0, 3.5, 5.4],  # holds a, b, c; not d (4.0 < 4.4)
            "in_domain": [True, True, False, True],
        }
    )
    m = scored_metrics(table, level=0.9)
    assert m["mae"] == pytest.approx(0.5) and m["n"] == 4
    assert 0 <= m["mae_lo"] <= 0.5 <= m["mae_hi"] <= 1.0 and m["mae_ci_level"] == 0.95
    assert m["interval_level"] == 0.9 and m["interval_coverage"] == pytest.approx(0.75)
    assert m["interval_coverage_lo"] <= 0.75 <= m["interval_coverage_hi"] <= 1.0
    assert m["interval_mean_width_ev"] == pytest.approx((1.1 + 2.0 + 1.0 + 1.0) / 4)
    assert m["n_in_domain"] == 3 and m["mae_in_domain"] == pytest.approx(1 / 3) and m["mae_out_of_domain"] == 1.0
    assert scored_sentence(m).startswith(
        "MAE 0.500 eV [95 % CI"
    ) and "the 90 % interval covers 75 %" in scored_sentence(m)


def test_a_model_without_intervals_reports_the_mae_alone_and_nan_is_null():
    table = pd.DataFrame({"target_ev": [1.0], "prediction_ev": [1.25]})
    m = scored_metrics(table)
    assert m["mae"] == 0.25 and m["r2"] is None  # one material: R² undefined, JSON null
    assert "interval_coverage" not in m and "n_in_domain" not in m
    assert scored_sentence(m) == "MAE 0.250 eV [95 % CI 0.250, 0.250] on 1 materials"
