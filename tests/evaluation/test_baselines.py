"""The boosted trees behind the tree baselines and averaged candidates (cgcnn.evaluation.baselines)."""

from __future__ import annotations

import numpy as np

from cgcnn.evaluation.baselines import BoostedTrees, magpie_features


def _fit_predict(trees: BoostedTrees, train, test) -> np.ndarray:
    model, _ = trees.fit(train, 0)
    test = np.asarray(test)
    return trees.predict(model, trees.features[test], None if trees.offset is None else trees.offset[test])


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
    pred = _fit_predict(model, train, test)
    assert np.abs(pred - y[test]).mean() < 0.3
    assert model.fit(train, 0)[1]["max_leaf_nodes"] in (7, 15)


def test_correction_trees_carry_the_pbe_gap_beyond_the_training_range():
    # exp = PBE + 1 eV exactly: the correction is a constant, which trees fit exactly, so the
    # correction target extrapolates to PBE gaps above every training gap; the gap target cannot
    rng = np.random.default_rng(1)
    pbe = np.concatenate([rng.uniform(0, 2, 90), [4.0, 5.0]])
    y = pbe + 1.0
    x = np.column_stack([rng.uniform(0, 1, len(pbe)), pbe])
    groups = [f"g{k}" for k in range(len(pbe))]
    train, test = np.arange(90), np.array([90, 91])
    grid = {"learning_rate": (0.1,), "max_leaf_nodes": (7,)}
    corrected = _fit_predict(BoostedTrees(x, y, groups, grid=grid, max_iter=50, offset=pbe), train, test)
    direct = _fit_predict(BoostedTrees(x, y, groups, grid=grid, max_iter=50), train, test)
    assert np.allclose(corrected, [5.0, 6.0], atol=1e-6)
    assert (direct < 3.01).all()  # never above the largest training gap (3 eV)


def test_correction_trees_leave_out_materials_without_a_pbe_gap_and_predict_nan_for_them():
    pbe = np.array([1.0, 2.0, np.nan, 1.5, 2.5, np.nan])
    y = np.array([2.0, 3.0, 9.0, 2.5, 3.5, 1.0])  # the NaN-PBE rows' labels would spoil a constant fit
    x = np.column_stack([np.zeros(6), pbe])
    trees = BoostedTrees(x, y, list("abcdef"), grid={"learning_rate": (0.1,), "max_leaf_nodes": (7,)}, offset=pbe)
    pred = _fit_predict(trees, np.array([0, 1, 2, 3]), np.array([4, 5]))
    assert np.isclose(pred[0], 3.5, atol=1e-6) and np.isnan(pred[1])
    model, _ = trees.fit_all()
    assert np.allclose(model.predict(x[[0, 1]]), 1.0, atol=1e-6)  # the bare model predicts the correction
