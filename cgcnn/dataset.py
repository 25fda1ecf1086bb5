"""Graph sets, the on-disk graph cache, snapshot reading, and batching.

Graphs are built once (in parallel, with a progress bar) and cached on disk in compact
``.npz`` shards keyed by *structure content + graph settings*; training only ever reads
them.  A :class:`GraphSet` stores its graphs packed (concatenated arrays plus offsets) so
that a batch is gathered with a handful of vectorised numpy operations, torch_geometric
style: node tensors are concatenated, edge indices shifted, and a ``batch`` vector maps
every atom to its crystal.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import multiprocessing as mp
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from cgcnn.config import GraphConfig
from cgcnn.fileio import atomic_write_bytes  # re-exported: imported from here elsewhere
from cgcnn.graph import CrystalGraph, GraphError, structure_to_graph

log = logging.getLogger(__name__)

JSON_FORMAT = "cgcnn-da/graphs"
JSON_VERSION = 1
OnError = Literal["skip", "error"]


# --------------------------------------------------------------------------- problems
@dataclass(frozen=True)
class Problem:
    """An item that was skipped, and why."""

    item_id: str
    reason: str

    def __str__(self) -> str:
        return f"{self.item_id}: {self.reason}"


class DatasetError(ValueError):
    """Bad input that names the offending item."""


# --------------------------------------------------------------------------- graph sets
class GraphSet:
    """Crystal graphs of many materials, stored packed.

    Shapes (G graphs, N atoms in all, E edges in all):
        atomic_numbers [N] int64, node_ptr [G+1] int64,
        edge_index [2, E] int64 (indices local to each graph), distances [E] float32,
        edge_ptr [G+1] int64.
    """

    def __init__(
        self,
        ids: Sequence[str],
        atomic_numbers: np.ndarray,
        node_ptr: np.ndarray,
        edge_index: np.ndarray,
        distances: np.ndarray,
        edge_ptr: np.ndarray,
        config: GraphConfig,
    ):
        self.ids = list(ids)
        self.atomic_numbers = np.asarray(atomic_numbers, dtype=np.int64)
        self.node_ptr = np.asarray(node_ptr, dtype=np.int64)
        self.edge_index = np.asarray(edge_index, dtype=np.int64).reshape(2, -1)
        self.distances = np.asarray(distances, dtype=np.float32)
        self.edge_ptr = np.asarray(edge_ptr, dtype=np.int64)
        self.config = config
        if len(self.node_ptr) != len(self.ids) + 1 or len(self.edge_ptr) != len(self.ids) + 1:
            raise ValueError("node_ptr / edge_ptr must have one entry more than ids")
        if len(set(self.ids)) != len(self.ids):
            dup = next(i for i in self.ids if self.ids.count(i) > 1)
            raise DatasetError(f"duplicate material id {dup!r} in graph set")
        self._index = {m: k for k, m in enumerate(self.ids)}
        self._group_edges_by_centre()

    def _group_edges_by_centre(self) -> None:
        """Keep every graph's edges grouped by centre (stable), and note which graphs give
        every atom exactly ``max_neighbors`` edges (the model's fast "regular" path)."""
        n_graphs = len(self.ids)
        n_edges = np.diff(self.edge_ptr)
        node_start = np.repeat(self.node_ptr[:-1], n_edges)
        centre = self.edge_index[1] + node_start  # global centre index of every edge
        if len(centre) > 1 and (np.diff(centre) < 0).any():
            order = np.argsort(centre, kind="stable")  # graphs stay in place: offsets increase
            self.edge_index = self.edge_index[:, order]
            self.distances = self.distances[order]
            centre = centre[order]
        counts = np.bincount(centre, minlength=int(self.node_ptr[-1]))
        is_full = (counts == self.config.max_neighbors).astype(np.int8)
        n_nodes = np.diff(self.node_ptr)
        full = np.zeros(n_graphs, dtype=bool)
        has_nodes = n_nodes > 0
        if has_nodes.any():
            full[has_nodes] = np.minimum.reduceat(is_full, self.node_ptr[:-1][has_nodes]) == 1
        self.full = full

    # -- construction
    @classmethod
    def from_graphs(cls, ids: Sequence[str], graphs: Sequence[CrystalGraph], config: GraphConfig) -> "GraphSet":
        n_nodes = np.array([g.n_atoms for g in graphs], dtype=np.int64)
        n_edges = np.array([g.n_edges for g in graphs], dtype=np.int64)
        cat = (lambda xs, dt: np.concatenate(xs).astype(dt)) if graphs else (lambda xs, dt: np.zeros(0, dt))
        return cls(
            ids,
            cat([g.atomic_numbers for g in graphs], np.int64),
            np.concatenate(([0], np.cumsum(n_nodes))),
            np.concatenate([g.edge_index for g in graphs], axis=1) if graphs else np.zeros((2, 0), np.int64),
            cat([g.distances for g in graphs], np.float32),
            np.concatenate(([0], np.cumsum(n_edges))),
            config,
        )

    @classmethod
    def concat(cls, sets: Sequence["GraphSet"], config: GraphConfig) -> "GraphSet":
        graphs, ids = [], []
        for s in sets:
            if s.config != config:
                raise ValueError(f"graph settings differ: {s.config} vs {config}")
            ids += s.ids
            graphs += [s.graph(i) for i in range(len(s))]
        return cls.from_graphs(ids, graphs, config)

    # -- access
    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, material_id: str) -> bool:
        return material_id in self._index

    def position(self, material_id: str) -> int:
        try:
            return self._index[material_id]
        except KeyError:
            raise KeyError(f"material {material_id!r} is not in this graph set") from None

    def graph(self, k: int) -> CrystalGraph:
        a, b = self.node_ptr[k], self.node_ptr[k + 1]
        c, d = self.edge_ptr[k], self.edge_ptr[k + 1]
        return CrystalGraph(
            self.atomic_numbers[a:b].copy(), self.edge_index[:, c:d].copy(), self.distances[c:d].copy(), self.ids[k]
        )

    def __getitem__(self, material_id: str) -> CrystalGraph:
        return self.graph(self.position(material_id))

    def subset(self, ids: Iterable[str]) -> "GraphSet":
        ids = list(ids)
        return GraphSet.from_graphs(ids, [self[m] for m in ids], self.config)

    @property
    def n_atoms(self) -> np.ndarray:
        return np.diff(self.node_ptr)

    def __repr__(self) -> str:
        return f"GraphSet(n={len(self)}, atoms={len(self.atomic_numbers)}, settings={self.config.key()})"

    def equals(self, other: "GraphSet") -> bool:
        return (
            self.ids == other.ids
            and self.config == other.config
            and all(
                np.array_equal(getattr(self, f), getattr(other, f))
                for f in ("atomic_numbers", "node_ptr", "edge_index", "distances", "edge_ptr")
            )
        )

    # -- binary form
    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "ids": np.array(self.ids, dtype=object).astype(str),
            "atomic_numbers": self.atomic_numbers.astype(np.uint8 if self.atomic_numbers.max(initial=0) < 256 else np.int64),
            "node_ptr": self.node_ptr,
            "edge_index": self.edge_index.astype(np.int32),
            "distances": self.distances,
            "edge_ptr": self.edge_ptr,
            "config": np.array(json.dumps(self.config.to_dict())),
        }

    def save_npz(self, path: str | Path) -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, **self._arrays())
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load_npz(cls, path: str | Path) -> "GraphSet":
        with np.load(path, allow_pickle=False) as z:
            return cls(
                [str(i) for i in z["ids"]],
                z["atomic_numbers"].astype(np.int64),
                z["node_ptr"],
                z["edge_index"].astype(np.int64),
                z["distances"],
                z["edge_ptr"],
                GraphConfig.model_validate(json.loads(str(z["config"]))),
            )

    # -- JSON form
    def to_json_dict(self) -> dict:
        graphs = {}
        for k, m in enumerate(self.ids):
            g = self.graph(k)
            graphs[m] = {
                "atomic_numbers": g.atomic_numbers.tolist(),
                "edge_index": g.edge_index.tolist(),
                # float32 -> Python float is exact, and repr round-trips exactly.
                "distances": [float(x) for x in g.distances],
            }
        return {"format": JSON_FORMAT, "version": JSON_VERSION, "settings": self.config.to_dict(), "graphs": graphs}

    def write_json(self, path: str | Path) -> None:
        """Write the graphs as JSON (gzip when ``path`` ends in ``.gz``), atomically."""
        text = json.dumps(self.to_json_dict(), separators=(",", ":")).encode()
        data = gzip.compress(text, compresslevel=3, mtime=0) if str(path).endswith(".gz") else text
        atomic_write_bytes(path, data)

    @classmethod
    def from_json_dict(cls, d: Mapping) -> "GraphSet":
        if d.get("format") != JSON_FORMAT:
            raise DatasetError(f"not a crystal-graph JSON document (format={d.get('format')!r})")
        if d.get("version") != JSON_VERSION:
            raise DatasetError(f"unsupported crystal-graph JSON version {d.get('version')!r}")
        config = GraphConfig.model_validate(d["settings"])
        ids, graphs = [], []
        for m, g in d["graphs"].items():
            ids.append(m)
            graphs.append(
                CrystalGraph(
                    np.array(g["atomic_numbers"], dtype=np.int64),
                    np.array(g["edge_index"], dtype=np.int64).reshape(2, -1),
                    np.array(g["distances"], dtype=np.float32),
                    m,
                )
            )
        return cls.from_graphs(ids, graphs, config)

    @classmethod
    def read_json(cls, path: str | Path) -> "GraphSet":
        raw = Path(path).read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return cls.from_json_dict(json.loads(raw))


