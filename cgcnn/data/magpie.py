"""Magpie composition features, as matminer computes them, for many compositions at once.

The features are those of matminer's ``ElementProperty.from_preset("magpie", impute_nan=True)``
(Ward et al., npj Comput. Mater. 2, 16028 (2016)): for each of 22 element properties
(matminer's order), the minimum, maximum, range, fraction-weighted mean, fraction-weighted
mean absolute deviation and mode (the value of the most abundant element; the smallest value
when several are equally abundant) — 132 numbers.

matminer's element table is used as is (read once); the six statistics are computed here with
numpy over padded [compositions, elements] arrays rather than by ``featurize`` one composition
at a time (~3 ms each, which made composition features the slowest part of predicting with
the shipped ensemble).  A test checks the numbers against matminer's ``featurize``.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence

import numpy as np

from cgcnn.errors import DatasetError

STATS = ("minimum", "maximum", "range", "mean", "avg_dev", "mode")


@functools.lru_cache(maxsize=1)
def element_table() -> tuple[np.ndarray, tuple[str, ...]]:
    """([119, 22] property table indexed by atomic number, NaN where matminer has no value;
    the property names), from matminer's Magpie data with its NaN imputation."""
    from matminer.featurizers.composition import ElementProperty
    from pymatgen.core.periodic_table import Element

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        featurizer = ElementProperty.from_preset("magpie", impute_nan=True)
    if tuple(featurizer.stats) != STATS:  # a matminer release that changed the preset
        raise RuntimeError(f"matminer's magpie preset has statistics {featurizer.stats}, expected {STATS}")
    props = featurizer.data_source.all_elemental_props
    table = np.full((119, len(featurizer.features)), np.nan)
    for z in range(1, 119):
        symbol = Element.from_Z(z).symbol
        for j, name in enumerate(featurizer.features):
            value = props[name].get(symbol)
            if value is not None:
                table[z, j] = float(value)
    return table, tuple(featurizer.features)


def magpie_statistics(z: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """Magpie features of compositions given as padded arrays.

    Args:
        z: [n, k] atomic numbers of each composition's elements (any value where padded).
        amount: [n, k] amounts of those elements (atoms or formula units; 0 = padding).

    Returns:
        [n, 132] float64, property-major: the 6 statistics of property 0, then of property 1, ….

    Raises:
        DatasetError: an element matminer has no data for.
    """
    table, _ = element_table()
    z = np.asarray(z, dtype=np.int64)
    amount = np.asarray(amount, dtype=np.float64)
    present = amount > 0
    z = np.where(present, z, 0)
    missing = sorted({int(a) for a in np.unique(z[present]) if not 0 < a < len(table) or np.isnan(table[a]).any()})
    if missing:
        raise DatasetError(
            f"no Magpie element data for atomic number(s) {missing}; composition features cannot be computed"
        )
    data = table[z]  # [n, k, p]; padding rows are NaN and masked below
    mask = present[..., None]
    weight = (amount / amount.sum(axis=1, keepdims=True))[..., None]
    values = np.where(mask, data, 0.0)
    minimum = np.where(mask, data, np.inf).min(axis=1)
    maximum = np.where(mask, data, -np.inf).max(axis=1)
    mean = (weight * values).sum(axis=1)
    avg_dev = (weight * np.abs(values - mean[:, None, :]) * mask).sum(axis=1)
    # matminer: the entries whose weight is close to the largest (np.isclose on the amounts)
    top = present & np.isclose(amount, amount.max(axis=1, keepdims=True))
    mode = np.where(top[..., None], data, np.inf).min(axis=1)
    stats = np.stack([minimum, maximum, maximum - minimum, mean, avg_dev, mode], axis=2)  # [n, p, 6]
    return stats.reshape(len(z), -1)


def pad(compositions: Sequence[dict[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    """{atomic number: amount} per composition -> padded ``(z, amount)`` arrays [n, k]."""
    k = max((len(c) for c in compositions), default=1)
    z = np.zeros((len(compositions), k), dtype=np.int64)
    amount = np.zeros((len(compositions), k))
    for i, comp in enumerate(compositions):
        z[i, : len(comp)] = list(comp)
        amount[i, : len(comp)] = list(comp.values())
    return z, amount


def of_formulas(formulas: Sequence[str]) -> np.ndarray:
    """Magpie features of formula strings, [n, 132] (each distinct formula parsed once)."""
    from pymatgen.core import Composition

    distinct = list(dict.fromkeys(formulas))
    comps = [{el.Z: amt for el, amt in Composition(f).element_composition.items()} for f in distinct]
    if not distinct:
        return np.zeros((0, len(STATS) * len(element_table()[1])))
    row = {f: k for k, f in enumerate(distinct)}
    return magpie_statistics(*pad(comps))[[row[f] for f in formulas]]


def of_graphs(graphs) -> np.ndarray:
    """Magpie features of every crystal of a :class:`~cgcnn.data.graphset.GraphSet`, from its atoms."""
    counts = np.diff(graphs.node_ptr)
    crystal = np.repeat(np.arange(len(counts)), counts)
    key = crystal * 256 + graphs.atomic_numbers  # (crystal, element) pairs, sorted by crystal
    pairs, amount = np.unique(key, return_counts=True)
    owner, z = pairs // 256, pairs % 256
    per = np.bincount(owner, minlength=len(counts))
    slot = np.arange(len(pairs)) - np.repeat(np.cumsum(per) - per, per)
    z_pad = np.zeros((len(counts), max(int(per.max(initial=0)), 1)), dtype=np.int64)
    amount_pad = np.zeros(z_pad.shape)
    z_pad[owner, slot] = z
    amount_pad[owner, slot] = amount
    return magpie_statistics(z_pad, amount_pad)
