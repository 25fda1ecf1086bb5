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


def _two_classes(n_oxide=40, n_halide=40):
    """In domain: oxides err by 1 eV, halides by 0.1 eV (constant scores = the errors)."""
    errors = np.r_[np.full(n_oxide, 1.0), np.full(n_halide, 0.1)]
    classes = ["oxide"] * n_oxide + ["halide"] * n_halide
    return errors, ["in_domain"] * (n_oxide + n_halide), classes


def test_a_class_with_enough_scores_gets_its_own_quantile_within_its_category():
    errors, cats, classes = _two_classes()
    iv = Intervals.fit(errors, np.zeros(80), cats, "constant", classes=classes, min_class_scores=30)
    assert iv.quantile("in_domain", 0.9, "oxide") == (1.0, "in_domain/oxide")
    assert iv.quantile("in_domain", 0.9, "halide") == (pytest.approx(0.1), "in_domain/halide")
    # a class never seen in calibration, or no class given: the category's 80 scores (73rd smallest is 1.0)
    assert iv.quantile("in_domain", 0.9, "pnictide") == (1.0, "in_domain")
    assert iv.quantile("in_domain", 0.9) == (1.0, "in_domain")
    half = iv.half_widths(np.zeros(2), cats[:2], 0.9, ["halide", "oxide"])
    assert half.tolist() == pytest.approx([0.1, 1.0])


def test_a_class_cell_smaller_than_min_class_scores_uses_its_category():
    errors, cats, classes = _two_classes(n_oxide=40, n_halide=20)
    iv = Intervals.fit(errors, np.zeros(60), cats, "constant", classes=classes, min_class_scores=30)
    assert iv.quantile("in_domain", 0.9, "halide")[1] == "in_domain"  # 20 < 30
    off = Intervals.fit(errors, np.zeros(60), cats, "constant", classes=classes, min_class_scores=0)
    assert off.class_scores == {} and off.quantile("in_domain", 0.9, "oxide")[1] == "in_domain"


def test_class_scores_round_trip_and_a_calibration_saved_without_them_still_loads():
    errors, cats, classes = _two_classes()
    iv = Intervals.fit(errors, np.zeros(80), cats, "constant", classes=classes, min_class_scores=30)
    again = Intervals.from_dict(iv.to_dict())
    assert again.min_class_scores == 30 and again.quantile("in_domain", 0.9, "halide")[1] == "in_domain/halide"
    old = {k: v for k, v in iv.to_dict().items() if k in ("normaliser", "floor", "scores")}  # format before classes
    legacy = Intervals.from_dict(old)
    assert legacy.min_class_scores == 0 and legacy.quantile("in_domain", 0.9, "halide") == (1.0, "in_domain")


def test_one_class_per_material_or_a_clear_error():
    errors, cats, classes = _two_classes()
    iv = Intervals.fit(errors, np.zeros(80), cats, "constant", classes=classes, min_class_scores=30)
    with pytest.raises(ValueError, match="3 spreads, 3 categories and 1 classes"):
        iv.half_widths(np.zeros(3), cats[:3], 0.9, ["oxide"])


def test_the_distance_normaliser_widens_the_interval_with_the_distance_to_the_training_set():
    # errors grow with the distance to the nearest training crystal; the spread knows nothing
    rng = np.random.default_rng(1)

    def draw(n):
        d = rng.uniform(1.0, 9.0, n)
        return d, 0.1 * d * rng.standard_t(4, n)

    d_cal, e_cal = draw(3000)
    iv = Intervals.fit(e_cal, np.zeros(3000), ["in_domain"] * 3000, "distance", distances=d_cal)
    assert iv.floor == pytest.approx(np.median(d_cal))
    d_new, e_new = draw(20000)
    pred = np.full(20000, 10.0)
    lo, hi = iv.bounds(pred, np.zeros(20000), ["in_domain"] * 20000, 0.9, distances=d_new)
    assert 0.88 <= interval_coverage(pred + e_new, lo, hi) <= 0.92
    near, far = np.argmin(d_new), np.argmax(d_new)
    assert (hi - lo)[far] / (hi - lo)[near] == pytest.approx((d_new[far] + iv.floor) / (d_new[near] + iv.floor))
    again = Intervals.from_dict(iv.to_dict())
    assert again.bounds(pred[:1], np.zeros(1), ["in_domain"], 0.9, distances=d_new[:1])[1][0] == pytest.approx(hi[0])


def test_the_distance_normaliser_says_it_needs_distances():
    iv = Intervals.fit(np.ones(20), np.zeros(20), ["in_domain"] * 20, "distance", distances=np.ones(20))
    with pytest.raises(ValueError, match="needs each material's distance"):
        iv.bounds(np.ones(1), np.zeros(1), ["in_domain"], 0.9)
    with pytest.raises(ValueError, match="needs each material's distance"):
        Intervals.fit(np.ones(20), np.zeros(20), ["in_domain"] * 20, "distance")
