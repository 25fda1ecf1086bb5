"""Prediction (and embedding) that streams: constant memory for any number of structures, and shards.

:func:`predict_to_csv` reads its inputs lazily (CIF files one by one, a snapshot line by line,
a saved graph set slice by slice), builds graphs and predicts ``chunk_size`` structures at a
time, and writes rows as it goes, so peak memory depends on the chunk, not on the input.
The output is **atomic**: rows go to a temporary file beside ``output`` that is renamed when
the run completes (an interrupted run leaves no partial CSV; rerun it).

``shard=(k, n)`` keeps the k-th of n contiguous, deterministic blocks of the input (in input
order), so a batch engine (Slurm array, AWS Batch, a Kubernetes job) can spread a screening
run over machines; the shards' CSVs, concatenated in order without their headers, hold the
rows of the unsharded CSV (values equal to within 1e-5 eV: float32 sums depend on which
crystals share a batch).

(Just over 400 lines: the two streaming entry points, prediction and embedding, share the
lazy reading, chunking and reporting helpers kept here.)
"""

from __future__ import annotations

import itertools
import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cgcnn.data.building import (
    _is_snapshot,
    _saved_graph_set,
    build_graphs,
    duplicate,
    snapshot_pbe_gaps,
    snapshot_structures,
)
from cgcnn.data.cif import cif_items
from cgcnn.data.dataset import CrystalDataset
from cgcnn.data.descriptors import attach_inputs
from cgcnn.data.disorder import MARK
from cgcnn.data.graphset import GraphSet
from cgcnn.errors import DatasetError, OnError, Problem
from cgcnn.fileio import atomic_path, atomic_write_bytes
from cgcnn.prediction.inference import embed_dataset

log = logging.getLogger(__name__)


_NUMBER = re.compile(r"(?<![\w.])[+-]?\d+(\.\d+)?(e[+-]?\d+)?(?![\w])", re.I)


def reason_kind(p: Problem) -> str:
    """A problem's reason without the file it names, its details in parentheses and its numbers
    (``#``), so that problems of one kind count together in a summary."""
    reason = p.reason
    head, sep, rest = reason.partition(": ")
    if sep and ("/" in head or head.lower().endswith((".cif", ".gz", ".mcif"))):
        reason = rest
    return _NUMBER.sub("#", reason.split(" (")[0].split("; pymatgen:")[0])


@dataclass
class ScreeningSummary:
    """What a streaming run did: rows written, skipped items and warnings (counts by kind)."""

    written: int = 0
    skipped: int = 0
    warned: int = 0
    reasons: Counter = field(default_factory=Counter)
    warnings: Counter = field(default_factory=Counter)
    examples: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, problems: list[Problem]) -> None:
        for p in problems:
            if p.kind == "warning":
                self.warned += 1
                self.warnings[reason_kind(p)] += 1
                continue
            self.skipped += 1
            self.reasons[reason_kind(p)] += 1
            if len(self.examples) < 20:
                self.examples.append(p)

    def __str__(self) -> str:
        rate = f" ({self.written / self.seconds:.3g} structures/s)" if self.seconds >= 1 else ""
        text = f"{self.written} predictions in {self.seconds:.1f} s{rate}; {self.skipped} skipped"
        if self.reasons:
            text += ": " + "; ".join(f"{n} × {r}" for r, n in self.reasons.most_common())
        if self.warned:
            text += f"; {self.warned} warning(s): " + "; ".join(f"{n} × {r}" for r, n in self.warnings.most_common())
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
        graphs = GraphSet.read(saved)
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


def _chunk_graphs(
    chunk, seen: dict, model, workers: int, on_error: OnError, strict: bool, on_item, disorder: str = "refuse"
) -> tuple[GraphSet, list[Problem]]:
    """Graphs of one chunk, leaving out ids already read in an earlier chunk (a problem each,
    naming both files)."""
    if isinstance(chunk, GraphSet):
        if on_item is not None:
            for _ in chunk.ids:
                on_item()
        return chunk, []
    repeats = [duplicate(i, seen[i], s, on_error) for i, s in chunk if i in seen]
    if repeats and on_error == "error":
        raise DatasetError(str(repeats[0]))
    fresh = [(i, s) for i, s in chunk if i not in seen]
    seen.update(fresh)
    notes: list[Problem] = []
    graphs, problems = build_graphs(
        fresh,
        model.loaded.graph_config,
        workers=workers,
        on_error=on_error,
        progress=False,
        strict=strict,
        on_item=on_item,
        notes=notes,
        disorder=disorder,
    )
    for _ in repeats:
        if on_item is not None:
            on_item()
    return graphs, repeats + problems + notes


