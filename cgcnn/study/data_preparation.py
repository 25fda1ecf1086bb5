"""Step 01-data-preparation/01: the ETL stage.

:func:`work_bucket` decides which bucket the ETL writes to (the runner and the ETL notebook
both call it); :func:`run_etl_stage` runs :func:`cgcnn.etl.run_etl` on it and records in
``<run>/data/etl.json`` where its outputs are.  Later steps read them back with
:func:`cgcnn.study.datasets.load_data` (re-exported here), which needs nothing of the ETL.
The record holds no timing (the stage's manifest does): the same inputs give the same bytes,
so an ETL rerun that changes nothing reruns nothing after it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from cgcnn.etl import open_bucket, prepare_work_bucket, run_etl
from cgcnn.fileio import atomic_write_bytes, write_json
from cgcnn.study.datasets import ETL_FILES, StudyData, load_data
from cgcnn.study.profiles import StudyProfile
from cgcnn.study.rundir import run_paths, write_table

__all__ = [
    "StudyData",
    "bucket_location",
    "etl_counts_table",
    "etl_drops_table",
    "is_remote",
    "load_data",
    "run_etl_stage",
    "work_bucket",
]


def run_etl_stage(
    run_dir: str | os.PathLike,
    bucket: str,
    materials: str,
    profile: StudyProfile,
    *,
    workers: int | None = None,
    progress: bool = True,
):
    """Run the ETL on ``bucket`` and record where its outputs are in ``<run>/data/etl.json``.

    A local bucket's outputs are read in place; an S3 bucket's are downloaded into
    ``<run>/data/`` so later stages never need the network.

    Returns:
        the :class:`cgcnn.etl.EtlResult`.
    """
    run = Path(run_dir)
    paths = run_paths(run)
    n_workers = workers or profile.workers or os.cpu_count() or 1
    (paths["data"] / "etl.json").unlink(missing_ok=True)  # a failed ETL leaves no record for later stages to trust
    result = run_etl(bucket, materials, profile.etl, workers=n_workers, progress=progress)
    write_json(
        paths["data"] / "etl.json",
        {
            "bucket": result.bucket,
            "materials": materials,
            "counts": result.counts,
            "files": _etl_files(run, bucket),
            "graph_config": profile.graph.to_dict(),
        },
    )
    write_table(paths["tables"] / "etl_counts.csv", etl_counts_table(result))
    write_table(paths["tables"] / "etl_drops.csv", etl_drops_table(result))
    return result


def _etl_files(run: Path, bucket: str) -> dict[str, str]:
    """Where each ETL output is: in place for a local bucket, else a copy in ``<run>/data/``.

    Paths inside the run folder are recorded relative to it.
    """
    store = open_bucket(bucket)
    root = store.local_root()
    data_dir = run_paths(run)["data"]
    files = {}
    for name, key in ETL_FILES.items():
        if root is not None:
            path = (Path(root) / key).resolve()
        else:
            path = atomic_write_bytes(data_dir / key.replace("/", "_"), store.read_bytes(key))
        files[name] = os.path.relpath(path, run.resolve()) if run.resolve() in path.parents else str(path)
    return files


def etl_counts_table(result) -> pd.DataFrame:
    """Materials per dataset (DS1 PBE gaps, DS2 experimental gaps, DS3 validation)."""
    c = result.counts
    rows = [
        {"dataset": "DS1", "materials": c["ds1"], "label": "PBE gap (bg_pbe)"},
        {"dataset": "DS2", "materials": c["ds2"], "label": "experimental gap (bg_exp)"},
        {"dataset": "DS3", "materials": c["ds3"], "label": "experimental gap; HSE06, G0W0 where known"},
    ]
    return pd.DataFrame(rows).set_index("dataset")


def etl_drops_table(result) -> pd.DataFrame:
    """Dropped raw rows: reason × dataset (only reasons that occur), with totals."""
    by = result.counts["drops_by_dataset"]
    table = pd.DataFrame({ds.upper(): counts for ds, counts in by.items()}).fillna(0).astype(int)
    table = table[table.sum(axis=1) > 0]
    table["total"] = table.sum(axis=1)
    table.index.name = "reason"
    return table


def is_remote(bucket: str | os.PathLike) -> bool:
    """Whether ``bucket`` is a remote URI (``s3://…``); ``file://`` and plain paths are local."""
    text = str(bucket)
    return "://" in text and not text.startswith("file://")


def bucket_location(bucket: str | os.PathLike) -> str:
    """A remote URI as it is; a local bucket (path or ``file://``) as an absolute, resolved path."""
    text = str(bucket)
    if is_remote(text):
        return text
    return str(Path(text.removeprefix("file://")).expanduser().resolve())


def work_bucket(run_dir: str | os.PathLike, bucket: str | os.PathLike, *, copy: bool = True) -> str:
    """The bucket the ETL may write to.

    A local folder outside the run folder is never written: its ``raw/`` inputs are copied
    into ``<run>/bucket/raw/`` (files with identical bytes are not copied again) and that
    copy is returned.  An ``s3://`` bucket, or a folder already inside the run, is returned
    as it is (the ETL writes ``processed/``, ``graphs/``, ``reports/`` beside ``raw/``, as in
    the original workflow).  ``copy=False`` only names the work bucket (nothing is copied).
    """
    location = bucket_location(bucket)
    if is_remote(location):
        return location
    source = Path(location)
    run = Path(run_dir).expanduser().resolve()
    if source == run or run in source.parents:
        return str(source)
    target = run / "bucket"
    if copy:
        prepare_work_bucket(source, target)
    return str(target)
