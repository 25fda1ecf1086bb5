"""Baselines as cross-validation methods (cgcnn.evaluation.baselines)."""

from __future__ import annotations

import numpy as np

from cgcnn.evaluation.baselines import BoostedTrees, LinearPBE, RawPBE, magpie_features
from cgcnn.evaluation.folds import FoldContext

CTX = FoldContext(0, 0, 0)


def test_linear_correction_on_three_points_is_exact():
    pbe = np.array([0.0, 1.0, 2.0, 3.0])
    exp = 1.5 * pbe + 0.5  # exp = 1.5 PBE + 0.5 eV
    pred = LinearPBE(pbe, exp)(np.array([0, 1, 2]), np.array([3]), CTX)
    assert np.allclose(pred, [5.0])


def test_raw_pbe_returns_the_pbe_gap_and_nan_where_missing():
    pbe = np.array([0.5, np.nan, 2.0])
    assert np.allclose(RawPBE(pbe)([0], [1, 2], CTX), [np.nan, 2.0], equal_nan=True)


def test_magpie_features_have_132_columns_and_follow_the_composition():
    x = magpie_features(["NaCl", "NaCl", "GaAs"])
    assert x.shape == (3, 132)
    assert np.array_equal(x[0], x[1]) and not np.array_equal(x[0], x[2])


def test_boosted_trees_learn_a_feature_and_choose_from_the_grid():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 4, (120, 2))
    y = 2.0 * x[:, 0]
    groups = [f"g{k % 40}" for k in range(120)]
    model = BoostedTrees(x, y, groups, grid={"learning_rate": (0.1,), "max_leaf_nodes": (7, 15)}, max_iter=100)
    train, test = np.arange(100), np.arange(100, 120)
    pred = model(train, test, CTX)
    assert np.abs(pred - y[test]).mean() < 0.3
    assert model.chosen[0]["max_leaf_nodes"] in (7, 15)
