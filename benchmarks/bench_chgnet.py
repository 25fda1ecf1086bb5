"""CHGNet as a backbone: what its representation costs per crystal on this machine, how fast the
heads train, and how fast and how much memory a stored CHGNet model predicts.

    python benchmarks/bench_chgnet.py RUN_DIR [--out benchmarks/results/chgnet.json]

RUN_DIR: a pipeline run (its ETL's DS2 / DS3 structures are used).  Figures: seconds per crystal
for the CHGNet record (graph + forward, no gradients; a second pass reads the store), seconds per
epoch of each fine-tuning depth on DS2, and prediction throughput (crystals / s) and peak resident
memory of the stored heads.  Threads: torch's default for the machine unless --threads.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--out", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from cgcnn.backbones.chgnet import FeatureStore
    from cgcnn.backbones.heads import HeadSettings, fit_head, predict_head
    from cgcnn.study.datasets import load_data

    data = load_data(args.run_dir)
    structures = {**data.structures("ds2"), **data.structures("ds3")}
    n_atoms = np.array([len(s) for s in structures.values()])
    out = {
        "crystals": len(structures),
        "atoms_mean": float(n_atoms.mean()),
        "threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
    }
    with tempfile.TemporaryDirectory() as tmp:
        store = FeatureStore(tmp)
        t0 = time.perf_counter()
        records = store.records(structures, batch_size=16)
        out["record_s_per_crystal"] = (time.perf_counter() - t0) / len(structures)
        t0 = time.perf_counter()
        store.records(structures)
        out["record_read_back_s_per_crystal"] = (time.perf_counter() - t0) / len(structures)
        out["store_mb"] = sum(p.stat().st_size for p in Path(tmp).rglob("*.npz")) / 2**20
        ds2 = [m for m in data.ds2["material_id"] if m in records]
        recs = [records[m] for m in ds2]
        y = (
            data.ds2.set_index("material_id").loc[ds2, "bg_exp"]
            - data.ds2.set_index("material_id").loc[ds2, "bg_pbe"].fillna(0)
        ).to_numpy()
        idx = np.arange(len(recs))
        for depth in ("readout", "block"):
            s = HeadSettings(depth, 1e-3, args.epochs, 100, 32, 0, "0.3.0")
            t0 = time.perf_counter()
            fit_head(
                recs, y, idx[: int(0.85 * len(idx))], idx[int(0.85 * len(idx)) :], s, Path(tmp) / depth, resume=False
            )
            out[f"{depth}_s_per_epoch"] = (time.perf_counter() - t0) / args.epochs
            t0 = time.perf_counter()
            predict_head(Path(tmp) / depth / "best.pt", recs)
            out[f"{depth}_predict_crystals_per_s_from_records"] = len(recs) / (time.perf_counter() - t0)
        out["end_to_end_predict_crystals_per_s"] = 1.0 / (
            out["record_s_per_crystal"] + 1.0 / out["block_predict_crystals_per_s_from_records"]
        )
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    text = json.dumps(out, indent=2)
    print(text)
    print(
        f"chgnet: {1000 * out['record_s_per_crystal']:.0f} ms/crystal for the representation, readout epoch "
        f"{out['readout_s_per_epoch']:.2f} s, block epoch {out['block_s_per_epoch']:.1f} s on DS2, "
        f"prediction {out['end_to_end_predict_crystals_per_s']:.0f} crystals/s end to end, peak RSS {out['peak_rss_mb']:.0f} MB"
    )
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
