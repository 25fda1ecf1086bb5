"""Benchmark: crystal-graph building, ours vs the original CGCNN data loader's approach.

Figures on ``--n`` structures of a snapshot (evenly spread over the file, or the first ones) (single process):

* our path end to end: ``cgcnn.data.building.build_graphs`` without cache (CIF parse included);
* the neighbour search alone, on pre-parsed structures: ours
  (``cgcnn.data.graph.structure_to_graph``: one vectorised ``find_points_in_spheres`` call plus a
  row-wise sort) vs the reference, which does what the original ``CIFData.__getitem__`` did:
  ``structure.get_all_neighbors(r)``, ``sorted(..., key=distance)`` for every atom, then
  pad / truncate to ``max_neighbors``;
* end to end for both: ours = ``build_graphs`` (our CIF reader + our search), reference =
  pymatgen's CIF parser (``Structure.from_str``, as the original's ``Structure.from_file``)
  + the reference search;

and, unless ``--cli skip``, the wall time of a cold ``cgcnn graphs SNAPSHOT --output EMPTY_DIR
--workers 2`` subprocess over the whole snapshot (interpreter start and imports included).

The paths are checked to agree: for every atom, the distances of the kept neighbours must
match the reference's (its padding entries aside), and ``build_graphs``'s graphs must equal
``structure_to_graph`` on pymatgen-parsed structures.

Usage:
    .venv/bin/python benchmarks/bench_graphs.py --snapshot ../shared/data/mp_snapshot/summary.jsonl.gz --n 1000
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from snapshot_sample import select_records  # noqa: E402

from cgcnn.config import GraphConfig  # noqa: E402
from cgcnn.data.building import build_graphs, parse_structure  # noqa: E402
from cgcnn.data.graph import structure_to_graph  # noqa: E402


def parse(cif: str):
    from pymatgen.core import Structure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_str(cif, fmt="cif")


def reference_neighbours(structure, radius: float, max_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
    """The original CGCNN loader's neighbour lists: [N, M] indices and distances (padded)."""
    all_nbrs = structure.get_all_neighbors(radius, include_index=True)
    all_nbrs = [sorted(nbrs, key=lambda x: x[1]) for nbrs in all_nbrs]
    idx, dist = [], []
    for nbr in all_nbrs:
        if len(nbr) < max_neighbors:
            idx.append([x[2] for x in nbr] + [0] * (max_neighbors - len(nbr)))
            dist.append([x[1] for x in nbr] + [radius + 1.0] * (max_neighbors - len(nbr)))
        else:
            idx.append([x[2] for x in nbr[:max_neighbors]])
            dist.append([x[1] for x in nbr[:max_neighbors]])
    return np.array(idx, dtype=np.int64), np.array(dist, dtype=np.float64)


def agree(graph, ref_dist: np.ndarray, radius: float, tol: float = 1e-4) -> bool:
    """Same kept-neighbour distances for every atom (padding ignored)."""
    centre = graph.edge_index[1]
    for i in range(graph.n_atoms):
        ours = np.sort(graph.distances[centre == i])
        theirs = ref_dist[i][ref_dist[i] <= radius]
        if ours.shape != theirs.shape or not np.allclose(ours, theirs, atol=tol):
            return False
    return True


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def cli_command() -> list[str]:
    exe = shutil.which("cgcnn")
    return [exe] if exe else [sys.executable, "-m", "cgcnn"]


