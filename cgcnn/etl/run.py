"""The ETL run: bucket ``raw/`` + Materials Project -> DS1/DS2/DS3, graphs and reports.

Outputs, written back to the bucket::

    processed/ds{1,2,3}.csv (+ .xlsx)   one row per material, first column material_id
    json/ds{1,2,3}.json                 material_id -> row fields + CIF text
    graphs/ds{1,2,3}.json.gz            JSON crystal graphs with their graph settings
    graphs/ds{1,2,3}.npz                the same graphs, compact binary (GraphSet.load_npz)
    graphs/manifest.json                content keys that let a re-run reuse the graphs
    reports/etl_report.json             counts, drops, conflicts, database version, checksums
    reports/{drops,conflicts,polymorphs,formula_matches,notes}.csv
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import pandas as pd

from cgcnn.etl.config import EtlConfig
from cgcnn.etl.materials import MaterialRecord, MaterialsSource, open_materials
from cgcnn.etl.rules import (
    DROP_COLUMNS,
    DROP_REASONS,
    MATCH_COLUMNS,
    NOTE_COLUMNS,
    Outcome,
    SourceTable,
    build_ds1,
    build_ds2,
    build_ds3,
    find_polymorphs,
    table_from_cells,
)
from cgcnn.etl.storage import Bucket, LocalBucket, StorageError, open_bucket
from cgcnn.provenance import collect

__all__ = ["EtlResult", "RawInputs", "load_report", "prepare_work_bucket", "read_inputs", "run_etl"]

REPORT_FORMAT = 1
DATASETS = ("ds1", "ds2", "ds3")


@dataclass
class EtlResult:
    """Everything one ETL run produced.

    Attributes:
        counts: materials per dataset and drops per reason.
        paths: output name -> URI (``ds1_csv``, ``ds1_graphs``, ``report``, …).
        ds1, ds2, ds3: the dataset tables.
        drops: every raw row that did not make it into a dataset (see ``rules.DROP_REASONS``).
        conflicts: DS2 materials whose sources differ by more than the threshold.
        polymorphs: DS3 materials sharing a reduced formula with DS1/DS2 materials.
        formula_matches: rows resolved by formula (status unique / ambiguous / unmatched).
        notes: non-fatal observations (formula mismatches, unparseable secondary labels).
        graphs_reused: dataset -> True when its graphs were reused from the bucket.
        report: the JSON report as written.
    """

    bucket: str
    counts: dict
    paths: dict[str, str]
    ds1: pd.DataFrame
    ds2: pd.DataFrame
    ds3: pd.DataFrame
    drops: pd.DataFrame
    conflicts: pd.DataFrame
    polymorphs: pd.DataFrame
    formula_matches: pd.DataFrame
    notes: pd.DataFrame
    graphs_reused: dict[str, bool] = field(default_factory=dict)
    report: dict = field(default_factory=dict)

    def summary(self) -> str:
        c = self.counts
        lines = [
            f"DS1 {c['ds1']} materials, DS2 {c['ds2']}, DS3 {c['ds3']}",
            f"dropped rows: {c['dropped']} "
            + ", ".join(f"{k} {v}" for k, v in c["drops_by_reason"].items() if v),
            f"DS2 source conflicts: {c['conflicts']}; DS3 polymorph pairs: {c['polymorphs']}",
            *(
                [f"WARNING: {sum(c['drops_by_dataset']['ds3'].values())} DS3 row(s) could not be used (see drops)"]
                if sum(c["drops_by_dataset"]["ds3"].values())
                else []
            ),
            f"report: {self.paths.get('report')}",
        ]
        return "\n".join(lines)

    def __repr__(self) -> str:
        c = self.counts
        return f"EtlResult(bucket={self.bucket!r}, ds1={c['ds1']}, ds2={c['ds2']}, ds3={c['ds3']})"


# ------------------------------------------------------------------------------ inputs
def _fmt(key: str, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    return "xlsx" if key.lower().endswith((".xlsx", ".xlsm")) else "csv"


def _read_table(bucket: Bucket, key: str, fmt: str, header_rows: int, sheet) -> tuple[pd.DataFrame, int]:
    """Raw cells with named columns, and the line number of the first data row."""
    where = bucket.key_uri(key)
    if fmt == "xlsx":
        cells = bucket.read_excel(key, sheet_name=sheet, header=None, dtype=object)
    else:
        cells = bucket.read_csv(key, header=None, dtype=str, keep_default_na=False)
    return table_from_cells(cells, header_rows, where)


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"[etl] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ graphs
def _graph_key(items: list[tuple[str, str]], cfg) -> str:
    """Content key of one dataset's graphs: graph settings, format version, ids and CIF bytes."""
    from cgcnn.graphset import JSON_FORMAT, JSON_VERSION

    digest = hashlib.sha256(f"graph:{cfg.key()}:{JSON_FORMAT}:{JSON_VERSION}\n".encode())
    for mid, cif in items:
        digest.update(mid.encode() + b"\0" + hashlib.sha256(cif.encode()).digest() + b"\n")
    return digest.hexdigest()


