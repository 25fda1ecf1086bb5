"""``cgcnn finetune`` step by step — what the command and the notebook
``04-your-data/01-finetune-own-data.ipynb`` both call:

1. :func:`start` — the settings, the shipped ensemble, the output checked before any work;
2. :func:`cgcnn.finetune.lab.load_lab` — the table and structures, read and checked;
3. :func:`cgcnn.finetune.protocol.make_folds` and :func:`cgcnn.finetune.recipes.lab_recipes`;
4. :func:`cgcnn.finetune.protocol.compare` — every recipe on the same folds, the verdict;
5. :func:`final_fit` — the shipped recipe on every lab material;
6. :func:`cgcnn.finetune.calibrate.calibrate` — intervals and domain;
7. :func:`write` — the model folder.

:func:`finetune` runs them all.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cgcnn.errors import DatasetError, OnError
from cgcnn.fileio import sha256_file
from cgcnn.finetune.calibrate import calibrate
from cgcnn.finetune.folder import check_output, model_card, write_folder
from cgcnn.finetune.lab import Lab, load_lab
from cgcnn.finetune.protocol import Comparison, compare, make_folds
from cgcnn.finetune.recipes import LABELS, lab_recipes
from cgcnn.finetune.settings import FinetuneSettings
from cgcnn.prediction.predictor import DEFAULT_MODEL, load_model
from cgcnn.prediction.shipped import shipped_model_dir, shipped_models
from cgcnn.provenance import collect
from cgcnn.study.engine import fit_final
from cgcnn.study.fits import FitCache

__all__ = ["Setup", "final_fit", "finetune", "start", "write"]

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Setup:
    """What every step reads: settings, the shipped model and its folder, the output, the fit
    cache, and when the run started."""

    settings: FinetuneSettings
    model: Any
    base: str
    base_dir: Path
    output: Path
    cache: FitCache
    t0: float


def start(
    output: str | Path,
    *,
    base: str = DEFAULT_MODEL,
    settings: FinetuneSettings | dict | None = None,
    cache: str | Path | None = None,
) -> Setup:
    """Validate the settings (unknown keys rejected), check the output, load the shipped model."""
    import torch

    s = settings if isinstance(settings, FinetuneSettings) else FinetuneSettings.model_validate(settings or {})
    out = check_output(output)
    base_dir = Path(base)
    if not (base_dir / "manifest.json").is_file():
        if str(base) not in shipped_models():
            raise DatasetError(f"--base {base}: neither a model folder nor a shipped model; give --base ensemble")
        base_dir = shipped_model_dir(str(base))
    base_info = json.loads((base_dir / "manifest.json").read_text())
    if base_info.get("backbone"):
        raise DatasetError(
            f"--base {base}: a model on another backbone (CHGNet); cgcnn finetune adapts a CGCNN ensemble "
            "with its members, trees and calibration: give a copy of one"
        )
    if base_info.get("kind") == "adapted":
        raise DatasetError(
            f"--base {base}: already adapted by cgcnn finetune; adapt the shipped ensemble instead "
            "(--base ensemble), with every measurement in one table"
        )
    torch.manual_seed(s.seed)
    torch.set_num_threads(s.threads)
    model = load_model(str(base_dir), device=s.device)
    root = Path(cache) if cache is not None else out.parent / f".{out.name}.fits"
    return Setup(s, model, str(base), base_dir, out, FitCache(root), time.perf_counter())


def final_fit(setup: Setup, lab: Lab, comparison: Comparison, recipes) -> dict:
    """The shipped recipe fitted on every lab material: what the model folder needs."""
    by_name = {r.name: r for r in recipes}
    s = setup.settings
    comps = by_name["average"].parts if comparison.final == "average" else [by_name[comparison.final]]
    parts: dict = {"components": [r.name for r in comps], "linear": None, "finetuned": None, "residual_trees": None}
    infos = {}
    for r in comps:
        fitted = fit_final(r, lab.materials, seed=s.seed, val_fraction=s.inner_val_fraction)
        infos[r.name] = _plain(fitted.info)
        if r.name == "recalibrated":
            parts["linear"] = {"intercept": fitted.info["intercept"], "slope": fitted.info["slope"]}
        elif r.name == "finetuned":
            parts["finetuned"] = fitted.info["checkpoints"]
            parts["policy"] = fitted.info["policy"]
        elif r.name == "residual_trees":
            parts["residual_trees"] = fitted.info["model"]
            parts["residual_params"] = fitted.info["params"]
    parts["infos"] = infos
    return parts


def write(setup: Setup, lab: Lab, comparison: Comparison, parts: dict, trust, scale: float, report: dict, inputs):
    """The model folder (see :mod:`cgcnn.finetune.folder`)."""
    s, final = setup.settings, comparison.final
    folds = comparison.folds
    adaptation = {
        "recipe": final,
        "label": LABELS[final],
        "components": parts["components"],
        "linear": parts["linear"],
        "finetuned": {"policy": parts["policy"]} if parts["finetuned"] else None,
        "residual_trees": {
            "file": "residual-trees.skops",
            "params": parts["residual_params"],
            "features": "Magpie composition (132) + PBE gap + zero-shot prediction; learns the zero-shot residual",
        }
        if parts["residual_trees"] is not None
        else None,
    }
    base_manifest = json.loads((setup.base_dir / "manifest.json").read_text())
    table_path, structures = inputs
    manifest = {
        "name": setup.output.name,
        "description": f"{base_manifest.get('description', 'the shipped ensemble')} Adapted by cgcnn finetune: "
        f"{LABELS[final]}.",
        "target": "bg_exp",
        "calibration": {"scale": scale},
        "adaptation": adaptation,
        "verdict": comparison.verdict,
        "selected_by_cv": comparison.selected,
        "cv": {
            "protocol": {
                "folds": len({f.fold for f in folds}),
                "repeats": s.repeats,
                "seed": s.seed,
                "grouped_by": "reduced formula",
                "inner_val_fraction": s.inner_val_fraction,
                "n": len(lab),
            },
            "table": {
                k: {c: (None if pd.isna(v) else v) for c, v in row.items()} for k, row in comparison.table.iterrows()
            },
            "folds": [{"repeat": f.repeat, "fold": f.fold, "test": [lab.ids[p] for p in f.test]} for f in folds],
            "fits": {k: [_plain(i) for i in v.infos] for k, v in comparison.oof.items()},
        },
        "trust": report,
        "final_fits": parts["infos"],
        "lab": {
            "table": str(table_path),
            "table_sha256": sha256_file(table_path),
            "structures": [str(x) for x in (structures if isinstance(structures, (list, tuple)) else [structures])],
            "n_listed": lab.n_listed,
            "n_used": len(lab),
            "ids": lab.ids,
            "pbe_given": int(np.isfinite(lab.materials.pbe).sum()),
            "left_out": [{"item": p.item_id, "reason": p.reason} for p in lab.problems],
        },
        "base": {
            "source": setup.base,
            "name": base_manifest.get("name"),
            "method": base_manifest.get("method"),
            "files": base_manifest.get("files"),
            "shipped_git_sha": (base_manifest.get("shipped_with") or {}).get("git_sha"),
        },
        "settings": s.to_dict(),
        "wall_time_s": round(time.perf_counter() - setup.t0, 1),
        "made_with": collect(REPO),
    }
    oof = pd.concat([r.predictions for r in comparison.oof.values()], ignore_index=True)
    tables = {
        "cv.csv": comparison.table,
        "cv_predictions.csv": oof,
        "left_out.csv": pd.DataFrame(manifest["lab"]["left_out"], columns=["item", "reason"]),
    }
    card = model_card(manifest, comparison.table)
    return write_folder(
        setup.output,
        setup.base_dir,
        {"finetuned": parts["finetuned"], "residual_trees": parts["residual_trees"], "trust": trust},
        manifest,
        card,
        tables,
    )


def _plain(info: dict) -> dict:
    """A fit's record without its fitted objects (models, checkpoint paths)."""
    return {k: v for k, v in info.items() if k not in ("model", "checkpoints")}


