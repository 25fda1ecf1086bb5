"""The command line (cgcnn.cli): graphs -> train -> evaluate / predict / embed / adapt end
to end on the tiny dataset, and predictions of the original band-gap model."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
from pymatgen.io.cif import CifWriter

from cgcnn.cli import main
from cgcnn.data.dataset import CrystalDataset
from cgcnn.data.graphset import GraphSet
from cgcnn.prediction.inference import predict
from cgcnn.training.checkpoint import load_checkpoint

GRAPH_ARGS = ["--radius", "4", "--max-neighbors", "12"]
TRAIN_ARGS = [
    "--epochs",
    "2",
    "--batch-size",
    "6",
    "--optimizer",
    "adam",
    "--lr",
    "0.01",
    "--seed",
    "0",
    "--device",
    "cpu",
]


def run(capsys, *argv) -> tuple[str, str]:
    assert main([str(a) for a in argv]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


@pytest.fixture(scope="module")
def inputs(tiny_items, tiny_targets, tiny_features, tiny_model_config, tmp_path_factory):
    """A folder of CIFs (the 24 tiny crystals + one broken file), labels, features, model config."""
    root = tmp_path_factory.mktemp("cli")
    cifs = root / "cifs"
    cifs.mkdir()
    for m, s in tiny_items:
        (cifs / f"{m}.cif").write_text(str(CifWriter(s)))
    (cifs / "broken.cif").write_text("data_broken\n_cell_length_a 4.0\nnot a CIF at all\n")
    pd.DataFrame({"material_id": list(tiny_targets), "target": list(tiny_targets.values())}).to_csv(
        root / "targets.csv", index=False
    )
    tiny_features.to_json(root / "features.json")
    (root / "model.json").write_text(json.dumps(tiny_model_config.to_dict()))
    return root


@pytest.fixture(scope="module")
def graphs_dir(inputs):
    out = inputs / "graphs"
    assert main(["graphs", str(inputs / "cifs"), "--output", str(out), "--json", *GRAPH_ARGS]) == 0
    return out


@pytest.fixture(scope="module")
def trained(inputs, graphs_dir):
    out = inputs / "run"
    argv = [
        "train",
        "--graphs",
        graphs_dir,
        "--targets",
        inputs / "targets.csv",
        "--atom-features",
        inputs / "features.json",
        "--model-config",
        inputs / "model.json",
        "--output",
        out,
        *GRAPH_ARGS,
        *TRAIN_ARGS,
    ]
    assert main([str(a) for a in argv]) == 0
    return out


def test_graphs_writes_the_set_and_names_the_broken_file(graphs_dir, tiny_graphs):
    graphs = GraphSet.load_npz(graphs_dir / "graphs.npz")
    assert sorted(graphs.ids) == sorted(tiny_graphs.ids)  # 24 built, the broken file left out
    assert graphs.config == tiny_graphs.config
    for m in graphs.ids:  # CIF text round trip: same atoms, same bonds
        assert graphs[m].edge_index.shape == tiny_graphs[m].edge_index.shape
        assert np.allclose(graphs[m].distances, tiny_graphs[m].distances, atol=1e-4)
    problems = pd.read_csv(graphs_dir / "problems.csv")
    assert problems.columns.tolist() == ["item", "reason"]
    assert problems["item"].tolist() == ["broken"]
    assert GraphSet.read_json(graphs_dir / "graphs.json.gz").equals(graphs)


def test_train_writes_a_run_folder(trained):
    for name in ("best.pt", "last.pt", "history.csv", "run.json", "splits.json"):
        assert (trained / name).is_file(), name
    assert len(pd.read_csv(trained / "history.csv")) == 2
    run_info = json.loads((trained / "run.json").read_text())
    assert run_info["train_config"]["epochs"] == 2 and run_info["model_config"]["atom_fea_len"] == 8


def test_evaluate_writes_a_table_and_prints_metrics(trained, graphs_dir, inputs, capsys, tiny_targets):
    table_path = inputs / "evaluate.csv"
    out, _ = run(
        capsys,
        "evaluate",
        "--checkpoint",
        trained / "best.pt",
        "--graphs",
        graphs_dir,
        "--targets",
        inputs / "targets.csv",
        "--device",
        "cpu",
        "--output",
        table_path,
    )
    metrics = json.loads(out)
    table = pd.read_csv(table_path)
    assert table.columns.tolist() == ["material_id", "target_ev", "prediction_ev", "error_ev"]
    assert len(table) == metrics["n"] == 24
    assert np.allclose(table["target_ev"], [tiny_targets[m] for m in table["material_id"]])
    assert np.allclose(table["error_ev"], table["prediction_ev"] - table["target_ev"])
    assert metrics["mae"] == pytest.approx(table["error_ev"].abs().mean())


def test_predict_gives_material_id_and_prediction_ev(trained, inputs, capsys):
    pred_path = inputs / "predict.csv"
    _, err = run(
        capsys,
        "predict",
        "--checkpoint",
        trained / "best.pt",
        inputs / "cifs",
        "--device",
        "cpu",
        "--output",
        pred_path,
    )
    assert pred_path.read_text().splitlines()[0] == "material_id,prediction_ev,prediction_std_ev,n_members"
    pred = pd.read_csv(pred_path)
    assert len(pred) == 24 and pred["material_id"].is_monotonic_increasing
    assert np.isfinite(pred["prediction_ev"]).all()
    assert "broken" in err  # the broken CIF is reported, not fatal
    # the same numbers as the checkpoint gives on the saved graphs (6 decimals written)
    loaded = load_checkpoint(trained / "best.pt")
    graphs = GraphSet.load_npz(inputs / "graphs" / "graphs.npz")
    expected = pd.Series(predict(loaded, CrystalDataset(graphs, None, loaded.features), device="cpu"), index=graphs.ids)
    assert np.allclose(pred["prediction_ev"], expected[pred["material_id"]], atol=1e-5)


@pytest.mark.parametrize("level", ["150", "0", "ninety"])
def test_predict_refuses_an_interval_level_outside_zero_one(trained, inputs, capsys, level):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--checkpoint", str(trained / "best.pt"), str(inputs / "cifs"), "--interval-level", level])
    assert exc.value.code == 2
    assert "--interval-level" in capsys.readouterr().err


def test_interval_level_is_ignored_with_a_warning_by_a_model_without_calibration(trained, inputs, capsys):
    _, err = run(
        capsys,
        "predict",
        "--checkpoint",
        trained / "best.pt",
        inputs / "cifs",
        "--device",
        "cpu",
        "--interval-level",
        "80",
    )
    assert "warning: --interval-level is ignored: this model has no calibrated intervals" in err


def test_embed_writes_both_vectors(trained, graphs_dir, inputs, capsys):
    path = inputs / "embed.npz"
    run(
        capsys,
        "embed",
        "--checkpoint",
        trained / "best.pt",
        "--graphs",
        graphs_dir,
        "--device",
        "cpu",
        "--output",
        path,
    )
    with np.load(path) as z:
        assert z["conv"].shape == (24, 8) and z["hidden"].shape == (24, 16)
        assert len(z["material_id"]) == 24


@pytest.mark.parametrize("extra", [["--freeze", "convs", "--normalizer", "keep"], ["--control"]])
def test_adapt_and_control_run(trained, graphs_dir, inputs, capsys, tmp_path, extra):
    out, _ = run(
        capsys,
        "adapt",
        "--base",
        trained / "best.pt",
        "--graphs",
        graphs_dir,
        "--targets",
        inputs / "targets.csv",
        "--output",
        tmp_path / "adapted",
        *TRAIN_ARGS[:2],
        "--device",
        "cpu",
        *extra,
    )
    assert (tmp_path / "adapted" / "best.pt").is_file()
    assert json.loads(out)["best_checkpoint"] == str(tmp_path / "adapted" / "best.pt")


def test_train_refuses_graphs_built_with_other_settings(graphs_dir, inputs, tmp_path):
    with pytest.raises(SystemExit, match="r4-n12.*not r8-n12"):
        main(
            [
                "train",
                "--graphs",
                str(graphs_dir),
                "--targets",
                str(inputs / "targets.csv"),
                "--output",
                str(tmp_path),
                "--epochs",
                "1",
            ]
        )


# -- the original CGCNN band-gap model -------------------------------------------------------


@pytest.mark.shared_data
def test_predict_with_the_original_band_gap_model_matches_its_reference(reference_dir, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    run(
        capsys,
        "predict",
        "--checkpoint",
        reference_dir / "band-gap.pth.tar",
        "--atom-features",
        reference_dir / "atom_init.json",
        "--radius",
        8,
        "--max-neighbors",
        12,
        "--device",
        "cpu",
        reference_dir / "sample-regression",
        "--output",
        out,
    )
    pred = pd.read_csv(out, dtype={"material_id": str})
    assert pred.columns.tolist() == ["material_id", "prediction_ev", "prediction_std_ev", "n_members"]
    ref = pd.read_csv(reference_dir / "reference_predictions.csv", dtype={"cif_id": str})
    assert pred["material_id"].tolist() == ref["cif_id"].tolist()
    assert np.abs(pred["prediction_ev"] - ref["prediction_ev"]).max() < 1e-3


@pytest.mark.shared_data
def test_predict_with_an_original_checkpoint_needs_its_settings(reference_dir, tmp_path):
    with pytest.raises(SystemExit, match="give --radius, --max-neighbors"):
        main(
            [
                "predict",
                "--checkpoint",
                str(reference_dir / "band-gap.pth.tar"),
                "--atom-features",
                str(reference_dir / "atom_init.json"),
                str(reference_dir / "sample-regression"),
            ]
        )


@pytest.mark.shared_data
def test_evaluate_reads_the_original_headerless_id_prop_csv(reference_dir, tmp_path, capsys):
    # sample-regression/id_prop.csv: "cif_id,target" rows without a header, targets 1.0 ... 10.0
    folder = reference_dir / "sample-regression"
    out, _ = run(
        capsys,
        "evaluate",
        "--checkpoint",
        reference_dir / "band-gap.pth.tar",
        "--atom-features",
        reference_dir / "atom_init.json",
        "--radius",
        8,
        "--max-neighbors",
        12,
        "--device",
        "cpu",
        "--graphs",
        folder,
        "--targets",
        folder / "id_prop.csv",
        "--output",
        tmp_path / "eval.csv",
    )
    table = pd.read_csv(tmp_path / "eval.csv", dtype={"material_id": str}).set_index("material_id")
    labels = pd.read_csv(folder / "id_prop.csv", header=None, dtype={0: str}).set_index(0)[1]
    assert json.loads(out)["n"] == len(table) == 10
    assert np.allclose(table["target_ev"], labels[table.index])
    ref = pd.read_csv(reference_dir / "reference_predictions.csv", dtype={"cif_id": str}).set_index("cif_id")[
        "prediction_ev"
    ]
    assert np.abs(table["prediction_ev"] - ref[table.index]).max() < 1e-3


def test_entry_point_exits_with_mains_outcome_and_freezes_the_collector(monkeypatch, tmp_path):
    import gc

    from cgcnn.cli import run

    monkeypatch.setattr(sys, "argv", ["cgcnn", "predict", str(tmp_path / "missing.cif"), "--model", "base"])
    try:
        with pytest.raises(SystemExit) as exc:
            run()
        assert str(exc.value).startswith("error:") and "missing.cif" in str(exc.value)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_evaluate_scores_the_shipped_ensemble_by_default_with_known_pbe_gaps(
    tiny_items, tiny_targets, tmp_path, capsys
):
    """What `cgcnn evaluate --graphs my_cifs --targets labels.csv` gives a user: the model of
    predict (the shipped ensemble), its inputs (--pbe-gaps), the MAE with its bootstrap
    interval and the coverage of the ensemble's intervals."""
    from cgcnn.prediction.shipped import shipped_models

    if "ensemble" not in shipped_models():
        pytest.skip("no ensemble shipped in this checkout")
    cifs = tmp_path / "my_cifs"
    cifs.mkdir()
    ids = [m for m, _ in tiny_items[::4]]
    for m, s in tiny_items[::4]:
        (cifs / f"{m}.cif").write_text(str(CifWriter(s)))
    pd.DataFrame({"material_id": ids, "bg_exp": [tiny_targets[m] for m in ids]}).to_csv(tmp_path / "labels.csv")
    pd.DataFrame({"material_id": [ids[0], "not-an-input"], "pbe_gap_ev": [1.0, 2.0]}).to_csv(
        tmp_path / "pbe.csv", index=False
    )
    out, err = run(
        capsys,
        "evaluate",
        "--graphs",
        cifs,
        "--targets",
        tmp_path / "labels.csv",
        "--pbe-gaps",
        tmp_path / "pbe.csv",
        "--device",
        "cpu",
        "--output",
        tmp_path / "scored.csv",
    )
    metrics = json.loads(out)
    table = pd.read_csv(tmp_path / "scored.csv").set_index("material_id")
    assert table.columns[:3].tolist() == ["target_ev", "prediction_ev", "error_ev"] and len(table) == metrics["n"] == 6
    assert table.loc[ids[0], "pbe_gap_source"] == "given" and table.loc[ids[0], "pbe_gap_ev"] == pytest.approx(1.0)
    assert (table.drop(index=ids[0])["pbe_gap_source"] == "predicted").all()
    assert metrics["mae"] == pytest.approx(table["error_ev"].abs().mean(), abs=1e-5)
    assert metrics["mae_lo"] <= metrics["mae"] <= metrics["mae_hi"] and metrics["mae_ci_level"] == 0.95
    covered = (table["prediction_lo_ev"] <= table["target_ev"]) & (table["target_ev"] <= table["prediction_hi_ev"])
    assert metrics["interval_level"] == 0.9 and metrics["interval_coverage"] == pytest.approx(covered.mean())
    assert metrics["interval_coverage_lo"] <= metrics["interval_coverage"] <= metrics["interval_coverage_hi"]
    assert metrics["n_in_domain"] == int(table["in_domain"].sum())
    assert "warning: --pbe-gaps: 1 id(s) name no input structure and were not used (first: not-an-input)" in err
    assert f"MAE {metrics['mae']:.3f} eV [95 % CI" in err and "90 % interval covers" in err
    assert "attach_inputs" not in err
