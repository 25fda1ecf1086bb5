"""Structures in, crystal graphs out: parsing, content keys, parallel builds, every kind of input.

Graphs are built once (in parallel, with a progress bar) and cached on disk
(:mod:`cgcnn.data.graph_cache`); training only ever reads them.  Inputs: CIF files and folders
(:func:`cgcnn.data.cif.cif_items`), Materials Project snapshots (:func:`snapshot_structures`),
structures, saved graph sets (:func:`read_inputs`).  Just over 400 lines: parsing, checking and
building one item, and the parallel build around it, read together.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cgcnn.config import GraphConfig
from cgcnn.data.checks import structure_problem
from cgcnn.data.cif import cif_items, is_altering, read_cif
from cgcnn.data.disorder import MARK, DisorderError, ordered_structures
from cgcnn.data.graph import CrystalGraph, GraphError, structure_to_graph
from cgcnn.data.graph_cache import GraphCache
from cgcnn.data.graphset import GraphSet
from cgcnn.data.snapshot import read_snapshot
from cgcnn.errors import DatasetError, OnError, Problem

log = logging.getLogger(__name__)


def parse_structure(obj, item_id: str):
    """One structure from CIF text, a path, a pymatgen Structure or its dict (errors name the item).

    CIFs are read as pymatgen reads them (:func:`cgcnn.data.cif.read_cif`); this returns the
    first structure of a file and raises for anything the file does not give.  The graph
    builder uses :func:`parse_items`, which keeps every block and the parser's warnings.
    """
    structures, problems, _ = parse_items(item_id, obj)
    if not structures:
        raise DatasetError(str(problems[0]) if problems else f"{item_id}: no structure")
    return structures[0][1]


def parse_items(item_id: str, obj) -> tuple[list[tuple[str, object]], list[Problem], list[Problem]]:
    """(structures as (id, Structure), problems, warnings) of one input item: every block of a
    CIF (path or text; see :mod:`cgcnn.data.cif`), or a pymatgen Structure or its dict."""
    from pymatgen.core import Structure

    if isinstance(obj, Structure):
        return [(item_id, obj)], [], []
    try:
        if isinstance(obj, Mapping):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return [(item_id, Structure.from_dict(obj))], [], []
        reading = read_cif(obj if isinstance(obj, Path) else str(obj), item_id)
    except DatasetError as exc:
        return [], [Problem(item_id, str(exc))], []
    except Exception as exc:  # pymatgen raises many types for a bad structure
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return [], [Problem(item_id, f"cannot parse structure ({msg})")], []
    return reading.structures, reading.problems, reading.warnings


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


def _build_one(
    item_id: str, obj, config: GraphConfig, strict: bool = False, disorder: str = "refuse"
) -> list[CrystalGraph | Problem]:
    """Graphs (or problems) of every structure of one input item, and its warnings.

    Each structure is checked (:func:`cgcnn.data.checks.structure_problem`) before its graph
    is built; ``strict`` refuses the structures of a file whose parser warnings say the
    structure may not be what the file says."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # numbers of an impossible cell: the checks say what is wrong
        return _checked_graphs(item_id, obj, config, strict, disorder)


def _checked_graphs(
    item_id: str, obj, config: GraphConfig, strict: bool, disorder: str
) -> list[CrystalGraph | Problem]:
    structures, problems, notes = parse_items(item_id, obj)
    out: list[CrystalGraph | Problem] = list(problems)
    altering = [n for n in notes if is_altering(n.reason)]
    for sid, structure in structures:
        if strict and altering:
            out.append(Problem(sid, f"refused (--strict): {altering[0].reason}"))
            continue
        if disorder != "refuse" and not structure.is_ordered:
            out += _disordered_graphs(sid, structure, config, disorder, _where(obj, sid))
            continue
        why = structure_problem(structure, config.radius)
        if why is not None:
            out.append(Problem(sid, f"{_where(obj, sid)}{why}"))
            continue
        try:
            out.append(structure_to_graph(structure, config, material_id=sid))
        except GraphError as exc:
            out.append(Problem(sid, f"{_where(obj, sid)}{exc}"))
    out += [Problem(n.item_id, n.reason, kind="warning") for n in notes if not (strict and is_altering(n.reason))]
    return out


