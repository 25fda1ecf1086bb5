"""The on-disk graph cache: graphs keyed by structure content + graph settings.

:func:`cgcnn.data.building.build_graphs` looks graphs up here before building them and adds
the ones it built; nothing is ever rewritten in place.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from cgcnn.config import GraphConfig
from cgcnn.data.graph import CrystalGraph
from cgcnn.data.graphset import GraphSet

log = logging.getLogger(__name__)


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
