"""Multi-fidelity and PBE-aware CGCNN variants, per-crystal inputs, and deep ensembles."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from cgcnn.config import AdaptConfig
from cgcnn.data.batch import make_batch
from cgcnn.data.dataset import CrystalDataset
from cgcnn.data.descriptors import MAGPIE_DIM, attach_inputs, composition_features
from cgcnn.errors import DatasetError
from cgcnn.prediction.ensemble import calibration_scale, coverage, ensemble_predict
from cgcnn.prediction.predictor import Predictor
from cgcnn.training.adapt import adapt
from cgcnn.training.checkpoint import load_checkpoint


def _variant(tiny_run, **update):
    """A model of ``tiny_run``'s architecture with the given variant settings, initialised
    from its weights (new layers at zero)."""
    base = load_checkpoint(tiny_run.best_checkpoint)
    cfg = base.model_config.model_copy(update=update)
    from cgcnn.training.checkpoint import build_model

    model = build_model(cfg, base.features, base.graph_config)
    model.load_base_weights(base.model.state_dict())
    return base, model.eval()


def _dataset(tiny_graphs, tiny_targets, tiny_features, ids=None):
    return CrystalDataset(tiny_graphs, tiny_targets, tiny_features, ids=ids)


def test_a_variant_started_from_a_base_predicts_what_the_base_predicts(
    tiny_run, tiny_graphs, tiny_targets, tiny_features
):
    base, model = _variant(tiny_run, fidelities=["pbe", "experiment"], pbe_input=True, composition="magpie")
    ds = attach_inputs(_dataset(tiny_graphs, tiny_targets, tiny_features), model.config, pbe=np.linspace(0, 3, 24))
    batch = make_batch(ds, np.arange(len(ds)))
    with torch.no_grad():
        assert torch.allclose(model(batch), base.model.eval()(batch), atol=1e-6)


def test_the_fidelity_embedding_changes_the_prediction(tiny_run, tiny_graphs, tiny_targets, tiny_features):
    _, model = _variant(tiny_run, fidelities=["pbe", "experiment"])
    with torch.no_grad():
        torch.nn.init.normal_(model.condition_to_fc.weight, std=0.5)
    ds = _dataset(tiny_graphs, tiny_targets, tiny_features)
    out = {}
    for k, name in enumerate(model.config.fidelities):
        attach_inputs(ds, model.config, fidelity=name)
        assert (ds.inputs["fidelity"] == k).all()
        with torch.no_grad():
            out[name] = model(make_batch(ds, np.arange(len(ds))))
    assert (out["pbe"] - out["experiment"]).abs().min() > 1e-4
    ds.inputs.pop("fidelity")  # no fidelity given: the model's default (last) fidelity
    with torch.no_grad():
        assert torch.allclose(model(make_batch(ds, np.arange(len(ds)))), out["experiment"])


def test_the_pbe_gap_reaches_the_output_and_unknown_is_not_zero(tiny_run, tiny_graphs, tiny_targets, tiny_features):
    _, model = _variant(tiny_run, pbe_input=True)
    with torch.no_grad():
        model.pbe_skip.weight.copy_(torch.tensor([[0.5, 0.25]]))
    ds = _dataset(tiny_graphs, tiny_targets, tiny_features)
    preds = {}
    for name, pbe in (("low", np.full(24, 1.0)), ("high", np.full(24, 3.0)), ("unknown", np.full(24, np.nan))):
        attach_inputs(ds, model.config, pbe=pbe)
        with torch.no_grad():
            preds[name] = model(make_batch(ds, np.arange(24)))
    assert torch.allclose(preds["high"] - preds["low"], torch.full((24,), 1.0))  # 0.5 per eV × 2 eV
    attach_inputs(ds, model.config, pbe=np.zeros(24))
    with torch.no_grad():  # a PBE gap of 0 eV is known (flag 1), unlike an unknown one
        assert torch.allclose(model(make_batch(ds, np.arange(24))) - preds["unknown"], torch.full((24,), 0.25))


def test_composition_features_come_from_the_graph_atoms(tiny_graphs):
    from cgcnn.data.magpie import of_formulas

    by_id = dict(zip(tiny_graphs.ids, composition_features(tiny_graphs)))
    assert by_id["GaAs-099"].shape == (MAGPIE_DIM,)
    np.testing.assert_allclose(by_id["GaAs-099"], of_formulas(["GaAs"])[0], rtol=1e-6)
    np.testing.assert_allclose(by_id["CsCl-101"], of_formulas(["CsCl"])[0], rtol=1e-6)


def test_datasets_concatenate_with_tagged_ids_labels_and_inputs(tiny_graphs, tiny_targets, tiny_features):
    ids = tiny_graphs.ids
    a = _dataset(tiny_graphs, tiny_targets, tiny_features, ids=ids[:5]).with_inputs(
        fidelity=np.zeros(5), pbe=np.full(5, np.nan)
    )
    b = _dataset(tiny_graphs, {m: 9.0 for m in ids[:3]}, tiny_features, ids=ids[:3]).with_inputs(
        fidelity=np.ones(3), pbe=[1, 2, 3]
    )
    both = CrystalDataset.concat([(a, "pbe"), (b, "experiment")])
    assert both.ids == [f"{m}@pbe" for m in ids[:5]] + [f"{m}@experiment" for m in ids[:3]]
    assert both.y.tolist()[5:] == [9.0, 9.0, 9.0] and np.allclose(both.y[:5], [tiny_targets[m] for m in ids[:5]])
    assert both.inputs["fidelity"].tolist() == [0] * 5 + [1] * 3
    for k in (0, 6):  # graphs are carried over intact
        m = both.ids[k].split("@")[0]
        assert np.array_equal(both.graphs.graph(k).atomic_numbers, tiny_graphs[m].atomic_numbers)
        assert np.array_equal(both.graphs.graph(k).distances, tiny_graphs[m].distances)
    batch = make_batch(both, [1, 6])
    assert batch.inputs["fidelity"].tolist() == [0, 1] and batch.inputs["pbe"][1].item() == 2.0
    sub = both.subset_positions([7, 0])
    assert sub.inputs["fidelity"].tolist() == [1, 0]


def test_bad_inputs_are_refused_by_name(tiny_graphs, tiny_targets, tiny_features):
    ds = _dataset(tiny_graphs, tiny_targets, tiny_features)
    with pytest.raises(ValueError, match="unknown per-crystal input 'colour'"):
        ds.with_inputs(colour=np.zeros(24))
    with pytest.raises(ValueError, match="3 rows|\\(3,\\) rows"):
        ds.with_inputs(pbe=np.zeros(3))


def test_fitting_a_variant_trains_its_new_layers_and_scales_composition_on_the_training_split(
    tiny_run, tiny_dataset, tiny_train_config, tmp_path
):
    base = load_checkpoint(tiny_run.best_checkpoint)
    cfg = base.model_config.model_copy(update={"pbe_input": True, "composition": "magpie"})
    ds = attach_inputs(tiny_dataset.subset_positions(np.arange(24)), cfg, pbe=np.linspace(0.5, 3, 24))
    train = np.arange(0, 16)
    result = adapt(
        base,
        ds,
        AdaptConfig(freeze="head", train=tiny_train_config),
        tmp_path / "v",
        splits=(train, np.arange(16, 24)),
        model_config=cfg,
        progress=False,
    )
    fitted = load_checkpoint(result.best_checkpoint)
    assert fitted.model_config.pbe_input and fitted.model_config.composition == "magpie"
    assert fitted.model.pbe_skip.weight.abs().sum() > 0  # trained even under the "head" policy
    assert torch.equal(fitted.model.convs[0].fc_full.weight, base.model.convs[0].fc_full.weight)  # frozen
    assert np.allclose(fitted.model.composition_mean.numpy(), ds.inputs["composition"][train].mean(axis=0), atol=1e-4)
    assert fitted.model.composition_mean.shape == (MAGPIE_DIM,)


def test_a_dataset_without_the_inputs_a_model_reads_is_refused(tiny_run, tiny_dataset, tmp_path, tiny_train_config):
    base = load_checkpoint(tiny_run.best_checkpoint)
    cfg = base.model_config.model_copy(update={"pbe_input": True})
    ds = tiny_dataset.subset_positions(np.arange(24))
    with pytest.raises(DatasetError, match=r"\['pbe'\]"):
        adapt(base, ds, AdaptConfig(train=tiny_train_config), tmp_path / "x", model_config=cfg, progress=False)
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def pbe_aware_members(tiny_run, tiny_dataset, tiny_train_config, tmp_path_factory):
    """Two PBE-aware members fine-tuned from the tiny run with different seeds."""
    base = load_checkpoint(tiny_run.best_checkpoint)
    cfg = base.model_config.model_copy(update={"pbe_input": True})
    ds = attach_inputs(tiny_dataset.subset_positions(np.arange(24)), cfg, pbe=np.array(list(tiny_dataset.y)) * 0.7)
    out = tmp_path_factory.mktemp("members")
    paths = []
    for seed in (0, 1):
        train = tiny_train_config.model_copy(update={"seed": seed})
        paths.append(
            adapt(
                base, ds, AdaptConfig(train=train), out / f"member-{seed}", model_config=cfg, progress=False
            ).best_checkpoint
        )
    return paths


def test_ensemble_spread_is_zero_for_one_member_and_positive_for_several(pbe_aware_members, tiny_dataset, tiny_run):
    members = [load_checkpoint(p) for p in pbe_aware_members]
    base = load_checkpoint(tiny_run.best_checkpoint)
    ds = tiny_dataset.subset_positions(np.arange(24))
    one = ensemble_predict(members[:1], ds, pbe_model=base, device="cpu")
    two = ensemble_predict(members, ds, pbe_model=base, device="cpu")
    assert (one["prediction_std_ev"] == 0).all() and (one["n_members"] == 1).all()
    assert (two["prediction_std_ev"] > 0).all() and (two["n_members"] == 2).all()
    assert list(two.columns) == [
        "material_id",
        "prediction_ev",
        "prediction_std_ev",
        "n_members",
        "pbe_gap_ev",
        "pbe_gap_source",
    ]
    # no PBE gap given: the base model's prediction is read, and said so
    assert (two["pbe_gap_source"] == "predicted").all()
    from cgcnn.prediction.inference import predict

    assert np.allclose(two["pbe_gap_ev"], np.maximum(predict(base, ds, device="cpu"), 0), atol=1e-5)
    scaled = ensemble_predict(members, ds, pbe_model=base, scale=2.0, device="cpu")
    assert np.allclose(scaled["prediction_std_ev"], 2 * two["prediction_std_ev"])


def test_a_given_pbe_gap_is_the_one_used(pbe_aware_members, tiny_dataset):
    members = [load_checkpoint(p) for p in pbe_aware_members]
    ds = tiny_dataset.subset_positions(np.arange(24))
    given = {ds.ids[0]: 1.234, ds.ids[1]: 4.0}
    table = ensemble_predict(members, ds, pbe=given, device="cpu").set_index("material_id")
    assert (
        table.loc[ds.ids[0], "pbe_gap_ev"] == pytest.approx(1.234) and table.loc[ds.ids[0], "pbe_gap_source"] == "given"
    )
    assert table.loc[ds.ids[2], "pbe_gap_source"] == "unknown" and np.isnan(table.loc[ds.ids[2], "pbe_gap_ev"])
    other = ensemble_predict(members, ds, pbe={ds.ids[0]: 3.0}, device="cpu").set_index("material_id")
    assert other.loc[ds.ids[0], "prediction_ev"] != pytest.approx(table.loc[ds.ids[0], "prediction_ev"])


def test_cli_predict_uses_the_pbe_gaps_given_in_a_csv(pbe_aware_members, tiny_items, tmp_path):
    from pymatgen.io.cif import CifWriter

    cifs = tmp_path / "cifs"
    cifs.mkdir()
    for mid, s in tiny_items[:3]:
        CifWriter(s).write_file(cifs / f"{mid}.cif")
    pbe_csv = tmp_path / "pbe.csv"
    # spaces around a value are read past; an id that names no input is said, not silently dropped
    pbe_csv.write_text(f"material_id,pbe_gap_ev\n{tiny_items[0][0]}, 2.5\nnot-an-input,1.0\n")
    out = tmp_path / "pred.csv"
    cmd = [
        sys.executable,
        "-m",
        "cgcnn",
        "predict",
        "--checkpoint",
        str(pbe_aware_members[0]),
        str(cifs),
        "--pbe-gaps",
        str(pbe_csv),
        "--output",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(out).set_index("material_id")
    assert list(table.columns) == ["prediction_ev", "prediction_std_ev", "n_members", "pbe_gap_ev", "pbe_gap_source"]
    assert table.loc[tiny_items[0][0], "pbe_gap_ev"] == pytest.approx(2.5)
    assert table.loc[tiny_items[0][0], "pbe_gap_source"] == "given"
    assert (table.drop(index=tiny_items[0][0])["pbe_gap_source"] == "unknown").all()
    said = [line for line in proc.stderr.splitlines() if line.startswith("warning: --pbe-gaps")]
    assert said == [
        "warning: --pbe-gaps: 1 id(s) name no input structure and were not used (first: not-an-input); "
        "ids are file names without the suffix"
    ]


def test_cli_names_a_bad_row_of_the_pbe_gaps_csv(pbe_aware_members, tiny_items, tmp_path):
    pbe_csv = tmp_path / "pbe.csv"
    pbe_csv.write_text("material_id,pbe_gap_ev\nA,1.0\nB,abc\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cgcnn",
            "predict",
            "--checkpoint",
            str(pbe_aware_members[0]),
            str(tmp_path),
            "--pbe-gaps",
            str(pbe_csv),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        f"error: --pbe-gaps {pbe_csv}, line 3 (B): PBE gap 'abc' is not a number >= 0; fix or remove the row"
    ]


def test_a_predictor_over_several_checkpoints_is_an_ensemble(pbe_aware_members, tiny_items):
    model = Predictor([load_checkpoint(p) for p in pbe_aware_members], device="cpu")
    table = model.predict(dict(tiny_items[:4]), pbe={tiny_items[0][0]: 1.0})
    assert (table["n_members"] == 2).all() and (table["prediction_std_ev"] > 0).all()
    assert model.columns == list(table.columns)


def test_calibration_scale_of_a_known_sample():
    std = np.array([1.0, 2.0, 0.5, 1.0, 4.0])
    errors = (
        3 * 0.6744897501960817 * std * np.array([1, -1, 1, -1, 1])
    )  # |e| / std the same for all: 3 × median of |N(0,1)|
    assert calibration_scale(errors, std) == pytest.approx(3.0)
    assert coverage(errors, 3 * std, 1) == 1.0 and coverage(errors, std, 1) == 0.0
    assert calibration_scale(np.ones(3), np.zeros(3)) == 1.0  # no spread: nothing to calibrate


def test_a_snapshot_s_own_pbe_gaps_are_read_as_given(pbe_aware_members, tiny_items, tmp_path):
    import gzip
    import json

    from pymatgen.io.cif import CifWriter

    snap = tmp_path / "snap.jsonl.gz"
    with gzip.open(snap, "wt") as fh:
        for k, (mid, s) in enumerate(tiny_items[:3]):
            fh.write(
                json.dumps(
                    {"material_id": mid, "band_gap": 1.0 + k if k < 2 else None, "structure_cif": str(CifWriter(s))}
                )
                + "\n"
            )
    model = Predictor([load_checkpoint(p) for p in pbe_aware_members], device="cpu")
    table = model.predict(snap, pbe={tiny_items[1][0]: 9.0}).set_index("material_id")
    assert (
        table.loc[tiny_items[0][0], "pbe_gap_ev"] == pytest.approx(1.0)
        and table.loc[tiny_items[0][0], "pbe_gap_source"] == "given"
    )
    assert table.loc[tiny_items[1][0], "pbe_gap_ev"] == pytest.approx(9.0)  # the caller's value wins
    assert table.loc[tiny_items[2][0], "pbe_gap_source"] == "unknown"  # none recorded, no PBE model here


@pytest.fixture(scope="module")
def trees(tiny_dataset):
    """Boosted trees on composition + PBE, fitted on the tiny set (PBE = 0.7 × label)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    from cgcnn.data.descriptors import composition_features
    from cgcnn.prediction.trees import tree_features

    X = tree_features(composition_features(tiny_dataset.graphs), np.array(tiny_dataset.y) * 0.7)
    return HistGradientBoostingRegressor(max_iter=20, min_samples_leaf=3).fit(X, tiny_dataset.y)