def _built_chunks(
    items,
    start: int,
    stop: int,
    chunk_size: int,
    model,
    workers: int,
    on_error: OnError,
    strict: bool = False,
    on_item=None,
    disorder: str = "refuse",
) -> Iterator[tuple[list | GraphSet, GraphSet, list[Problem]]]:
    """(the chunk's input items, graphs, problems) of every chunk, read and built when the caller asks for
    it; an id already read in an earlier chunk is a duplicate (a problem).  Building the next
    chunk while the current one is predicted was measured slower on 2 cores (the graph
    workers and torch's threads compete), so the stages take turns."""
    earlier: dict = {}
    for chunk in _chunks(items, start, stop, chunk_size):
        graphs, problems = _chunk_graphs(chunk, earlier, model, workers, on_error, strict, on_item, disorder)
        yield chunk, graphs, problems


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
    strict: bool = False,
    report=None,
    disorder: str = "refuse",
) -> ScreeningSummary:
    """Predict every structure of ``inputs`` with ``model`` (a :class:`~cgcnn.prediction.predictor.Predictor`)
    chunk by chunk, writing rows of ``model.columns`` (``material_id, prediction_ev,
    prediction_std_ev, n_members`` and, for PBE-aware models, ``pbe_gap_ev, pbe_gap_source``)
    in input order to ``output`` (atomically; ``None``: standard output).  ``pbe``: known
    PBE gaps by material id; for a Materials Project snapshot, its ``band_gap`` values are
    used for the materials ``pbe`` does not name.

    ``disorder`` (``refuse``, ``end-members``, ``orderings``; :mod:`cgcnn.data.disorder`)
    says what becomes of partially occupied sites; with a method, a column ``disorder``
    names it for each such structure (empty for the others).  ``strict`` refuses structures
    whose CIF parser warnings say they may not be what the file says; ``report`` is called with every problem and warning as it happens (the command line
    prints each one), the summary counts them by kind.

    Raises:
        DatasetError: no structure could be read (nothing is written), ``output`` is a
            folder, or with ``on_error="error"`` the first bad item.
    """
    from tqdm import tqdm

    _check_output(output, inputs)
    total, items = _lazy_items(inputs)  # inputs are listed / counted once, then read lazily
    given = set(pbe or ())
    seen: set[str] = set()
    if model.pbe_aware:  # a snapshot's own PBE gaps count as given; the user's take precedence
        pbe = {**snapshot_pbe_gaps(inputs), **(pbe or {})}
    start, stop = shard_bounds(total, *shard)
    summary, t0 = ScreeningSummary(), time.perf_counter()
    bar = tqdm(total=stop - start, desc="predict", unit="struct", disable=not progress, file=sys.stderr)
    columns = list(model.columns) + (["disorder"] if disorder != "refuse" else [])
    with _sink(output) as fh:
        fh.write(",".join(columns) + "\n")
        chunks = _built_chunks(
            items, start, stop, chunk_size, model, workers, on_error, strict, lambda: bar.update(1), disorder
        )
        for chunk, graphs, problems in chunks:
            ds = CrystalDataset(graphs, None, model.loaded.features, on_error=on_error)
            if getattr(model, "backbone", None) is not None:  # CHGNet reads the structures themselves
                from cgcnn.prediction.backbone import BackboneModelError, structures_of

                if isinstance(chunk, GraphSet):
                    raise BackboneModelError(
                        "a CHGNet model reads structures, not a saved graph set: give CIF files or a snapshot"
                    )
                ds.structures = structures_of(chunk, set(ds.ids))
            _tell(summary, problems + ds.problems, report)
            seen.update(graphs.ids)
            seen.update(p.item_id for p in problems)
            if len(ds):
                table = model.predict_dataset(ds, pbe=stand_in_pbe(pbe, ds.ids) if disorder != "refuse" else pbe)
                if disorder != "refuse":
                    table = merge_ordered(table, disorder)
                table[columns].to_csv(fh, header=False, index=False, float_format="%.6f")
                summary.written += len(table)
        bar.close()
        summary.seconds = time.perf_counter() - t0
        if model.pbe_aware and shard == (0, 1):  # a shard sees only part of the inputs
            _tell(summary, unused_pbe_ids(given, seen), report)
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
    strict: bool = False,
    report=None,
) -> tuple[ScreeningSummary, int, int]:
    """Crystal features of every structure of ``inputs``, streamed like :func:`predict_to_csv`:
    inputs are read, built and embedded ``chunk_size`` at a time, so the graphs of one chunk
    are in memory, never all of them; only the features themselves (``atom_fea_len +
    h_fea_len`` floats per structure) accumulate.  Writes ``.npz`` with ``material_id``,
    ``conv``, ``hidden`` atomically.  Returns (summary, conv width, hidden width)."""
    import io

    import numpy as np
    from tqdm import tqdm

    _check_output(output, inputs)
    total, items = _lazy_items(inputs)
    summary, t0 = ScreeningSummary(), time.perf_counter()
    ids, conv, hidden = [], [], []
    bar = tqdm(total=total, desc="embed", unit="struct", disable=not progress, file=sys.stderr)
    chunks = _built_chunks(items, 0, total, chunk_size, model, workers, on_error, strict, lambda: bar.update(1))
    for _, graphs, problems in chunks:
        ds = CrystalDataset(graphs, None, model.loaded.features, on_error=on_error)
        _tell(summary, problems + ds.problems, report)
        if len(ds):
            attach_inputs(ds, model.loaded.model_config, fidelity=model.fidelity)
            c, h = embed_dataset(model.loaded, ds, batch_size=model.batch_size, device=model.device)
            ids += ds.ids
            conv.append(c)
            hidden.append(h)
            summary.written += len(ds)
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


