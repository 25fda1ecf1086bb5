"""Prediction (and embedding) that streams: constant memory for any number of structures, and shards.

:func:`predict_to_csv` reads its inputs lazily (CIF files one by one, a snapshot line by line,
a saved graph set slice by slice), builds graphs and predicts ``chunk_size`` structures at a
time, and writes rows as it goes, so peak memory depends on the chunk, not on the input.
The output is **atomic**: rows go to a temporary file beside ``output`` that is renamed when
the run completes (an interrupted run leaves no partial CSV; rerun it).

``shard=(k, n)`` keeps the k-th of n contiguous, deterministic blocks of the input (in input
order), so a batch engine (Slurm array, AWS Batch, a Kubernetes job) can spread a screening
run over machines; the shards' CSVs, concatenated in order without their headers, are
exactly the unsharded CSV.
"""

from __future__ import annotations

import itertools
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cgcnn.data.building import (
    _is_snapshot,
    _saved_graph_set,
    build_graphs,
    cif_items,
    snapshot_pbe_gaps,
    snapshot_structures,
)
from cgcnn.data.dataset import CrystalDataset
from cgcnn.data.descriptors import attach_inputs
from cgcnn.data.graphset import GraphSet
from cgcnn.errors import DatasetError, OnError, Problem
from cgcnn.fileio import atomic_path, atomic_write_bytes
from cgcnn.prediction.inference import embed_dataset

log = logging.getLogger(__name__)


