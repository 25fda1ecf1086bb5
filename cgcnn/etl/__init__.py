"""ETL: raw inputs (S3 or a local bucket) + the Materials Project -> DS1 / DS2 / DS3.

``run_etl(bucket_uri, materials, config=EtlConfig(...))`` is the entry point; see
:mod:`cgcnn.etl.run` for the outputs, :mod:`cgcnn.etl.rules` for the wrangling rules,
:mod:`cgcnn.etl.storage` and :mod:`cgcnn.etl.materials` for the two external interfaces.
"""

from cgcnn.etl.config import (
    DS1Config,
    DS2Config,
    DS3Config,
    EtlConfig,
    ExperimentalSource,
    GapWindow,
)
from cgcnn.etl.materials import (
    MaterialRecord,
    MaterialsError,
    MPSource,
    SnapshotSource,
    match_formula,
    open_materials,
    write_snapshot,
)
from cgcnn.etl.rules import DROP_REASONS, EtlError
from cgcnn.etl.run import EtlResult, load_report, prepare_work_bucket, run_etl
from cgcnn.etl.storage import (
    LocalBucket,
    MissingObjectError,
    S3Bucket,
    StorageError,
    open_bucket,
)

__all__ = [
    "DROP_REASONS",
    "DS1Config",
    "DS2Config",
    "DS3Config",
    "EtlConfig",
    "EtlError",
    "EtlResult",
    "ExperimentalSource",
    "GapWindow",
    "LocalBucket",
    "MPSource",
    "MaterialRecord",
    "MaterialsError",
    "MissingObjectError",
    "S3Bucket",
    "SnapshotSource",
    "StorageError",
    "load_report",
    "match_formula",
    "open_bucket",
    "open_materials",
    "prepare_work_bucket",
    "run_etl",
    "write_snapshot",
]