def test_trees_are_stored_without_pickle_and_load_back_exactly(trees, tmp_path):
    from cgcnn.prediction.trees import TabularModelError, load_trees, save_trees

    save_trees(trees, tmp_path / "t.skops")
    X = np.random.default_rng(0).uniform(0, 1, (5, 133))
    assert np.array_equal(load_trees(tmp_path / "t.skops").predict(X), trees.predict(X))
    import skops.io as sio
    from sklearn.linear_model import LinearRegression

    sio.dump(LinearRegression().fit(X, X[:, 0]), tmp_path / "other.skops")
    with pytest.raises(TabularModelError, match="holds a LinearRegression"):
        load_trees(tmp_path / "other.skops")
    (tmp_path / "junk.skops").write_bytes(b"not a zip")
    with pytest.raises(TabularModelError, match="not a tree model stored by cgcnn"):
        load_trees(tmp_path / "junk.skops")


def test_trees_join_the_ensemble_as_one_weighted_member(pbe_aware_members, tiny_dataset, trees):
    from cgcnn.data.descriptors import composition_features
    from cgcnn.prediction.ensemble import mix
    from cgcnn.prediction.trees import tree_features

    members = [load_checkpoint(p) for p in pbe_aware_members]
    ds = tiny_dataset.subset_positions(np.arange(24))
    pbe = dict(zip(ds.ids, np.array(ds.y) * 0.7))
    nets = ensemble_predict(members, ds, pbe=pbe, device="cpu")
    both = ensemble_predict(members, ds, pbe=pbe, trees=trees, trees_weight=0.5, device="cpu")
    t = trees.predict(tree_features(composition_features(ds.graphs), [pbe[m] for m in ds.ids]))
    assert np.allclose(both["prediction_ev"], 0.5 * nets["prediction_ev"] + 0.5 * t)
    assert (both["n_members"] == 3).all()
    mean, std = mix(nets["prediction_ev"], nets["prediction_std_ev"], t, 0.5)
    assert np.allclose(both["prediction_std_ev"], std)
    # the mixture's spread by hand for one crystal: members a, b (weight 1/4 each) and t (1/2)
    a, b = (ensemble_predict([m], ds, pbe=pbe, device="cpu")["prediction_ev"][0] for m in members)
    m0 = 0.25 * a + 0.25 * b + 0.5 * t[0]
    assert both["prediction_std_ev"][0] == pytest.approx(
        np.sqrt(0.25 * (a - m0) ** 2 + 0.25 * (b - m0) ** 2 + 0.5 * (t[0] - m0) ** 2)
    )