# --------------------------------------------------------------------------- structures
def parse_structure(obj, item_id: str):
    """CIF text, a path, a pymatgen Structure or its dict -> Structure (errors name the item).

    Simple P1 CIFs (as the Materials Project writes them) go through the fast reader of
    :mod:`cgcnn.cif`, which builds exactly the structure pymatgen's parser would; every
    other CIF goes through pymatgen's ``CifParser``.
    """
    from pymatgen.core import Structure

    from cgcnn.cif import read_simple_cif

    if isinstance(obj, Structure):
        return obj
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if isinstance(obj, Mapping):
                return Structure.from_dict(obj)
            text = obj.read_text() if isinstance(obj, Path) else str(obj)
            fast = read_simple_cif(text)
            return fast if fast is not None else Structure.from_str(text, fmt="cif")
    except Exception as exc:  # pymatgen raises many types for a bad CIF
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetError(f"{item_id}: cannot parse structure ({msg})") from None


def content_key(obj, config: GraphConfig) -> str:
    """Cache key: sha256 of the structure's content and the graph settings."""
    from pymatgen.core import Structure

    h = hashlib.sha256(config.key().encode())
    if isinstance(obj, Structure):
        h.update(b"structure:")
        h.update(np.round(obj.lattice.matrix, 8).tobytes())
        h.update(np.round(obj.frac_coords, 8).tobytes())
        h.update(" ".join(site.species_string for site in obj).encode())
    elif isinstance(obj, Path):
        h.update(b"cif:")
        h.update(obj.read_bytes())
    elif isinstance(obj, Mapping):
        h.update(b"dict:")
        h.update(json.dumps(obj, sort_keys=True, default=str).encode())
    else:
        h.update(b"cif:")
        h.update(str(obj).encode())
    return h.hexdigest()[:32]


