"""Bootstrap intervals and paired differences (cgcnn.evaluation.bootstrap)."""

from __future__ import annotations

import numpy as np
import pytest

from cgcnn.evaluation.bootstrap import bootstrap_mean, mae_ci, paired_difference_ci


def test_constant_sample_has_a_zero_width_interval():
    ci = bootstrap_mean([0.3] * 10)
    assert ci.n == 10 and np.allclose([ci.value, ci.lo, ci.hi], 0.3)


def test_interval_of_a_known_sample_matches_the_normal_approximation():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, 400)
    ci = bootstrap_mean(x, n_boot=4000, seed=1)
    half = 1.96 * x.std(ddof=1) / np.sqrt(x.size)  # ≈ 0.196
    assert ci.lo < x.mean() < ci.hi
    assert abs((ci.hi - ci.lo) / 2 - half) < 0.02


def test_mae_ci_ignores_missing_predictions():
    ci = mae_ci([1.0, 2.0, 3.0], [1.5, np.nan, 2.0])
    assert ci.n == 2 and ci.value == 0.75


def test_paired_difference_is_negative_when_the_first_model_is_better():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    better, worse = y + 0.1, y + np.array([0.5, -0.6, 0.4, -0.5])
    d = paired_difference_ci(y, better, worse)
    assert np.isclose(d.value, 0.1 - 0.5)
    assert d.hi < 0  # all four materials favour the first model


def test_group_difference_is_out_minus_in_and_certain_when_every_error_is_the_same_per_group():
    from cgcnn.evaluation.bootstrap import group_difference_ci

    diff, lo, hi = group_difference_ci([0.1, 0.1, 0.1, -0.5, 0.5], [True, True, True, False, False])
    assert diff == pytest.approx(0.4) and lo == pytest.approx(0.4) and hi == pytest.approx(0.4)
    assert all(np.isnan(group_difference_ci([0.1, 0.2], [True, True])))  # no material outside: no difference
