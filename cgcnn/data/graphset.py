"""Packed crystal-graph sets and their two file formats (``.npz`` and JSON).

A :class:`GraphSet` stores the graphs of many materials packed (concatenated arrays plus
offsets) so that a batch is gathered with a handful of vectorised numpy operations
(:mod:`cgcnn.data.batch`).  It is written as compressed ``.npz`` (the cache and the ETL's binary
output) or as JSON (the ETL's portable output, optionally gzipped).
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from cgcnn.config import GraphConfig
from cgcnn.data.graph import CrystalGraph
from cgcnn.errors import DatasetError
from cgcnn.fileio import atomic_write_bytes

JSON_FORMAT = "cgcnn-da/graphs"
JSON_VERSION = 1


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
    def from_graphs(cls, ids: Sequence[str], graphs: Sequence[CrystalGraph], config: GraphConfig) -> GraphSet:
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
    def concat(cls, sets: Sequence[GraphSet], config: GraphConfig) -> GraphSet:
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

    def subset(self, ids: Iterable[str]) -> GraphSet:
        ids = list(ids)
        return GraphSet.from_graphs(ids, [self[m] for m in ids], self.config)

    @property
    def n_atoms(self) -> np.ndarray:
        return np.diff(self.node_ptr)

    def __repr__(self) -> str:
        return f"GraphSet(n={len(self)}, atoms={len(self.atomic_numbers)}, settings={self.config.key()})"

    def equals(self, other: GraphSet) -> bool:
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
            "atomic_numbers": self.atomic_numbers.astype(
                np.uint8 if self.atomic_numbers.max(initial=0) < 256 else np.int64
            ),
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
    def load_npz(cls, path: str | Path) -> GraphSet:
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
    def from_json_dict(cls, d: Mapping) -> GraphSet:
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
    def read(cls, path: str | Path) -> GraphSet:
        """A saved graph set (``.npz``, or JSON / ``.json.gz``); a file that is not one is a
        :class:`DatasetError` naming it."""
        import zipfile

        path = Path(path)
        try:
            return cls.load_npz(path) if path.suffix == ".npz" else cls.read_json(path)
        except DatasetError as exc:
            raise DatasetError(f"{path}: {exc}; give a graph set written by cgcnn (graphs / predict)") from None
        except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            why = " ".join(str(exc).split()) or type(exc).__name__
            if "pickled" in why:  # numpy's advice to load it unsafely is not ours to give
                why = "it holds pickled Python objects, which are never loaded"
            raise DatasetError(
                f"{path}: not a crystal-graph set written by cgcnn ({why}); give one written by cgcnn graphs"
            ) from None

    @classmethod
    def read_json(cls, path: str | Path) -> GraphSet:
        raw = Path(path).read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return cls.from_json_dict(json.loads(raw))
