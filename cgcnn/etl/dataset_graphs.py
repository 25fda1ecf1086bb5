"""Crystal graphs of the datasets: built once, reused from the bucket while their inputs match.

Each dataset's graphs are stored as ``graphs/ds{1,2,3}.json.gz`` and ``.npz``;
``graphs/manifest.json`` records a *content key* per dataset (graph settings, graph format
version, material ids and CIF bytes, see :func:`graph_key`).  A re-run reuses a dataset's
graphs when its key is unchanged and rebuilds them otherwise.  A structure no graph can be
built from is a ``graph_error`` drop (:func:`drop_graph_failures`).
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from cgcnn.config import EtlConfig
from cgcnn.data.building import build_graphs
from cgcnn.data.graphset import JSON_FORMAT, JSON_VERSION
from cgcnn.etl.audit import REPORT_FORMAT
from cgcnn.etl.materials import MaterialRecord
from cgcnn.etl.rules import DATASETS
from cgcnn.etl.storage import Bucket, StorageError

__all__ = ["build_or_reuse_graphs", "drop_graph_failures", "graph_key", "graph_paths", "write_manifest"]

Problems = dict[str, list[tuple[str, str]]]  # dataset -> [(material id, reason)]


def graph_key(items: list[tuple[str, str]], cfg) -> str:
    """Content key of one dataset's graphs: graph settings, format version, ids and CIF bytes."""
    digest = hashlib.sha256(f"graph:{cfg.key()}:{JSON_FORMAT}:{JSON_VERSION}\n".encode())
    for mid, cif in items:
        digest.update(mid.encode() + b"\0" + hashlib.sha256(cif.encode()).digest() + b"\n")
    return digest.hexdigest()


def _reusable(bucket: Bucket, keys: dict[str, str]) -> tuple[dict[str, dict], Problems]:
    """Manifest entries (and their problems) of the datasets whose stored graphs match ``keys``."""
    try:
        old = bucket.read_json("graphs/manifest.json") if bucket.exists("graphs/manifest.json") else {}
    except StorageError:
        old = {}
    entries, problems = {}, {}
    for ds in DATASETS:
        prev = (old.get("datasets") or {}).get(ds)
        if (
            prev
            and prev.get("key") == keys[ds]
            and bucket.exists(f"graphs/{ds}.json.gz")
            and bucket.exists(f"graphs/{ds}.npz")
        ):
            entries[ds] = {**prev, "reused": True}
            problems[ds] = [tuple(p) for p in prev.get("problems", [])]
    return entries, problems


def _upload(bucket: Bucket, ds: str, subset, tmp: str) -> None:
    """Write one dataset's graphs as JSON and npz and upload both."""
    json_path = Path(tmp) / f"{ds}.json.gz"
    npz_path = Path(tmp) / f"{ds}.npz"
    subset.write_json(json_path)
    subset.save_npz(npz_path)
    bucket.upload_file(f"graphs/{ds}.json.gz", json_path)
    bucket.upload_file(f"graphs/{ds}.npz", npz_path)


def build_or_reuse_graphs(
    bucket: Bucket,
    tables: dict[str, pd.DataFrame],
    records: dict[str, MaterialRecord],
    config: EtlConfig,
    *,
    workers: int,
    progress: bool,
    say: Callable[[str], None] = lambda message: None,
) -> tuple[dict[str, dict], Problems]:
    """Graphs of every dataset, reused from ``graphs/`` when the content key matches.

    Structures shared by several datasets that need building are built once.  Returns
    (manifest entries per dataset, plus ``_seconds`` when anything was built; problems per
    dataset as (id, reason)).
    """
    cfg = config.graph
    items = {ds: [(m, records[m].structure_cif) for m in tables[ds]["material_id"]] for ds in DATASETS}
    keys = {ds: graph_key(items[ds], cfg) for ds in DATASETS}
    entries, problems = _reusable(bucket, keys)
    todo = [ds for ds in DATASETS if ds not in entries]
    if not todo:
        return entries, problems

    union: dict[str, str] = {}
    for ds in todo:
        union.update(items[ds])
    cache_dir = Path(config.graph_cache_dir).expanduser() if config.graph_cache_dir else None
    say(f"building graphs for {len(union)} structures ({', '.join(todo)}; {workers} worker(s))")
    t0 = time.perf_counter()
    graphs, bad = build_graphs(
        list(union.items()), cfg, cache_dir=cache_dir, workers=workers, on_error="skip", progress=progress
    )
    build_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    bad_reason = {p.item_id: p.reason for p in bad}
    with tempfile.TemporaryDirectory(prefix="cgcnn-etl-") as tmp:
        for ds in todo:
            subset = graphs.subset([m for m, _ in items[ds] if m in graphs])
            _upload(bucket, ds, subset, tmp)
            problems[ds] = [(m, bad_reason[m]) for m, _ in items[ds] if m in bad_reason]
            entries[ds] = {
                "key": keys[ds],
                "n_graphs": len(subset),
                "problems": [list(p) for p in problems[ds]],
                "graph_config": cfg.model_dump(mode="json"),
                "reused": False,
            }
    entries["_seconds"] = {"graph_build": round(build_seconds, 2), "graph_write": round(time.perf_counter() - t0, 2)}
    return entries, problems


def drop_graph_failures(
    tables: dict[str, pd.DataFrame], problems: Problems
) -> tuple[dict[str, pd.DataFrame], list[dict]]:
    """Datasets without the materials that have no graph, and a ``graph_error`` drop for each."""
    tables = dict(tables)
    drops: list[dict] = []
    for ds in DATASETS:
        bad = dict(problems.get(ds, []))
        if bad:
            tables[ds] = tables[ds][~tables[ds]["material_id"].isin(bad)].reset_index(drop=True)
            for mid, reason in bad.items():
                drops.append(
                    {
                        "dataset": ds,
                        "source": "graphs",
                        "row": None,
                        "material_id": mid,
                        "reason": "graph_error",
                        "detail": reason,
                        "value": "",
                    }
                )
    return tables, drops


def graph_paths(bucket: Bucket, ds: str) -> dict[str, str]:
    """Output name -> URI of one dataset's graph files."""
    return {
        f"{ds}_graphs": bucket.key_uri(f"graphs/{ds}.json.gz"),
        f"{ds}_graphs_npz": bucket.key_uri(f"graphs/{ds}.npz"),
    }


def write_manifest(bucket: Bucket, config: EtlConfig, entries: dict[str, dict]) -> None:
    """``graphs/manifest.json``: graph settings and each dataset's entry (content key, problems)."""
    bucket.write_json(
        "graphs/manifest.json",
        {
            "format": REPORT_FORMAT,
            "graph_config": config.graph.model_dump(mode="json"),
            "datasets": {ds: {k: v for k, v in entries[ds].items() if k != "reused"} for ds in DATASETS},
        },
    )
