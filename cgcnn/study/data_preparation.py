"""Step 01-data-preparation/01: the ETL stage, and reading back a run's datasets (DS1, DS2, DS3).

:func:`run_etl_stage` runs :func:`cgcnn.etl.run_etl` on the work bucket and records in
``<run>/data/etl.json`` where its outputs are; :func:`load_data` reads them back as a
:class:`StudyData` (tables with anion class, crystal system and number of elements, and the
crystal graphs).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cgcnn.data.dataset import CrystalDataset
from cgcnn.data.graphset import GraphSet
from cgcnn.data.material_classes import classify_frame
from cgcnn.etl import open_bucket, run_etl
from cgcnn.fileio import atomic_write_bytes, write_json
from cgcnn.study.profiles import StudyProfile
from cgcnn.study.rundir import run_paths, write_table

# Outputs of the ETL that later stages read (bucket keys, see cgcnn.etl.run).
ETL_FILES = {
    "ds1_csv": "processed/ds1.csv",
    "ds2_csv": "processed/ds2.csv",
    "ds3_csv": "processed/ds3.csv",
    "ds1_graphs": "graphs/ds1.npz",
    "ds2_graphs": "graphs/ds2.npz",
    "ds3_graphs": "graphs/ds3.npz",
    "report": "reports/etl_report.json",
    "drops": "reports/drops.csv",
    "polymorphs": "reports/polymorphs.csv",
    "conflicts": "reports/conflicts.csv",
}


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
    t0 = time.perf_counter()
    result = run_etl(bucket, materials, profile.etl, workers=n_workers, progress=progress)
    seconds = time.perf_counter() - t0
    write_json(
        paths["data"] / "etl.json",
        {
            "bucket": result.bucket,
            "materials": materials,
            "counts": result.counts,
            "files": _etl_files(run, bucket),
            "graph_config": profile.graph.to_dict(),
            "seconds": round(seconds, 1),
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


@dataclass
class StudyData:
    """DS1/DS2/DS3 tables (with anion class, crystal system, number of elements) and graphs."""

    run_dir: Path
    ds1: pd.DataFrame
    ds2: pd.DataFrame
    ds3: pd.DataFrame
    polymorphs: pd.DataFrame
    counts: dict
    files: dict[str, Path]
    _graphs: dict = field(default_factory=dict, repr=False)

    def frames(self) -> dict[str, pd.DataFrame]:
        return {"DS1": self.ds1, "DS2": self.ds2, "DS3": self.ds3}

    def graphs(self, name: str):
        """The :class:`~cgcnn.data.graphset.GraphSet` of ``"ds1"``, ``"ds2"`` or ``"ds3"`` (loaded once)."""
        if name not in self._graphs:
            self._graphs[name] = GraphSet.load_npz(self.files[f"{name}_graphs"])
        return self._graphs[name]

    def dataset(self, name: str, target: str | None, features, ids: list[str] | None = None):
        """A :class:`~cgcnn.data.dataset.CrystalDataset` of one dataset with ``target`` as label."""
        frame = getattr(self, name)
        if ids is None:
            ids = list(frame["material_id"])
        targets = None if target is None else dict(zip(frame["material_id"], frame[target].astype(float)))
        if targets is not None:
            targets = {m: targets[m] for m in ids}
        return CrystalDataset(self.graphs(name), targets, features, ids=ids)

    def ds3_with_ds2_polymorphs(self) -> list[str]:
        """DS3 ids that share a reduced formula with a DS2 material (ETL polymorph report)."""
        p = self.polymorphs
        if p is None or len(p) == 0 or "dataset" not in p:
            return []
        return sorted(set(p.loc[p["dataset"].astype(str).str.lower() == "ds2", "ds3_id"].astype(str)))


def load_data(run_dir: str | os.PathLike) -> StudyData:
    """Read what :func:`run_etl_stage` recorded in ``<run>/data/etl.json``."""
    run = Path(run_dir)
    meta_path = run_paths(run)["data"] / "etl.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: run the ETL stage (01-data-preparation/01-etl.ipynb) first")
    meta = json.loads(meta_path.read_text())
    files = {k: (run / v if not os.path.isabs(v) else Path(v)) for k, v in meta["files"].items()}
    frames = {}
    for ds in ("ds1", "ds2", "ds3"):
        df = pd.read_csv(files[f"{ds}_csv"], dtype={"material_id": str})
        frames[ds] = classify_frame(df, formula_col="formula", spacegroup_col="spacegroup_number")
    poly_path = files.get("polymorphs")
    try:
        polymorphs = pd.read_csv(poly_path, dtype=str) if poly_path and poly_path.is_file() else pd.DataFrame()
    except pd.errors.EmptyDataError:
        polymorphs = pd.DataFrame()
    return StudyData(run, frames["ds1"], frames["ds2"], frames["ds3"], polymorphs, meta["counts"], files)
