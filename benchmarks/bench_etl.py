"""Wall time of the full ETL (raw tables + snapshot -> DS1/DS2/DS3, graphs, reports).

Copies ``--bucket``'s ``raw/`` into a fresh temporary work bucket (nothing is written
beside the inputs), then runs ``cgcnn.etl.run_etl`` cold — no graph cache — and prints the
stage timings the ETL report records.

    .venv/bin/python benchmarks/bench_etl.py --bucket ../shared/data/bucket \
        --snapshot ../shared/data/mp_snapshot/summary.jsonl.gz --workers 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bucket", required=True, help="local bucket holding raw/")
    ap.add_argument("--snapshot", required=True, help="Materials Project snapshot (.jsonl.gz)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--radius", type=float, default=7.0, help="graph radius (the study: 7 Å)")
    ap.add_argument("--max-neighbors", type=int, default=14, help="neighbours kept (the study: 14)")
    args = ap.parse_args()

    from cgcnn.config import GraphConfig
    from cgcnn.etl import EtlConfig, prepare_work_bucket, run_etl

    print(
        f"settings: workers={args.workers} radius={args.radius} max_neighbors={args.max_neighbors} "
        f"cores={os.cpu_count()} load={os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-etl-") as tmp:
        work = str(Path(tmp) / "bucket")
        prepare_work_bucket(args.bucket, work)
        cfg = EtlConfig(graph=GraphConfig(radius=args.radius, max_neighbors=args.max_neighbors))
        t0 = time.perf_counter()
        result = run_etl(work, f"snapshot:{args.snapshot}", config=cfg, workers=args.workers, progress=False)
        wall = time.perf_counter() - t0
        timings = result.report.get("timings_s", {})
    counts = {k: v for k, v in result.counts.items() if k in ("ds1", "ds2", "ds3")}
    for k, v in timings.items():
        print(f"  {k:>16}: {v:8.1f} s")
    print(f"etl: {wall:.1f} s wall, counts {counts}, load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
