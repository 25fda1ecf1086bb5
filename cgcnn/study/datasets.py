"""A run's datasets read back: DS1, DS2, DS3 tables (with anion class, crystal system, number of
elements) and their crystal graphs, from what the ETL stage recorded in ``<run>/data/etl.json``.

Every step after the ETL starts here; none of them imports the ETL itself
(:mod:`cgcnn.study.data_preparation`), so a change to the ETL's code reruns only the ETL (and
the steps whose inputs it changes).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cgcnn.data.dataset import CrystalDataset
from cgcnn.data.graphset import GraphSet
from cgcnn.data.material_classes import classify_frame
from cgcnn.study.rundir import run_paths

__all__ = ["ETL_FILES", "StudyData", "load_data"]

# Outputs of the ETL that later stages read (bucket keys, see cgcnn.etl.run).
ETL_FILES = {
    "ds1_csv": "processed/ds1.csv",
    "ds2_csv": "processed/ds2.csv",
    "ds3_csv": "processed/ds3.csv",
    "ds1_graphs": "graphs/ds1.npz",
    "ds2_graphs": "graphs/ds2.npz",
    "ds3_graphs": "graphs/ds3.npz",
    "ds2_json": "json/ds2.json",  # material_id -> row fields + CIF (the structures a backbone reads)
    "ds3_json": "json/ds3.json",
    "report": "reports/etl_report.json",
    "drops": "reports/drops.csv",
    "polymorphs": "reports/polymorphs.csv",
    "conflicts": "reports/conflicts.csv",
}


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

    def structures(self, name: str, ids: list[str] | None = None) -> dict:
        """id -> pymatgen ``Structure`` of ``"ds2"`` or ``"ds3"`` (from the ETL's CIFs), in ``ids`` order."""
        from pymatgen.core import Structure

        path = self.files.get(f"{name}_json")  # recorded since the backbones; before, beside processed/
        path = Path(path) if path else Path(self.files[f"{name}_csv"]).parent.parent / "json" / f"{name}.json"
        rows = json.loads(path.read_text())
        ids = list(getattr(self, name)["material_id"]) if ids is None else ids
        return {m: Structure.from_str(rows[m]["cif"], fmt="cif") for m in ids}

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