@dataclass
class ScreeningSummary:
    """What a streaming run did: rows written, skipped items (counts by reason, first examples)."""

    written: int = 0
    skipped: int = 0
    reasons: Counter = field(default_factory=Counter)
    examples: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, problems: list[Problem]) -> None:
        for p in problems:
            self.skipped += 1
            self.reasons[p.reason.split(" (")[0][:80]] += 1
            if len(self.examples) < 20:
                self.examples.append(p)

    def __str__(self) -> str:
        rate = self.written / self.seconds if self.seconds else float("nan")
        text = f"{self.written} predictions in {self.seconds:.1f} s ({rate:.0f} structures/s); {self.skipped} skipped"
        if self.reasons:
            text += ": " + "; ".join(f"{n} × {r}" for r, n in self.reasons.most_common(5))
        return text


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"K/N"`` (1-based K, as job arrays count) -> (k, n) with 0 <= k < n."""
    if not text:
        return 0, 1
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise DatasetError(f"--shard {text!r}: give K/N, e.g. 3/10 for the third of ten parts") from None
    if not 1 <= k <= n:
        raise DatasetError(f"--shard {text!r}: K must be between 1 and N")
    return k - 1, n


def shard_bounds(total: int, k: int, n: int) -> tuple[int, int]:
    """Start and stop of the k-th (0-based) of n contiguous blocks of ``total`` items."""
    return total * k // n, total * (k + 1) // n


def _lazy_items(inputs) -> tuple[int, Iterator]:
    """(number of items, lazy iterator of ``(id, structure)`` pairs or of graph-set slices)."""
    paths = [Path(inputs)] if isinstance(inputs, (str, Path)) else [Path(x) for x in inputs]
    saved = _saved_graph_set(paths[0]) if len(paths) == 1 else None
    if saved is not None:
        graphs = GraphSet.load_npz(saved) if saved.suffix == ".npz" else GraphSet.read_json(saved)
        return len(graphs), iter([("__graphs__", graphs)])
    if len(paths) == 1 and _is_snapshot(paths[0]):
        total = sum(1 for _ in snapshot_structures(paths[0]))  # one cheap pass to size the shards
        return total, snapshot_structures(paths[0])
    items = cif_items(paths)  # a listing of paths; the files are read lazily
    return len(items), iter(items)


def _chunks(items: Iterator, start: int, stop: int, chunk_size: int) -> Iterator[list | GraphSet]:
    first = next(items, None)
    if first is not None and first[0] == "__graphs__":
        graphs = first[1]
        for a in range(start, stop, chunk_size):
            yield graphs.subset(graphs.ids[a : min(a + chunk_size, stop)])
        return
    items = itertools.islice(itertools.chain([first] if first is not None else [], items), start, stop)
    while chunk := list(itertools.islice(items, chunk_size)):
        yield chunk


def _chunk_graphs(chunk, seen: set[str], model, workers: int, on_error: OnError) -> tuple[GraphSet, list[Problem]]:
    """Graphs of one chunk, leaving out ids already written by an earlier chunk (a problem each)."""
    if isinstance(chunk, GraphSet):
        return chunk, []
    repeats = [Problem(i, "duplicate material id (first occurrence kept)") for i, _ in chunk if i in seen]
    if repeats and on_error == "error":
        raise DatasetError(str(repeats[0]))
    fresh = [(i, s) for i, s in chunk if i not in seen]
    graphs, problems = build_graphs(
        fresh, model.loaded.graph_config, workers=workers, on_error=on_error, progress=False
    )
    return graphs, repeats + problems


def _built_chunks(
    items, start: int, stop: int, chunk_size: int, model, workers: int, on_error: OnError
) -> Iterator[tuple[int, GraphSet, list[Problem]]]:
    """(input count, graphs, problems) of every chunk, read and built when the caller asks for
    it; an id already built in an earlier chunk is a duplicate (a problem).  Building the next
    chunk while the current one is predicted was measured slower on 2 cores (the graph
    workers and torch's threads compete), so the stages take turns."""
    earlier: set[str] = set()
    for chunk in _chunks(items, start, stop, chunk_size):
        graphs, problems = _chunk_graphs(chunk, earlier, model, workers, on_error)
        earlier.update(graphs.ids)
        yield len(chunk), graphs, problems


def predict_to_csv(
    model,
    inputs,
    output: str | Path | None,
    *,
    chunk_size: int = 1024,
    shard: tuple[int, int] = (0, 1),
    workers: int = 1,
    on_error: OnError = "skip",
    progress: bool = True,
    pbe: Mapping[str, float] | None = None,
) -> ScreeningSummary:
    """Predict every structure of ``inputs`` with ``model`` (a :class:`~cgcnn.prediction.predictor.Predictor`)
    chunk by chunk, writing rows of ``model.columns`` (``material_id, prediction_ev,
    prediction_std_ev, n_members`` and, for PBE-aware models, ``pbe_gap_ev, pbe_gap_source``)
    in input order to ``output`` (atomically; ``None``: standard output).  ``pbe``: known
    PBE gaps by material id; for a Materials Project snapshot, its ``band_gap`` values are
    used for the materials ``pbe`` does not name.

    Raises:
        DatasetError: no structure could be read (nothing is written), or with
            ``on_error="error"`` the first bad item.
    """
    from tqdm import tqdm

    total, items = _lazy_items(inputs)  # inputs are listed / counted once, then read lazily
    if model.pbe_aware:  # a snapshot's own PBE gaps count as given; the user's take precedence
        pbe = {**snapshot_pbe_gaps(inputs), **(pbe or {})}
    start, stop = shard_bounds(total, *shard)
    summary, t0 = ScreeningSummary(), time.perf_counter()
    bar = tqdm(total=stop - start, desc="predict", unit="struct", disable=not progress, file=sys.stderr)
    with _sink(output) as fh:
        fh.write(",".join(model.columns) + "\n")
        for n_in, graphs, problems in _built_chunks(items, start, stop, chunk_size, model, workers, on_error):
            ds = CrystalDataset(graphs, None, model.loaded.features, on_error=on_error)
            summary.add(problems + ds.problems)
            if len(ds):
                table = model.predict_dataset(ds, pbe=pbe)
                table[model.columns].to_csv(fh, header=False, index=False, float_format="%.6f")
                summary.written += len(ds)
            bar.update(n_in)
        bar.close()
        summary.seconds = time.perf_counter() - t0
        if summary.written == 0 and (stop > start or total == 0):  # an empty shard of a larger input is fine
            first = f" (first: {summary.examples[0]})" if summary.examples else ""
            raise DatasetError(f"no structure could be read from the input; {summary.skipped} skipped{first}")
    return summary


def embed_to_npz(
    model,
    inputs,
    output: str | Path,
    *,
    chunk_size: int = 1024,
    workers: int = 1,
    on_error: OnError = "skip",
    progress: bool = True,
) -> tuple[ScreeningSummary, int, int]:
    """Crystal features of every structure of ``inputs``, streamed like :func:`predict_to_csv`:
    inputs are read, built and embedded ``chunk_size`` at a time, so the graphs of one chunk
    are in memory, never all of them; only the features themselves (``atom_fea_len +
    h_fea_len`` floats per structure) accumulate.  Writes ``.npz`` with ``material_id``,
    ``conv``, ``hidden`` atomically.  Returns (summary, conv width, hidden width)."""
    import io

    import numpy as np
    from tqdm import tqdm

    total, items = _lazy_items(inputs)
    summary, t0 = ScreeningSummary(), time.perf_counter()
    ids, conv, hidden = [], [], []
    bar = tqdm(total=total, desc="embed", unit="struct", disable=not progress, file=sys.stderr)
    for n_in, graphs, problems in _built_chunks(items, 0, total, chunk_size, model, workers, on_error):
        ds = CrystalDataset(graphs, None, model.loaded.features, on_error=on_error)
        summary.add(problems + ds.problems)
        if len(ds):
            attach_inputs(ds, model.loaded.model_config, fidelity=model.fidelity)
            c, h = embed_dataset(model.loaded, ds, batch_size=model.batch_size, device=model.device)
            ids += ds.ids
            conv.append(c)
            hidden.append(h)
            summary.written += len(ds)
        bar.update(n_in)
    bar.close()
    summary.seconds = time.perf_counter() - t0
    if not ids:
        first = f" (first: {summary.examples[0]})" if summary.examples else ""
        raise DatasetError(f"no structure could be read from the input; {summary.skipped} skipped{first}")
    buf = io.BytesIO()
    conv_a, hidden_a = np.concatenate(conv), np.concatenate(hidden)
    np.savez_compressed(buf, material_id=np.array(ids), conv=conv_a, hidden=hidden_a)
    atomic_write_bytes(output, buf.getvalue())
    return summary, conv_a.shape[1], hidden_a.shape[1]


class _sink:
    """A text file written atomically (renamed on success), or standard output."""

    def __init__(self, output):
        self.output = output

    def __enter__(self):
        if self.output is None:
            return sys.stdout
        self._ctx = atomic_path(self.output)
        self._path = self._ctx.__enter__()
        self._fh = open(self._path, "w", newline="")
        return self._fh

    def __exit__(self, *exc):
        if self.output is None:
            return False
        self._fh.close()
        return self._ctx.__exit__(*exc)
