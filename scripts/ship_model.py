#!/usr/bin/env python3
"""Package a model trained by this repository's code into ``cgcnn/models/<name>/``.

A single trained model (the base model M1)::

    .venv/bin/python scripts/ship_model.py --name base --run RUN_FOLDER \
        --graphs GRAPHS.npz --targets DS1.csv --target-column bg_pbe \
        --exclude-ids VALIDATION_SET.csv [--description "…"]

The ensemble selected by a pipeline run's methods stage (its methods record)::

    .venv/bin/python scripts/ship_model.py --name ensemble --study-run PIPELINE_RUN_FOLDER \
        --exclude-ids VALIDATION_SET.csv

Both refuse to ship a model whose training ids include an id of ``--exclude-ids``, and
rewrite ``cgcnn/models/MODEL_CARD.md`` from the manifests of every shipped model.

``RUN_FOLDER`` is the output folder of ``cgcnn train`` / ``fit`` (best.pt, run.json,
splits.json, history.csv).  The script scores the checkpoint on its own train / validation /
test splits, refuses to ship a model whose training ids include any id of
``--exclude-ids`` (the held-out DS3), writes a slim ``model.pt`` (weights, settings,
normaliser; no optimiser state) and ``manifest.json`` (ids, data checksums, settings,
metrics, git SHA, wall time).  Nothing in ``cgcnn/models/`` is written by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # ship_ensemble.py, model_card.py


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True, help="folder name under cgcnn/models/ (e.g. base)")
    p.add_argument("--run", help="training output folder (best.pt, run.json, splits.json)")
    p.add_argument("--graphs", help="the graph set the model was trained on (.npz)")
    p.add_argument("--targets", help="the labels CSV it was trained on")
    p.add_argument("--study-run", help="a pipeline run folder whose methods stage trained an ensemble")
    p.add_argument("--target-column", default=None)
    p.add_argument(
        "--exclude-ids",
        action="append",
        default=[],
        help="CSV with material_id that must not be in training (repeatable)",
    )
    p.add_argument("--description", default="")
    p.add_argument("--models-dir", default=str(REPO / "cgcnn" / "models"), help="where shipped models live")
    return p.parse_args(argv)


def main(argv=None) -> int:
    import pandas as pd

    from cgcnn.data.dataset import CrystalDataset, read_targets
    from cgcnn.data.graphset import GraphSet
    from cgcnn.errors import CgcnnError
    from cgcnn.evaluation.metrics import regression_metrics
    from cgcnn.fileio import sha256_file, write_json
    from cgcnn.prediction.inference import predict
    from cgcnn.prediction.shipped import slim_checkpoint
    from cgcnn.provenance import collect
    from cgcnn.training.checkpoint import (
        load_checkpoint,
        read_checkpoint,
        save_checkpoint,
    )

    args = parse_args(argv)
    if args.study_run:
        from model_card import write_model_card
        from ship_ensemble import ship_ensemble

        out = ship_ensemble(Path(args.study_run), args.name, args.exclude_ids, Path(args.models_dir), args.description)
        write_model_card(Path(args.models_dir))
        print(f"shipped {args.name} -> {out}")
        return 0
    if not (args.run and args.graphs and args.targets):
        raise SystemExit("error: give --run, --graphs and --targets (a single model) or --study-run (an ensemble)")
    run = Path(args.run)
    splits = json.loads((run / "splits.json").read_text())
    info = json.loads((run / "run.json").read_text())
    excluded = set()
    for path in args.exclude_ids:
        excluded |= set(pd.read_csv(path, dtype=str)["material_id"])
    leaked = sorted(excluded & (set(splits["train"]) | set(splits["val"])))
    if leaked:
        raise SystemExit(f"error: {len(leaked)} excluded id(s) were used in training (e.g. {leaked[0]}); not shipping")
    try:
        loaded = load_checkpoint(run / "best.pt")
        graphs = GraphSet.load_npz(args.graphs)
        rows = read_targets(args.targets, args.target_column)
        ds = CrystalDataset(graphs, rows, loaded.features)
    except CgcnnError as exc:
        raise SystemExit(f"error: {exc}") from None
    pred = pd.Series(predict(loaded, ds, device="cpu"), index=ds.ids)
    y = pd.Series(ds.y, index=ds.ids)
    metrics = {name: regression_metrics(y.loc[ids], pred.loc[ids]) for name, ids in splits.items() if ids}
    history = pd.read_csv(run / "history.csv")

    raw = read_checkpoint(run / "best.pt")
    slim = slim_checkpoint(raw, shipped_as=args.name, git_sha=info.get("git_sha"))
    out = Path(args.models_dir) / args.name
    save_checkpoint(out / "model.pt", slim)
    write_json(
        out / "manifest.json",
        {
            "name": args.name,
            "description": args.description,
            "files": {"model.pt": sha256_file(out / "model.pt")},
            "target": args.target_column,
            "train_config": info["train_config"],
            "model_config": info["model_config"],
            "graph_config": info["graph_config"],
            "normalizer": info["normalizer"],
            "data": {
                "graphs_sha256": sha256_file(args.graphs),
                "targets_sha256": sha256_file(args.targets),
                "n": {k: len(v) for k, v in splits.items()},
                "excluded_ids_checked": len(excluded),
            },
            "metrics": metrics,
            "best_epoch": int(slim["best_epoch"]),
            "epochs_run": int(len(history)),
            "wall_time_s": round(float(history["seconds"].sum()), 3),
            "trained_with": {
                "git_sha": info.get("git_sha"),
                "torch": info.get("versions", {}).get("torch"),
                "created": info.get("created"),
            },
            "shipped_with": collect(REPO),
            "history": history[[c for c in ("epoch", "lr", "train_mae", "val_mae", "seconds") if c in history]].to_dict(
                orient="records"
            ),
            "ids": splits,
        },
    )
    from model_card import write_model_card

    write_model_card(Path(args.models_dir))
    print(f"shipped {args.name}: test MAE {metrics.get('test', {}).get('mae', float('nan')):.4f} eV -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
