"""ETL: raw inputs (S3 or a local bucket) + the Materials Project -> DS1 / DS2 / DS3.

``run_etl(bucket_uri, materials, config=EtlConfig(...))`` is the entry point; see
:mod:`cgcnn.etl.run` for the outputs and the phases of a run.  One job per module:

``config``     the wrangling rules' settings (:class:`EtlConfig`)
``storage``    one interface for a local folder and an S3 bucket
``materials``  Materials Project records, the offline snapshot, the formula-matching rule
``mp_live``    the live Materials Project client (``mp-api``)
``inputs``     the raw tables under ``raw/``: copying them into a work bucket, reading them
``cells``      raw cells -> column names and band gaps
``resolve``    raw rows -> material ids (id cell or formula)
``rules``      the wrangling rules: raw tables + records -> DS1, DS2, DS3 and their drops
``graphs``     crystal graphs, reused from the bucket while their inputs match
``tables``     the processed datasets as CSV / XLSX / JSON
``report``     drop, conflict, polymorph, match and note reports; the JSON run report
``run``        the run itself, phase by phase
"""

from cgcnn.etl.parsing import EtlError
from cgcnn.etl.config import (
    DS1Config,
    DS2Config,
    DS3Config,
    EtlConfig,
    ExperimentalSource,
    GapWindow,
)
from cgcnn.etl.raw import prepare_work_bucket
from cgcnn.etl.materials import (
    MaterialRecord,
    MaterialsError,
    SnapshotSource,
    match_formula,
    open_materials,
    write_snapshot,
)
from cgcnn.etl.mp_live import MPSource
from cgcnn.etl.audit import load_report
from cgcnn.etl.rules import DROP_REASONS
from cgcnn.etl.run import EtlResult, run_etl
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