def test_a_shipped_ensemble_with_trees_loads_and_predicts(
    pbe_aware_members, trees, tiny_run, tiny_items, tmp_path, monkeypatch
):
    import json
    import shutil

    import cgcnn.prediction.shipped
    from cgcnn import load_model
    from cgcnn.prediction.trees import save_trees

    folder = tmp_path / "models" / "ensemble"
    folder.mkdir(parents=True)
    for k, p in enumerate(pbe_aware_members):
        shutil.copyfile(p, folder / f"member-{k}.pt")
    shutil.copyfile(tiny_run.best_checkpoint, folder / "pbe-model.pt")
    save_trees(trees, folder / "trees.skops")
    (folder / "manifest.json").write_text(
        json.dumps(
            {
                "name": "ensemble",
                "kind": "ensemble",
                "members": 3,
                "cgcnn_members": 2,
                "pbe_model": "pbe-model.pt",
                "calibration": {"scale": 1.5},
                "trees": {"file": "trees.skops", "weight": 0.5},
            }
        )
    )
    monkeypatch.setattr(cgcnn.prediction.shipped, "models_root", lambda: tmp_path / "models")
    model = load_model(device="cpu")
    assert model.trees is not None and model.scale == 1.5 and model.pbe_model is not None
    table = model.predict(dict(tiny_items[:3]))
    assert (table["n_members"] == 3).all() and (table["pbe_gap_source"] == "predicted").all()
    assert np.isfinite(table["prediction_ev"]).all() and (table["prediction_std_ev"] > 0).all()