def finetune(
    table: str | Path,
    structures,
    output: str | Path,
    *,
    base: str = DEFAULT_MODEL,
    settings: FinetuneSettings | dict | None = None,
    cache: str | Path | None = None,
    on_error: OnError = "skip",
    strict: bool = False,
    workers: int = 1,
    echo: Callable[[str], Any] | None = print,
    report: Callable[[Any], Any] | None = None,
) -> tuple[Path, Comparison, Lab]:
    """Every step of the module docstring; returns (model folder, comparison, lab)."""
    setup = start(output, base=base, settings=settings, cache=cache)
    s = setup.settings
    lab = load_lab(
        table,
        structures,
        setup.model,
        min_materials=s.min_materials,
        on_error=on_error,
        strict=strict,
        workers=workers,
        echo=echo,
        report=report,
    )
    folds = make_folds(lab, s)
    recipes = lab_recipes(lab, s, setup.cache, echo)
    comparison = compare(lab, recipes, folds, s, echo=echo)
    parts = final_fit(setup, lab, comparison, recipes)
    trust, scale, report = calibrate(
        lab, comparison.oof[comparison.final], folds, level=s.level, min_class_scores=s.min_class_scores
    )
    out = write(setup, lab, comparison, parts, trust, scale, report, (table, structures))
    if cache is None:  # the default cache only serves a rerun after a crash: the model folder has what it needs
        shutil.rmtree(setup.cache.root, ignore_errors=True)
    return out, comparison, lab
