"""How long ``cgcnn finetune`` takes on a table of ``--n`` materials, stage by stage and recipe by recipe.

The table: ``--n`` materials with an experimental gap in (0, 5] eV from ``--labels`` (default the
shared megnet2021 table), DS3 ids left out, spread evenly over the file; structures and PBE gaps
from ``--snapshot`` (read as ``cgcnn predict`` reads a snapshot: only the table's ids are built).
These gaps are DS2's, which the shipped ensemble has seen: the run measures time, not accuracy.
Every network fit goes to a fresh fit cache (nothing is read back), so the figure is a cold run.

    .venv/bin/python benchmarks/bench_finetune.py --snapshot ../shared/data/mp_snapshot/summary.jsonl.gz --n 300

Summary line: ``finetune: n=<n>, <total> min on <cores> cores; <recipe> <s> s, ...``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def table(labels: Path, validation: Path, n: int) -> pd.DataFrame:
    """``n`` rows of ``labels`` with a gap in (0, 5] eV and no DS3 id, evenly spaced over the file."""
    df = pd.read_csv(labels, dtype={"material_id": str})
    df = df[(df["bg_exp"] > 0) & (df["bg_exp"] <= 5)]
    if validation.is_file():
        df = df[~df["material_id"].isin(set(pd.read_csv(validation)["material_id"]))]
    pick = np.unique(np.linspace(0, len(df) - 1, min(n, len(df))).round().astype(int))
    return df.iloc[pick][["material_id", "bg_exp"]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--snapshot", default=str(SHARED / "mp_snapshot" / "summary.jsonl.gz"))
    p.add_argument("--labels", default=str(SHARED / "bucket" / "raw" / "experimental_gaps_megnet2021.csv"))
    p.add_argument("--validation", default=str(SHARED / "bucket" / "raw" / "validation_set.csv"))
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: finetune's, 1)")
    args = p.parse_args()

    import torch

    from cgcnn.finetune import run
    from cgcnn.finetune.calibrate import calibrate
    from cgcnn.finetune.lab import load_lab
    from cgcnn.finetune.protocol import compare, make_folds
    from cgcnn.finetune.recipes import lab_recipes
    from cgcnn.study.engine import fit_final

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lab.csv"
        table(Path(args.labels), Path(args.validation), args.n).to_csv(path, index=False)
        stages = {}
        t0 = time.perf_counter()
        settings = {"threads": args.threads} if args.threads else {}
        setup = run.start(Path(tmp) / "model", settings=settings, cache=Path(tmp) / "cache")
        print(
            f"settings: n={args.n}, snapshot={args.snapshot}, labels={args.labels}, cores={os.cpu_count()}, "
            f"torch threads={torch.get_num_threads()}, load average (1 min) {os.getloadavg()[0]:.2f}"
        )
        print(f"settings of finetune: {setup.settings.to_dict()}")
        stages["load the shipped ensemble"] = time.perf_counter() - t0
        t = time.perf_counter()
        lab = load_lab(path, args.snapshot, setup.model, echo=print)
        stages["read the table and structures, zero-shot predictions"] = time.perf_counter() - t
        t = time.perf_counter()
        folds = make_folds(lab, setup.settings)
        recipes = lab_recipes(lab, setup.settings, setup.cache, print)
        comparison = compare(lab, recipes, folds, setup.settings, echo=print)
        stages["cross-validation (every recipe)"] = time.perf_counter() - t
        t = time.perf_counter()
        parts = run.final_fit(setup, lab, comparison, recipes)
        stages[f"final fit ({comparison.final})"] = time.perf_counter() - t
        t = time.perf_counter()
        trust, scale, report = calibrate(
            lab, comparison.oof[comparison.final], folds, level=0.9, min_class_scores=setup.settings.min_class_scores
        )
        run.write(setup, lab, comparison, parts, trust, scale, report, (path, args.snapshot))
        stages["intervals, domain, model folder"] = time.perf_counter() - t
        total = time.perf_counter() - t0
        if comparison.final not in ("finetuned", "average"):  # what a run that ships fine-tuned members adds
            t = time.perf_counter()
            finetuned = next(r for r in recipes if r.name == "finetuned")
            fit_final(finetuned, lab.materials, seed=0, val_fraction=setup.settings.inner_val_fraction)
            stages["(not in the total) final fit of the fine-tuned members"] = time.perf_counter() - t
        print(comparison.table.drop(columns=["label"]).round(3).to_string())
        print(f"verdict (meaningless here: the shipped ensemble has seen these gaps): {comparison.verdict}")
        for name, s in stages.items():
            print(f"stage {name}: {s:.1f} s")
        print(f"load average (1 min) at the end {os.getloadavg()[0]:.2f}")
        per = ", ".join(f"{k} {v:.1f} s" for k, v in comparison.seconds.items())
        print(f"finetune: n={len(lab)}, {total / 60:.1f} min on {os.cpu_count()} cores; {per}")


if __name__ == "__main__":
    main()