def _build_one(item_id: str, obj, config: GraphConfig) -> CrystalGraph | Problem:
    try:
        structure = parse_structure(obj, item_id)
        return structure_to_graph(structure, config, material_id=item_id)
    except DatasetError as exc:
        return Problem(item_id, str(exc).removeprefix(f"{item_id}: "))
    except GraphError as exc:
        return Problem(item_id, str(exc))


def _build_chunk(chunk: list[tuple[str, object]], config: GraphConfig) -> list[CrystalGraph | Problem]:
    return [_build_one(i, o, config) for i, o in chunk]


# --------------------------------------------------------------------------- cache
class GraphCache:
    """Graphs on disk, keyed by structure content + graph settings.

    The cache is a folder of ``.npz`` shards (one per build that added graphs); each shard
    is a :class:`GraphSet` whose ids are content keys.  Nothing is ever rewritten in place:
    new graphs go to a new shard written atomically.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._shards: dict[Path, GraphSet] = {}

    def _load(self) -> dict[str, tuple[GraphSet, int]]:
        found: dict[str, tuple[GraphSet, int]] = {}
        if not self.folder.is_dir():
            return found
        for p in sorted(self.folder.glob("shard-*.npz")):
            if p not in self._shards:
                try:
                    self._shards[p] = GraphSet.load_npz(p)
                except Exception as exc:  # a damaged shard is ignored, never fatal
                    log.warning("ignoring unreadable graph-cache shard %s (%s)", p, exc)
                    continue
            s = self._shards[p]
            for k, key in enumerate(s.ids):
                found[key] = (s, k)
        return found

    def lookup(self, keys: Iterable[str]) -> dict[str, CrystalGraph]:
        index = self._load()
        return {k: index[k][0].graph(index[k][1]) for k in keys if k in index}

    def add(self, keyed: Mapping[str, CrystalGraph], config: GraphConfig) -> Path | None:
        if not keyed:
            return None
        shard = GraphSet.from_graphs(list(keyed), list(keyed.values()), config)
        name = hashlib.sha256("\n".join(sorted(keyed)).encode()).hexdigest()[:16]
        path = self.folder / f"shard-{name}.npz"
        shard.save_npz(path)
        return path


def build_graphs(
    items: Iterable[tuple[str, object]],
    config: GraphConfig,
    *,
    cache_dir: str | Path | None = None,
    workers: int = 1,
    on_error: OnError = "skip",
    progress: bool = True,
    chunk_size: int = 64,
) -> tuple[GraphSet, list[Problem]]:
    """Build (or fetch from the cache) the graphs of ``items``.

    Args:
        items: ``(material_id, structure)`` pairs; a structure is CIF text, a CIF path,
            a pymatgen ``Structure`` or its dict.
        config: graph settings.
        cache_dir: folder of the on-disk cache (keyed by content + settings); ``None``
            disables caching.
        workers: processes used for parsing and neighbour search.
        on_error: ``"skip"`` logs a warning naming each bad item and carries on;
            ``"error"`` raises :class:`DatasetError` at the first bad item.

    Returns:
        The graph set (input order, bad items left out) and the list of problems.
    """
    items = list(items)
    seen: set[str] = set()
    problems: list[Problem] = []
    todo: list[tuple[str, object]] = []
    for item_id, obj in items:
        if item_id in seen:
            problems.append(Problem(item_id, "duplicate material id (first occurrence kept)"))
            continue
        seen.add(item_id)
        todo.append((item_id, obj))

    keys = {i: content_key(o, config) for i, o in todo}
    cache = GraphCache(cache_dir) if cache_dir is not None else None
    cached = cache.lookup(keys.values()) if cache else {}
    missing = [(i, o) for i, o in todo if keys[i] not in cached]
    built: dict[str, CrystalGraph] = {}

    def handle(result: CrystalGraph | Problem) -> None:
        if isinstance(result, Problem):
            if on_error == "error":
                raise DatasetError(str(result))
            log.warning("skipping %s", result)
            problems.append(result)
        else:
            built[result.material_id] = result

    bar = tqdm(total=len(missing), desc="graphs", unit="struct", disable=not progress or not missing)
    chunks = [missing[k : k + chunk_size] for k in range(0, len(missing), chunk_size)]
    if workers > 1 and len(chunks) > 1:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for chunk_results in pool.map(_build_chunk, chunks, [config] * len(chunks)):
                for r in chunk_results:
                    handle(r)
                bar.update(len(chunk_results))
    else:
        for chunk in chunks:
            for r in _build_chunk(chunk, config):
                handle(r)
            bar.update(len(chunk))
    bar.close()

    if cache is not None and built:
        cache.add({keys[i]: g for i, g in built.items()}, config)

    ids, graphs = [], []
    for item_id, _ in todo:
        if item_id in built:
            g = built[item_id]
        elif keys[item_id] in cached:
            g = cached[keys[item_id]]
            g.material_id = item_id
        else:
            continue
        ids.append(item_id)
        graphs.append(g)
    return GraphSet.from_graphs(ids, graphs, config), problems


# --------------------------------------------------------------------------- snapshot
def read_snapshot(
    path: str | Path,
    *,
    bad_line: Callable[[str | Path, int, json.JSONDecodeError], Exception] | None = None,
) -> Iterator[dict]:
    """Records of a Materials Project snapshot (gzip JSON lines, one material a line).

    A line that is not JSON raises :class:`DatasetError`, or ``bad_line(path, line number,
    error)`` where given (so that callers can raise their own error type).
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                if bad_line is not None:
                    raise bad_line(path, n, exc) from None
                raise DatasetError(f"{path}: line {n} is not valid JSON ({exc.msg})") from None