def run_cli(snapshot: Path, workers: int) -> tuple[float | None, str]:
    """Wall time of a cold ``cgcnn graphs`` run into an empty temporary folder."""
    if not (REPO / "cgcnn" / "cli.py").exists():
        return None, "cgcnn/cli.py not found: CLI figure skipped"
    with tempfile.TemporaryDirectory(prefix="bench-graphs-") as tmp:
        out = Path(tmp) / "out"
        cmd = cli_command() + ["graphs", str(snapshot), "--output", str(out), "--workers", str(workers)]
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return None, f"CLI failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    return wall, f"{' '.join(cmd[-6:])!s} -> {last}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--snapshot", type=Path, required=True, help="summary.jsonl.gz")
    ap.add_argument("--n", type=int, default=1000, help="number of structures")
    ap.add_argument(
        "--select",
        choices=("spread", "first"),
        default="spread",
        help="N lines evenly spread over the file (default) or the first N",
    )
    ap.add_argument("--radius", type=float, default=8.0)
    ap.add_argument("--max-neighbors", type=int, default=12)
    ap.add_argument("--chunk", type=int, default=100, help="structures per interleaved timing chunk")
    ap.add_argument("--cli", choices=("full", "skip"), default="full", help="time the cold CLI on the whole snapshot")
    ap.add_argument("--cli-workers", type=int, default=2)
    args = ap.parse_args(argv)

    cfg = GraphConfig(radius=args.radius, max_neighbors=args.max_neighbors)
    items = [(r["material_id"], r["structure_cif"]) for r in select_records(args.snapshot, args.n, args.select)]
    n = len(items)
    print(
        f"settings: snapshot={args.snapshot} n={n} select={args.select} radius={cfg.radius} max_neighbors={cfg.max_neighbors} "
        f"python={platform.python_version()} cpus={os.cpu_count()} machine={platform.machine()} load_avg_1min={os.getloadavg()[0]:.2f}"
    )

    # warm-up: first-call imports and caches of both paths stay out of the timings
    for _, cif in items[:10]:
        s = parse(cif)
        structure_to_graph(s, cfg)
        reference_neighbours(s, cfg.radius, cfg.max_neighbors)
    build_graphs(items[:10], cfg, cache_dir=None, workers=1, progress=False)

    # The paths are timed chunk by chunk, interleaved, so that a change in machine load
    # affects both alike.
    t_ours_e2e = t_parse_ref = t_parse_ours = t_ours_nb = t_ref_nb = 0.0
    problems, built, structures, ours, refs = [], [], [], [], []
    for k in range(0, n, args.chunk):
        chunk = items[k : k + args.chunk]
        # 1. our path end to end (parse + graph), no cache, one process
        (gs, probs), t = timed(lambda chunk=chunk: build_graphs(chunk, cfg, cache_dir=None, workers=1, progress=False))
        t_ours_e2e += t
        built += [gs[i] if i in gs else None for i, _ in chunk]
        problems += probs
        # 2. CIF parse: pymatgen's parser (what the original used) and ours
        parsed, t = timed(lambda chunk=chunk: [parse(cif) for _, cif in chunk])
        t_parse_ref += t
        structures += parsed
        _, t = timed(lambda chunk=chunk: [parse_structure(cif, i) for i, cif in chunk])
        t_parse_ours += t
        # 3. neighbour search alone on the same parsed structures: ours, then the reference
        g, t = timed(lambda parsed=parsed: [structure_to_graph(s, cfg) for s in parsed])
        t_ours_nb += t
        ours += g
        r, t = timed(lambda parsed=parsed: [reference_neighbours(s, cfg.radius, cfg.max_neighbors) for s in parsed])
        t_ref_nb += t
        refs += r
    n_atoms = sum(len(s) for s in structures)
    print(f"{n_atoms} atoms, {n_atoms / n:.1f} per structure")
    print(
        f"ours end to end (build_graphs, parse included): {t_ours_e2e:.2f} s, {n / t_ours_e2e:.1f} structures/s, "
        f"{sum(b is not None for b in built)} graphs, {len(problems)} problems"
    )
    print(
        f"CIF parse, pymatgen Structure.from_str (reference): {t_parse_ref:.2f} s ({n / t_parse_ref:.1f} structures/s)"
    )
    print(
        f"CIF parse, ours (cgcnn.data.building.parse_structure): {t_parse_ours:.2f} s ({n / t_parse_ours:.1f} structures/s)"
    )
    print(f"neighbour search, ours (structure_to_graph): {t_ours_nb:.2f} s ({n / t_ours_nb:.1f} structures/s)")
    print(
        f"neighbour search, reference (get_all_neighbors + sort + pad): {t_ref_nb:.2f} s ({n / t_ref_nb:.1f} structures/s)"
    )
    n_agree = sum(agree(g, d, cfg.radius) for g, (_, d) in zip(ours, refs))
    print(f"agreement: kept-neighbour distances equal to the reference for {n_agree}/{n} structures")
    n_same = sum(b is not None and b.equals(g) for b, g in zip(built, ours))
    print(f"agreement: build_graphs graph identical to structure_to_graph(pymatgen-parsed) for {n_same}/{n}")

    nb_ratio = t_ref_nb / t_ours_nb
    ref_e2e = t_parse_ref + t_ref_nb
    e2e_ratio = ref_e2e / t_ours_e2e
    print(f"reference end to end (pymatgen parse + reference search): {ref_e2e:.2f} s ({n / ref_e2e:.1f} structures/s)")
    print(f"ratio reference/ours: neighbour search {nb_ratio:.1f}x, end to end {e2e_ratio:.1f}x")

    cli_part = "cli skipped"
    if args.cli == "full":
        wall, msg = run_cli(args.snapshot, args.cli_workers)
        print(f"cold CLI, whole snapshot, --workers {args.cli_workers}: {msg}")
        if wall is not None:
            print(f"cold CLI wall time: {wall:.1f} s")
            cli_part = f"cli {wall:.1f} s"
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus")
    print(
        f"graphs: {n / t_ours_e2e:.0f} structures/s, neighbour search {nb_ratio:.1f}x, "
        f"end-to-end {e2e_ratio:.1f}x, {cli_part}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