def test_a_shipped_ensemble_whose_trees_learnt_the_correction_adds_the_pbe_gap_to_them(
    pbe_aware_members, trees, tiny_run, tiny_items, tmp_path, monkeypatch
):
    import json
    import shutil

    import cgcnn.prediction.shipped
    from cgcnn import load_model
    from cgcnn.prediction.trees import save_trees

    tables = {}
    for target in ("gap", "correction"):
        folder = tmp_path / target / "models" / "ensemble"
        folder.mkdir(parents=True)
        for k, p in enumerate(pbe_aware_members):
            shutil.copyfile(p, folder / f"member-{k}.pt")
        shutil.copyfile(tiny_run.best_checkpoint, folder / "pbe-model.pt")
        save_trees(trees, folder / "trees.skops")
        manifest = {
            "name": "ensemble",
            "kind": "ensemble",
            "members": 3,
            "cgcnn_members": 2,
            "pbe_model": "pbe-model.pt",
            "trees": {"file": "trees.skops", "weight": 0.5, "target": target},
        }
        (folder / "manifest.json").write_text(json.dumps(manifest))
        monkeypatch.setattr(cgcnn.prediction.shipped, "models_root", lambda t=target: tmp_path / t / "models")
        model = load_model(device="cpu")
        assert model.trees.target == target
        tables[target] = model.predict(dict(tiny_items[:3]), pbe={tiny_items[0][0]: 1.2})
    gap, corr = tables["gap"], tables["correction"]
    # same trees, weight 1/2: the correction member's gap is theirs plus the PBE gap
    assert np.allclose(corr["prediction_ev"], np.maximum(gap["prediction_ev"] + 0.5 * gap["pbe_gap_ev"], 0.0))
    assert corr.loc[0, "pbe_gap_ev"] == pytest.approx(1.2) and corr.loc[0, "pbe_gap_source"] == "given"
