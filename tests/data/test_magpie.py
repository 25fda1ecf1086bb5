"""Vectorised Magpie features (cgcnn.data.magpie) against matminer's own ``featurize``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from cgcnn.data import magpie
from cgcnn.errors import DatasetError

# ties for the mode (AlN, GaAs: equal amounts), one element, many elements, fractions
FORMULAS = [
    "NaCl",
    "AlN",
    "GaAs",
    "Si",
    "Fe2O3",
    "Al2O3",
    "CsPbI3",
    "LiFePO4",
    "Cu2ZnSnS4",
    "YBa2Cu3O7",
    "Mg2Si",
    "BaTiO3",
    "Fe0.5Ni0.5",
    "K3Sb",
    "HfO2",
]


def matminer_features(formulas):
    from matminer.featurizers.composition import ElementProperty
    from pymatgen.core import Composition

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = ElementProperty.from_preset("magpie", impute_nan=True)
        return np.array([f.featurize(Composition(x)) for x in formulas])


def test_formula_features_equal_matminers_featurize():
    ours = magpie.of_formulas(FORMULAS)
    assert ours.shape == (len(FORMULAS), 132)
    np.testing.assert_allclose(ours, matminer_features(FORMULAS), rtol=1e-12, atol=1e-12)


def test_mode_of_equal_amounts_is_the_smallest_value_and_of_unequal_the_most_abundant():
    table, names = magpie.element_table()
    col = names.index("Number") * 6 + 5  # mode of the atomic number
    x = magpie.of_formulas(["GaAs", "Fe2O3", "O3Fe2"])
    assert x[0, col] == 31  # Ga (31) and As (33) equally abundant: the smaller
    assert x[1, col] == 8 and x[2, col] == 8  # O is the most abundant, whatever the order
    mean = names.index("Number") * 6 + 3
    assert x[1, mean] == pytest.approx((2 * 26 + 3 * 8) / 5)


def test_graph_features_equal_the_features_of_their_formulas(tiny_graphs):
    from pymatgen.core import Composition, Element

    formulas = []
    for k in range(len(tiny_graphs)):  # the formula of each crystal, written out from its atoms
        z, n = np.unique(
            tiny_graphs.atomic_numbers[tiny_graphs.node_ptr[k] : tiny_graphs.node_ptr[k + 1]], return_counts=True
        )
        formulas.append(Composition({Element.from_Z(int(a)): int(c) for a, c in zip(z, n)}).formula)
    np.testing.assert_allclose(magpie.of_graphs(tiny_graphs), matminer_features(formulas), rtol=1e-12, atol=1e-12)


def test_padding_and_order_of_elements_do_not_matter():
    a = magpie.magpie_statistics(np.array([[11, 17, 0]]), np.array([[1.0, 1.0, 0.0]]))
    b = magpie.magpie_statistics(np.array([[17, 11]]), np.array([[2.0, 2.0]]))
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_an_atomic_number_without_data_is_named():
    with pytest.raises(DatasetError, match=r"\[130\]"):
        magpie.magpie_statistics(np.array([[8, 130]]), np.array([[1.0, 1.0]]))
