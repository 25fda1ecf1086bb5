"""Cross-validation folds and the inner split (cgcnn.evaluation.folds)."""

from __future__ import annotations

import numpy as np
import pytest

from cgcnn.evaluation.folds import gap_bins, grouped_folds, inner_split

# 40 materials, 25 formulas: 10 formulas appear twice (polymorphs), 5 three times...
GROUPS = (
    [f"F{k}" for k in range(15)]
    + [f"P{k}" for k in range(5) for _ in range(2)]
    + [f"T{k}" for k in range(5) for _ in range(3)]
)
GAPS = np.linspace(0.1, 4.9, len(GROUPS))


def test_folds_never_split_a_formula_and_cover_every_material_once_per_repeat():
    folds = grouped_folds(GROUPS, GAPS, k=5, repeats=2, seed=0)
    assert len(folds) == 10
    for r in (0, 1):
        tests = np.concatenate([f.test for f in folds if f.repeat == r])
        assert sorted(tests.tolist()) == list(range(len(GROUPS)))
    for f in folds:
        assert not set(f.train) & set(f.test)
        train_groups = {GROUPS[p] for p in f.train}
        assert not train_groups & {GROUPS[p] for p in f.test}


def test_repeats_shuffle_differently_and_are_reproducible():
    a = grouped_folds(GROUPS, GAPS, k=5, repeats=2, seed=0)
    b = grouped_folds(GROUPS, GAPS, k=5, repeats=2, seed=0)
    assert all(np.array_equal(x.test, y.test) for x, y in zip(a, b))
    assert any(not np.array_equal(a[k].test, a[k + 5].test) for k in range(5))


def test_too_few_formulas_for_k_folds_is_refused():
    with pytest.raises(ValueError, match="too few"):
        grouped_folds(["A", "A", "B"], [1, 2, 3], k=5)


def test_gap_bins_are_quantiles():
    assert gap_bins([0.1, 0.2, 0.3, 0.4], n_bins=2).tolist() == [0, 0, 1, 1]


def test_inner_split_keeps_formulas_together_inside_the_training_positions():
    train = np.arange(20, 40)
    fit, val = inner_split(GROUPS, train, val_fraction=0.3, seed=1)
    assert set(fit) | set(val) == set(train) and not set(fit) & set(val)
    assert not {GROUPS[p] for p in fit} & {GROUPS[p] for p in val}
    assert len(val) > 0


def test_cluster_folds_hold_out_whole_composition_clusters():
    from cgcnn.evaluation.folds import cluster_folds

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, (8, 3))
    features = np.repeat(centres, 12, axis=0) + rng.normal(0, 0.1, (96, 3))  # 8 tight clusters of 12
    features[1] = features[0]  # two polymorphs of one composition
    folds = cluster_folds(features, k=4, clusters=8, seed=0)
    assert len(folds) == 4
    tests = np.concatenate([f.test for f in folds])
    assert sorted(tests.tolist()) == list(range(96))  # every material tested exactly once
    cluster = np.arange(96) // 12
    for f in folds:
        assert not set(cluster[f.test]) & set(cluster[f.train])  # a cluster is never split
        assert len(f.test) == 24  # GroupKFold balances: two clusters per fold
    assert any(0 in f.test and 1 in f.test for f in folds)


def test_class_folds_hold_out_each_large_class_whole_and_the_rare_ones_together():
    from cgcnn.evaluation.folds import class_folds

    classes = ["oxide"] * 10 + ["halide"] * 6 + ["boride"] * 2 + ["hydride"] * 1
    folds = class_folds(classes, min_size=5, seed=3)
    held = [sorted({classes[p] for p in f.test}) for f in folds]
    assert held == [["oxide"], ["halide"], ["boride", "hydride"]]  # largest first, the rare ones together
    assert sorted(np.concatenate([f.test for f in folds]).tolist()) == list(range(len(classes)))
    for f in folds:
        assert not {classes[p] for p in f.test} & {classes[p] for p in f.train}  # a class never straddles
        assert len(f.train) + len(f.test) == len(classes) and f.seed == 3 and f.repeat == 0
    # one class only (or every class rare): nothing to hold out and train on
    assert class_folds(["oxide"] * 8, min_size=5) == [] and class_folds(classes, min_size=50) == []
    assert len(class_folds(classes, min_size=6)) == 3  # the 6 halides are large enough for a fold of their own
    assert [len(f.test) for f in class_folds(classes, min_size=7)] == [10, 9]  # ... not at 7: with the rare ones