def _build_or_reuse_graphs(
    bucket: Bucket,
    tables: dict[str, pd.DataFrame],
    records: dict[str, MaterialRecord],
    config: EtlConfig,
    *,
    workers: int,
    progress: bool,
) -> tuple[dict[str, dict], dict[str, list[tuple[str, str]]]]:
    """Graphs of every dataset, reused from ``graphs/`` when the content key matches.

    Returns (manifest entries per dataset, problems per dataset as (id, reason)).
    """
    from cgcnn.building import build_graphs

    cfg = config.graph
    items = {ds: [(m, records[m].structure_cif) for m in tables[ds]["material_id"]] for ds in DATASETS}
    keys = {ds: _graph_key(items[ds], cfg) for ds in DATASETS}
    try:
        old = bucket.read_json("graphs/manifest.json") if bucket.exists("graphs/manifest.json") else {}
    except StorageError:
        old = {}
    entries, problems = {}, {}
    todo = []
    for ds in DATASETS:
        prev = (old.get("datasets") or {}).get(ds)
        if (
            prev
            and prev.get("key") == keys[ds]
            and bucket.exists(f"graphs/{ds}.json.gz")
            and bucket.exists(f"graphs/{ds}.npz")
        ):
            entries[ds] = {**prev, "reused": True}
            problems[ds] = [tuple(p) for p in prev.get("problems", [])]
        else:
            todo.append(ds)
    if not todo:
        return entries, problems

    union: dict[str, str] = {}
    for ds in todo:
        union.update(items[ds])
    cache_dir = Path(config.graph_cache_dir).expanduser() if config.graph_cache_dir else None
    _say(progress, f"building graphs for {len(union)} structures ({', '.join(todo)}; {workers} worker(s))")
    t0 = time.perf_counter()
    graphs, bad = build_graphs(list(union.items()), cfg, cache_dir=cache_dir, workers=workers,
                               on_error="skip", progress=progress)
    build_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    bad_reason = {p.item_id: p.reason for p in bad}
    with tempfile.TemporaryDirectory(prefix="cgcnn-etl-") as tmp:
        for ds in todo:
            ids = [m for m, _ in items[ds] if m in graphs]
            subset = graphs.subset(ids)
            json_path = Path(tmp) / f"{ds}.json.gz"
            npz_path = Path(tmp) / f"{ds}.npz"
            subset.write_json(json_path)
            subset.save_npz(npz_path)
            bucket.upload_file(f"graphs/{ds}.json.gz", json_path)
            bucket.upload_file(f"graphs/{ds}.npz", npz_path)
            problems[ds] = [(m, bad_reason[m]) for m, _ in items[ds] if m in bad_reason]
            entries[ds] = {
                "key": keys[ds],
                "n_graphs": len(subset),
                "problems": [list(p) for p in problems[ds]],
                "graph_config": cfg.model_dump(mode="json"),
                "reused": False,
            }
    entries["_seconds"] = {"graph_build": round(build_seconds, 2), "graph_write": round(time.perf_counter() - t0, 2)}
    return entries, problems


