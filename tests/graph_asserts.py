"""Assertions shared by the graph tests (importable: tests/ is on the path)."""

import numpy as np


def assert_same_graphs(a, b) -> None:
    """Two graph sets hold the same graphs, exactly (not close)."""
    assert a.ids == b.ids
    assert a.config == b.config
    for m in a.ids:
        ga, gb = a[m], b[m]
        assert np.array_equal(ga.atomic_numbers, gb.atomic_numbers)
        assert np.array_equal(ga.edge_index, gb.edge_index)
        assert np.array_equal(ga.distances, gb.distances)
