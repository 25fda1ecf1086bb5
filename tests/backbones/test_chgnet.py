"""CHGNet as a backbone: the representation it gives, its cache, and the heads fine-tuned from it.

Facts checked by hand: the representation is CHGNet's own readout input averaged over atoms,
so a supercell has the representation of its cell; a record is computed once per structure;
the last interaction block replayed from the cached inputs gives the cached readout input.
"""

import numpy as np
import pytest

pytest.importorskip("chgnet")

import torch
from pymatgen.core import Lattice, Structure

from cgcnn.backbones import chgnet as backbone
from cgcnn.backbones.chgnet import FeatureStore, load_backbone
from cgcnn.backbones.heads import HeadSettings, fit_head, load_head, predict_head


def nacl(a=5.64):
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def cscl(a=4.12):
    return Structure(Lattice.cubic(a), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def silicon(a=5.43):
    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(a), ["Si"], [[0, 0, 0]])


def test_representation_is_chgnets_readout_input_averaged_over_atoms(tmp_path):
    structures = {"nacl": nacl(), "cscl": cscl(), "si": silicon()}
    records = FeatureStore(tmp_path).records(structures)
    model = load_backbone()
    with torch.no_grad():
        out = model([model.graph_converter(s) for s in structures.values()], task="e", return_crystal_feas=True)
    n = np.array([len(s) for s in structures.values()])[:, None]
    ours = np.stack([records[k].crystal for k in structures])
    assert ours.shape == (3, backbone.FEATURE_DIM)
    assert np.allclose(ours, out["crystal_fea"].numpy() / n, atol=1e-5)  # CHGNet sums over atoms


def test_a_supercell_has_the_representation_of_its_cell(tmp_path):
    cell = cscl()
    records = FeatureStore(tmp_path).records({"cell": cell, "super": cell * (2, 1, 1)})
    assert len(records["super"].atoms) == 2 * len(records["cell"].atoms)
    assert np.allclose(records["super"].crystal, records["cell"].crystal, atol=1e-4)


def test_the_last_block_replayed_from_the_cache_gives_the_readout_input(tmp_path):
    rec = FeatureStore(tmp_path).records({"nacl": nacl()})["nacl"]
    model = load_backbone()
    with torch.no_grad():
        atoms = model.atom_conv_layers[-1](
            atom_feas=torch.from_numpy(rec.pre_atoms),
            bond_feas=torch.from_numpy(rec.bond_feas),
            bond_weights=torch.from_numpy(rec.bond_weights),
            atom_graph=torch.from_numpy(rec.atom_graph),
            directed2undirected=torch.from_numpy(rec.d2u),
        )
        atoms = model.readout_norm(atoms)
    assert np.allclose(atoms.numpy(), rec.atoms, atol=1e-5)


