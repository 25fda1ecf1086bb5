"""The raw inputs: copying them into a work bucket, reading them, listing what to query."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cgcnn.config import EtlConfig
from cgcnn.etl.raw import prepare_work_bucket, read_raw_tables
from cgcnn.etl.storage import LocalBucket, StorageError

FIXTURE_BUCKET = Path(__file__).resolve().parents[1] / "fixtures" / "bucket"

TOY_CONFIG = {
    "ds1": {"ids_key": "raw/ids.csv"},
    "ds2": {"sources": [{"name": "exp", "key": "raw/exp.csv", "formula_column": "formula"}]},
    "ds3": {"key": "raw/val.csv", "exp_source_column": None, "hse06_column": None, "g0w0_column": None},
    "build_graphs": False,
}


@pytest.fixture
def toy_bucket(tmp_path):
    """Three small raw tables: 3 DS1 ids, 3 DS2 rows (one by formula), 1 DS3 row."""
    raw = tmp_path / "b" / "raw"
    raw.mkdir(parents=True)
    (raw / "ids.csv").write_text("material_id\nmp-149\nmp-2534\nmp-149\n")
    (raw / "exp.csv").write_text("material_id,formula,bg_exp\nmp-149,Si,1.12\n,GaAs,1.52\n, ,\n")
    (raw / "val.csv").write_text("material_id,formula,bg_exp\nmp-2691,CdSe,1.74\n")
    return LocalBucket(tmp_path / "b")


def test_read_inputs_keeps_cells_and_records_checksums(toy_bucket):
    config = EtlConfig.model_validate(TOY_CONFIG)
    raw = read_raw_tables(toy_bucket, config)
    ds1, first = raw.ds1
    assert ds1["material_id"].tolist() == ["mp-149", "mp-2534", "mp-149"] and first == 2
    (source,) = raw.ds2
    assert source.config.name == "exp" and source.first_line == 2
    assert source.table["formula"].tolist() == ["Si", "GaAs", " "]  # cells as written
    assert raw.ds3[0]["bg_exp"].tolist() == ["1.74"]
    data = (toy_bucket.root / "raw" / "exp.csv").read_bytes()
    assert raw.checksums["raw/exp.csv"] == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert list(raw.checksums) == ["raw/ids.csv", "raw/exp.csv", "raw/val.csv"]


def test_queries_list_ids_once_and_formulas_of_rows_without_an_id(toy_bucket):
    config = EtlConfig.model_validate(TOY_CONFIG)
    ids, formulas = read_raw_tables(toy_bucket, config).queries(config)
    assert ids == ["mp-149", "mp-2534", "mp-2691"]  # table order, each once
    assert formulas == ["GaAs"]  # the blank row asks for nothing


def test_missing_raw_table_names_the_key(toy_bucket):
    (toy_bucket.root / "raw" / "val.csv").unlink()
    with pytest.raises(StorageError, match=r"raw/val\.csv"):
        read_raw_tables(toy_bucket, EtlConfig.model_validate(TOY_CONFIG))


def test_prepare_work_bucket_skips_identical_files(tmp_path):
    first = prepare_work_bucket(FIXTURE_BUCKET / "raw", tmp_path / "b")  # the raw/ folder itself works too
    assert sorted(first["copied"]) == [
        "raw/ds1_material_ids.csv",
        "raw/experimental_gaps_borlido2019.xlsx",
        "raw/experimental_gaps_megnet2021.csv",
        "raw/validation_set.csv",
    ]
    (tmp_path / "b" / "raw" / "validation_set.csv").write_text("changed\n")
    second = prepare_work_bucket(FIXTURE_BUCKET, tmp_path / "b")
    assert second["copied"] == ["raw/validation_set.csv"] and len(second["skipped"]) == 3
