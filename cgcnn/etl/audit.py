"""The ETL's reports: what was dropped, what disagreed, and the JSON run report.

Report tables, each written to ``reports/<name>.csv``:

``drops``            every raw row that did not make it into a dataset, with its reason
``conflicts``        DS2 materials whose sources differ by more than the threshold
``suspicious_labels`` DS2 labels that look wrong: their sources disagree (a conflict), or the
                     gap is far below its PBE gap (PBE normally underestimates gaps)
``polymorphs``       DS3 materials sharing a reduced formula with DS1/DS2 materials
``formula_matches``  rows resolved by formula (status unique / ambiguous / unmatched)
``notes``            non-fatal observations (formula mismatches, unparseable secondary labels)

``reports/etl_report.json`` (:func:`build_report`) holds the counts, those tables, the input
checksums, the Materials Project database version, the configuration and the timings.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cgcnn.config import EtlConfig
from cgcnn.data.label_audit import suspicious_labels
from cgcnn.etl.resolve import MATCH_COLUMNS
from cgcnn.etl.rules import DATASETS, DROP_COLUMNS, DROP_REASONS, NOTE_COLUMNS, Outcome
from cgcnn.etl.storage import Bucket, open_bucket
from cgcnn.provenance import collect

__all__ = [
    "REPORT_FORMAT",
    "ReportTables",
    "build_report",
    "collect_reports",
    "count_outputs",
    "find_polymorphs",
    "load_report",
    "write_report",
    "suspicious_labels",
    "write_report_tables",
]

REPORT_FORMAT = 1


@dataclass
class ReportTables:
    """The report tables of one run (see the module docstring)."""

    drops: pd.DataFrame
    conflicts: pd.DataFrame
    polymorphs: pd.DataFrame
    formula_matches: pd.DataFrame
    notes: pd.DataFrame
    suspicious_labels: pd.DataFrame

    def items(self) -> list[tuple[str, pd.DataFrame]]:
        """(name, table) in the order the reports are written."""
        return [
            ("drops", self.drops),
            ("conflicts", self.conflicts),
            ("polymorphs", self.polymorphs),
            ("formula_matches", self.formula_matches),
            ("notes", self.notes),
            ("suspicious_labels", self.suspicious_labels),
        ]


def find_polymorphs(ds3: pd.DataFrame, others: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """DS3 materials that share a reduced formula with a different material elsewhere.

    E.g. CdSe: mp-2691 (zinc blende) in DS3 and mp-1070 (wurtzite) in DS2.  One row per
    (DS3 material, other material) pair.
    """
    columns = ["formula", "ds3_id", "ds3_spacegroup", "dataset", "material_id", "spacegroup_symbol"]
    rows = []
    for name, df in others.items():
        by_formula = df.groupby("formula", sort=False)
        groups = {f: g for f, g in by_formula}
        for _, r in ds3.iterrows():
            match = groups.get(r["formula"])
            if match is None:
                continue
            for _, o in match.iterrows():
                if o["material_id"] == r["material_id"]:
                    continue
                rows.append(
                    {
                        "formula": r["formula"],
                        "ds3_id": r["material_id"],
                        "ds3_spacegroup": r["spacegroup_symbol"],
                        "dataset": name,
                        "material_id": o["material_id"],
                        "spacegroup_symbol": o["spacegroup_symbol"],
                    }
                )
    df = pd.DataFrame(rows, columns=columns)
    return df.sort_values(["dataset", "formula", "ds3_id", "material_id"], kind="stable").reset_index(drop=True)


def collect_reports(
    outcomes: Mapping[str, Outcome],
    tables: Mapping[str, pd.DataFrame],
    graph_drops: list[dict],
    *,
    below_pbe_ev: float = 0.5,
) -> ReportTables:
    """The report tables from the rules' outcomes and the final datasets.

    ``tables`` are the datasets as written (after graph failures were dropped): a conflict's
    ``in_ds2`` and the polymorph pairs refer to them.
    """
    drops = pd.DataFrame([d for o in outcomes.values() for d in o.drops] + graph_drops, columns=DROP_COLUMNS)
    drops["row"] = drops["row"].astype("Int64")
    notes = pd.DataFrame([n for o in outcomes.values() for n in o.notes], columns=NOTE_COLUMNS)
    matches = pd.DataFrame([m for o in outcomes.values() for m in o.matches], columns=MATCH_COLUMNS)
    ds2 = outcomes["ds2"]
    conflicts = ds2.conflicts if ds2.conflicts is not None else pd.DataFrame()
    if len(conflicts):
        conflicts["in_ds2"] = conflicts["material_id"].isin(set(tables["ds2"]["material_id"]))
    polymorphs = find_polymorphs(tables["ds3"], {"ds2": tables["ds2"], "ds1": tables["ds1"]})
    suspicious = suspicious_labels(tables["ds2"], conflicts, below_pbe_ev)
    return ReportTables(drops, conflicts, polymorphs, matches, notes, suspicious)


def count_outputs(tables: Mapping[str, pd.DataFrame], reports: ReportTables) -> dict:
    """Materials per dataset, drops per reason (and per dataset), report sizes."""
    drops, matches = reports.drops, reports.formula_matches
    return {
        "ds1": len(tables["ds1"]),
        "ds2": len(tables["ds2"]),
        "ds3": len(tables["ds3"]),
        "dropped": len(drops),
        "drops_by_reason": {r: int((drops["reason"] == r).sum()) for r in DROP_REASONS},
        "drops_by_dataset": {
            ds: {r: int(((drops["dataset"] == ds) & (drops["reason"] == r)).sum()) for r in DROP_REASONS}
            for ds in DATASETS
        },
        "conflicts": len(reports.conflicts),
        "suspicious_labels": len(reports.suspicious_labels),
        "polymorphs": len(reports.polymorphs),
        "formula_matches": {s: int((matches["status"] == s).sum()) for s in ("unique", "ambiguous", "unmatched")},
        "notes": len(reports.notes),
    }


def write_report_tables(bucket: Bucket, reports: ReportTables) -> dict[str, str]:
    """Write ``reports/<name>.csv`` for every report table; returns name -> URI."""
    paths = {}
    for name, df in reports.items():
        bucket.write_csv(f"reports/{name}.csv", df)
        paths[name] = bucket.key_uri(f"reports/{name}.csv")
    return paths


def build_report(
    *,
    bucket_uri: str,
    provenance: dict,
    checksums: dict[str, dict],
    config: EtlConfig,
    counts: dict,
    graph_entries: dict[str, dict],
    timings: dict[str, float],
    reports: ReportTables,
) -> dict:
    """The JSON run report (``reports/etl_report.json``)."""
    report = {
        "format": REPORT_FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "bucket": bucket_uri,
        "materials": provenance,
        "database_version": provenance.get("database_version"),
        "inputs": checksums,
        "config": config.to_dict(),
        "counts": counts,
        "gap_windows": {"ds1": config.ds1.gap_window.describe(), "ds2": config.ds2.gap_window.describe()},
        "graphs": {ds: graph_entries.get(ds) for ds in DATASETS} if config.build_graphs else None,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "environment": collect(),
        "drops": reports.drops.to_dict(orient="records"),
        "conflicts": reports.conflicts.to_dict(orient="records"),
        "polymorphs": reports.polymorphs.to_dict(orient="records"),
        "formula_matches": reports.formula_matches[reports.formula_matches["status"] != "unique"].to_dict(
            orient="records"
        ),
        "notes": reports.notes.to_dict(orient="records"),
        "suspicious_labels": reports.suspicious_labels.to_dict(orient="records"),
    }
    if config.build_graphs and "_seconds" in graph_entries:
        report["timings_s"].update(graph_entries["_seconds"])
    return report


REPORT_KEY = "reports/etl_report.json"


def write_report(bucket: Bucket, report: dict) -> str:
    """Write ``reports/etl_report.json`` (last: its presence says the outputs are complete); returns its URI."""
    bucket.write_json(REPORT_KEY, report)
    return bucket.key_uri(REPORT_KEY)


def load_report(bucket_uri: str | Path | Bucket) -> dict:
    """The ``reports/etl_report.json`` of a bucket."""
    return open_bucket(bucket_uri).read_json(REPORT_KEY)