def _disordered_graphs(
    sid: str, structure, config: GraphConfig, method: str, where: str
) -> list[CrystalGraph | Problem]:
    """Graphs of the ordered structures that stand for a disordered one (:mod:`cgcnn.data.disorder`),
    ids ``<sid>#ordered-<k>-w<weight>``; any of them failing a check refuses the structure."""
    try:
        ordered, weights, _ = ordered_structures(structure, method)
    except DisorderError as exc:
        return [Problem(sid, f"{where}{exc}")]
    graphs: list[CrystalGraph | Problem] = []
    for k, (o, w) in enumerate(zip(ordered, weights)):
        why = structure_problem(o, config.radius)
        if why is not None:
            return [Problem(sid, f"{where}ordered structure {k} ({method}): {why}")]
        try:
            graphs.append(structure_to_graph(o, config, material_id=f"{sid}{MARK}{k}-w{w:.8f}"))
        except GraphError as exc:
            return [Problem(sid, f"{where}ordered structure {k} ({method}): {exc}")]
    return graphs


def _where(obj, item_id: str) -> str:
    """``"<path>: "`` for a structure read from a file (messages name the path), else ``""``."""
    return f"{obj}: " if isinstance(obj, Path) else ""


def _build_chunk(
    chunk: list[tuple[str, object]], config: GraphConfig, strict: bool = False, disorder: str = "refuse"
) -> list[tuple[str, list[CrystalGraph | Problem]]]:
    return [(i, _build_one(i, o, config, strict, disorder)) for i, o in chunk]


def _report(problems: list[Problem], p: Problem, on_error: OnError) -> None:
    if on_error == "error":
        raise DatasetError(str(p))
    log.info("skipping %s", p)
    problems.append(p)


def _unique_items(
    items: Iterable[tuple[str, object]], problems: list[Problem], on_error: OnError
) -> list[tuple[str, object]]:
    """``items`` without repeated ids (the first occurrence kept; each repeat is a problem)."""
    seen: dict[str, object] = {}
    todo = []
    for item_id, obj in items:
        if item_id in seen:
            _report(problems, duplicate(item_id, seen[item_id], obj, on_error), on_error)
            continue
        seen[item_id] = obj
        todo.append((item_id, obj))
    return todo


def duplicate(item_id: str, first, again, on_error: OnError) -> Problem:
    """The problem of an id given twice, naming both files when they are files.  One rule:
    the first occurrence (in input order: paths as given, folders sorted) is kept."""
    files = f": {first} and {again}" if isinstance(first, Path) and isinstance(again, Path) else ""
    if on_error == "error":
        return Problem(item_id, f"duplicate material id{files}; give each structure its own id (rename one file)")
    return Problem(item_id, f"duplicate material id{files} (the first is kept; rename the other to keep both)")


def _build_all(
    missing: list[tuple[str, object]],
    config: GraphConfig,
    workers: int,
    chunk_size: int,
    strict: bool = False,
    disorder: str = "refuse",
) -> Iterator[tuple[str, list[CrystalGraph | Problem]]]:
    """(item id, its graphs and problems) of ``missing`` in input order, in ``workers``
    processes when > 1."""
    chunks = [missing[k : k + chunk_size] for k in range(0, len(missing), chunk_size)]
    if workers > 1 and len(chunks) > 1:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            n = len(chunks)
            for chunk_results in pool.map(_build_chunk, chunks, [config] * n, [strict] * n, [disorder] * n):
                yield from chunk_results
    else:
        for chunk in chunks:
            yield from _build_chunk(chunk, config, strict, disorder)


