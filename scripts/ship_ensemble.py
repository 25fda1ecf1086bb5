"""Ship the ensemble a pipeline run selected (its methods record) as ``cgcnn/models/<name>/``.

Used by ``scripts/ship_model.py --study-run RUN``.  Writes slim ``member-<k>.pt`` checkpoints
(weights, settings, normaliser; no optimiser state) and ``manifest.json``: the method, the
members, the calibration factor of their spread, the model that supplies missing PBE gaps
(``pbe-model.pt``: the run's M1, which the members started from), the cross-validated metrics beside the
baselines, the CV errors by anion class and gap range, the worst CV materials, the training
ids, data checksums, git SHA and wall time.  The folder is written beside the target and
renamed into place, so a failed run leaves the shipped model as it was.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
GAP_BINS = (0.0, 1.0, 2.0, 3.0, np.inf)
PBE_MODEL = "pbe-model.pt"  # the run's M1, shipped beside the members: it predicts PBE gaps not given


def _fail(message: str):
    raise SystemExit(f"error: {message}")


def training_ids(run: Path, methods: dict) -> set[str]:
    """Every material id whose label any member saw (DS2, and DS1 crystals for multi-fidelity)."""
    ids = set(methods["final"]["train_ids"])
    for ckpt in methods["final"]["checkpoints"]:
        splits = json.loads((run / ckpt).parent.joinpath("splits.json").read_text())
        ids |= {m.split("@")[0] for part in ("train", "val") for m in splits.get(part, [])}
    return ids


def cv_errors(run: Path, selected: str) -> tuple[dict, dict, list[dict]]:
    """MAE of the selected method's out-of-fold predictions by anion class and gap range, and
    its ten worst materials."""
    from cgcnn.study.datasets import load_data

    oof = pd.read_csv(run / "tables" / "methods_cv_predictions.csv", dtype={"material_id": str})
    oof = oof[oof["model"] == f"ens_{selected}"]
    ds2 = load_data(run).ds2.set_index("material_id")
    per = oof.groupby("material_id")["prediction"].mean().to_frame()
    per = per.join(ds2[["formula", "bg_exp", "anion_class"]])
    per["abs_error"] = (per["prediction"] - per["bg_exp"]).abs()
    per["gap_range"] = pd.cut(per["bg_exp"], GAP_BINS, right=False).astype(str)

    def by(col):
        return {
            str(k): {"n": int(len(g)), "mae": float(g["abs_error"].mean())} for k, g in per.groupby(col, observed=True)
        }

    worst = per.sort_values("abs_error", ascending=False).head(10).reset_index()
    return (
        by("anion_class"),
        by("gap_range"),
        worst[["material_id", "formula", "anion_class", "bg_exp", "prediction", "abs_error"]]
        .round(3)
        .to_dict(orient="records"),
    )


def _trust_files(run: Path, folder: Path, files: dict) -> dict | None:
    """Copy the run's calibration (``models/trust``: intervals, domain) beside the members and
    summarise it for the manifest: how it was calibrated, what DS3 showed, the suspicious labels."""
    from cgcnn.fileio import sha256_file
    from cgcnn.prediction.trust import DOMAIN_FILE, TRUST_FILE
    from cgcnn.study.rundir import read_json, run_paths

    source = run / "models" / "trust"
    if not (source / TRUST_FILE).is_file():
        return None
    for name in (TRUST_FILE, DOMAIN_FILE):
        shutil.copyfile(source / name, folder / name)
        files[name] = sha256_file(folder / name)
    meta = json.loads((source / TRUST_FILE).read_text())
    study = read_json(run_paths(run)["trust"]) or {}
    metrics = read_json(run_paths(run)["metrics"]) or {}
    domain = meta["domain"]
    return {
        "files": [TRUST_FILE, DOMAIN_FILE],
        "level": meta["level"],
        "normaliser": meta["intervals"]["normaliser"],
        "calibrated_on": list(meta.get("info", {}).get("calibrated_on") or ["grouped", "chemistry_shift"]),
        "n_calibration": {k: len(v) for k, v in meta["intervals"]["scores"].items()},
        "domain_rules": {
            "min_element_count": domain["min_count"],
            "distance_threshold": domain["distance_threshold"],
            "distance_percentile": domain["percentile"],
            "near_zero_ev": domain["near_zero_ev"],
            "max_gap_ev": domain["max_gap_ev"],
            "max_pbe_ev": domain.get("max_pbe_ev"),
        },
        "coverage": study.get("coverage", []),
        "held_out_classes": study.get("held_out_classes", []),
        "min_class_scores": meta["intervals"].get("min_class_scores", 0),
        "min_class_scores_setting": study.get("settings", {}).get("min_class_scores"),
        "coverage_by_class": study.get("coverage_by_class", []),
        "separation": study.get("separation", []),
        "ds3": metrics.get("ensemble_ds3_trust"),
        "suspicious_labels": study.get("suspicious_labels"),
    }


def ship_ensemble(run: Path, name: str, exclude_files: list[str], models_dir: Path, description: str = "") -> Path:
    from cgcnn.fileio import sha256_file, write_json
    from cgcnn.prediction.shipped import member_checkpoints, slim_checkpoint
    from cgcnn.provenance import collect
    from cgcnn.study.display import METHOD_LABELS
    from cgcnn.study.methods import load_methods
    from cgcnn.study.recipes import registered
    from cgcnn.study.rundir import load_cv_table, read_json, run_paths
    from cgcnn.training.checkpoint import read_checkpoint, save_checkpoint

    methods = load_methods(run)
    if not methods or not methods.get("final"):
        _fail(
            f"{run_paths(run)['methods']} has no trained ensemble; run the pipeline with a profile that names methods candidates"
        )
    excluded: set[str] = set()
    for path in exclude_files:
        excluded |= set(pd.read_csv(path, dtype=str)["material_id"])
    used = training_ids(run, methods)
    leaked = sorted(excluded & used)
    if leaked:
        _fail(f"{len(leaked)} excluded id(s) were used in training (e.g. {leaked[0]}); not shipping")
    base_sha = sha256_file(run / "models" / "m1" / "best.pt")
    selected = methods["selected"]
    cv_table = load_cv_table(run)
    keep = [m for m in cv_table.index if m in {*registered(), "m2", "control", f"ens_{selected}"}]
    cols = [
        c
        for c in (
            "mae",
            "mae_lo",
            "mae_hi",
            "rmse",
            "r2",
            "n",
            "repeats",
            "diff_vs_best_baseline",
            "diff_vs_best_baseline_lo",
            "diff_vs_best_baseline_hi",
        )
        if c in cv_table
    ]
    cv_rows = {
        m: {
            c: (None if pd.isna(v) else int(v) if c in ("n", "repeats") else float(v))
            for c, v in cv_table.loc[m, cols].items()
        }
        for m in keep
    }
    by_class, by_gap, worst = cv_errors(run, selected)
    fits = pd.read_csv(run / "tables" / "methods_final_fits.csv")
    env = json.loads((run / "environment.json").read_text()) if (run / "environment.json").is_file() else {}
    ds2_csv = next((run / "bucket" / "processed").glob("ds2.csv"), None)

    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=models_dir))
    try:
        files = {}
        n_members = len(methods["final"]["checkpoints"])
        tmp.chmod(0o755)
        for k, ckpt in enumerate(methods["final"]["checkpoints"]):
            raw = read_checkpoint(run / ckpt)
            slim = slim_checkpoint(raw, shipped_as=f"{name}/member-{k}", git_sha=env.get("git_sha"))
            save_checkpoint(tmp / f"member-{k}.pt", slim)
            files[f"member-{k}.pt"] = sha256_file(tmp / f"member-{k}.pt")
        backbone = methods["final"].get("backbone")  # a model on another backbone (CHGNet): its folder
        if backbone:
            shutil.copytree(run / backbone, tmp / "backbone")
            for f in sorted(p for p in (tmp / "backbone").rglob("*") if p.is_file()):
                files[str(f.relative_to(tmp))] = sha256_file(f)
            n_members = len(json.loads((tmp / "backbone" / "backbone.json").read_text())["files"])
        trees = methods["final"].get("trees")
        if trees:
            shutil.copyfile(run / trees["file"], tmp / "trees.skops")
            files["trees.skops"] = sha256_file(tmp / "trees.skops")
        raw = read_checkpoint(run / "models" / "m1" / "best.pt")  # the M1 the members started from: the PBE fallback
        save_checkpoint(
            tmp / PBE_MODEL, {key: raw[key] for key in raw if key not in ("optimizer", "generator_state", "history")}
        )
        files[PBE_MODEL] = sha256_file(tmp / PBE_MODEL)
        trust = _trust_files(run, tmp, files)
        write_json(
            tmp / "manifest.json",
            {
                "name": name,
                "description": description
                or f"{METHOD_LABELS.get(selected, selected)}: "
                + (
                    f"{n_members} CGCNN members fine-tuned from M1 on the experimental gaps of DS2"
                    if not backbone
                    else "a CHGNet head trained on the experimental gaps of DS2 (the correction to PBE)"
                )
                + (
                    ", and boosted trees on composition + PBE"
                    + (" learning the correction to PBE" if trees.get("target") == "correction" else "")
                    if trees
                    else ""
                )
                + "; experimental band gaps (eV) with a calibrated spread.",
                "kind": "ensemble",
                "method": selected,
                "members": n_members + bool(trees),
                "cgcnn_members": 0 if backbone else n_members,
                "backbone": "backbone" if backbone else None,
                "files": files,
                "trees": {
                    "file": "trees.skops",
                    "weight": trees["weight"],
                    "target": trees.get("target", "gap"),
                    "params": trees["params"],
                    "features": "Magpie composition (132) + PBE gap",
                }
                if trees
                else None,
                "target": "bg_exp",
                "pbe_model": PBE_MODEL,
                "model_config": methods["model_config"],
                "graph_config": read_checkpoint(run / (methods["final"]["checkpoints"] or ["models/m1/best.pt"])[0])[
                    "graph_config"
                ],
                "calibration": methods["calibration"],
                "cv": {
                    "protocol": read_json(run_paths(run)["cv"])["protocol"],
                    "metrics": cv_rows,
                    "candidates_mae": methods["cv_mae_all_ds2"],
                    "candidates_mae_by_label_source": methods.get("cv_mae_by_label_source"),
                    "errors_by_anion_class": by_class,
                    "errors_by_gap_range": by_gap,
                    "worst_materials": worst,
                },
                "trust": trust,
                "settings": methods["settings"],
                "final_fits": fits.drop(columns=["checkpoint"], errors="ignore").to_dict(orient="records"),
                "wall_time_s": round(float(fits["seconds"].sum()), 2) if "seconds" in fits else None,
                "data": {
                    "ds2_csv_sha256": sha256_file(ds2_csv) if ds2_csv else None,
                    "n_train": len(methods["final"]["train_ids"]),
                    "excluded_ids_checked": len(excluded),
                    "base_model_sha256": base_sha,
                    "base_is_shipped_base": base_sha == sha256_file(member_checkpoints("base")[0]),
                },
                "trained_with": {
                    "git_sha": env.get("git_sha"),
                    "profile": json.loads((run / "config.json").read_text()).get("profile")
                    if (run / "config.json").is_file()
                    else None,
                    "run": run.name,
                },
                "shipped_with": collect(REPO),
                "ids": {"train": sorted(methods["final"]["train_ids"]), "all_labels_seen": sorted(used)},
            },
        )
        out = models_dir / name
        old = models_dir / f".{name}.old"
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


if __name__ == "__main__":
    sys.exit("use scripts/ship_model.py --study-run RUN")
