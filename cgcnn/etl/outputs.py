"""The processed datasets as files: ``processed/ds*.csv`` (+ ``.xlsx``) and ``json/ds*.json``.

Every table starts with ``material_id``.  The JSON document maps each material id to its row
fields plus the structure as CIF text (missing values become ``null``).
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from cgcnn.etl.materials import MaterialRecord
from cgcnn.etl.storage import Bucket

__all__ = ["dataset_document", "write_dataset"]


def dataset_document(df: pd.DataFrame, records: Mapping[str, MaterialRecord]) -> dict[str, dict]:
    """material id -> the row's other fields and ``cif`` (the record's structure)."""
    doc = {}
    for row in df.to_dict(orient="records"):
        mid = row.pop("material_id")
        doc[mid] = {**row, "cif": records[mid].structure_cif}
    return doc


def write_dataset(
    bucket: Bucket, ds: str, df: pd.DataFrame, records: Mapping[str, MaterialRecord], *, write_xlsx: bool
) -> dict[str, str]:
    """Write one dataset as CSV (+ XLSX) and JSON; returns output name -> URI."""
    paths = {}
    bucket.write_csv(f"processed/{ds}.csv", df)
    paths[f"{ds}_csv"] = bucket.key_uri(f"processed/{ds}.csv")
    if write_xlsx:
        bucket.write_xlsx(f"processed/{ds}.xlsx", df, sheet_name=ds)
        paths[f"{ds}_xlsx"] = bucket.key_uri(f"processed/{ds}.xlsx")
    bucket.write_json(f"json/{ds}.json", dataset_document(df, records), indent=None)
    paths[f"{ds}_json"] = bucket.key_uri(f"json/{ds}.json")
    return paths
