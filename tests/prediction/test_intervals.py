"""Conformal intervals (cgcnn.prediction.intervals): facts checked by hand and by simulation."""

import math

import numpy as np
import pytest

from cgcnn.prediction.intervals import Intervals, conformal_quantile, interval_coverage, min_scores


def test_conformal_quantile_is_the_ceil_n_plus_1_q_th_smallest_score():
    scores = [5, 1, 9, 3, 7, 2, 8, 4, 6]  # 1..9 shuffled
    assert conformal_quantile(scores, 0.9) == 9  # ceil(10 * 0.9) = 9th smallest
    assert conformal_quantile(scores, 0.5) == 5  # ceil(10 * 0.5) = 5th
    assert conformal_quantile(scores, 0.95) == math.inf  # ceil(9.5) = 10 > 9 scores
    assert min_scores(0.9) == 9 and min_scores(0.95) == 19


@pytest.mark.parametrize("level", [0.0, 1.0, 1.5, -0.1])
def test_a_level_outside_zero_one_is_refused(level):
    with pytest.raises(ValueError, match="between 0 and 1"):
        conformal_quantile([1, 2, 3], level)


@pytest.mark.parametrize("normaliser", ["spread", "constant"])
def test_coverage_on_new_exchangeable_data_is_the_level(normaliser):
    # heteroscedastic, heavy-tailed errors whose scale the spread knows
    rng = np.random.default_rng(0)

    def draw(n):
        spread = rng.uniform(0.05, 0.5, n)
        return spread, spread * rng.standard_t(3, n)

    s_cal, e_cal = draw(2000)
    iv = Intervals.fit(e_cal, s_cal, ["in_domain"] * 2000, normaliser)
    s_new, e_new = draw(20000)
    pred = np.full(20000, 10.0)
    lo, hi = iv.bounds(pred, s_new, ["in_domain"] * 20000, 0.9)
    assert 0.88 <= interval_coverage(pred + e_new, lo, hi) <= 0.92
    if normaliser == "spread":  # the width follows spread + floor (the median spread)
        a, b = np.argmax(s_new), np.argmin(s_new)
        assert (hi - lo)[a] / (hi - lo)[b] == pytest.approx((s_new[a] + iv.floor) / (s_new[b] + iv.floor))


def test_each_category_has_its_own_width_and_small_ones_borrow_from_out_of_domain():
    errors = np.r_[np.full(50, 0.1), np.full(50, 1.0), [2.0, 2.0]]
    cats = ["in_domain"] * 50 + ["out_of_domain"] * 50 + ["pbe_predicted"] * 2
    iv = Intervals.fit(errors, np.zeros(102), cats, "constant")
    half = iv.half_widths(np.zeros(3), ["in_domain", "out_of_domain", "pbe_predicted"], 0.9)
    assert half.tolist() == [0.1, 1.0, 1.0]  # 2 scores are too few for 90 %: out_of_domain's are used
    assert iv.quantile("pbe_predicted", 0.9) == (1.0, "out_of_domain")
    assert iv.quantile("never_seen", 0.9)[1] == "out_of_domain"


def test_the_lower_bound_is_never_below_zero_and_the_calibration_round_trips():
    iv = Intervals.fit(np.full(20, 1.0), np.full(20, 0.2), ["in_domain"] * 20, "spread")
    assert iv.floor == pytest.approx(0.2)  # the median spread
    lo, hi = iv.bounds(np.array([0.3, 3.0]), np.array([0.2, 0.2]), ["in_domain"] * 2, 0.9)
    assert lo[0] == 0.0 and hi[0] == pytest.approx(1.3) and lo[1] == pytest.approx(2.0)
    again = Intervals.from_dict(iv.to_dict())
    assert again.bounds(np.array([3.0]), np.array([0.2]), ["in_domain"], 0.9)[1][0] == pytest.approx(hi[1])
