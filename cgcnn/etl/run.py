"""The ETL run: bucket ``raw/`` + Materials Project -> DS1/DS2/DS3, graphs and reports.

Outputs, written back to the bucket::

    processed/ds{1,2,3}.csv (+ .xlsx)   one row per material, first column material_id
    json/ds{1,2,3}.json                 material_id -> row fields + CIF text
    graphs/ds{1,2,3}.json.gz            JSON crystal graphs with their graph settings
    graphs/ds{1,2,3}.npz                the same graphs, compact binary (GraphSet.load_npz)
    graphs/manifest.json                content keys that let a re-run reuse the graphs
    reports/etl_report.json             counts, drops, conflicts, database version, checksums
    reports/{drops,conflicts,polymorphs,formula_matches,notes,suspicious_labels}.csv

:func:`run_etl` runs these phases in order, each a function of its own:

1. :func:`cgcnn.etl.raw.read_raw_tables` — the raw tables, cells untouched, and their checksums;
2. :func:`fetch_materials` — one Materials Project query by id, one by formula;
3. :func:`apply_rules` — the wrangling rules of :mod:`cgcnn.etl.rules` (DS3 first: DS1 and DS2
   exclude its materials);
4. :func:`cgcnn.etl.dataset_graphs.build_or_reuse_graphs` and :func:`~cgcnn.etl.dataset_graphs.drop_graph_failures`;
5. :func:`cgcnn.etl.audit.collect_reports` — drops, conflicts, polymorphs, matches, notes, suspicious labels;
6. :func:`write_outputs` — datasets, graph manifest and report tables; then the JSON report.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cgcnn.config import EtlConfig
from cgcnn.etl.audit import (
    REPORT_KEY,
    ReportTables,
    build_report,
    collect_reports,
    count_outputs,
    write_report,
    write_report_tables,
)
from cgcnn.etl.dataset_graphs import (
    build_or_reuse_graphs,
    drop_graph_failures,
    graph_paths,
    write_manifest,
)
from cgcnn.etl.materials import MaterialRecord, MaterialsSource, open_materials
from cgcnn.etl.outputs import write_dataset
from cgcnn.etl.parsing import EtlError
from cgcnn.etl.raw import RawTables, read_raw_tables
from cgcnn.etl.rules import DATASETS, Outcome, build_ds1, build_ds2, build_ds3
from cgcnn.etl.storage import Bucket, LocalBucket, open_bucket

__all__ = [
    "EtlResult",
    "FetchedMaterials",
    "apply_rules",
    "fetch_materials",
    "open_work_bucket",
    "run_etl",
    "write_outputs",
]


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
            f"dropped rows: {c['dropped']} " + ", ".join(f"{k} {v}" for k, v in c["drops_by_reason"].items() if v),
            f"DS2 source conflicts: {c['conflicts']}; suspicious DS2 labels: {c.get('suspicious_labels', 0)}; "
            f"DS3 polymorph pairs: {c['polymorphs']}",
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


def _printer(progress: bool) -> Callable[[str], None]:
    """``say(message)``: one ``[etl]`` line on stderr when ``progress`` is on."""

    def say(message: str) -> None:
        if progress:
            print(f"[etl] {message}", file=sys.stderr, flush=True)

    return say


class _Timer:
    """Seconds per phase (``with timer("rules"): ...``) and since the run started."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - t0


# ------------------------------------------------------------------------------ phases
def open_work_bucket(bucket_uri: str | Path | Bucket) -> Bucket:
    """The bucket the run writes to, checked to exist and (if local) to be writable."""
    bucket = open_bucket(bucket_uri)
    if isinstance(bucket, LocalBucket):
        bucket.ensure_writable()
    bucket.check()
    return bucket


@dataclass
class FetchedMaterials:
    """What the Materials Project answered for one run.

    Attributes:
        records: material id -> record, for the ids asked for and every formula candidate.
        candidates: reduced formula -> its records (for rows that give a formula, no id).
        provenance: the source's description (database version, checksums).
    """

    records: dict[str, MaterialRecord]
    candidates: dict[str, list[MaterialRecord]]
    provenance: dict


def fetch_materials(
    source: MaterialsSource, raw: RawTables, config: EtlConfig, *, say: Callable[[str], None] = lambda m: None
) -> FetchedMaterials:
    """Ask ``source`` once by ids and once by formula (for the rows without an id)."""
    wanted_ids, formulas = raw.queries(config)
    say(f"querying {source.kind} for {len(wanted_ids)} ids and {len(formulas)} formulas")
    records: dict[str, MaterialRecord] = dict(source.by_ids(wanted_ids))
    candidates = source.by_formula(formulas) if formulas else {}
    for recs in candidates.values():
        for rec in recs:
            records.setdefault(rec.material_id, rec)
    return FetchedMaterials(records, candidates, source.provenance())