def test_a_record_is_computed_once_per_structure(tmp_path, monkeypatch):
    store = FeatureStore(tmp_path)
    first = store.records({"a": nacl()})
    calls = []
    real = backbone._compute
    monkeypatch.setattr(backbone, "_compute", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    again = store.records({"same structure, other id": nacl(), "strained": nacl(5.80)})
    assert calls == [["strained"]]  # the same structure under another id is read back
    assert np.array_equal(again["same structure, other id"].atoms, first["a"].atoms)
    assert not np.allclose(again["strained"].crystal, first["a"].crystal)


def _lab():
    """Eight crystals of four compositions with made-up corrections (only the fit's behaviour is checked)."""
    structures = [nacl(5.5), nacl(5.7), cscl(4.0), cscl(4.2), silicon(5.3), silicon(5.5), nacl(5.9), cscl(4.4)]
    return structures, np.array([1.0, 1.2, 0.5, 0.6, 0.2, 0.1, 1.4, 0.7])


@pytest.mark.parametrize("depth", ["readout", "block"])
def test_a_head_learns_and_leaves_the_pretrained_backbone_alone(tmp_path, depth):
    structures, y = _lab()
    store = FeatureStore(tmp_path / "store")
    recs = list(store.records({str(k): s for k, s in enumerate(structures)}).values())
    before = {k: v.clone() for k, v in load_backbone().state_dict().items()}
    settings = HeadSettings(depth, 3e-3, 40, 40, 4, 0, backbone.MODEL_VERSION)
    fit = fit_head(recs, y, np.arange(8), np.arange(8), settings, tmp_path / "fit", resume=False)
    losses = [h["train_loss"] for h in fit.history]
    assert losses[-1] < 0.5 * losses[0]
    after = load_backbone().state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the shared pretrained model is untouched
    head, saved = load_head(tmp_path / "fit" / "best.pt")
    assert (head.block is None) == (depth == "readout") and saved["settings"]["depth"] == depth
    assert np.abs(predict_head(tmp_path / "fit" / "best.pt", recs) - y).mean() == pytest.approx(fit.best_val_mae)


def test_an_interrupted_head_fit_resumes_to_the_uninterrupted_weights(tmp_path):
    structures, y = _lab()
    recs = list(FeatureStore(tmp_path / "store").records({str(k): s for k, s in enumerate(structures)}).values())
    fit, val = np.arange(6), np.arange(6, 8)
    full = HeadSettings("readout", 1e-3, 6, 100, 2, 3, backbone.MODEL_VERSION)
    fit_head(recs, y, fit, val, full, tmp_path / "full", resume=False)
    fit_head(recs, y, fit, val, HeadSettings(**{**full.__dict__, "epochs": 3}), tmp_path / "cut", resume=False)
    resumed = fit_head(recs, y, fit, val, full, tmp_path / "cut", resume=True)
    assert len(resumed.history) == 6
    a = torch.load(tmp_path / "full" / "best.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "cut" / "best.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_chgnet_model_folder_predicts_through_load_model_and_the_command_line(tmp_path):
    """A model folder whose model is a CHGNet head (as the study ships one when CV selects it):
    load_model and `cgcnn predict --model` give what the stored head gives for the same crystals."""
    import json
    import shutil
    import subprocess
    import sys

    from cgcnn import load_model
    from cgcnn.prediction.backbone import BackboneModel, save_backbone
    from cgcnn.prediction.shipped import member_checkpoints
    from cgcnn.study.backbone_recipes import KernelRidgeHead

    structures = {
        "nacl": nacl(),
        "cscl": cscl(),
        "si": silicon(),
        "nacl2": nacl(5.9),
        "cscl2": cscl(4.3),
        "si2": silicon(5.6),
    }
    pbe = {k: 0.5 + 0.3 * i for i, k in enumerate(structures)}
    recs = FeatureStore(tmp_path / "store").records(structures)
    ids = list(structures)
    model = BackboneModel(tmp_path, {"magpie": False, "train": "frozen"})
    X = model.features([recs[i] for i in ids], None, np.array([pbe[i] for i in ids]))
    y = np.linspace(0.1, 1.0, len(ids))
    head = KernelRidgeHead((0.1,), (1.0,))
    fits = [head.fit(X, y, {"alpha": 0.1, "gamma": 1.0}) for _ in range(3)]
    folder = tmp_path / "model"
    manifest = {"backbone": "chgnet", "version": backbone.MODEL_VERSION, "candidate": "chgnet_frozen"}
    save_backbone(folder / "backbone", {**manifest, "train": "frozen", "magpie": False}, krr=fits)
    shutil.copyfile(member_checkpoints("base")[0], folder / "pbe-model.pt")
    (folder / "manifest.json").write_text(json.dumps({"backbone": "backbone", "pbe_model": "pbe-model.pt"}))

    table = load_model(folder).predict(structures, pbe=pbe).set_index("material_id")
    expected = np.array([pbe[i] for i in ids]) + fits[0].predict(X)
    assert np.allclose(table.loc[ids, "prediction_ev"], np.maximum(expected, 0), atol=1e-5)
    assert set(table["pbe_gap_source"]) == {"given"}

    cifs = tmp_path / "cifs"
    cifs.mkdir()
    for i, s in structures.items():
        s.to(filename=str(cifs / f"{i}.cif"))
    gaps = tmp_path / "pbe.csv"
    gaps.write_text("material_id,pbe_gap_ev\n" + "".join(f"{i},{v}\n" for i, v in pbe.items()))
    out = subprocess.run(
        [sys.executable, "-m", "cgcnn", "predict", str(cifs), "--model", str(folder), "--pbe-gaps", str(gaps)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    import io

    import pandas as pd

    cli = pd.read_csv(io.StringIO(out)).set_index("material_id")
    assert np.allclose(cli.loc[ids, "prediction_ev"], table.loc[ids, "prediction_ev"], atol=1e-5)
