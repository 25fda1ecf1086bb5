"""Interval and domain measures on out-of-fold tables (cgcnn.prediction.coverage): facts checkable by hand."""

import numpy as np
import pandas as pd
import pytest

from cgcnn.prediction.coverage import (
    class_coverage_table,
    class_gap,
    conditioning_table,
    coverage_table,
    cross_fitted,
    reasons_table,
    separation,
)
from cgcnn.prediction.domain import Domain, FeatureSpace
from cgcnn.prediction.intervals import Intervals


def _notes_of_every_rule() -> list[str]:
    """One crystal per rule, each note written by the domain rules themselves."""
    d = Domain(FeatureSpace.fit(np.arange(6.0)[:, None]), 1.0, {"Na": 9, "Cl": 9, "Tc": 1}, max_pbe_ev=4.0)
    feats = np.array([[2.0], [2.0], [40.0], [2.0], [2.0], [2.0], [2.0], [2.0]])
    elements = [frozenset({"Na", "Cl"})] * 8
    elements[1] = frozenset({"Tc", "Cl"})
    pred = np.array([2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 0.01, 6.0])
    source = ["given", "given", "given", "predicted", "given", "given", "given", "given"]
    pbe = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 4.5, 1.0, 1.0])
    _, notes, _, _ = d.assess(feats, elements, pred, source, pbe_gaps=pbe)
    return notes


def test_each_domain_rule_counts_only_the_rows_it_flagged():
    notes = _notes_of_every_rule()
    oof = pd.DataFrame(
        {
            "protocol": "p",
            "pbe_input": "given",
            "domain_note": notes,
            "truth": 1.0,
            "prediction": 1.0 + np.arange(len(notes)),  # row k is k eV off
        }
    )
    table = reasons_table(oof).set_index("rule")
    assert table["n"].to_dict() == {
        "rare element": 1,
        "far from the training crystals": 1,
        "PBE gap predicted": 1,
        "given PBE gap above the training range": 1,
        "predicted gap near zero": 1,
        "predicted gap above the training range": 1,
    }
    assert table.loc["given PBE gap above the training range", "mae"] == 5.0
    assert table.loc["predicted gap near zero", "mae"] == 6.0


def _oof(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    err = rng.normal(0.0, 0.3, n)
    return pd.DataFrame(
        {
            "protocol": "p",
            "fold": np.arange(n) % 4,
            "pbe_input": "given",
            "material_id": [f"m{k}" for k in range(n)],
            "truth": 2.0,
            "prediction": 2.0 + err,
            "spread": 0.1,
            "category": "in_domain",
            "in_domain": np.arange(n) < 30,
        }
    )


def test_cross_fitted_bounds_come_from_a_calibration_without_the_fold_s_materials():
    oof = _oof()
    oof.loc[0, "prediction"] = 100.0  # one huge error in fold 0
    bounds = cross_fitted(oof, "constant", 0.9)
    rest = oof[oof["fold"] != 0]
    iv = Intervals.fit(rest["prediction"] - rest["truth"], rest["spread"], rest["category"], "constant")
    part = oof[oof["fold"] == 0]
    lo, hi = iv.bounds(part["prediction"], part["spread"], part["category"], 0.9)
    assert np.allclose(bounds.loc[part.index, "lo"], lo) and np.allclose(bounds.loc[part.index, "hi"], hi)
    assert not (bounds.loc[0, "lo"] <= 2.0 <= bounds.loc[0, "hi"])  # its own error did not widen it


def test_coverage_table_counts_rows_inside_their_interval():
    oof = _oof()
    bounds = oof.assign(lo=oof["prediction"] - 0.5, hi=oof["prediction"] + 0.5)
    table = coverage_table(bounds, 0.9).set_index("subset")
    inside = ((bounds["prediction"] - bounds["truth"]).abs() <= 0.5).mean()
    assert table.loc["all", "coverage"] == inside and table.loc["all", "mean_width_ev"] == 1.0
    assert table.loc["in domain", "n"] == 30 and table.loc["out of domain", "n"] == 10


def test_separation_is_out_minus_in():
    oof = _oof()
    oof["prediction"] = 2.0 + np.where(oof["in_domain"], 0.1, 0.5)
    row = separation(oof, n_boot=200).iloc[0]
    assert np.isclose(row["mae_in"], 0.1) and np.isclose(row["mae_out"], 0.5)
    assert np.isclose(row["diff_out_minus_in"], 0.4) and row["diff_lo"] <= 0.4 + 1e-9 <= row["diff_hi"] + 2e-9


def _two_class_oof(n: int = 400) -> pd.DataFrame:
    """Oxides err 3x as much as halides (normal errors), in one category, two protocols."""
    rng = np.random.default_rng(1)
    oxide = np.arange(n) % 2 == 0
    err = rng.normal(0.0, 1.0, n) * np.where(oxide, 0.6, 0.2)
    one = _oof(n).assign(
        fold=np.arange(n) % 5, prediction=2.0 + err, in_domain=True, anion_class=np.where(oxide, "oxide", "halide")
    )
    return pd.concat([one.assign(protocol="a"), one.assign(protocol="b", fold=(np.arange(n) // 7) % 5)])


def test_class_coverage_counts_each_class_and_class_gap_is_zero_at_the_level():
    oof = _two_class_oof(40)
    wide = oof.assign(lo=oof["prediction"] - 10, hi=oof["prediction"] + 10)
    table = class_coverage_table(wide, 0.9)
    assert set(table["anion_class"]) == {"oxide", "halide"} and (table["n"] == 20).all()
    assert (table["coverage"] == 1.0).all()
    assert class_gap(table) == pytest.approx(0.1)  # every class covered at 100 % for a 90 % level
    assert class_gap(table.assign(coverage=0.9)) == 0.0


def test_intervals_per_class_bring_both_classes_near_the_level():
    oof = _two_class_oof()
    table = conditioning_table(oof, "constant", 0.9, min_class_scores=30).set_index(["min_class_scores", "protocol"])
    pooled, by_class = table.loc[0], table.loc[30]
    # one quantile for both: the oxides (3x the error) are under-covered, the halides over-covered
    assert (by_class["class_gap"] < pooled["class_gap"]).all()
    per_class = class_coverage_table(cross_fitted(oof, "constant", 0.9, 30), 0.9)
    assert ((per_class["coverage"] - 0.9).abs() < 0.06).all()
    single = class_coverage_table(cross_fitted(oof, "constant", 0.9, 0), 0.9).set_index(["protocol", "anion_class"])
    assert (single.xs("oxide", level="anion_class")["coverage"] < 0.85).all()
    assert (single.xs("halide", level="anion_class")["coverage"] > 0.95).all()


def test_calibrate_on_takes_the_scores_of_the_named_protocols_only():
    oof = _two_class_oof(200)
    # protocol b's rows err twice as much as protocol a's (same materials, other folds)
    oof.loc[oof["protocol"] == "b", "prediction"] = 2.0 + 2 * (oof.loc[oof["protocol"] == "b", "prediction"] - 2.0)
    width = {}
    for pool in (["a"], ["b"], None):
        b = cross_fitted(oof, "constant", 0.9, calibrate_on=pool)
        width[str(pool)] = (b["hi"] - b["lo"]).mean()
    assert width["['a']"] < width["None"] < width["['b']"]
    assert width["['b']"] / width["['a']"] == pytest.approx(2.0, rel=0.15)
    table = conditioning_table(oof, "constant", 0.9, 30, ["b"])
    assert list(dict.fromkeys(table["calibrated_on"])) == ["b", "a + b"]  # the configured pool, then all
