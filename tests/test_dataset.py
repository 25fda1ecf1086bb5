"""Graph sets, graph building and its disk cache, labelled datasets and batching
(cgcnn.dataset)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from pymatgen.io.cif import CifWriter

import cgcnn.dataset
from cgcnn.config import GraphConfig
from cgcnn.dataset import (
    CrystalDataset,
    DatasetError,
    GraphSet,
    Problem,
    build_graphs,
    content_key,
    make_batch,
    read_snapshot,
    snapshot_structures,
)
from cgcnn.features import AtomFeatures
from cgcnn.graph import structure_to_graph

BAD_CIF = "data_broken\n_cell_length_a 4.0\nthis is not a CIF\n"


def cif(structure) -> str:
    return str(CifWriter(structure))


def assert_same_graphs(a: GraphSet, b: GraphSet) -> None:
    assert a.ids == b.ids
    assert a.config == b.config
    for m in a.ids:
        ga, gb = a[m], b[m]
        assert np.array_equal(ga.atomic_numbers, gb.atomic_numbers)
        assert np.array_equal(ga.edge_index, gb.edge_index)
        assert np.array_equal(ga.distances, gb.distances)  # exact, not close


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
    assert problems == [Problem("x", "duplicate material id (first occurrence kept)")]


def test_second_build_comes_from_the_cache(tiny_items, tiny_graph_config, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first, _ = build_graphs(tiny_items, tiny_graph_config, cache_dir=cache, progress=False)
    assert list(cache.glob("shard-*.npz"))

    def no_rebuild(*args, **kwargs):
        raise AssertionError("structure_to_graph was called: the cache was not used")

    monkeypatch.setattr(cgcnn.dataset, "structure_to_graph", no_rebuild)
    second, problems = build_graphs(tiny_items, tiny_graph_config, cache_dir=cache, progress=False)
    assert problems == []
    assert_same_graphs(second, first)
    # the same structures under other ids are found too (the key is the content)
    renamed, _ = build_graphs([(f"copy-{m}", s) for m, s in tiny_items[:3]], tiny_graph_config, cache_dir=cache, progress=False)
    assert renamed.ids == [f"copy-{m}" for m, _ in tiny_items[:3]]
    assert renamed["copy-CsCl-097"].equals(first["CsCl-097"])


def test_other_graph_settings_are_not_served_from_the_cache(cscl, tmp_path, monkeypatch):
    small, large = GraphConfig(radius=3.8), GraphConfig(radius=4.5)
    assert content_key(cscl, small) != content_key(cscl, large)
    build_graphs([("cscl", cscl)], small, cache_dir=tmp_path, progress=False)

    def no_rebuild(*args, **kwargs):
        raise RuntimeError("rebuilt")

    monkeypatch.setattr(cgcnn.dataset, "structure_to_graph", no_rebuild)
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


def test_snapshot_line_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "summary.jsonl"
    path.write_text('{"material_id": "mp-1"}\n{not json\n')
    with pytest.raises(DatasetError, match="line 2"):
        list(read_snapshot(path))


# -- CrystalDataset --------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), "n/a", None, float("inf")])
def test_label_that_is_not_a_number_is_skipped_naming_the_item(tiny_graphs, tiny_targets, tiny_features, bad):
    targets = dict(tiny_targets, **{"MgO-099": bad})
    ds = CrystalDataset(tiny_graphs, targets, tiny_features)
    assert len(ds) == 23 and "MgO-099" not in ds.ids
    assert [p.item_id for p in ds.problems] == ["MgO-099"]
    assert "not a finite number" in ds.problems[0].reason
    with pytest.raises(DatasetError, match="MgO-099"):
        CrystalDataset(tiny_graphs, targets, tiny_features, on_error="error")


def test_element_outside_the_feature_table_is_skipped_naming_it(tiny_graphs, tiny_targets, tiny_features):
    # the same table without caesium (Z = 55)
    no_cs = AtomFeatures.from_dict({k: v for k, v in tiny_features.to_dict().items() if k != "55"})
    ds = CrystalDataset(tiny_graphs, tiny_targets, no_cs)
    cscl_ids = [m for m in tiny_graphs.ids if m.startswith("CsCl")]
    assert len(ds) == 20 and not set(cscl_ids) & set(ds.ids)
    assert [p.item_id for p in ds.problems] == cscl_ids
    assert all("Cs (Z=55)" in p.reason for p in ds.problems)
    with pytest.raises(DatasetError, match=r"CsCl-097.*Cs \(Z=55\)"):
        CrystalDataset(tiny_graphs, tiny_targets, no_cs, on_error="error")


def test_label_without_a_graph_is_reported(tiny_graphs, tiny_targets, tiny_features):
    ds = CrystalDataset(tiny_graphs, dict(tiny_targets, ghost=1.0), tiny_features)
    assert len(ds) == 24
    assert [p.item_id for p in ds.problems] == ["ghost"]


def test_labels_follow_the_ids(tiny_dataset, tiny_targets):
    assert tiny_dataset.y.dtype == np.float32
    assert np.allclose(tiny_dataset.y, [tiny_targets[m] for m in tiny_dataset.ids])


def test_unlabelled_dataset_keeps_every_graph(tiny_graphs, tiny_features):
    ds = CrystalDataset(tiny_graphs, None, tiny_features)
    assert ds.ids == tiny_graphs.ids and ds.y is None


# -- batching --------------------------------------------------------------------------------


def test_batch_offsets_edge_indices_and_maps_atoms_to_crystals(tiny_dataset):
    positions = [tiny_dataset.ids.index(m) for m in ("NaCl-101", "Si-097", "CsCl-101")]
    batch = make_batch(tiny_dataset, positions)
    graphs = [tiny_dataset.graphs.graph(k) for k in positions]
    assert batch.num_graphs == 3
    assert batch.batch.tolist() == [0, 0, 1, 1, 2, 2]  # two atoms per crystal
    expected = np.concatenate([g.edge_index + 2 * k for k, g in enumerate(graphs)], axis=1)
    assert np.array_equal(batch.edge_index.numpy(), expected)
    assert np.array_equal(batch.distances.numpy(), np.concatenate([g.distances for g in graphs]))
    assert np.array_equal(batch.atomic_numbers.numpy(), np.concatenate([g.atomic_numbers for g in graphs]))
    assert np.array_equal(batch.y.numpy(), tiny_dataset.y[positions])
    # every edge stays inside its own crystal
    assert np.array_equal(batch.batch[batch.edge_index[0]], batch.batch[batch.edge_index[1]])


def test_batch_is_regular_only_when_every_atom_has_max_neighbors_edges(tiny_dataset, tiny_graph_config):
    m = tiny_graph_config.max_neighbors
    pos = {k: tiny_dataset.ids.index(k) for k in ("MgO-097", "LiF-103", "NaCl-103", "CsCl-099")}
    assert tiny_dataset.graphs.graph(pos["MgO-097"]).neighbour_counts().tolist() == [m, m]
    assert tiny_dataset.graphs.graph(pos["NaCl-103"]).neighbour_counts().tolist() == [6, 6]  # a/√2 > 4 Å
    assert make_batch(tiny_dataset, [pos["MgO-097"], pos["LiF-103"]]).regular == m
    assert make_batch(tiny_dataset, [pos["MgO-097"], pos["NaCl-103"]]).regular is None
    assert make_batch(tiny_dataset, [pos["CsCl-099"]]).regular is None  # 8 each, fewer than 12
