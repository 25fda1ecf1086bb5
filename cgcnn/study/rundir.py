"""The run folder: its standard paths and the table writer.

Every stage writes into one *run folder* (layout in :mod:`cgcnn.study`).  JSON files are
written with :func:`cgcnn.fileio.write_json`, CSV tables with :func:`write_table`, both
atomically.  (The work bucket the ETL writes to is decided in
:func:`cgcnn.study.data_preparation.work_bucket`.)
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cgcnn.errors import CgcnnError
from cgcnn.fileio import atomic_write_bytes, write_json

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "RUN_FILES",
    "RunFile",
    "STAGE_OUTPUTS",
    "clear",
    "CvMissingError",
    "load_cv_table",
    "read_json",
    "require_cv",
    "run_paths",
    "write_json",
    "write_table",
]


def write_table(path: str | os.PathLike, df: pd.DataFrame, *, index: bool = True) -> Path:
    """Write a CSV table atomically."""
    return atomic_write_bytes(Path(path), df.to_csv(index=index).encode())


@dataclass(frozen=True)
class RunFile:
    """One file of a run folder: where it is, which stage writes it, what it holds."""

    path: str  # relative to the run folder
    stage: str  # the stage that writes it (``runner``: scripts/run_pipeline.py)
    what: str


# Every record of a run folder, by name: the one place these file names are spelled.  Stages
# and scripts ask for them by key (``run_paths(run)["trust"]``).
RUN_FILES: dict[str, RunFile] = {
    "config": RunFile("config.json", "runner", "resolved profile, overrides, inputs, the fit cache"),
    "environment": RunFile("environment.json", "runner", "versions, git SHA, machine"),
    "etl": RunFile("data/etl.json", "etl", "where the ETL's outputs are, and its counts"),
    "cv": RunFile("cv.json", "cross-validation", "the CV protocol, chosen recipes and CV table (before DS3)"),
    "methods": RunFile("methods.json", "methods", "the methods candidates' CV, the selection, its calibration"),
    "trust": RunFile("trust.json", "trust", "intervals, applicability domain, suspicious labels"),
    "metrics": RunFile("metrics.json", "final-models-and-ds3", "DS3 scored once: every model and baseline"),
    "report": RunFile("report.md", "report", "the report, from the run's own numbers"),
}
FOLDERS = ("data", "models", "tables", "figures")
# What a stage removes before it runs, so that nothing stale is read while it runs (or after it,
# when it writes less this time): its record, and the files it may not rewrite.  Fits stay in
# the fit cache.
STAGE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "cross-validation": (RUN_FILES["cv"].path,),
    "methods": (
        RUN_FILES["methods"].path,
        "models/ensemble",
        "tables/methods_cv_metrics.csv",
        "tables/methods_ensemble_size.csv",
        "tables/methods_backbones.csv",
    ),
    "trust": (RUN_FILES["trust"].path, "models/trust", "tables/trust_*.csv", "tables/suspicious_labels.csv"),
}


def clear(run_dir: str | os.PathLike, stage: str) -> None:
    """Remove what ``stage`` wrote earlier (:data:`STAGE_OUTPUTS`)."""
    for pattern in STAGE_OUTPUTS[stage]:
        for path in Path(run_dir).glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def run_paths(run_dir: str | os.PathLike) -> dict[str, Path]:
    """The standard sub-folders (``data``, ``models``, ``tables``, ``figures``) and every record of
    :data:`RUN_FILES` of a run folder, by key (created on demand by the writers)."""
    run = Path(run_dir)
    return {"run": run, **{f: run / f for f in FOLDERS}, **{k: run / f.path for k, f in RUN_FILES.items()}}


class CvMissingError(CgcnnError, FileNotFoundError):
    """DS3 may be scored only after the cross-validation has chosen the models."""


def read_json(path: str | os.PathLike) -> dict | None:
    """A JSON file of the run folder, or None when it does not exist."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def require_cv(run_dir: str | os.PathLike) -> dict:
    """The CV record ``<run>/cv.json``; refuses (one clear line) when it does not exist."""
    path = run_paths(run_dir)["cv"]
    record = read_json(path)
    if record is None:
        raise CvMissingError(
            f"{path} not found: DS3 is scored only after the cross-validation on DS2 has chosen the "
            "models; run the cross-validation stage (02-ml-dev/02-cross-validation.ipynb) first"
        )
    return record


def load_cv_table(run_dir: str | os.PathLike) -> pd.DataFrame:
    """The CV table of every model a run cross-validated: the methods step's
    (``tables/methods_cv_metrics.csv``: the fine-tuning study, the baselines and the methods
    candidates on the same paired rows) when it ran, else the fine-tuning study's
    (``tables/cv_metrics.csv``)."""
    import pandas as pd

    tables = run_paths(run_dir)["tables"]
    path = tables / "methods_cv_metrics.csv"
    return pd.read_csv(path if path.is_file() else tables / "cv_metrics.csv", index_col="model")
