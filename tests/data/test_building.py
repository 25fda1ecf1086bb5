"""Graph building, its disk cache and input discovery (cgcnn.data.building)."""

from __future__ import annotations

import gzip
import json

import pytest
from graph_asserts import assert_same_graphs
from pymatgen.io.cif import CifWriter

import cgcnn.data.building
from cgcnn.config import GraphConfig
from cgcnn.data.building import build_graphs, content_key, snapshot_structures
from cgcnn.errors import DatasetError, Problem
from cgcnn.etl.materials import read_snapshot

BAD_CIF = "data_broken\n_cell_length_a 4.0\nthis is not a CIF\n"


def cif(structure) -> str:
    return str(CifWriter(structure))


# -- build_graphs ----------------------------------------------------------------------------


def test_bad_cif_is_reported_by_id_and_the_rest_built(cscl, nacl):
    items = [("good-1", cif(cscl)), ("broken-7", BAD_CIF), ("good-2", nacl)]
    graphs, problems = build_graphs(items, GraphConfig(radius=4), progress=False)
    assert graphs.ids == ["good-1", "good-2"]
    assert [p.item_id for p in problems] == ["broken-7"]
    assert "parse" in problems[0].reason
    assert graphs["good-1"].n_atoms == 2 and graphs["good-2"].n_atoms == 8


def test_on_error_error_raises_naming_the_item(cscl):
    items = [("good-1", cscl), ("broken-7", BAD_CIF)]
    with pytest.raises(DatasetError, match="broken-7"):
        build_graphs(items, GraphConfig(radius=4), on_error="error", progress=False)


def test_graph_error_is_a_problem_naming_the_item(h2_in_box, cscl):
    # 2 Å holds the 0.74 Å H-H bond but none of CsCl's 3.57 Å bonds
    graphs, problems = build_graphs([("h2", h2_in_box), ("cscl", cscl)], GraphConfig(radius=2), progress=False)
    assert graphs.ids == ["h2"]
    assert [p.item_id for p in problems] == ["cscl"]
    assert "atom 0 (Cs) has no neighbour within 2" in problems[0].reason


def test_duplicate_ids_are_reported_and_the_first_kept(cscl, si):
    graphs, problems = build_graphs([("x", cscl), ("x", si)], GraphConfig(radius=4), progress=False)
    assert graphs.ids == ["x"]
    assert graphs["x"].atomic_numbers.tolist() == [55, 17]  # CsCl, the first
    assert problems == [Problem("x", "duplicate material id (the first is kept; rename the other to keep both)")]


def test_second_build_comes_from_the_cache(tiny_items, tiny_graph_config, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first, _ = build_graphs(tiny_items, tiny_graph_config, cache_dir=cache, progress=False)
    assert list(cache.glob("shard-*.npz"))

    def no_rebuild(*args, **kwargs):
        raise AssertionError("structure_to_graph was called: the cache was not used")

    monkeypatch.setattr(cgcnn.data.building, "structure_to_graph", no_rebuild)
    second, problems = build_graphs(tiny_items, tiny_graph_config, cache_dir=cache, progress=False)
    assert problems == []
    assert_same_graphs(second, first)
    # the same structures under other ids are found too (the key is the content)
    renamed, _ = build_graphs(
        [(f"copy-{m}", s) for m, s in tiny_items[:3]], tiny_graph_config, cache_dir=cache, progress=False
    )
    assert renamed.ids == [f"copy-{m}" for m, _ in tiny_items[:3]]
    assert renamed["copy-CsCl-097"].equals(first["CsCl-097"])


def test_other_graph_settings_are_not_served_from_the_cache(cscl, tmp_path, monkeypatch):
    small, large = GraphConfig(radius=3.8), GraphConfig(radius=4.5)
    assert content_key(cscl, small) != content_key(cscl, large)
    build_graphs([("cscl", cscl)], small, cache_dir=tmp_path, progress=False)

    def no_rebuild(*args, **kwargs):
        raise RuntimeError("rebuilt")

    monkeypatch.setattr(cgcnn.data.building, "structure_to_graph", no_rebuild)
    again, _ = build_graphs([("cscl", cscl)], small, cache_dir=tmp_path, progress=False)
    assert again["cscl"].n_edges == 16
    with pytest.raises(RuntimeError, match="rebuilt"):
        build_graphs([("cscl", cscl)], large, cache_dir=tmp_path, progress=False)


def test_content_key_follows_the_structure_not_the_id(cscl, si):
    cfg = GraphConfig()
    assert content_key(cscl, cfg) == content_key(cscl.copy(), cfg)
    assert content_key(cscl, cfg) != content_key(si, cfg)


def test_two_workers_give_the_same_graphs_as_one(tiny_items, tiny_graph_config):
    # chunk_size 5 splits the 24 items into 5 chunks, so the process pool is really used
    one, _ = build_graphs(tiny_items, tiny_graph_config, workers=1, progress=False)
    two, _ = build_graphs(tiny_items, tiny_graph_config, workers=2, chunk_size=5, progress=False)
    assert_same_graphs(two, one)


# -- snapshot --------------------------------------------------------------------------------


def test_snapshot_structures_reads_jsonl_gz(tmp_path, cscl, si):
    path = tmp_path / "summary.jsonl.gz"
    records = [{"material_id": "mp-1", "structure_cif": cif(cscl)}, {"material_id": "mp-2", "structure_cif": cif(si)}]
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(json.dumps(r) for r in records) + "\n")
    assert [r["material_id"] for r in read_snapshot(path)] == ["mp-1", "mp-2"]
    assert [m for m, _ in snapshot_structures(path, ids={"mp-2"})] == ["mp-2"]
    graphs, problems = build_graphs(snapshot_structures(path), GraphConfig(radius=3.8), progress=False)
    assert graphs.ids == ["mp-1", "mp-2"] and problems == []
