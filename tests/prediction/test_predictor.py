"""The public API (cgcnn.load_model → predict / embed) and the inputs it accepts."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import numpy as np
import pytest
from pymatgen.io.cif import CifWriter

import cgcnn
from cgcnn.cli import main
from cgcnn.errors import DatasetError

FIXTURE_SNAPSHOT = "tests/fixtures/mp_snapshot/summary.jsonl.gz"


@pytest.fixture(scope="module")
def model(tiny_run):
    return cgcnn.load_model(tiny_run.best_checkpoint, device="cpu")


def test_three_lines_predict_a_pymatgen_structure(tiny_run, tiny_items):
    from cgcnn import load_model

    table = load_model(tiny_run.best_checkpoint).predict(tiny_items[0][1])
    assert table.columns.tolist() == ["material_id", "prediction_ev", "prediction_std_ev", "n_members"]
    assert (table["prediction_std_ev"] == 0).all() and (table["n_members"] == 1).all()  # one checkpoint: no spread
    assert len(table) == 1 and np.isfinite(table["prediction_ev"]).all()


def test_every_kind_of_input_gives_the_same_prediction(model, tiny_items, tiny_graphs, tmp_path):
    ids = [m for m, _ in tiny_items[:4]]
    by_mapping = model.predict({m: s for m, s in tiny_items[:4]})
    assert by_mapping["material_id"].tolist() == ids
    folder = tmp_path / "cifs"
    folder.mkdir()
    for m, s in tiny_items[:4]:
        (folder / f"{m}.cif").write_text(str(CifWriter(s)))
    snapshot = tmp_path / "summary.jsonl.gz"
    with gzip.open(snapshot, "wt") as fh:
        fh.writelines(
            json.dumps({"material_id": m, "structure_cif": str(CifWriter(s))}) + "\n" for m, s in tiny_items[:4]
        )
    tiny_graphs.subset(ids).save_npz(tmp_path / "graphs.npz")
    for inputs in (
        folder,
        [folder / f"{m}.cif" for m in ids],
        snapshot,
        tmp_path / "graphs.npz",
        tiny_graphs.subset(ids),
    ):
        other = model.predict(inputs)
        assert other["material_id"].tolist() == ids, inputs
        assert np.allclose(other["prediction_ev"], by_mapping["prediction_ev"], atol=1e-5), inputs


def test_a_list_of_structures_is_numbered_in_order(model, tiny_items):
    table = model.predict([s for _, s in tiny_items[:3]])
    assert table["material_id"].tolist() == ["0", "1", "2"]


def test_embed_gives_both_vectors_per_crystal(model, tiny_items, tiny_model_config):
    emb = model.embed({m: s for m, s in tiny_items[:5]})
    assert emb.conv.shape == (5, tiny_model_config.atom_fea_len)
    assert emb.hidden.shape == (5, tiny_model_config.h_fea_len)


def test_nothing_readable_is_an_error_naming_the_input(model, tmp_path):
    (tmp_path / "bad.cif").write_text("data_x\nnot a cif\n")
    with pytest.raises(DatasetError, match="no structure could be read.*1 skipped.*bad"):
        model.predict(tmp_path)
    with pytest.raises(DatasetError, match="no structure could be read"):
        model.predict(tmp_path / "bad.cif")


def test_skipped_items_are_listed(model, tiny_items, tmp_path):
    (tmp_path / "bad.cif").write_text("data_x\nnot a cif\n")
    (tmp_path / "ok.cif").write_text(str(CifWriter(tiny_items[0][1])))
    with pytest.warns(cgcnn.errors.InputWarning, match="1 input.s. skipped and left out of the table.*bad"):
        table = model.predict(tmp_path)
    assert table["material_id"].tolist() == ["ok"]
    assert [p.item_id for p in table.attrs["skipped"]] == ["bad"]


@pytest.mark.shared_data
def test_cli_predicts_every_structure_of_a_snapshot(reference_dir, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    argv = [
        "predict",
        "--checkpoint",
        reference_dir / "seed_m1_base.pth.tar",
        "--atom-features",
        reference_dir / "atom_init.json",
        "--radius",
        "7",
        "--max-neighbors",
        "14",
        "--device",
        "cpu",
        FIXTURE_SNAPSHOT,
        "--output",
        out,
    ]
    assert main([str(a) for a in argv]) == 0
    with gzip.open(FIXTURE_SNAPSHOT, "rt") as fh:
        ids = sorted(json.loads(line)["material_id"] for line in fh)
    lines = out.read_text().splitlines()
    assert lines[0] == "material_id,prediction_ev,prediction_std_ev,n_members"
    assert sorted(line.split(",")[0] for line in lines[1:]) == ids


def test_cli_predict_on_an_empty_folder_fails_with_one_line(tiny_run, tmp_path):
    (tmp_path / "empty").mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cgcnn",
            "predict",
            "--checkpoint",
            str(tiny_run.best_checkpoint),
            str(tmp_path / "empty"),
            "--output",
            str(tmp_path / "pred.csv"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no structure could be read from")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "pred.csv").exists()


def test_importing_the_network_does_not_load_graph_building_or_the_etl():
    code = (
        "import sys, cgcnn.nn.model; "
        "print(sorted(m for m in ('cgcnn.data.building', 'cgcnn.data.graphset', 'cgcnn.data.dataset', 'cgcnn.etl', 'pymatgen.core') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    # multiprocessing itself is imported by torch; what must stay out is our parallel graph
    # building, the graph cache (cgcnn.data.building), the dataset layer, the ETL and pymatgen.
    assert loaded == "[]"


def test_the_version_comes_from_the_package_metadata():
    from importlib.metadata import version

    assert cgcnn.__version__ == version("cgcnn-da")


def test_a_refused_structure_is_said_in_a_warning_and_the_rows_keep_their_ids(model, tiny_items):
    from pymatgen.core import Lattice, Structure

    from cgcnn.errors import InputWarning

    alloy = Structure(Lattice.cubic(5.6), [{"Ga": 0.5, "Si": 0.5}, "As"], [[0, 0, 0], [0.25, 0.25, 0.25]])
    structures = [tiny_items[0][1], alloy, tiny_items[1][1]]
    with pytest.warns(
        InputWarning, match=r"^1 input\(s\) skipped and left out of the table.*: 1: .*attrs\['skipped'\]"
    ):
        table = model.predict(structures)
    assert table["material_id"].tolist() == ["0", "2"]  # rows name their input, not their position
    assert [p.item_id for p in table.attrs["skipped"]] == ["1"]
    with pytest.warns(InputWarning, match=r"1 input\(s\) skipped.*: b: "):
        named = model.predict(structures, ids=["a", "b", "c"])
    assert named["material_id"].tolist() == ["a", "c"]


def test_pbe_gaps_given_to_a_model_that_does_not_read_them_are_said_to_be_ignored(model, tiny_items):
    from cgcnn.errors import InputWarning

    with pytest.warns(InputWarning, match="pbe is ignored: this model does not read PBE gaps"):
        model.predict(tiny_items[0][1], pbe=1.0)


def test_ids_are_refused_for_files_and_for_a_mapping(model, tiny_items, tmp_path):
    (tmp_path / "a.cif").write_text(str(CifWriter(tiny_items[0][1])))
    with pytest.raises(DatasetError, match="ids= names structures given as one structure or a list"):
        model.predict(tmp_path, ids=["x"])
    with pytest.raises(DatasetError, match="ids= names structures"):
        model.predict(dict(tiny_items[:1]), ids=["x"])
    with pytest.raises(DatasetError, match=r"pbe= as a number or a list is aligned with structures given in memory"):
        model.predict(tmp_path, pbe=[1.0])
