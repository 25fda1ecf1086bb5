"""The model folder ``cgcnn finetune`` writes, in the shipped ensemble's format.

``member-<k>.pt``, ``trees.skops`` and ``pbe-model.pt`` are the shipped ensemble's own files
(its zero-shot prediction); ``finetuned-<k>.pt`` (fine-tuned members) and
``residual-trees.skops`` are there when the shipped recipe uses them; the calibration files
(:data:`cgcnn.prediction.trust.TRUST_FILE`, ``DOMAIN_FILE``) hold the recalibrated intervals and
the extended domain; ``manifest.json``
every id, setting and figure, ``MODEL_CARD.md`` the CV table and the verdict; ``cv.csv``,
``cv_predictions.csv`` and ``left_out.csv`` the tables behind them.  The folder is built beside
the target and renamed into place at the end, so an existing folder is never left half-written.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from cgcnn.errors import DatasetError
from cgcnn.fileio import atomic_write_text, sha256_file, write_json
from cgcnn.prediction.shipped import slim_checkpoint
from cgcnn.prediction.trees import save_trees
from cgcnn.training.checkpoint import read_checkpoint, save_checkpoint

__all__ = ["check_output", "model_card", "write_folder"]


def check_output(out: str | Path) -> Path:
    """``out`` if a model folder may be written there: absent, empty, or an earlier model folder
    (replaced whole at the end); a clear error otherwise, before any work is done."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").is_file())):
        raise DatasetError(
            f"--output {out}: exists and is not a model folder; give a new folder (an earlier model folder is replaced)"
        )
    if not out.parent.exists():
        raise DatasetError(f"--output {out}: its parent folder {out.parent} does not exist; create it first")
    return out


def write_folder(out: str | Path, base_dir: Path, parts: dict, manifest: dict, card: str, tables: dict) -> Path:
    """Build the folder in a temporary sibling and rename it into place.

    ``parts``: ``finetuned`` (checkpoint paths) and ``residual_trees`` (a fitted model), each
    optional, and ``trust`` (:class:`cgcnn.prediction.trust.Trust`); ``manifest``: what to write
    beside the files (``files`` and the file names are added here); ``tables``: file name ->
    DataFrame."""
    out = check_output(out)
    base = json.loads((base_dir / "manifest.json").read_text())
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tmp.chmod(0o755)
        members = sorted(p.name for p in base_dir.glob("member-*.pt"))
        for name in [*members, base["pbe_model"], *([base["trees"]["file"]] if base.get("trees") else [])]:
            shutil.copyfile(base_dir / name, tmp / name)
        finetuned = []
        for k, ckpt in enumerate(parts.get("finetuned") or []):
            raw = read_checkpoint(ckpt)
            slim = slim_checkpoint(raw, finetuned_from=members[k], by="cgcnn finetune")
            save_checkpoint(tmp / f"finetuned-{k}.pt", slim)
            finetuned.append(f"finetuned-{k}.pt")
        if parts.get("residual_trees") is not None:
            save_trees(parts["residual_trees"], tmp / "residual-trees.skops")
        parts["trust"].save(tmp)
        for name, table in tables.items():
            table.to_csv(tmp / name, index=isinstance(table.index, pd.MultiIndex) or table.index.name is not None)
        adaptation = dict(manifest["adaptation"])
        if finetuned:
            adaptation["finetuned"] = {**(adaptation.get("finetuned") or {}), "files": finetuned}
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        write_json(
            tmp / "manifest.json",
            {
                **manifest,
                "kind": "adapted",
                "member_files": members,
                "cgcnn_members": len(members),
                "trees": base.get("trees"),
                "pbe_model": base["pbe_model"],
                "model_config": base["model_config"],
                "graph_config": base["graph_config"],
                "adaptation": adaptation,
                "files": files,
            },
        )
        atomic_write_text(tmp / "MODEL_CARD.md", card)
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _fmt(v, digits=3) -> str:
    return "" if v is None or v != v else f"{v:.{digits}f}"


def model_card(manifest: dict, table: pd.DataFrame) -> str:
    """``MODEL_CARD.md``: what the model is, the CV table, the verdict, the intervals' coverage
    and when not to trust it."""
    lab, cv, trust = manifest["lab"], manifest["cv"], manifest["trust"]
    a = manifest["adaptation"]
    lines = [
        f"# {manifest['name']}: the shipped ensemble adapted to a lab's own band gaps",
        "",
        f"Made by `cgcnn finetune` from `{lab['table']}` ({lab['n_used']} materials used of {lab['n_listed']} "
        f"listed; {len(lab['left_out'])} left out, see `left_out.csv`), starting from "
        f"`{manifest['base']['source']}`.",
        "",
        f"**Verdict:** {manifest['verdict']}",
        "",
        f"**What predicts:** `{a['recipe']}` — {a['label']}.  Selected by CV: `{manifest['selected_by_cv']}`.",
        "",
        f"## Cross-validation on the lab's data ({cv['protocol']['folds']} folds grouped by reduced formula "
        f"x {cv['protocol']['repeats']} repeat(s), seed {cv['protocol']['seed']})",
        "",
        "MAE with a bootstrap 95 % interval over materials; the paired difference of MAE against the shipped "
        "model as it is (negative: better), with its 95 % interval; the PBE baselines on the materials with a "
        "given PBE gap.",
        "",
        "| recipe | n | MAE (eV) | 95 % interval | RMSE (eV) | vs zero-shot (eV) | 95 % interval | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in table.iterrows():
        lines.append(
            f"| {r['label']} (`{name}`) | {int(r['n'])} | {_fmt(r['mae'])} | [{_fmt(r['mae_lo'])}, "
            f"{_fmt(r['mae_hi'])}] | {_fmt(r['rmse'])} | {_fmt(r['diff_vs_zero_shot'])} | [{_fmt(r['diff_lo'])}, "
            f"{_fmt(r['diff_hi'])}] | {_fmt(r['seconds'], 1)} |"
        )
    lines += [
        "",
        f"## Intervals ({trust['level']:.0%} central, split-conformal on the lab's out-of-fold errors)",
        "",
        f"Scores normalised by: {trust['normaliser']} (the narrowest cross-fitted intervals of "
        f"{', '.join(trust['normalisers_tried'])}).  Cross-fitted coverage (each fold calibrated on the others):",
        "",
        "| subset | n | coverage | mean width (eV) | MAE (eV) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in trust["cross_fitted_coverage"]:
        lines.append(f"| {r['subset']} | {r['n']} | {r['coverage']:.2f} | {r['mean_width_ev']:.2f} | {r['mae']:.3f} |")
    lines += [
        "",
        "The applicability domain is the shipped one extended with the lab's materials (their crystal "
        "features, elements, gap and PBE-gap ranges).",
        "",
        "## When not to trust it",
        "",
        "* The figures above hold for materials like the lab's: a material of another family is judged by "
        "the shipped model's own card and by `in_domain` / `domain_note`.",
        '* With a few dozen materials every interval above is wide; a verdict of "no evidence" says the data '
        "cannot tell, not that adapting is useless.",
        "* Labels measured in another way than the lab's (optical vs electronic gap, another temperature) "
        "are a different target.",
        "* The ids of every material used and every setting are in `manifest.json`.",
        "",
    ]
    return "\n".join(lines)
