"""Benchmark: training throughput (crystals/s) with 1 and N DDP processes.

Trains the same model for a few epochs on the first ``--n`` crystals of a graph set, once in
one process and once with ``python -m torch.distributed.run --nproc_per_node N`` (gloo on
CPU, nccl on CUDA), each in a fresh process, and prints crystals/s per epoch (median of
the epochs after the first) and the ratio.  On CPU the N processes share the machine's
cores (torchrun sets OMP_NUM_THREADS=1 per process; the single process uses its default),
so the figure says what DDP costs or gains *on this machine*, not on N machines.

Usage:
    .venv/bin/python benchmarks/bench_ddp.py --graphs RUN/bucket/graphs/ds1.npz \
        --targets RUN/bucket/processed/ds1.csv --target-column bg_pbe --n 4000 --nproc 2
    # on a GPU machine: --device cuda (one GPU per process), add --amp for bf16
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--graphs", required=True)
    p.add_argument("--targets", required=True)
    p.add_argument("--target-column", default=None)
    p.add_argument("--n", type=int, default=4000, help="crystals trained on (the first n of the targets file)")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128, help="global batch (split over the processes)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    p.add_argument("--radius", type=float, default=7.0)
    p.add_argument("--max-neighbors", type=int, default=14)
    return p.parse_args(argv)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args, nproc: int, work: Path, targets: Path) -> pd.DataFrame:
    out = work / f"nproc-{nproc}"
    cfg = work / "train.json"
    cfg.write_text(
        json.dumps(
            {
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "optimizer": "adamw",
                "lr": 0.003,
                "scheduler": "none",
                "val_fraction": 0.0,
                "test_fraction": 0.0,
                "device": args.device,
                "amp": args.amp,
            }
        )
    )
    train = [
        "-m",
        "cgcnn",
        "train",
        "--graphs",
        args.graphs,
        "--targets",
        str(targets),
        "--config",
        str(cfg),
        "--radius",
        f"{args.radius:g}",
        "--max-neighbors",
        str(args.max_neighbors),
        "--output",
        str(out),
    ]
    if args.target_column:
        train += ["--target-column", args.target_column]
    launcher = (
        ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(_port())]
        if nproc > 1
        else []
    )
    proc = subprocess.run([sys.executable, *launcher, *train], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"error: training with {nproc} process(es) failed:\n{proc.stderr[-2000:]}")
    return pd.read_csv(out / "history.csv")


def main(argv=None) -> int:
    args = parse_args(argv)
    rows = pd.read_csv(args.targets, dtype={"material_id": str}).head(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        targets = work / "targets.csv"
        rows.to_csv(targets, index=False)
        speed = {}
        for nproc in (1, args.nproc):
            h = run(args, nproc, work, targets)
            steady = h["seconds"].iloc[1:] if len(h) > 1 else h["seconds"]
            speed[nproc] = len(rows) / float(steady.median())
            print(
                f"{nproc} process(es), {args.device}{' bf16' if args.amp else ''}: {speed[nproc]:8.1f} crystals/s "
                f"(median epoch {steady.median():.1f} s over {len(steady)} epoch(s), {len(rows)} crystals)",
                flush=True,
            )
    print(f"ratio {args.nproc} vs 1 process(es): {speed[args.nproc] / speed[1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
