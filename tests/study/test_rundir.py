"""cgcnn.study.rundir: the work bucket and the JSON / table writers."""

import json

import numpy as np
import pandas as pd

from cgcnn import fileio
from cgcnn.study import data_preparation, rundir


def test_work_bucket_copies_a_local_source_into_the_run(tmp_path):
    source = tmp_path / "shared" / "bucket"
    (source / "raw").mkdir(parents=True)
    (source / "raw" / "a.csv").write_text("material_id\nfx-1\n")
    run = tmp_path / "runs" / "r1"
    work = data_preparation.work_bucket(run, str(source))
    assert work == str((run / "bucket").resolve())
    assert (run / "bucket" / "raw" / "a.csv").read_text() == "material_id\nfx-1\n"
    assert sorted(p.name for p in source.rglob("*")) == ["a.csv", "raw"]  # nothing added to the source
    assert data_preparation.work_bucket(run, work) == work  # already inside the run
    assert data_preparation.work_bucket(run, "s3://bucket/prefix") == "s3://bucket/prefix"


def test_work_bucket_can_only_name_the_folder(tmp_path):
    source = tmp_path / "bucket"
    (source / "raw").mkdir(parents=True)
    run = tmp_path / "runs" / "r1"
    assert data_preparation.work_bucket(run, f"file://{source}", copy=False) == str((run / "bucket").resolve())
    assert not run.exists()
    assert (
        data_preparation.is_remote("s3://b")
        and not data_preparation.is_remote(f"file://{source}")
        and not data_preparation.is_remote(source)
    )
    assert data_preparation.bucket_location(f"file://{source}") == str(source.resolve())


def test_write_json_is_atomic_and_turns_nan_into_null(tmp_path):
    assert fileio.write_json is fileio.write_json  # one JSON writer
    path = fileio.write_json(tmp_path / "m.json", {"a": float("nan"), "b": np.float32(1.5), "c": [np.int64(2)]})
    assert json.loads(path.read_text()) == {"a": None, "b": 1.5, "c": [2]}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
    assert path.read_text().endswith("}\n") and '\n  "a": null' in path.read_text()


def test_write_table_and_run_paths(tmp_path):
    paths = rundir.run_paths(tmp_path)
    assert paths["metrics"] == tmp_path / "metrics.json"
    path = rundir.write_table(paths["tables"] / "t.csv", pd.DataFrame({"x": [1, 2]}), index=False)
    assert path.read_text() == "x\n1\n2\n"