def stand_in_pbe(pbe: Mapping[str, float] | None, ids: list[str]) -> Mapping[str, float] | None:
    """Known PBE gaps also under the ids of the ordered structures that stand for a disordered one."""
    if not pbe:
        return pbe
    out = dict(pbe)
    for i in ids:
        base = i.split(MARK)[0]
        if base != i and base in pbe:
            out[i] = pbe[base]
    return out


def merge_ordered(table: pd.DataFrame, method: str) -> pd.DataFrame:
    """One row per structure: the rows of the ordered structures that stand for a disordered
    one (ids ``<id>#ordered-<k>-w<weight>``) become their weighted mean, with the spread of
    the mixture (``sqrt(sum w (std^2 + (p - mean)^2))``), the interval spanning every
    ordering's, in domain only when every ordering is, and ``disorder`` naming the method;
    other rows are kept as they are (``disorder`` empty)."""
    ids = table["material_id"].astype(str)
    marked = ids.str.contains(MARK, regex=False)
    out = table.assign(disorder="")
    if not marked.any():
        return out
    base = ids.str.split(MARK, regex=False).str[0]
    weight = ids.str.rsplit("-w", n=1).str[1].where(marked, "1").astype(float)
    rows = []
    for key, group in out.assign(_base=base, _w=weight).groupby("_base", sort=False):
        if len(group) == 1 and not marked[group.index[0]]:
            rows.append(group.iloc[0].drop(["_base", "_w"]))
            continue
        w = group["_w"].to_numpy() / group["_w"].sum()
        mean = float(np.sum(w * group["prediction_ev"]))
        row = group.iloc[0].drop(["_base", "_w"]).copy()
        row["material_id"] = key
        row["prediction_ev"] = mean
        row["prediction_std_ev"] = float(
            np.sqrt(np.sum(w * (group["prediction_std_ev"] ** 2 + (group["prediction_ev"] - mean) ** 2)))
        )
        if "pbe_gap_ev" in group:
            row["pbe_gap_ev"] = float(np.sum(w * group["pbe_gap_ev"]))
        if "prediction_lo_ev" in group:  # the interval spans every ordering's; in domain only if all are
            row["prediction_lo_ev"] = float(group["prediction_lo_ev"].min())
            row["prediction_hi_ev"] = float(group["prediction_hi_ev"].max())
            row["in_domain"] = bool(group["in_domain"].all())
            row["domain_note"] = "; ".join(
                dict.fromkeys(n for note in group["domain_note"] for n in note.split("; ") if n)
            )
        row["disorder"] = f"{method} ({len(group)} ordered structures)"
        rows.append(row)
    return pd.DataFrame(rows).reset_index(drop=True)


def _tell(summary: ScreeningSummary, problems: list[Problem], report) -> None:
    summary.add(problems)
    if report is not None:
        for p in problems:
            report(p)


def unused_pbe_ids(
    given: set[str], seen: set[str], *, name: str = "--pbe-gaps", hint: str = "ids are file names without the suffix"
) -> list[Problem]:
    """A warning when ids given PBE gaps name no input structure (a typo would silently fall
    back to a predicted PBE gap); an ordering or a block counts for its file's id.  ``name``
    and ``hint``: what the gaps were given as, and how the inputs are named."""
    bases = {i.split(MARK)[0] for i in seen} | {i.split(":", 1)[0] for i in seen}
    unused = sorted(given - seen - bases)
    if not unused:
        return []
    why = f"{len(unused)} id(s) name no input structure and were not used (first: {unused[0]}); {hint}"
    return [Problem(name, why, kind="warning")]


def _check_output(output, inputs=None) -> None:
    """Refuse an ``output`` that is a folder, or one of the input files (it would be overwritten)."""
    if output is None:
        return
    out = Path(output)
    if out.is_dir():
        raise DatasetError(f"--output {output} is a folder; give a file name, e.g. {out / 'predictions.csv'}")
    paths = [inputs] if isinstance(inputs, (str, Path)) else list(inputs or ())
    if out.exists() and any(isinstance(p, (str, Path)) and Path(p).is_file() and out.samefile(p) for p in paths):
        raise DatasetError(f"--output {output} is one of the inputs and would be overwritten; give another file name")


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
