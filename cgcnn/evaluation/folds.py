"""Cross-validation folds: grouped by formula, chemistry shift, class held out; the inner split.

The study makes every choice by K-fold cross-validation on DS2: folds are **grouped by
reduced formula** (polymorphs never straddle training and test), stratified by gap where
possible (:class:`sklearn.model_selection.StratifiedGroupKFold` on gap quantile bins), and
repeated with several seeds.  The study's one fold loop (:func:`cgcnn.study.engine.cross_validate`)
runs any recipe on these folds; choices inside a fit (early stopping, hyper-parameters) use only
its training positions, through :func:`fold_inner_split`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Fold:
    """One outer fold: positions into the dataset (``train`` and ``test`` disjoint)."""

    repeat: int
    fold: int
    seed: int
    train: np.ndarray
    test: np.ndarray


def gap_bins(gaps: Sequence[float], n_bins: int = 5) -> np.ndarray:
    """Quantile bin of every gap (for stratification); ties fall into one bin."""
    g = np.asarray(gaps, dtype=np.float64)
    edges = np.unique(np.quantile(g, np.linspace(0, 1, n_bins + 1)[1:-1]))
    return np.searchsorted(edges, g, side="right")


def grouped_folds(
    groups: Sequence[str], gaps: Sequence[float], *, k: int = 5, repeats: int = 2, seed: int = 0, n_bins: int = 5
) -> list[Fold]:
    """``k`` folds × ``repeats`` over positions ``0..n-1``, grouped by ``groups`` (reduced
    formulas) and stratified by gap bin; repeat ``r`` shuffles with seed ``seed + r``.

    Every position is in exactly one test fold per repeat, and no group is split.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    groups = np.asarray([str(g) for g in groups])
    if len(np.unique(groups)) < k:
        raise ValueError(f"{len(np.unique(groups))} formulas are too few for {k} grouped folds")
    y = gap_bins(gaps, n_bins)
    positions = np.arange(len(groups))
    folds = []
    for r in range(repeats):
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed + r)
        for f, (train, test) in enumerate(splitter.split(positions, y, groups)):
            folds.append(Fold(r, f, seed + r, np.sort(train), np.sort(test)))
    return folds


def cluster_folds(features: np.ndarray, *, k: int = 5, clusters: int = 25, seed: int = 0) -> list[Fold]:
    """``k`` **chemistry-shift** folds: the materials are clustered by composition (k-means
    with ``clusters`` clusters on standardised ``features``, e.g. Magpie) and whole clusters
    are held out together (sklearn's ``GroupKFold`` on the cluster labels, which balances
    fold sizes), so a test material's chemistry is absent from its training set — as it is
    for a user's new compound.  Materials with the same composition share a cluster, so no
    formula is split either.  One repeat (``repeat = 0``)."""
    from sklearn.cluster import KMeans
    from sklearn.model_selection import GroupKFold

    x = np.asarray(features, dtype=np.float64)
    std = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(std > 1e-12, std, 1.0)
    n_clusters = min(int(clusters), len(np.unique(x, axis=0)))
    if n_clusters < k:
        raise ValueError(f"{n_clusters} composition clusters are too few for {k} folds")
    labels = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(x)
    positions = np.arange(len(x))
    return [
        Fold(0, f, seed, np.sort(train), np.sort(test))
        for f, (train, test) in enumerate(GroupKFold(n_splits=k).split(positions, groups=labels))
    ]


def class_folds(classes: Sequence[str], *, min_size: int = 30, seed: int = 0) -> list[Fold]:
    """**Class-held-out** folds: each material class (e.g. the anion class of
    :mod:`cgcnn.data.material_classes`) with at least ``min_size`` materials is one fold's test
    set, the rarer classes together are one more, so a test material's whole class is absent
    from its training set.  Folds are ordered by test-set size (largest first); one repeat.
    Empty when that gives fewer than two folds (nothing could be held out and trained on)."""
    labels = np.asarray([str(c) for c in classes], dtype=object)
    names, counts = np.unique(labels, return_counts=True)
    big = {str(n) for n, c in zip(names, counts) if c >= max(int(min_size), 1)}
    groups = [np.flatnonzero(labels == n) for n in big] + [np.flatnonzero(~np.isin(labels, list(big)))]
    groups = sorted((g for g in groups if len(g)), key=lambda g: (-len(g), str(labels[g[0]])))
    if len(groups) < 2:
        return []
    everything = np.arange(len(labels))
    return [Fold(0, f, seed, np.setdiff1d(everything, test), np.sort(test)) for f, test in enumerate(groups)]


def inner_split(
    groups: Sequence[str], positions: Sequence[int], *, val_fraction: float = 0.15, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split training ``positions`` into (fit, validation) by group (formula), about
    ``val_fraction`` of the groups in validation — for early stopping inside a fold."""
    pos = np.asarray(positions, dtype=np.int64)
    g = np.asarray([str(groups[p]) for p in pos])
    unique = np.unique(g)
    rng = np.random.default_rng(seed)
    n_val = max(1, int(round(len(unique) * val_fraction)))
    val_groups = set(rng.choice(unique, size=n_val, replace=False))
    is_val = np.array([x in val_groups for x in g])
    return np.sort(pos[~is_val]), np.sort(pos[is_val])


def fold_inner_split(
    groups: Sequence[str], fold, val_fraction: float, train: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The inner (fit, validation) split of an outer ``fold`` (anything with ``seed`` and
    ``fold``; ``train`` defaults to ``fold.train``): :func:`inner_split` seeded by
    the fold (``1000 * seed + fold``) — the one place every fold's early stopping is split."""
    positions = fold.train if train is None else train
    return inner_split(groups, positions, val_fraction=val_fraction, seed=1000 * fold.seed + fold.fold)
