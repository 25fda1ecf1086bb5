"""Streaming prediction (cgcnn.prediction.streaming): same rows as in memory, exact shards, flat memory."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pandas as pd
import pytest
from pymatgen.io.cif import CifWriter

import cgcnn
from cgcnn.errors import DatasetError
from cgcnn.prediction.streaming import parse_shard, predict_to_csv, shard_bounds


@pytest.fixture(scope="module")
def model(tiny_run):
    return cgcnn.load_model(tiny_run.best_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def cif_folder(tiny_items, tmp_path_factory):
    folder = tmp_path_factory.mktemp("screen")
    for m, s in tiny_items:
        (folder / f"{m}.cif").write_text(str(CifWriter(s)))
    (folder / "zz-broken.cif").write_text("data_x\nnot a cif\n")
    return folder


def test_streaming_equals_in_memory_prediction(model, cif_folder, tmp_path):
    out = tmp_path / "stream.csv"
    summary = predict_to_csv(model, cif_folder, out, chunk_size=5, progress=False)
    streamed = pd.read_csv(out, dtype={"material_id": str})
    in_memory = model.predict(cif_folder)
    assert streamed["material_id"].tolist() == in_memory["material_id"].tolist()  # input order
    assert (streamed["prediction_ev"] - in_memory["prediction_ev"]).abs().max() < 1e-5
    assert summary.written == 24 and summary.skipped == 1 and summary.examples[0].item_id == "zz-broken"


def test_streaming_embed_equals_in_memory_embedding(model, cif_folder, tmp_path):
    import numpy as np

    from cgcnn.prediction.streaming import embed_to_npz

    summary, n_conv, n_hidden = embed_to_npz(model, cif_folder, tmp_path / "emb.npz", chunk_size=5, progress=False)
    saved = np.load(tmp_path / "emb.npz")
    in_memory = model.embed(cif_folder)
    assert saved["material_id"].tolist() == in_memory.ids
    assert np.allclose(saved["conv"], in_memory.conv, atol=1e-5) and np.allclose(
        saved["hidden"], in_memory.hidden, atol=1e-5
    )
    assert (n_conv, n_hidden) == (in_memory.conv.shape[1], in_memory.hidden.shape[1])
    assert summary.written == 24 and summary.skipped == 1


def test_shards_concatenate_to_exactly_the_unsharded_output(model, cif_folder, tmp_path):
    predict_to_csv(model, cif_folder, tmp_path / "all.csv", chunk_size=4, progress=False)
    parts = []
    for k in (1, 2, 3):
        predict_to_csv(
            model, cif_folder, tmp_path / f"part{k}.csv", chunk_size=4, shard=parse_shard(f"{k}/3"), progress=False
        )
        parts.append((tmp_path / f"part{k}.csv").read_text().splitlines()[1:])
    whole = (tmp_path / "all.csv").read_text().splitlines()
    assert [whole[0]] + [row for part in parts for row in part] == whole


def test_shard_bounds_are_contiguous_and_cover_everything():
    bounds = [shard_bounds(10, k, 3) for k in range(3)]
    assert bounds == [(0, 3), (3, 6), (6, 10)]
    with pytest.raises(DatasetError, match="K/N"):
        parse_shard("3")
    with pytest.raises(DatasetError, match="between 1 and N"):
        parse_shard("4/3")


def test_a_repeated_id_in_a_later_chunk_is_skipped_and_named(model, tiny_items, tmp_path):
    snap = tmp_path / "s.jsonl.gz"
    recs = [{"material_id": m, "structure_cif": str(CifWriter(s))} for m, s in tiny_items[:4]]
    recs.append(dict(recs[0]))
    with gzip.open(snap, "wt") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in recs)
    summary = predict_to_csv(model, snap, tmp_path / "p.csv", chunk_size=2, progress=False)
    assert summary.written == 4 and [p.item_id for p in summary.examples] == [tiny_items[0][0]]
    assert len(pd.read_csv(tmp_path / "p.csv")) == 4


def test_nothing_readable_writes_nothing(model, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.cif").write_text("data_x\n")
    with pytest.raises(DatasetError, match="no structure could be read"):
        predict_to_csv(model, tmp_path / "in", tmp_path / "p.csv", progress=False)
    assert not (tmp_path / "p.csv").exists()


MEASURE = """
import gzip, json, resource, sys
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter
import cgcnn
from cgcnn.prediction.streaming import predict_to_csv
n, path, ckpt, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
cell = Structure(Lattice.cubic(5.64), ["Na"] * 4 + ["Cl"] * 4,
                 [[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0], [.5, .5, .5], [.5, 0, 0], [0, .5, 0], [0, 0, .5]])
text = str(CifWriter(cell * (2, 2, 1)))
with gzip.open(path, "wt") as fh:
    for k in range(n):
        fh.write(json.dumps({"material_id": f"m{k:06d}", "structure_cif": text}) + "\\n")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
predict_to_csv(cgcnn.load_model(ckpt, device="cpu"), path, out, chunk_size=100, progress=False)
print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_peak_memory_stays_flat_as_the_input_grows(tiny_run, tmp_path):
    # the tiny model's radius-4 graphs of a 32-atom NaCl cell; only the number of structures changes
    peaks = []
    for n in (300, 1500):
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                MEASURE,
                str(n),
                str(tmp_path / f"s{n}.jsonl.gz"),
                str(tiny_run.best_checkpoint),
                str(tmp_path / f"p{n}.csv"),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        before, after = map(int, proc.stdout.split())
        peaks.append(after - before)
        assert len(pd.read_csv(tmp_path / f"p{n}.csv")) == n
    assert peaks[1] - peaks[0] < 20_000  # KiB: five times the structures, (almost) the same peak


def test_disordered_rows_merge_their_intervals_and_domain_flags():
    from cgcnn.data.disorder import MARK
    from cgcnn.prediction.streaming import merge_ordered

    table = pd.DataFrame(
        {
            "material_id": [f"x{MARK}0-w1", f"x{MARK}1-w1", "y"],
            "prediction_ev": [1.0, 2.0, 3.0],
            "prediction_std_ev": [0.1, 0.1, 0.2],
            "n_members": [4, 4, 4],
            "prediction_lo_ev": [0.5, 1.2, 2.0],
            "prediction_hi_ev": [1.6, 2.9, 4.0],
            "in_domain": [True, False, True],
            "domain_note": ["", "rare element Tc (1 training materials) (< 5)", ""],
        }
    )
    merged = merge_ordered(table, "orderings").set_index("material_id")
    assert merged.loc["x", "prediction_ev"] == 1.5
    assert (merged.loc["x", "prediction_lo_ev"], merged.loc["x", "prediction_hi_ev"]) == (0.5, 2.9)  # spans both
    assert not merged.loc["x", "in_domain"] and merged.loc["x", "domain_note"].startswith("rare element Tc")
    assert merged.loc["y", "in_domain"] and merged.loc["y", "domain_note"] == ""