def snapshot_structures(path: str | Path, ids: Iterable[str] | None = None) -> Iterator[tuple[str, str]]:
    """``(material_id, CIF text)`` pairs of a snapshot, optionally only for ``ids``."""
    wanted = set(ids) if ids is not None else None
    for rec in read_snapshot(path):
        if wanted is None or rec["material_id"] in wanted:
            yield rec["material_id"], rec["structure_cif"]


def cif_items(paths: Iterable[str | Path]) -> list[tuple[str, Path]]:
    """``(file stem, path)`` for CIF files and every ``*.cif`` inside given folders."""
    out: list[tuple[str, Path]] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += [(f.stem, f) for f in sorted(p.glob("*.cif"))]
        elif p.exists():
            out.append((p.stem, p))
        else:
            raise DatasetError(f"{p}: no such file or folder")
    return out


# --------------------------------------------------------------------------- datasets
def parse_targets(targets: Mapping[str, object] | None, on_error: OnError = "skip") -> tuple[dict[str, float], list[Problem]]:
    """Validate labels: every value must be a finite number (errors name the material)."""
    good: dict[str, float] = {}
    problems: list[Problem] = []
    for m, v in (targets or {}).items():
        try:
            x = float(v)  # type: ignore[arg-type]
            ok = np.isfinite(x)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            p = Problem(str(m), f"label {v!r} is not a finite number")
            if on_error == "error":
                raise DatasetError(str(p))
            log.warning("skipping %s", p)
            problems.append(p)
        else:
            good[str(m)] = x
    return good, problems