def build_graphs(
    items: Iterable[tuple[str, object]],
    config: GraphConfig,
    *,
    cache_dir: str | Path | None = None,
    workers: int = 1,
    on_error: OnError = "skip",
    progress: bool = True,
    chunk_size: int = 64,
    strict: bool = False,
    on_item=None,
    notes: list[Problem] | None = None,
    disorder: str = "refuse",
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
            ``"error"`` raises :class:`DatasetError` at the first bad item (and implies ``strict``).
        strict: refuse the structures of a file whose parser warnings say the structure may
            not be what the file says (:data:`cgcnn.data.cif.ALTERING`).
        on_item: called once per input item read (a progress bar's ``update``, say).
        notes: a list that receives the parser's warnings about items that were kept
            (``Problem`` with ``kind="warning"``); without one they are logged.
        disorder: ``"refuse"`` (partially occupied sites are a problem), ``"end-members"`` or
            ``"orderings"``: such a structure becomes the graphs of the ordered structures
            that stand for it, ids ``<id>#ordered-<k>-w<weight>`` (:mod:`cgcnn.data.disorder`).

    Returns:
        The graph set (input order; every block of a multi-block CIF under
        ``<id>:<block>``; bad items left out) and the problems (the items skipped, and why).
    """
    strict = strict or on_error == "error"
    problems: list[Problem] = []
    todo = _unique_items(items, problems, on_error)
    keys = {i: content_key(o, config) for i, o in todo}
    cache = GraphCache(cache_dir) if cache_dir is not None else None
    cached = cache.lookup(keys.values()) if cache else {}
    missing = [(i, o) for i, o in todo if keys[i] not in cached]
    built: dict[str, list[CrystalGraph]] = {}
    if disorder != "refuse":  # the cache keys one graph per item; ordered stand-ins are not cached
        missing, cached = todo, {}
    bar = tqdm(total=len(missing), desc="graphs", unit="struct", disable=not progress or not missing)
    for item_id, results in _build_all(missing, config, workers, chunk_size, strict, disorder):
        built[item_id] = []
        for result in results:
            if isinstance(result, Problem) and result.kind == "warning":
                if notes is not None:
                    notes.append(result)
                else:
                    log.warning("%s", result)
            elif isinstance(result, Problem):
                _report(problems, result, on_error)
            else:
                built[item_id].append(result)
        bar.update(1)
        if on_item is not None:
            on_item()
    bar.close()
    if on_item is not None:
        for _ in range(len(todo) - len(missing)):  # the cached ones
            on_item()

    if cache is not None:  # one graph per item under the item's own id: what the cache can key
        single = {keys[i]: g[0] for i, g in built.items() if len(g) == 1 and g[0].material_id == i}
        if single:
            cache.add(single, config)

    ids, graphs = [], []
    for item_id, _ in todo:
        if item_id in built:
            found = built[item_id]
        elif keys[item_id] in cached:
            found = [cached[keys[item_id]]]
            found[0].material_id = item_id
        else:
            continue
        for g in found:
            ids.append(g.material_id)
            graphs.append(g)
    return GraphSet.from_graphs(ids, graphs, config), problems


# --------------------------------------------------------------------------- inputs
def snapshot_structures(path: str | Path, ids: Iterable[str] | None = None) -> Iterator[tuple[str, str]]:
    """``(material_id, CIF text)`` pairs of a snapshot, optionally only for ``ids``."""
    wanted = set(ids) if ids is not None else None
    for rec in read_snapshot(path):
        if wanted is None or rec["material_id"] in wanted:
            yield rec["material_id"], rec["structure_cif"]


def snapshot_pbe_gaps(inputs) -> dict[str, float]:
    """The PBE gaps a Materials Project snapshot records (``band_gap``) when ``inputs`` is one
    snapshot file; otherwise nothing.  PBE-aware models read them as known PBE gaps."""
    paths = [inputs] if isinstance(inputs, (str, Path)) else list(inputs) if isinstance(inputs, (list, tuple)) else []
    if len(paths) != 1 or not isinstance(paths[0], (str, Path)) or not _is_snapshot(Path(paths[0])):
        return {}
    out = {}
    for rec in read_snapshot(paths[0]):
        gap = rec.get("band_gap")
        if isinstance(gap, (int, float)) and gap == gap and gap >= 0:
            out[str(rec["material_id"])] = float(gap)
    return out


def _is_snapshot(path: Path) -> bool:
    return path.is_file() and (path.name.endswith(".jsonl.gz") or path.name.endswith(".jsonl"))


def _saved_graph_set(path: Path) -> Path | None:
    """The graph-set file behind ``path`` (``.npz``, ``.json[.gz]``, or a folder holding
    ``graphs.npz``), or None."""
    saved = path / "graphs.npz" if path.is_dir() and (path / "graphs.npz").exists() else path
    if saved.is_file() and (saved.suffix == ".npz" or saved.suffix == ".json" or saved.name.endswith(".json.gz")):
        return saved
    return None


def structure_items(structures) -> list[tuple[str, object]]:
    """``(id, structure)`` pairs from pymatgen ``Structure``s: one, a list (ids ``"0"``,
    ``"1"``, …) or a mapping ``{id: structure}``."""
    from pymatgen.core import Structure

    if isinstance(structures, Structure):
        return [("0", structures)]
    if isinstance(structures, Mapping):
        return [(str(k), v) for k, v in structures.items()]
    return [(str(k), s) for k, s in enumerate(structures)]


def read_inputs(
    inputs,
    config: GraphConfig,
    *,
    workers: int = 1,
    cache_dir: str | Path | None = None,
    on_error: OnError = "skip",
    progress: bool = True,
    strict: bool = False,
    notes: list[Problem] | None = None,
    disorder: str = "refuse",
) -> tuple[GraphSet, list[Problem]]:
    """Graphs of every kind of input the package accepts (``strict``, ``notes``, ``disorder``:
    see :func:`build_graphs`).

    ``inputs`` is a saved graph set (``.npz``, ``.json[.gz]``, or a folder holding
    ``graphs.npz``), a Materials Project snapshot (``.jsonl[.gz]``), CIF files or folders of
    CIFs (a path or a list of paths), a :class:`~cgcnn.data.graphset.GraphSet`, or pymatgen
    ``Structure``s (one, a list, or ``{id: structure}``).

    Raises:
        DatasetError: a path does not exist, a saved graph set was built with other graph
            settings, or (``on_error="error"``) an item cannot be read.
    """
    build = dict(
        workers=workers,
        cache_dir=cache_dir,
        on_error=on_error,
        progress=progress,
        strict=strict,
        notes=notes,
        disorder=disorder,
    )
    if isinstance(inputs, GraphSet):
        graphs, where = inputs, "the given graph set holds graphs"
    elif isinstance(inputs, (str, Path)) or (
        isinstance(inputs, Sequence) and all(isinstance(x, (str, Path)) for x in inputs)
    ):
        paths = [Path(inputs)] if isinstance(inputs, (str, Path)) else [Path(x) for x in inputs]
        saved = _saved_graph_set(paths[0]) if len(paths) == 1 else None
        if saved is None:
            items = snapshot_structures(paths[0]) if len(paths) == 1 and _is_snapshot(paths[0]) else cif_items(paths)
            return build_graphs(items, config, **build)
        graphs = GraphSet.read(saved)
        where = f"{saved} holds graphs"
    else:
        return build_graphs(structure_items(inputs), config, **build)
    if config is not None and graphs.config != config:
        raise DatasetError(
            f"{where} built with {graphs.config.key()}, not {config.key()}; rebuild them from the structures"
        )
    return graphs, []
