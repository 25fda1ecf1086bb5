"""``cgcnn finetune`` on a lab the shipped ensemble never saw, scored on held-out materials of it.

DS2 keeps experimental gaps in (0, 5] eV, so the shared tables' materials with an experimental
gap **above 5 eV** (wide-gap insulators: fluorides, oxides, nitrides, ...) are labels no shipped
model was trained on — a family it knows badly, as a lab's might be.  Their reduced formulas are
split at random (``--seed``) into a lab (two thirds) and a held-out part (one third).  The lab
goes through ``cgcnn finetune``; the held-out part is then predicted by the shipped ensemble and
by the adapted model folder (``cgcnn.prediction``, as ``cgcnn evaluate`` does), and compared:
MAE with bootstrap 95 % intervals, the paired difference, and how often the 90 % intervals hold
the gap.  A line on PBE fitted on the lab is shown beside them.

    .venv/bin/python benchmarks/bench_finetune_unseen.py

Summary line: ``finetune unseen: lab <n>, held out <m>; MAE shipped <a> -> adapted <b> eV, paired <d> [lo, hi]; coverage <c>``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def wide_gap_lab(raw: Path, snapshot: Path, shipped_ids: set[str], minimum: float) -> tuple[pd.DataFrame, dict]:
    """Materials with an experimental gap above ``minimum`` (Borlido's value where both tables
    have one), in the snapshot, not in DS3 and never seen by the shipped ensemble; their records."""
    meg = pd.read_csv(raw / "experimental_gaps_megnet2021.csv")
    bor = pd.read_excel(raw / "experimental_gaps_borlido2019.xlsx", header=[0, 1])
    bor.columns = [b if not str(b).startswith("Unnamed") else a for a, b in bor.columns]
    bor = bor.rename(columns={"MP_ID": "material_id", "Experimental": "bg_exp"})
    ds3 = set(pd.read_csv(raw / "validation_set.csv")["material_id"])
    gaps: dict[str, float] = {}
    for src in (meg, bor):  # Borlido last: it wins where both have the material
        for m, g in zip(src["material_id"], pd.to_numeric(src["bg_exp"], errors="coerce")):
            if isinstance(m, str) and m not in ds3 and m not in shipped_ids and np.isfinite(g) and g > minimum:
                gaps[m] = float(g)
    records = {}
    with gzip.open(snapshot, "rt") as fh:
        for line in fh:
            rec = json.loads(line)
            if rec["material_id"] in gaps:
                records[rec["material_id"]] = rec
    lab = pd.DataFrame(sorted((m, g) for m, g in gaps.items() if m in records), columns=["material_id", "bg_exp"])
    lab["formula"] = [records[m]["formula_pretty"] for m in lab["material_id"]]
    return lab, records


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--snapshot", default=str(SHARED / "mp_snapshot" / "summary.jsonl.gz"))
    p.add_argument("--raw", default=str(SHARED / "bucket" / "raw"))
    p.add_argument("--min-gap", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from cgcnn import load_model
    from cgcnn.evaluation.bootstrap import mae_ci, paired_difference_ci
    from cgcnn.finetune.run import finetune
    from cgcnn.prediction.intervals import interval_coverage
    from cgcnn.prediction.shipped import manifest

    shipped_ids = set(manifest("ensemble")["ids"]["all_labels_seen"])
    table, records = wide_gap_lab(Path(args.raw), Path(args.snapshot), shipped_ids, args.min_gap)
    formulas = sorted(set(table["formula"]))
    held = set(np.random.default_rng(args.seed).choice(formulas, size=len(formulas) // 3, replace=False))
    lab, rest = table[~table["formula"].isin(held)], table[table["formula"].isin(held)]
    print(
        f"settings: gaps > {args.min_gap} eV, seed {args.seed}; {len(lab)} lab, {len(rest)} held out "
        f"({len(formulas)} formulas); cores={os.cpu_count()}, load average (1 min) {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lab[["material_id", "bg_exp"]].to_csv(tmp / "lab.csv", index=False)
        with gzip.open(tmp / "structures.jsonl.gz", "wt") as fh:
            for m in table["material_id"]:
                fh.write(json.dumps(records[m]) + "\n")
        t0 = time.perf_counter()
        out, comparison, _ = finetune(tmp / "lab.csv", str(tmp / "structures.jsonl.gz"), tmp / "model", echo=None)
        minutes = (time.perf_counter() - t0) / 60
        print(comparison.table.drop(columns=["label"]).round(3).to_string())
        print(f"verdict: {comparison.verdict}")
        with gzip.open(tmp / "held_out.jsonl.gz", "wt") as fh:  # predicted as cgcnn predict reads a snapshot
            for m in rest["material_id"]:
                fh.write(json.dumps(records[m]) + "\n")
        pbe = {m: records[m]["band_gap"] for m in rest["material_id"] if records[m]["band_gap"] is not None}
        y = rest.set_index("material_id")["bg_exp"]
        rows = {}
        for name, model in (("shipped", load_model(device="cpu")), ("adapted", load_model(out, device="cpu"))):
            t = model.predict(str(tmp / "held_out.jsonl.gz")).set_index("material_id").loc[y.index]
            rows[name] = t
            ci = mae_ci(y, t["prediction_ev"])
            cov = interval_coverage(y, t["prediction_lo_ev"], t["prediction_hi_ev"])
            print(
                f"held out, {name}: MAE {ci} eV; 90 % interval coverage {cov:.2f}, "
                f"mean width {(t['prediction_hi_ev'] - t['prediction_lo_ev']).mean():.2f} eV; "
                f"{int(t['in_domain'].sum())} in domain"
            )
        lab_pbe = np.array(
            [np.nan if records[m]["band_gap"] is None else records[m]["band_gap"] for m in lab["material_id"]]
        )
        ok = np.isfinite(lab_pbe)
        slope, intercept = np.polyfit(lab_pbe[ok], lab["bg_exp"].to_numpy()[ok], 1)
        line = np.array([intercept + slope * pbe[m] if m in pbe else np.nan for m in y.index])
        print(f"held out, PBE line fitted on the lab: MAE {mae_ci(y, line)} eV on {int(np.isfinite(line).sum())}")
        d = paired_difference_ci(y, rows["adapted"]["prediction_ev"], rows["shipped"]["prediction_ev"])
        d_line = paired_difference_ci(y, rows["adapted"]["prediction_ev"], line)
        print(f"held out, adapted - shipped: {d} eV; adapted - PBE line: {d_line} eV")
        a, s = rows["adapted"], rows["shipped"]
        cov = interval_coverage(y, a["prediction_lo_ev"], a["prediction_hi_ev"])
        print(
            f"finetune unseen: lab {len(lab)}, held out {len(rest)}; MAE shipped "
            f"{(s['prediction_ev'] - y).abs().mean():.2f} -> adapted {(a['prediction_ev'] - y).abs().mean():.2f} eV "
            f"({comparison.final}), paired {d}; coverage {cov:.2f}; {minutes:.1f} min"
        )


if __name__ == "__main__":
    main()
