"""The raw inputs under ``raw/``: copying them into a work bucket, and reading them.

:func:`prepare_work_bucket` copies a raw folder (e.g. ``../shared/data/bucket``) into a bucket
the ETL may write to.  :func:`read_raw_tables` reads the tables an :class:`EtlConfig` names, cells
untouched, with their checksums; :meth:`RawTables.queries` lists what to ask the Materials
Project for.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import pandas as pd

from cgcnn.config import EtlConfig
from cgcnn.etl.parsing import cell_text, table_from_cells
from cgcnn.etl.rules import SourceTable
from cgcnn.etl.storage import Bucket, LocalBucket, StorageError, open_bucket

__all__ = ["RawTables", "prepare_work_bucket", "read_raw_tables"]


# ------------------------------------------------------------------------------ reading
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


@dataclass
class RawTables:
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
                mid = cell_text(mid)
                if mid:
                    ids[mid] = None
                elif cell_text(formula):
                    formulas[cell_text(formula)] = None

        collect(self.ds1[0], config.ds1.id_column, None)
        for st in self.ds2:
            collect(st.table, st.config.id_column, st.config.formula_column)
        collect(self.ds3[0], config.ds3.id_column, config.ds3.formula_column)
        return list(ids), list(formulas)


def read_raw_tables(bucket: Bucket, config: EtlConfig) -> RawTables:
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
    return RawTables(ds1, ds2, ds3, checksums)


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
