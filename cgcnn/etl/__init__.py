"""ETL: raw inputs (S3 or a local bucket) + the Materials Project -> DS1 / DS2 / DS3.

``run_etl(bucket_uri, materials, config=EtlConfig(...))`` is the entry point; see
:mod:`cgcnn.etl.run` for the outputs and the phases of a run.  One job per module (the
settings, :class:`~cgcnn.config.EtlConfig`, live in :mod:`cgcnn.config`):

``storage``         one interface for a local folder and an S3 bucket
``records``         what the ETL keeps of a material; the formula-matching rule
``materials``       the offline snapshot, and opening a source (snapshot or live)
``mp_live``         the live Materials Project client (``mp-api``)
``raw``             the raw tables under ``raw/``: copying them into a work bucket, reading them
``parsing``         raw cells -> column names and band gaps
``resolve``         raw rows -> material ids (id cell or formula)
``rules``           the wrangling rules: raw tables + records -> DS1, DS2, DS3 and their drops
``dataset_graphs``  crystal graphs of the datasets, reused from the bucket while their inputs match
``outputs``         the processed datasets as CSV / XLSX / JSON
``audit``           drop, conflict, polymorph, match and note reports; the JSON run report
``run``             the run itself, phase by phase
``commands``        the ``cgcnn etl`` subcommands

The names below are imported on first use, so importing one module of this package (the
snapshot reader, say) does not load the whole ETL.
"""

from __future__ import annotations

import importlib

_API = {
    "DS1Config": "cgcnn.config",
    "DS2Config": "cgcnn.config",
    "DS3Config": "cgcnn.config",
    "EtlConfig": "cgcnn.config",
    "ExperimentalSource": "cgcnn.config",
    "GapWindow": "cgcnn.config",
    "load_report": "cgcnn.etl.audit",
    "MaterialRecord": "cgcnn.etl.records",
    "MaterialsError": "cgcnn.etl.records",
    "match_formula": "cgcnn.etl.records",
    "SnapshotSource": "cgcnn.etl.materials",
    "open_materials": "cgcnn.etl.materials",
    "write_snapshot": "cgcnn.etl.materials",
    "MPSource": "cgcnn.etl.mp_live",
    "EtlError": "cgcnn.etl.parsing",
    "prepare_work_bucket": "cgcnn.etl.raw",
    "DROP_REASONS": "cgcnn.etl.rules",
    "EtlResult": "cgcnn.etl.run",
    "run_etl": "cgcnn.etl.run",
    "LocalBucket": "cgcnn.etl.storage",
    "MissingObjectError": "cgcnn.etl.storage",
    "S3Bucket": "cgcnn.etl.storage",
    "StorageError": "cgcnn.etl.storage",
    "open_bucket": "cgcnn.etl.storage",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cgcnn.etl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
