"""Batches of crystal graphs, torch_geometric style.

Node tensors are concatenated, edge indices shifted, and a ``batch`` vector maps every atom
to its crystal; gathering is a handful of vectorised numpy operations on the packed
:class:`~cgcnn.data.graphset.GraphSet` (no Python loop over crystals).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from cgcnn.data.dataset import CrystalDataset


@dataclass
class Batch:
    """A torch_geometric-style batch of crystal graphs.

    Shapes (N atoms, E edges, B crystals):
        atomic_numbers [N], edge_index [2, E] (row 0 neighbour, row 1 centre; global indices),
        distances [E], batch [N] (crystal of every atom), y [B] or None; ``inputs``: the
        per-crystal inputs of :mod:`cgcnn.data.descriptors` (``fidelity`` [B], ``pbe`` [B],
        ``composition`` [B, 132]) that the dataset carries.
    """

    atomic_numbers: torch.Tensor
    edge_index: torch.Tensor
    distances: torch.Tensor
    batch: torch.Tensor
    num_graphs: int
    y: torch.Tensor | None
    positions: np.ndarray
    regular: int | None = None  # M when every atom has exactly M edges (grouped by centre)
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)

    def _map(self, fn) -> Batch:
        def f(t):
            return None if t is None else fn(t)

        return Batch(
            f(self.atomic_numbers),
            f(self.edge_index),
            f(self.distances),
            f(self.batch),
            self.num_graphs,
            f(self.y),
            self.positions,
            self.regular,
            {k: fn(v) for k, v in self.inputs.items()},
        )

    def to(self, device) -> Batch:
        """The batch on ``device`` (asynchronous copies from pinned memory)."""
        return self._map(lambda t: t.to(device, non_blocking=True))

    def pin_memory(self) -> Batch:
        """The batch in page-locked memory, so that copies to a GPU overlap with compute."""
        return self._map(lambda t: t.pin_memory())


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + c)`` for every (s, c), vectorised."""
    total = int(counts.sum())
    offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
    return np.arange(total, dtype=np.int64) + offsets


def make_batch(dataset: CrystalDataset, positions: Sequence[int]) -> Batch:
    """Gather the crystals at ``positions`` into one :class:`Batch` (no Python loop)."""
    pos = np.asarray(positions, dtype=np.int64)
    gs = dataset.graphs
    nc, ec = dataset._node_counts[pos], dataset._edge_counts[pos]
    node_sel = _ranges(gs.node_ptr[pos], nc)
    edge_sel = _ranges(gs.edge_ptr[pos], ec)
    new_node_start = np.concatenate(([0], np.cumsum(nc)[:-1]))
    edge_index = gs.edge_index[:, edge_sel] + np.repeat(new_node_start, ec)
    return Batch(
        atomic_numbers=torch.from_numpy(gs.atomic_numbers[node_sel]),
        edge_index=torch.from_numpy(edge_index),
        distances=torch.from_numpy(gs.distances[edge_sel]),
        batch=torch.from_numpy(np.repeat(np.arange(len(pos), dtype=np.int64), nc)),
        num_graphs=len(pos),
        y=None if dataset.y is None else torch.from_numpy(dataset.y[pos]),
        positions=pos,
        regular=gs.config.max_neighbors if bool(gs.full[pos].all()) else None,
        inputs={k: torch.from_numpy(v[pos]) for k, v in dataset.inputs.items()},
    )


def iterate_batches(
    dataset: CrystalDataset,
    positions: Sequence[int],
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    max_edges: int | None = None,
) -> Iterator[Batch]:
    """Batches over ``positions``; shuffled with ``generator`` (reproducible) when asked.

    ``max_edges`` (inference) also caps the edges of a batch, so that the size of the edge
    tensors, and so peak memory, does not depend on how large the crystals are: consecutive
    crystals are grouped while their edges fit (a crystal larger than the cap is a batch of
    its own).  Order is kept either way.
    """
    pos = np.asarray(positions, dtype=np.int64)
    if shuffle:
        pos = pos[torch.randperm(len(pos), generator=generator).numpy()]
    for a, b in _spans(dataset._edge_counts[pos], batch_size, max_edges):
        yield make_batch(dataset, pos[a:b])


def _spans(edge_counts: np.ndarray, batch_size: int, max_edges: int | None) -> Iterator[tuple[int, int]]:
    """Greedy consecutive ``[a, b)`` spans of at most ``batch_size`` items and (when set)
    ``max_edges`` edges, each holding at least one item."""
    n = len(edge_counts)
    if max_edges is None:
        yield from ((k, min(k + batch_size, n)) for k in range(0, n, batch_size))
        return
    cum = np.concatenate(([0], np.cumsum(edge_counts, dtype=np.int64)))
    a = 0
    while a < n:
        b = int(np.searchsorted(cum, cum[a] + max_edges, side="right")) - 1  # last end that fits
        b = min(max(b, a + 1), a + batch_size, n)
        yield a, b
        a = b


def prefetch(batches: Iterator[Batch], depth: int = 2, *, pin: bool = False) -> Iterator[Batch]:
    """Prepare the next ``depth`` batches in a background thread while the caller computes
    (the gathering is numpy / torch work that releases the GIL), pinning them for GPU copies
    when ``pin``.  Same batches, same order; an error in the producer is raised here."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for b in batches:
                b = b.pin_memory() if pin else b
                while not stop.is_set():
                    try:
                        q.put(b, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # handed to the consumer
            q.put(exc)

    worker = threading.Thread(target=produce, name="cgcnn-prefetch", daemon=True)
    worker.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)
