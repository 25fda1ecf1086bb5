"""Benchmark: streaming prediction — structures/s and peak RSS against the number of structures.

For each size in ``--sizes`` it writes the first N records of a snapshot to a temporary
``.jsonl.gz`` and runs ``cgcnn predict`` on it **in a fresh process** (so each peak RSS is that
run's own), with a shipped model (``--model base``) or a given checkpoint.  Prints one line per
size: wall time, structures/s end to end (start-up, reading, graph building, prediction,
writing) and peak RSS of the process, and of its largest graph-building worker (forked from
it, so that figure counts the pages it shares with the main process too).

Usage:
    .venv/bin/python benchmarks/bench_predict.py --snapshot ../shared/data/mp_snapshot/summary.jsonl.gz \
        --sizes 2000,10000,all --checkpoint RUN/models/m1/best.pt
"""

from __future__ import annotations

import argparse
import gzip
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--snapshot", required=True)
    p.add_argument("--sizes", default="2000,10000,all", help="comma-separated counts; 'all' = the whole snapshot")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint")
    which.add_argument("--model")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--chunk-size", type=int, default=1024)
    return p.parse_args(argv)


def subset(snapshot: str, n: int | None, out: Path) -> int:
    count = 0
    with gzip.open(snapshot, "rt") as src, gzip.open(out, "wt", compresslevel=1) as dst:
        for line in src:
            if n is not None and count >= n:
                break
            dst.write(line)
            count += 1
    return count


def main(argv=None) -> int:
    args = parse_args(argv)
    which = ["--checkpoint", args.checkpoint] if args.checkpoint else ["--model", args.model]
    print(f"# workers {args.workers}, chunk {args.chunk_size}, load {os.getloadavg()[0]:.2f}, cpus {os.cpu_count()}")
    print("n,wall_s,structures_per_s,peak_rss_mb,worker_peak_rss_mb")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            path = Path(tmp) / f"s-{size}.jsonl.gz"
            n = subset(args.snapshot, None if size == "all" else int(size), path)
            cmd = [
                sys.executable,
                "-c",  # `cgcnn` itself (cgcnn.cli.run), reporting its peak RSS on the way out
                "import atexit, resource, sys; "
                "atexit.register(lambda: print('peak', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
                "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)); "
                "from cgcnn.cli import run; run()",
                "predict",
                *which,
                str(path),
                "--output",
                str(Path(tmp) / "out.csv"),
                "--workers",
                str(args.workers),
                "--chunk-size",
                str(args.chunk_size),
                "--device",
                "cpu",
            ]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                print(proc.stderr[-2000:], file=sys.stderr)
                return proc.returncode
            peak_kib, worker_kib = (
                int(x) for x in next(line.split()[1:] for line in proc.stderr.splitlines() if line.startswith("peak "))
            )
            print(f"{n},{wall:.1f},{n / wall:.0f},{peak_kib / 1024:.0f},{worker_kib / 1024:.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
