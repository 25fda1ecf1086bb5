"""Packed graph sets and their npz / JSON forms (cgcnn.data.graphset)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from graph_asserts import assert_same_graphs

from cgcnn.config import GraphConfig
from cgcnn.data.graph import structure_to_graph
from cgcnn.data.graphset import GraphSet
from cgcnn.errors import DatasetError

# -- GraphSet --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["graphs.json", "graphs.json.gz"])
def test_json_round_trip_is_exact(tiny_graphs, tmp_path, name):
    path = tmp_path / name
    tiny_graphs.write_json(path)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == name.endswith(".gz")
    doc = json.loads(gzip.decompress(raw) if name.endswith(".gz") else raw)
    assert doc["settings"] == tiny_graphs.config.to_dict()
    assert sorted(doc["graphs"]["CsCl-097"]) == ["atomic_numbers", "distances", "edge_index"]
    back = GraphSet.read_json(path)
    assert back.equals(tiny_graphs)
    assert_same_graphs(back, tiny_graphs)


def test_npz_round_trip_is_exact(tiny_graphs, tmp_path):
    tiny_graphs.save_npz(tmp_path / "graphs.npz")
    back = GraphSet.load_npz(tmp_path / "graphs.npz")
    assert back.equals(tiny_graphs)
    assert_same_graphs(back, tiny_graphs)
    assert back.edge_index.dtype == np.int64 and back.distances.dtype == np.float32
    assert [p.name for p in tmp_path.iterdir()] == ["graphs.npz"]  # no temporary file left


def test_read_json_rejects_another_document(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"format": "something-else", "graphs": {}}))
    with pytest.raises(DatasetError, match="not a crystal-graph JSON"):
        GraphSet.read_json(tmp_path / "x.json")


def test_subset_keeps_the_asked_order(tiny_graphs):
    part = tiny_graphs.subset(["Si-101", "CsCl-097"])
    assert part.ids == ["Si-101", "CsCl-097"]
    assert len(part) == 2 and part.config == tiny_graphs.config
    for m in part.ids:
        assert part[m].equals(tiny_graphs[m])
    with pytest.raises(KeyError, match="nope"):
        tiny_graphs.subset(["nope"])


def test_duplicate_ids_are_rejected(cscl):
    cfg = GraphConfig(radius=3.8)
    g = structure_to_graph(cscl, cfg)
    with pytest.raises(DatasetError, match="'CsCl'"):
        GraphSet.from_graphs(["CsCl", "CsCl"], [g, g], cfg)


def test_packed_arrays_have_documented_shapes(tiny_graphs):
    n = len(tiny_graphs)
    assert tiny_graphs.node_ptr.shape == (n + 1,) and tiny_graphs.edge_ptr.shape == (n + 1,)
    assert tiny_graphs.node_ptr[-1] == len(tiny_graphs.atomic_numbers) == 2 * n  # two atoms each
    assert tiny_graphs.edge_index.shape == (2, tiny_graphs.edge_ptr[-1])