class CrystalDataset:
    """Graphs (+ optional targets) ready for batching.

    Materials whose element is missing from the feature table, or whose label is not a
    number, are left out with a warning naming them (``on_error="skip"``) or raise
    (``"error"``).  ``problems`` lists what was left out.
    """

    def __init__(
        self,
        graphs: GraphSet,
        targets: Mapping[str, object] | None,
        features,
        *,
        on_error: OnError = "skip",
        ids: Sequence[str] | None = None,
    ):
        self.features = features
        self.config = graphs.config
        labels, self.problems = parse_targets(targets, on_error)
        wanted = list(ids) if ids is not None else (list(targets) if targets is not None else graphs.ids)
        keep: list[str] = []
        for m in wanted:
            m = str(m)
            if targets is not None and m not in labels:
                continue  # bad label, already reported
            if m not in graphs:
                p = Problem(m, "no crystal graph (structure missing or skipped)")
                if on_error == "error":
                    raise DatasetError(str(p))
                log.warning("skipping %s", p)
                self.problems.append(p)
                continue
            z = graphs[m].atomic_numbers
            bad = [int(x) for x in np.unique(z) if not features.supports(int(x))]
            if bad:
                from pymatgen.core import Element

                names = ", ".join(f"{Element.from_Z(b).symbol} (Z={b})" for b in bad)
                p = Problem(m, f"element(s) outside the atom-feature table: {names}")
                if on_error == "error":
                    raise DatasetError(str(p))
                log.warning("skipping %s", p)
                self.problems.append(p)
                continue
            keep.append(m)
        self.graphs = graphs.subset(keep) if keep != graphs.ids else graphs
        self.ids = list(self.graphs.ids)
        self.y = (
            np.array([labels[m] for m in self.ids], dtype=np.float32) if targets is not None else None
        )
        self._node_counts = np.diff(self.graphs.node_ptr)
        self._edge_counts = np.diff(self.graphs.edge_ptr)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_atoms(self) -> int:
        return int(self._node_counts.sum())

    def subset_positions(self, positions: Sequence[int]) -> "CrystalDataset":
        ids = [self.ids[k] for k in positions]
        targets = None if self.y is None else {m: float(self.y[k]) for m, k in zip(ids, positions)}
        return CrystalDataset(self.graphs, targets, self.features, ids=ids)


@dataclass
class Batch:
    """A torch_geometric-style batch of crystal graphs.

    Shapes (N atoms, E edges, B crystals):
        atomic_numbers [N], edge_index [2, E] (row 0 neighbour, row 1 centre; global indices),
        distances [E], batch [N] (crystal of every atom), y [B] or None.
    """

    atomic_numbers: torch.Tensor
    edge_index: torch.Tensor
    distances: torch.Tensor
    batch: torch.Tensor
    num_graphs: int
    y: torch.Tensor | None
    positions: np.ndarray
    regular: int | None = None  # M when every atom has exactly M edges (grouped by centre)

    def to(self, device) -> "Batch":
        mv = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(
            mv(self.atomic_numbers), mv(self.edge_index), mv(self.distances), mv(self.batch),
            self.num_graphs, mv(self.y), self.positions, self.regular,
        )


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + c)`` for every (s, c), vectorised."""
    total = int(counts.sum())
    offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
    return np.arange(total, dtype=np.int64) + offsets


def make_batch(dataset: CrystalDataset, positions: Sequence[int]) -> Batch:
    """Gather the crystals at ``positions`` into one :class:`Batch` (no Python loop)."""
    import torch  # imported here so that graph building never pays for torch

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
    )


def iterate_batches(
    dataset: CrystalDataset,
    positions: Sequence[int],
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[Batch]:
    """Batches over ``positions``; shuffled with ``generator`` (reproducible) when asked."""
    import torch

    pos = np.asarray(positions, dtype=np.int64)
    if shuffle:
        pos = pos[torch.randperm(len(pos), generator=generator).numpy()]
    for k in range(0, len(pos), batch_size):
        yield make_batch(dataset, pos[k : k + batch_size])
