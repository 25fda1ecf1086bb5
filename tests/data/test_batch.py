"""Batching (cgcnn.data.batch)."""

from __future__ import annotations

import numpy as np
import pytest

from cgcnn.data.batch import make_batch

# -- batching --------------------------------------------------------------------------------


def test_batch_offsets_edge_indices_and_maps_atoms_to_crystals(tiny_dataset):
    positions = [tiny_dataset.ids.index(m) for m in ("NaCl-101", "Si-097", "CsCl-101")]
    batch = make_batch(tiny_dataset, positions)
    graphs = [tiny_dataset.graphs.graph(k) for k in positions]
    assert batch.num_graphs == 3
    assert batch.batch.tolist() == [0, 0, 1, 1, 2, 2]  # two atoms per crystal
    expected = np.concatenate([g.edge_index + 2 * k for k, g in enumerate(graphs)], axis=1)
    assert np.array_equal(batch.edge_index.numpy(), expected)
    assert np.array_equal(batch.distances.numpy(), np.concatenate([g.distances for g in graphs]))
    assert np.array_equal(batch.atomic_numbers.numpy(), np.concatenate([g.atomic_numbers for g in graphs]))
    assert np.array_equal(batch.y.numpy(), tiny_dataset.y[positions])
    # every edge stays inside its own crystal
    assert np.array_equal(batch.batch[batch.edge_index[0]], batch.batch[batch.edge_index[1]])


def test_batch_is_regular_only_when_every_atom_has_max_neighbors_edges(tiny_dataset, tiny_graph_config):
    m = tiny_graph_config.max_neighbors
    pos = {k: tiny_dataset.ids.index(k) for k in ("MgO-097", "LiF-103", "NaCl-103", "CsCl-099")}
    assert tiny_dataset.graphs.graph(pos["MgO-097"]).neighbour_counts().tolist() == [m, m]
    assert tiny_dataset.graphs.graph(pos["NaCl-103"]).neighbour_counts().tolist() == [6, 6]  # a/√2 > 4 Å
    assert make_batch(tiny_dataset, [pos["MgO-097"], pos["LiF-103"]]).regular == m
    assert make_batch(tiny_dataset, [pos["MgO-097"], pos["NaCl-103"]]).regular is None
    assert make_batch(tiny_dataset, [pos["CsCl-099"]]).regular is None  # 8 each, fewer than 12


def test_an_edge_cap_bounds_every_batch_keeps_the_order_and_isolates_a_crystal_over_it(tiny_dataset):
    from cgcnn.data.batch import iterate_batches

    edges = tiny_dataset._edge_counts
    cap = int(edges.max())  # the largest crystal just fits alone
    batches = list(iterate_batches(tiny_dataset, range(24), 10, max_edges=cap))
    assert np.concatenate([b.positions for b in batches]).tolist() == list(range(24))
    for b in batches:
        assert b.edge_index.shape[1] == edges[b.positions].sum() <= cap and b.num_graphs <= 10
    # greedy: the next crystal would not have fitted in the batch before
    for b, nxt in zip(batches, batches[1:]):
        assert b.num_graphs == 10 or edges[b.positions].sum() + edges[nxt.positions[0]] > cap
    # a cap below a crystal's edge count: that crystal is a batch of its own
    alone = list(iterate_batches(tiny_dataset, range(24), 10, max_edges=1))
    assert [b.num_graphs for b in alone] == [1] * 24
    assert [b.positions.tolist() for b in iterate_batches(tiny_dataset, range(24), 10)] == [
        list(range(0, 10)),
        list(range(10, 20)),
        list(range(20, 24)),
    ]  # no cap: crystal counts only


def test_prefetch_yields_the_same_batches_in_the_same_order(tiny_dataset):
    from cgcnn.data.batch import iterate_batches, prefetch

    plain = [b.positions.tolist() for b in iterate_batches(tiny_dataset, range(24), 5)]
    ahead = [b.positions.tolist() for b in prefetch(iterate_batches(tiny_dataset, range(24), 5), depth=2)]
    assert ahead == plain and len(plain) == 5


def test_prefetch_raises_the_producers_error_and_stops_when_abandoned(tiny_dataset):
    from cgcnn.data.batch import iterate_batches, prefetch

    def broken():
        yield from iterate_batches(tiny_dataset, range(10), 5)
        raise RuntimeError("bad batch")

    with pytest.raises(RuntimeError, match="bad batch"):
        list(prefetch(broken()))
    gen = prefetch(iterate_batches(tiny_dataset, range(24), 1), depth=1)
    next(gen)
    gen.close()  # the producer thread notices and ends
    import threading

    assert not [t for t in threading.enumerate() if t.name == "cgcnn-prefetch" and t.is_alive()]
