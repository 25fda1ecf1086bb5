"""Benchmark: CGCNN training throughput with the original defaults.

Builds graphs for ``--n`` snapshot structures that have a PBE gap (evenly spread over the
file, or the first ones), then trains with
``cgcnn.training.fit.fit`` using the original CGCNN defaults (batch 256, atom_fea_len 64,
h_fea_len 128, 3 convolutions, 1 hidden layer, SGD lr 0.01 momentum 0.9) for ``--epochs``
epochs on all ``n`` crystals (no validation or test split, so an epoch is pure training).
Epoch times come from ``fit``'s history (whole epoch: shuffling, batching, forward,
backward, optimiser step; checkpoint writing excluded).  Steady state = epochs after the
first.  Peak RSS is the process's ``ru_maxrss`` (graph building included).

Usage:
    .venv/bin/python benchmarks/bench_train.py --snapshot ../shared/data/mp_snapshot/summary.jsonl.gz --n 2000 --epochs 4
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from snapshot_sample import select_records  # noqa: E402

from cgcnn.config import GraphConfig, ModelConfig, TrainConfig  # noqa: E402
from cgcnn.data.building import build_graphs  # noqa: E402
from cgcnn.data.dataset import CrystalDataset  # noqa: E402
from cgcnn.data.features import AtomFeatures  # noqa: E402
from cgcnn.prediction.inference import resolve_device  # noqa: E402
from cgcnn.training.fit import fit  # noqa: E402


def peak_rss_gb() -> float:
    # ru_maxrss is in KiB on Linux, bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--snapshot", type=Path, required=True)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument(
        "--select",
        choices=("spread", "first"),
        default="spread",
        help="N labelled lines evenly spread over the file (default) or the first N",
    )
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2, help="processes for graph building")
    ap.add_argument("--radius", type=float, default=8.0)
    ap.add_argument("--max-neighbors", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    if args.epochs < 2:
        ap.error("--epochs must be at least 2 (steady state = epochs after the first)")

    graph_cfg = GraphConfig(radius=args.radius, max_neighbors=args.max_neighbors)
    model_cfg = ModelConfig(atom_fea_len=64, h_fea_len=128, n_conv=3, n_h=1)
    train_cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer="sgd",
        lr=0.01,
        momentum=0.9,
        weight_decay=0.0,
        scheduler="multistep",
        lr_milestones=[100],
        val_fraction=0.0,
        test_fraction=0.0,
        seed=0,
        device=args.device,
    )
    device = resolve_device(args.device)
    print(
        f"settings: snapshot={args.snapshot} n={args.n} select={args.select} epochs={args.epochs} batch={train_cfg.batch_size} "
        f"optimizer=sgd lr={train_cfg.lr} momentum={train_cfg.momentum} atom_fea_len={model_cfg.atom_fea_len} "
        f"h_fea_len={model_cfg.h_fea_len} n_conv={model_cfg.n_conv} graph={graph_cfg.key()} device={device} "
        f"torch={torch.__version__} threads={torch.get_num_threads()} cpus={os.cpu_count()} "
        f"python={platform.python_version()} load_avg_1min={os.getloadavg()[0]:.2f}"
    )

    records = select_records(args.snapshot, args.n, args.select, labelled=True)
    items = [(r["material_id"], r["structure_cif"]) for r in records]
    targets = {r["material_id"]: float(r["band_gap"]) for r in records}
    t0 = time.perf_counter()
    graphs, problems = build_graphs(items, graph_cfg, workers=args.workers, progress=False)
    t_graphs = time.perf_counter() - t0
    dataset = CrystalDataset(graphs, targets, AtomFeatures.default())
    n, n_atoms = len(dataset), dataset.n_atoms
    n_edges = int(dataset.graphs.distances.shape[0])
    print(
        f"graphs: {len(graphs)} built in {t_graphs:.1f} s (workers={args.workers}), {len(problems)} problems; "
        f"dataset {n} crystals, {n_atoms} atoms ({n_atoms / n:.1f}/crystal), {n_edges} edges; "
        f"peak RSS so far {peak_rss_gb():.2f} GB"
    )

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        t0 = time.perf_counter()
        result = fit(dataset, train_cfg, tmp, model_config=model_cfg, progress=False)
        t_fit = time.perf_counter() - t0
    seconds = result.history["seconds"].to_numpy()
    for epoch, s in enumerate(seconds):
        print(
            f"epoch {epoch}: {s:.2f} s, {n / s:.1f} crystals/s, {n_atoms / s:.0f} atoms/s, "
            f"train MAE {result.history['train_mae'].iloc[epoch]:.3f} eV"
        )
    steady = float(np.mean(seconds[1:]))
    crystals_s, atoms_s = n / steady, n_atoms / steady
    rss = peak_rss_gb()
    print(
        f"fit wall time {t_fit:.1f} s for {len(seconds)} epochs (checkpoint writing included); "
        f"first epoch {seconds[0]:.2f} s, steady state {steady:.2f} s/epoch"
    )
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus")
    print(f"train: {crystals_s:.0f} crystals/s, {atoms_s:.0f} atoms/s, peak RSS {rss:.2f} GB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
