"""The processed datasets as CSV / XLSX / JSON."""

from __future__ import annotations

import json
import math

import pandas as pd

from cgcnn.etl.outputs import dataset_document, write_dataset
from cgcnn.etl.storage import LocalBucket


def _three_rows(toy_records):
    records = {r.material_id: r for r in toy_records}
    df = pd.DataFrame(
        {
            "material_id": ["mp-149", "mp-2691", "fx-7"],
            "formula": ["Si", "CdSe", "CsCl"],
            "bg_g0w0": [1.2, math.nan, 6.0],
        }
    )
    return df, records


def test_dataset_document_maps_ids_to_fields_and_cif(toy_records):
    df, records = _three_rows(toy_records)
    doc = dataset_document(df, records)
    assert list(doc) == ["mp-149", "mp-2691", "fx-7"]
    assert doc["mp-149"] == {"formula": "Si", "bg_g0w0": 1.2, "cif": records["mp-149"].structure_cif}
    assert "material_id" in df.columns  # the table is left as it was


def test_write_dataset_writes_csv_xlsx_and_json(tmp_path, toy_records):
    df, records = _three_rows(toy_records)
    bucket = LocalBucket(tmp_path)
    paths = write_dataset(bucket, "ds3", df, records, write_xlsx=True)
    assert paths == {
        "ds3_csv": str(tmp_path / "processed" / "ds3.csv"),
        "ds3_xlsx": str(tmp_path / "processed" / "ds3.xlsx"),
        "ds3_json": str(tmp_path / "json" / "ds3.json"),
    }
    assert pd.read_csv(tmp_path / "processed" / "ds3.csv")["material_id"].tolist() == ["mp-149", "mp-2691", "fx-7"]
    assert pd.read_excel(tmp_path / "processed" / "ds3.xlsx")["formula"].tolist() == ["Si", "CdSe", "CsCl"]
    doc = json.loads((tmp_path / "json" / "ds3.json").read_text())
    assert doc["mp-2691"]["bg_g0w0"] is None  # NaN -> null
    assert list(write_dataset(bucket, "ds1", df, records, write_xlsx=False)) == ["ds1_csv", "ds1_json"]