# ------------------------------------------------------------------------------ raw inputs
@dataclass
class RawInputs:
    """The raw tables of one bucket as read (cells untouched) and their checksums."""

    ds1: tuple[pd.DataFrame, int]
    ds2: list[SourceTable]
    ds3: tuple[pd.DataFrame, int]
    checksums: dict[str, dict]

    def queries(self, config: EtlConfig) -> tuple[list[str], list[str]]:
        """Ids to look up, and formulas of rows that have no id (in table order)."""
        ids: dict[str, None] = {}
        formulas: dict[str, None] = {}

        def collect(df: pd.DataFrame, id_col: str | None, formula_col: str | None) -> None:
            id_cells = df[id_col].tolist() if id_col and id_col in df.columns else [None] * len(df)
            f_cells = df[formula_col].tolist() if formula_col and formula_col in df.columns else [None] * len(df)
            for mid, formula in zip(id_cells, f_cells):
                mid = _text(mid)
                if mid:
                    ids[mid] = None
                elif _text(formula):
                    formulas[_text(formula)] = None

        collect(self.ds1[0], config.ds1.id_column, None)
        for st in self.ds2:
            collect(st.table, st.config.id_column, st.config.formula_column)
        collect(self.ds3[0], config.ds3.id_column, config.ds3.formula_column)
        return list(ids), list(formulas)


def _text(cell) -> str:
    if cell is None or (isinstance(cell, float) and cell != cell):
        return ""
    return str(cell).strip()


def read_inputs(bucket: Bucket, config: EtlConfig) -> RawInputs:
    """Read DS1 ids, the DS2 sources and the DS3 table named by ``config``."""
    checksums: dict[str, dict] = {}

    def note(key: str) -> None:
        data = bucket.read_bytes(key)
        checksums[key] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}

    ds1 = _read_table(bucket, config.ds1.ids_key, _fmt(config.ds1.ids_key), 1, 0)
    note(config.ds1.ids_key)
    ds2 = []
    for src in config.ds2.sources:
        df, first = _read_table(bucket, src.key, _fmt(src.key, src.format), src.header_rows, src.sheet)
        note(src.key)
        ds2.append(SourceTable(src, df, first))
    ds3 = _read_table(bucket, config.ds3.key, _fmt(config.ds3.key), 1, 0)
    note(config.ds3.key)
    return RawInputs(ds1, ds2, ds3, checksums)