def apply_rules(raw: RawTables, materials: FetchedMaterials, config: EtlConfig) -> dict[str, Outcome]:
    """The three datasets (with their drops), DS3 first: DS1 and DS2 exclude its materials."""
    records, candidates = materials.records, materials.candidates
    ds1_table, ds1_first = raw.ds1
    ds3_table, ds3_first = raw.ds3
    ds3 = build_ds3(ds3_table, records, candidates, config.ds3, first_line=ds3_first)
    ds3_ids = set(ds3.table["material_id"])
    ds1 = build_ds1(ds1_table, records, ds3_ids, config.ds1, first_line=ds1_first)
    ds2 = build_ds2(raw.ds2, records, candidates, ds3_ids, config.ds2)
    return {"ds1": ds1, "ds2": ds2, "ds3": ds3}


def _input_files(ds: str, config: EtlConfig) -> str:
    if ds == "ds1":
        return config.ds1.ids_key
    if ds == "ds3":
        return config.ds3.key
    return ", ".join(src.key for src in config.ds2.sources)


def refuse_empty(tables: dict[str, pd.DataFrame], outcomes: dict[str, Outcome], config: EtlConfig) -> None:
    """Stop the run when a dataset is left empty by the rules (a later stage could do nothing)."""
    for ds in DATASETS:
        if len(tables[ds]) == 0:
            drops = pd.Series([d["reason"] for d in outcomes[ds].drops], dtype=str).value_counts()
            why = ", ".join(f"{n} {r}" for r, n in drops.items()) or "the input has no rows"
            raise EtlError(f"{ds.upper()} is empty after the ETL rules ({why}); check raw/{_input_files(ds, config)}")


def write_outputs(
    bucket: Bucket,
    tables: dict[str, pd.DataFrame],
    records: dict[str, MaterialRecord],
    config: EtlConfig,
    graph_entries: dict[str, dict],
    reports: ReportTables,
) -> dict[str, str]:
    """Datasets, graph manifest and report tables; returns output name -> URI."""
    paths: dict[str, str] = {}
    for ds in DATASETS:
        paths.update(write_dataset(bucket, ds, tables[ds], records, write_xlsx=config.write_xlsx))
        if config.build_graphs:
            paths.update(graph_paths(bucket, ds))
    if config.build_graphs:
        write_manifest(bucket, config, graph_entries)
    paths.update(write_report_tables(bucket, reports))
    return paths


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
            folder under ``../shared`` (use :func:`~cgcnn.etl.raw.prepare_work_bucket` to
            copy inputs).
        materials: ``snapshot:PATH``, ``mp`` (live, key from ``MP_API_KEY``), ``mp:ENDPOINT``,
            or a ready :class:`~cgcnn.etl.materials.MaterialsSource`.
        config: wrangling rules and graph settings (defaults reproduce the study).
        workers: processes for graph building.
        progress: print stage messages and a progress bar to stderr.
    """
    config = config or EtlConfig()
    say, timer = _printer(progress), _Timer()
    bucket = open_work_bucket(bucket_uri)
    bucket.delete(REPORT_KEY)  # until this run succeeds, no report claims the outputs are current
    source = open_materials(materials, batch_size=config.mp_batch_size)
    with timer("read_raw_tables"):
        raw = read_raw_tables(bucket, config)
    say(f"read {len(raw.checksums)} raw tables from {bucket.uri}")
    with timer("materials_query"):
        found = fetch_materials(source, raw, config, say=say)
    with timer("rules"):
        outcomes = apply_rules(raw, found, config)
        tables = {ds: o.table for ds, o in outcomes.items()}
    refuse_empty(tables, outcomes, config)

    graph_entries: dict[str, dict] = {}
    graph_drops: list[dict] = []
    if config.build_graphs:  # datasets keep only materials with a graph
        with timer("graphs"):
            graph_entries, problems = build_or_reuse_graphs(
                bucket, tables, found.records, config, workers=workers, progress=progress, say=say
            )
            tables, graph_drops = drop_graph_failures(tables, problems)
        refuse_empty(tables, outcomes, config)
        say(
            "graphs " + ", ".join(f"{ds} {'reused' if graph_entries[ds].get('reused') else 'built'}" for ds in DATASETS)
        )

    reports = collect_reports(outcomes, tables, graph_drops, below_pbe_ev=config.ds2.below_pbe_threshold)
    with timer("write"):
        paths = write_outputs(bucket, tables, found.records, config, graph_entries, reports)
        counts = count_outputs(tables, reports)
    timer.seconds["total"] = time.perf_counter() - timer.start
    report = build_report(
        bucket_uri=bucket.uri,
        provenance=found.provenance,
        checksums=raw.checksums,
        config=config,
        counts=counts,
        graph_entries=graph_entries,
        timings=timer.seconds,
        reports=reports,
    )
    paths["report"] = write_report(bucket, report)

    result = EtlResult(
        bucket=bucket.uri,
        counts=counts,
        paths=paths,
        ds1=tables["ds1"],
        ds2=tables["ds2"],
        ds3=tables["ds3"],
        drops=reports.drops,
        conflicts=reports.conflicts,
        polymorphs=reports.polymorphs,
        formula_matches=reports.formula_matches,
        notes=reports.notes,
        graphs_reused={ds: bool(graph_entries.get(ds, {}).get("reused")) for ds in DATASETS},
        report=report,
    )
    say(result.summary().replace("\n", "\n[etl] "))
    return result
