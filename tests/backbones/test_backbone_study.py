"""The backbone candidates in the study: the stored kernel ridge predicts as scikit-learn does,
a missing extra leaves its candidates out with one line, and the backbone question's paired
differences have the sign and size the predictions give."""

import numpy as np
import pandas as pd
import pytest

from cgcnn.backbones.chgnet import ChgnetRecord
from cgcnn.prediction.backbone import BackboneModel, KernelRidgeArrays, save_backbone
from cgcnn.study import methods
from cgcnn.study.backbone_question import backbone_comparisons
from cgcnn.study.backbone_recipes import KernelRidgeHead
from cgcnn.study.profiles import load_profile


def _record(rng, n_atoms=2):
    atoms = rng.normal(size=(n_atoms, 64)).astype(np.float32)
    empty = np.zeros((0, 64), np.float32)
    return ChgnetRecord(atoms, atoms, empty, empty, np.zeros((0, 2), np.int64), np.zeros(0, np.int64))


def test_stored_kernel_ridge_predicts_what_scikit_learn_predicts(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 5)), rng.normal(size=40)
    head = KernelRidgeHead((0.1,), (1.0,))
    pipe = head.fit(X, y, {"alpha": 0.1, "gamma": 1.0})
    Xt = rng.normal(size=(7, 5))
    assert np.allclose(KernelRidgeArrays.of(pipe).predict(Xt), pipe.predict(Xt))


def test_a_frozen_backbone_model_folder_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    records = [_record(rng) for _ in range(30)]
    pbe = rng.uniform(0, 3, size=30)
    model = BackboneModel(tmp_path, {"magpie": False, "train": "frozen"})
    X = model.features(records, None, pbe)
    y = rng.normal(size=30)
    head = KernelRidgeHead((0.1,), (0.5,))
    fits = [head.fit(X, y, {"alpha": 0.1, "gamma": 0.5}), head.fit(X[:20], y[:20], {"alpha": 0.1, "gamma": 0.5})]
    save_backbone(
        tmp_path / "m",
        {"backbone": "chgnet", "version": "0.3.0", "candidate": "chgnet_frozen", "train": "frozen", "magpie": False},
        krr=fits,
    )
    mean, spread = BackboneModel.load(tmp_path / "m").predict(records[:5], None, pbe[:5])
    assert np.allclose(mean, pbe[:5] + fits[0].predict(X[:5]))  # the full fit, plus PBE
    assert np.allclose(spread, 0.0)  # one bagged refit: no spread


def test_without_the_extra_the_backbone_candidates_are_left_out_with_one_line(monkeypatch):
    import cgcnn.backbones.chgnet as chgnet

    monkeypatch.setattr(chgnet, "available", lambda: "CHGNet is not installed: pip install -e '.[chgnet]'")
    profile = load_profile("fixture")
    said = []
    kept = methods.usable_candidates(profile, echo=said.append)
    assert kept and not any(c.startswith("chgnet") for c in kept)
    assert len(said) == 1 and "not installed" in said[0] and "chgnet_readout" in said[0]


def test_the_backbone_question_measures_paired_differences():
    truth = pd.Series({f"m{k}": float(k % 3) for k in range(30)})
    ids = list(truth.index)
    rows = []
    models = (
        ("ens_delta", 1.0),
        ("ens_chgnet_frozen", 0.0),
        ("ens_chgnet_readout", 0.5),
        ("m2_none", 0.2),
        ("m2_convs", 0.3),
    )
    for model, offset in models:
        rows.append(
            pd.DataFrame(
                {"model": model, "repeat": 0, "fold": 0, "material_id": ids, "prediction": truth.to_numpy() + offset}
            )
        )
    table = backbone_comparisons(pd.concat(rows), truth).set_index("question")
    alone = table.loc["backbone, alone: CHGNet − CGCNN"]
    assert (alone["a"], alone["b"]) == ("ens_chgnet_frozen", "ens_delta")  # the best of each kind
    assert alone["diff"] == pytest.approx(-1.0) and alone["hi"] < 0
    tuned = table.loc["fine-tuning on CHGNet: fine-tuned − frozen features"]
    assert tuned["diff"] == pytest.approx(0.5) and tuned["lo"] > 0
    cgcnn = table.loc["fine-tuning on CGCNN: nothing frozen − frozen features"]  # M2's own fits, same rows
    assert (cgcnn["a"], cgcnn["b"]) == ("m2_none", "m2_convs") and cgcnn["diff"] == pytest.approx(-0.1)


def test_no_backbone_candidate_no_backbone_question():
    truth = pd.Series({"a": 1.0})
    preds = pd.DataFrame({"model": ["ens_delta"], "repeat": 0, "fold": 0, "material_id": ["a"], "prediction": [1.0]})
    assert backbone_comparisons(preds, truth).empty