# ------------------------------------------------------------------------------ the run
def run_etl(
    bucket_uri: str | Path | Bucket,
    materials: str | MaterialsSource,
    config: EtlConfig | None = None,
    *,
    workers: int = 1,
    progress: bool = True,
) -> EtlResult:
    """Build DS1/DS2/DS3 from a bucket's ``raw/`` inputs and write every output back.

    Args:
        bucket_uri: ``s3://bucket/prefix`` or a local folder holding ``raw/``.  Never a
            folder under ``../shared`` (use :func:`prepare_work_bucket` to copy inputs).
        materials: ``snapshot:PATH``, ``mp`` (live, key from ``MP_API_KEY``), ``mp:ENDPOINT``,
            or a ready :class:`~cgcnn.etl.materials.MaterialsSource`.
        config: wrangling rules and graph settings (defaults reproduce the study).
        workers: processes for graph building.
        progress: print stage messages and a progress bar to stderr.
    """
    config = config or EtlConfig()
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    bucket = open_bucket(bucket_uri)
    if isinstance(bucket, LocalBucket):
        bucket.ensure_writable()
    bucket.check()
    source = open_materials(materials, batch_size=config.mp_batch_size)

    # 1. read the raw tables
    t0 = time.perf_counter()
    raw = read_inputs(bucket, config)
    ds1_table, ds1_first = raw.ds1
    ds3_table, ds3_first = raw.ds3
    ds2_tables = raw.ds2
    timings["read_inputs"] = time.perf_counter() - t0
    _say(progress, f"read {len(raw.checksums)} raw tables from {bucket.uri}")

    # 2. ask the Materials Project (one query by ids, one by formula for id-less rows)
    t0 = time.perf_counter()
    wanted_ids, formulas = raw.queries(config)
    _say(progress, f"querying {source.kind} for {len(wanted_ids)} ids and {len(formulas)} formulas")
    records: dict[str, MaterialRecord] = dict(source.by_ids(wanted_ids))
    candidates = source.by_formula(formulas) if formulas else {}
    for recs in candidates.values():
        for rec in recs:
            records.setdefault(rec.material_id, rec)
    provenance = source.provenance()
    timings["materials_query"] = time.perf_counter() - t0

    # 3. wrangling rules
    t0 = time.perf_counter()
    ds3 = build_ds3(ds3_table, records, candidates, config.ds3, first_line=ds3_first)
    ds3_ids = set(ds3.table["material_id"])
    ds1 = build_ds1(ds1_table, records, ds3_ids, config.ds1, first_line=ds1_first)
    ds2 = build_ds2(ds2_tables, records, candidates, ds3_ids, config.ds2)
    outcomes: dict[str, Outcome] = {"ds1": ds1, "ds2": ds2, "ds3": ds3}
    tables = {ds: o.table for ds, o in outcomes.items()}
    timings["rules"] = time.perf_counter() - t0

    # 4. crystal graphs (datasets keep only materials with a graph)
    graph_entries: dict[str, dict] = {}
    graph_drops: list[dict] = []
    if config.build_graphs:
        t0 = time.perf_counter()
        graph_entries, problems = _build_or_reuse_graphs(bucket, tables, records, config,
                                                         workers=workers, progress=progress)
        for ds in DATASETS:
            bad = dict(problems.get(ds, []))
            if bad:
                tables[ds] = tables[ds][~tables[ds]["material_id"].isin(bad)].reset_index(drop=True)
                for mid, reason in bad.items():
                    graph_drops.append({"dataset": ds, "source": "graphs", "row": None, "material_id": mid,
                                        "reason": "graph_error", "detail": reason, "value": ""})
        timings["graphs"] = time.perf_counter() - t0
        _say(progress, "graphs " + ", ".join(
            f"{ds} {'reused' if graph_entries[ds].get('reused') else 'built'}" for ds in DATASETS))

    # 5. reports
    drops = pd.DataFrame(
        [d for o in outcomes.values() for d in o.drops] + graph_drops, columns=DROP_COLUMNS
    )
    drops["row"] = drops["row"].astype("Int64")
    notes = pd.DataFrame([n for o in outcomes.values() for n in o.notes], columns=NOTE_COLUMNS)
    matches = pd.DataFrame([m for o in outcomes.values() for m in o.matches], columns=MATCH_COLUMNS)
    conflicts = ds2.conflicts if ds2.conflicts is not None else pd.DataFrame()
    if len(conflicts):
        conflicts["in_ds2"] = conflicts["material_id"].isin(set(tables["ds2"]["material_id"]))
    polymorphs = find_polymorphs(tables["ds3"], {"ds2": tables["ds2"], "ds1": tables["ds1"]})

    # 6. write everything back
    t0 = time.perf_counter()
    paths: dict[str, str] = {}
    for ds in DATASETS:
        df = tables[ds]
        bucket.write_csv(f"processed/{ds}.csv", df)
        paths[f"{ds}_csv"] = bucket.key_uri(f"processed/{ds}.csv")
        if config.write_xlsx:
            bucket.write_xlsx(f"processed/{ds}.xlsx", df, sheet_name=ds)
            paths[f"{ds}_xlsx"] = bucket.key_uri(f"processed/{ds}.xlsx")
        doc = {}
        for row in df.to_dict(orient="records"):
            mid = row.pop("material_id")
            doc[mid] = {**row, "cif": records[mid].structure_cif}
        bucket.write_json(f"json/{ds}.json", doc, indent=None)
        paths[f"{ds}_json"] = bucket.key_uri(f"json/{ds}.json")
        if config.build_graphs:
            paths[f"{ds}_graphs"] = bucket.key_uri(f"graphs/{ds}.json.gz")
            paths[f"{ds}_graphs_npz"] = bucket.key_uri(f"graphs/{ds}.npz")
    if config.build_graphs:
        bucket.write_json("graphs/manifest.json", {
            "format": REPORT_FORMAT,
            "graph_config": config.graph.model_dump(mode="json"),
            "datasets": {ds: {k: v for k, v in graph_entries[ds].items() if k != "reused"} for ds in DATASETS},
        })
    for name, df in (("drops", drops), ("conflicts", conflicts), ("polymorphs", polymorphs),
                     ("formula_matches", matches), ("notes", notes)):
        bucket.write_csv(f"reports/{name}.csv", df)
        paths[name] = bucket.key_uri(f"reports/{name}.csv")

    by_reason = {r: int((drops["reason"] == r).sum()) for r in DROP_REASONS}
    counts = {
        "ds1": len(tables["ds1"]),
        "ds2": len(tables["ds2"]),
        "ds3": len(tables["ds3"]),
        "dropped": len(drops),
        "drops_by_reason": by_reason,
        "drops_by_dataset": {
            ds: {r: int(((drops["dataset"] == ds) & (drops["reason"] == r)).sum()) for r in DROP_REASONS}
            for ds in DATASETS
        },
        "conflicts": len(conflicts),
        "polymorphs": len(polymorphs),
        "formula_matches": {s: int((matches["status"] == s).sum()) for s in ("unique", "ambiguous", "unmatched")},
        "notes": len(notes),
    }
    timings["write"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    report = {
        "format": REPORT_FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "bucket": bucket.uri,
        "materials": provenance,
        "database_version": provenance.get("database_version"),
        "inputs": raw.checksums,
        "config": config.to_dict(),
        "counts": counts,
        "gap_windows": {"ds1": config.ds1.gap_window.describe(), "ds2": config.ds2.gap_window.describe()},
        "graphs": {ds: graph_entries.get(ds) for ds in DATASETS} if config.build_graphs else None,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "environment": collect(),
        "drops": drops.to_dict(orient="records"),
        "conflicts": conflicts.to_dict(orient="records"),
        "polymorphs": polymorphs.to_dict(orient="records"),
        "formula_matches": matches[matches["status"] != "unique"].to_dict(orient="records"),
        "notes": notes.to_dict(orient="records"),
    }
    if config.build_graphs and "_seconds" in graph_entries:
        report["timings_s"].update(graph_entries["_seconds"])
    bucket.write_json("reports/etl_report.json", report)
    paths["report"] = bucket.key_uri("reports/etl_report.json")

    result = EtlResult(
        bucket=bucket.uri,
        counts=counts,
        paths=paths,
        ds1=tables["ds1"],
        ds2=tables["ds2"],
        ds3=tables["ds3"],
        drops=drops,
        conflicts=conflicts,
        polymorphs=polymorphs,
        formula_matches=matches,
        notes=notes,
        graphs_reused={ds: bool(graph_entries.get(ds, {}).get("reused")) for ds in DATASETS},
        report=report,
    )
    _say(progress, result.summary().replace("\n", "\n[etl] "))
    return result


# ------------------------------------------------------------------------------ work bucket
def _split_raw(uri: str | Path | Bucket) -> tuple[Bucket, str]:
    """(bucket, key prefix of the raw files) for a bucket root or its ``raw/`` folder."""
    if isinstance(uri, Bucket):
        return uri, "raw"
    text = str(uri).rstrip("/")
    parsed = urlparse(text)
    if parsed.scheme == "s3":
        path = PurePosixPath(parsed.path)
        if path.name == "raw":
            return open_bucket(f"s3://{parsed.netloc}/{str(path.parent).strip('/')}"), "raw"
        return open_bucket(text), "raw"
    path = Path(text).expanduser()
    if path.name == "raw":
        return LocalBucket(path.parent, writable=False), "raw"
    return LocalBucket(path, writable=False), "raw"


def prepare_work_bucket(source_raw: str | Path | Bucket, work_bucket_uri: str | Path | Bucket) -> dict:
    """Copy a raw input folder into ``raw/`` of a work bucket the ETL may write to.

    ``source_raw`` is a bucket root (``../shared/data/bucket``), its ``raw/`` folder, or an
    ``s3://`` URI of either.  Files already present with identical bytes are skipped; a
    local work bucket folder is created if needed.

    Returns:
        ``{"copied": [...keys], "skipped": [...keys], "bucket": uri}``.
    """
    src, prefix = _split_raw(source_raw)
    keys = src.list(prefix) if prefix else src.list()
    if not keys:
        raise StorageError(f"no raw input files found under {src.key_uri(prefix) if prefix else src.uri}")
    work = open_bucket(work_bucket_uri)
    if isinstance(work, LocalBucket):
        work.create()
    work.check()
    copied, skipped = [], []
    for key in keys:
        rel = key[len(prefix) + 1 :] if prefix else key
        dest = f"raw/{rel}"
        data = src.read_bytes(key)
        if work.exists(dest) and work.sha256(dest) == hashlib.sha256(data).hexdigest():
            skipped.append(dest)
            continue
        work.write_bytes(dest, data)
        copied.append(dest)
    return {"bucket": work.uri, "copied": copied, "skipped": skipped}


def load_report(bucket_uri: str | Path | Bucket) -> dict:
    """The ``reports/etl_report.json`` of a bucket."""
    return open_bucket(bucket_uri).read_json("reports/etl_report.json")
