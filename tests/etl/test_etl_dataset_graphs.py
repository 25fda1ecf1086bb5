"""Crystal graphs of the datasets: content keys, reuse, graph failures."""

from __future__ import annotations

import pandas as pd
import pytest

from cgcnn.config import EtlConfig, GraphConfig
from cgcnn.data.graphset import GraphSet
from cgcnn.etl.dataset_graphs import (
    build_or_reuse_graphs,
    drop_graph_failures,
    graph_key,
    graph_paths,
    write_manifest,
)
from cgcnn.etl.storage import LocalBucket


def test_graph_key_follows_settings_ids_and_structure_bytes():
    items = [("mp-1", "data_a"), ("mp-2", "data_b")]
    key = graph_key(items, GraphConfig())
    assert key == graph_key(list(items), GraphConfig())  # deterministic
    assert key != graph_key(items[::-1], GraphConfig())  # order of the dataset
    assert key != graph_key([("mp-1", "data_a "), ("mp-2", "data_b")], GraphConfig())  # CIF bytes
    assert key != graph_key(items, GraphConfig(radius=7, max_neighbors=14))  # graph settings


def test_drop_graph_failures_of_a_three_row_table():
    tables = {
        "ds1": pd.DataFrame({"material_id": ["a", "b", "c"], "bg_pbe": [1.0, 2.0, 3.0]}),
        "ds2": pd.DataFrame({"material_id": ["a"]}),
        "ds3": pd.DataFrame({"material_id": []}),
    }
    kept, drops = drop_graph_failures(tables, {"ds1": [("b", "no neighbours")], "ds2": []})
    assert kept["ds1"]["material_id"].tolist() == ["a", "c"] and kept["ds1"].index.tolist() == [0, 1]
    assert kept["ds2"] is tables["ds2"] and tables["ds1"]["material_id"].tolist() == ["a", "b", "c"]
    assert drops == [
        {
            "dataset": "ds1",
            "source": "graphs",
            "row": None,
            "material_id": "b",
            "reason": "graph_error",
            "detail": "no neighbours",
            "value": "",
        }
    ]


def test_graph_paths(tmp_path):
    bucket = LocalBucket(tmp_path)
    assert graph_paths(bucket, "ds2") == {
        "ds2_graphs": str(tmp_path / "graphs" / "ds2.json.gz"),
        "ds2_graphs_npz": str(tmp_path / "graphs" / "ds2.npz"),
    }


@pytest.fixture
def toy_datasets(toy_records):
    records = {r.material_id: r for r in toy_records}
    tables = {
        "ds1": pd.DataFrame({"material_id": ["mp-149", "mp-22862"]}),
        "ds2": pd.DataFrame({"material_id": ["mp-149"]}),
        "ds3": pd.DataFrame({"material_id": ["mp-2691"]}),
    }
    return tables, records


def test_graphs_are_built_once_then_reused_while_the_inputs_match(tmp_path, toy_datasets):
    tables, records = toy_datasets
    bucket, config = LocalBucket(tmp_path), EtlConfig()
    said = []
    entries, problems = build_or_reuse_graphs(
        bucket, tables, records, config, workers=1, progress=False, say=said.append
    )
    assert said == ["building graphs for 3 structures (ds1, ds2, ds3; 1 worker(s))"]  # mp-149 built once
    assert [entries[ds]["n_graphs"] for ds in ("ds1", "ds2", "ds3")] == [2, 1, 1]
    assert not any(entries[ds]["reused"] for ds in ("ds1", "ds2", "ds3")) and "_seconds" in entries
    assert problems == {"ds1": [], "ds2": [], "ds3": []}
    assert GraphSet.read_json(tmp_path / "graphs" / "ds1.json.gz").ids == ["mp-149", "mp-22862"]
    write_manifest(bucket, config, entries)

    changed = {**tables, "ds3": pd.DataFrame({"material_id": ["mp-1070"]})}
    again, _ = build_or_reuse_graphs(bucket, changed, records, config, workers=1, progress=False)
    assert (again["ds1"]["reused"], again["ds2"]["reused"], again["ds3"]["reused"]) == (True, True, False)
    assert GraphSet.read_json(tmp_path / "graphs" / "ds3.json.gz").ids == ["mp-1070"]
