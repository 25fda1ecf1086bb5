"""Shipped models: scripts/ship_model.py writes them from a run; load_model / predict --model use them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pipeline_runner import REPO

import cgcnn
import cgcnn.prediction.shipped
from cgcnn.prediction.shipped import (
    ShippedModelError,
    manifest,
    shipped_model_dir,
    shipped_models,
)


def _ship(tiny_run, tiny_dataset, tmp_path, exclude=None, name="tiny"):
    import importlib.util

    spec = importlib.util.spec_from_file_location("ship_model", REPO / "scripts" / "ship_model.py")
    ship = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship)
    tiny_dataset.graphs.save_npz(tmp_path / "graphs.npz")
    pd.DataFrame({"material_id": tiny_dataset.ids, "target": tiny_dataset.y}).to_csv(
        tmp_path / "targets.csv", index=False
    )
    argv = [
        "--name",
        name,
        "--run",
        str(tiny_run.best_checkpoint.parent),
        "--graphs",
        str(tmp_path / "graphs.npz"),
        "--targets",
        str(tmp_path / "targets.csv"),
        "--models-dir",
        str(tmp_path / "models"),
    ]
    if exclude is not None:
        argv += ["--exclude-ids", str(exclude)]
    return ship.main(argv)


@pytest.fixture
def shipped(tiny_run, tiny_dataset, tmp_path, monkeypatch):
    assert _ship(tiny_run, tiny_dataset, tmp_path) == 0
    monkeypatch.setattr(cgcnn.prediction.shipped, "models_root", lambda: tmp_path / "models")
    return tmp_path / "models" / "tiny"


def test_ship_model_writes_a_slim_checkpoint_and_a_manifest(shipped, tiny_run):
    info = json.loads((shipped / "manifest.json").read_text())
    assert set(info["ids"]) == {"train", "val", "test"} and info["ids"]["train"] == tiny_run.splits["train"]
    assert set(info["metrics"]) == {"train", "val", "test"} and np.isfinite(info["metrics"]["test"]["mae"])
    assert info["wall_time_s"] >= 0 and len(info["history"]) == info["epochs_run"] == 3
    assert (shipped / "model.pt").stat().st_size < tiny_run.best_checkpoint.stat().st_size  # no optimiser state
    assert shipped_models() == ["tiny"] and manifest("tiny")["name"] == "tiny"


def test_load_model_by_name_predicts_like_the_checkpoint(shipped, tiny_run, tiny_items):
    by_name = cgcnn.load_model("tiny").predict(dict(tiny_items[:3]))
    by_path = cgcnn.load_model(tiny_run.best_checkpoint).predict(dict(tiny_items[:3]))
    assert np.allclose(by_name["prediction_ev"], by_path["prediction_ev"])


def test_a_model_trained_on_an_excluded_id_is_not_shipped(tiny_run, tiny_dataset, tmp_path):
    held_out = tmp_path / "held_out.csv"
    pd.DataFrame({"material_id": [tiny_run.splits["train"][0]]}).to_csv(held_out, index=False)
    with pytest.raises(SystemExit, match="excluded id"):
        _ship(tiny_run, tiny_dataset, tmp_path, exclude=held_out)
    assert not (tmp_path / "models").exists()


def test_an_unknown_name_lists_the_shipped_models(shipped):
    with pytest.raises(ShippedModelError, match=r"no shipped model named 'm9' \(shipped: tiny\)"):
        shipped_model_dir("m9")


def test_shipped_base_model_never_saw_ds3():
    if "base" not in shipped_models():
        pytest.skip("no base model shipped in this checkout")
    validation = REPO.parent / "shared" / "data" / "bucket" / "raw" / "validation_set.csv"
    if not validation.is_file():
        pytest.skip("../shared/data is absent")
    ds3 = set(pd.read_csv(validation, dtype=str)["material_id"])
    ids = manifest("base")["ids"]
    assert not ds3 & (set(ids["train"]) | set(ids["val"]) | set(ids["test"]))
    loaded = cgcnn.load_checkpoint(shipped_model_dir("base") / "model.pt")
    assert loaded.graph_config.key() == "r7-n14-d0-s0.2"


def _needs_ensemble():
    if "ensemble" not in shipped_models():
        pytest.skip("no ensemble shipped in this checkout")


def test_shipped_ensemble_never_saw_ds3_and_records_its_provenance():
    _needs_ensemble()
    info = manifest("ensemble")
    validation = REPO.parent / "shared" / "data" / "bucket" / "raw" / "validation_set.csv"
    if validation.is_file():
        ds3 = set(pd.read_csv(validation, dtype=str)["material_id"])
        assert not ds3 & set(info["ids"]["all_labels_seen"])
    assert info["kind"] == "ensemble" and info["members"] >= 2 and info["data"]["excluded_ids_checked"] > 0
    assert len(cgcnn.prediction.shipped.member_checkpoints("ensemble")) == info["cgcnn_members"]
    assert info["members"] == info["cgcnn_members"] + bool(info.get("trees"))
    for name, sha in info["files"].items():  # the files are the ones the manifest describes
        from cgcnn.fileio import sha256_file

        assert sha256_file(shipped_model_dir("ensemble") / name) == sha
    assert info["calibration"]["scale"] > 0 and info["trained_with"]["git_sha"]


def test_load_model_without_arguments_is_the_shipped_ensemble_with_a_spread(tiny_items):
    _needs_ensemble()
    model = cgcnn.load_model(device="cpu")
    assert model.source == "shipped:ensemble" and len(model.members) == manifest("ensemble")["cgcnn_members"]
    table = model.predict(dict(tiny_items[:3]), pbe={tiny_items[0][0]: 1.5})
    assert np.isfinite(table["prediction_ev"]).all() and (table["prediction_std_ev"] > 0).all()
    assert (table["n_members"] == manifest("ensemble")["members"]).all()
    assert table.set_index("material_id").loc[tiny_items[0][0], "pbe_gap_source"] == "given"
    assert (table["pbe_gap_source"].iloc[1:] == "predicted").all()
    assert list(table.columns) == model.columns and model.columns[-4:] == [
        "prediction_lo_ev",
        "prediction_hi_ev",
        "in_domain",
        "domain_note",
    ]


def test_shipped_ensemble_gives_an_interval_and_says_why_a_crystal_is_out_of_domain():
    _needs_ensemble()
    from pymatgen.core import Lattice, Structure

    info = manifest("ensemble")
    assert info["trust"]["level"] == 0.9 and {"trust.json", "domain.npz"} <= set(info["files"])
    crystals = {
        "GaAs": Structure.from_spacegroup("F-43m", Lattice.cubic(5.65), ["Ga", "As"], [[0, 0, 0], [0.25, 0.25, 0.25]]),
        "TcC": Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.0), ["Tc", "C"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
    }
    model = cgcnn.load_model(device="cpu")
    table = model.predict(crystals, pbe={"GaAs": 0.19, "TcC": 0.5}).set_index("material_id")
    assert table.loc["GaAs", "in_domain"] and table.loc["GaAs", "domain_note"] == ""  # a well-known semiconductor
    assert not table.loc["TcC", "in_domain"] and "rare element Tc" in table.loc["TcC", "domain_note"]
    assert (table["prediction_lo_ev"] >= 0).all()
    assert (
        (table["prediction_lo_ev"] <= table["prediction_ev"]) & (table["prediction_ev"] <= table["prediction_hi_ev"])
    ).all()
    narrow = cgcnn.load_model(device="cpu", interval_level=0.5).predict(crystals, pbe={"GaAs": 0.19, "TcC": 0.5})
    width = table["prediction_hi_ev"] - table["prediction_lo_ev"]
    assert (
        (narrow.set_index("material_id")["prediction_hi_ev"] - narrow.set_index("material_id")["prediction_lo_ev"])
        < width
    ).all()


def test_cli_predict_defaults_to_the_shipped_ensemble(tiny_items, tmp_path):
    _needs_ensemble()
    import subprocess
    import sys

    from pymatgen.io.cif import CifWriter

    for mid, s in tiny_items[:2]:
        CifWriter(s).write_file(tmp_path / f"{mid}.cif")
    out = tmp_path / "pred.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "cgcnn", "predict", str(tmp_path), "--output", str(out), "--device", "cpu"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    header = out.read_text().splitlines()[0]
    assert header == (
        "material_id,prediction_ev,prediction_std_ev,n_members,pbe_gap_ev,pbe_gap_source,"
        "prediction_lo_ev,prediction_hi_ev,in_domain,domain_note"
    )
    table = pd.read_csv(out)
    assert (table["prediction_lo_ev"] <= table["prediction_ev"]).all() and not table["in_domain"].any()
    assert table["domain_note"].str.contains("PBE gap predicted, none given").all()  # no --pbe-gaps given
    proc = subprocess.run(
        [sys.executable, "-m", "cgcnn", "predict", str(tmp_path), "--model", "base", "--device", "cpu"],
        capture_output=True,
        text=True,
    )
    assert (
        proc.returncode == 0 and proc.stdout.splitlines()[0] == "material_id,prediction_ev,prediction_std_ev,n_members"
    )


def test_installed_package_predicts_with_the_shipped_ensemble_in_a_fresh_virtualenv(tmp_path, tiny_items):
    """A plain, non-editable install (wheel) into a new virtualenv; the dependencies come
    from the test environment's site-packages through a .pth line (no download, and that
    environment's editable cgcnn is not visible), run from a folder outside the checkout."""
    _needs_ensemble()
    import subprocess
    import sys
    import sysconfig
    import venv

    from pymatgen.io.cif import CifWriter

    dist, env_dir, work = tmp_path / "dist", tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(REPO)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next(dist.glob("cgcnn_da-*.whl"))
    inst = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        capture_output=True,
        text=True,
    )
    assert inst.returncode == 0, inst.stderr
    for mid, s in tiny_items[:2]:
        CifWriter(s).write_file(work / f"{mid}.cif")
    code = (
        "import cgcnn, sys; from cgcnn import load_model; t = load_model(device='cpu').predict(sys.argv[1]); "
        "print(cgcnn.__file__); print(t.to_csv(index=False))"
    )
    proc = subprocess.run(
        [str(python), "-c", code, str(work)],
        capture_output=True,
        text=True,
        cwd=work,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(site) and str(REPO) not in lines[0]  # the installed copy, not the checkout
    table = pd.read_csv(pd.io.common.StringIO("\n".join(lines[1:])))
    assert len(table) == 2 and np.isfinite(table["prediction_ev"]).all() and (table["prediction_std_ev"] > 0).all()
    assert np.isfinite(table["prediction_hi_ev"]).all()  # the calibration files are in the wheel


def test_no_shipped_model_predicts_a_negative_gap():
    from pymatgen.core import Lattice, Structure

    from cgcnn.prediction.inference import predict

    metals = {
        "graphite": Structure(
            Lattice.hexagonal(2.46, 6.71),
            ["C"] * 4,
            [[0, 0, 0.25], [0, 0, 0.75], [1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]],
        ),
        "Cu": Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.61), ["Cu"], [[0, 0, 0]]),
        "Al": Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.05), ["Al"], [[0, 0, 0]]),
    }
    base = cgcnn.load_model("base", device="cpu")
    raw = predict(base.loaded, base.dataset(metals), device="cpu")
    assert (raw < 0).any()  # the head itself does go below zero for metals ...
    assert (base.predict(metals)["prediction_ev"] >= 0).all()  # ... what a user gets does not
    ensemble = cgcnn.load_model(device="cpu").predict(metals)
    assert (ensemble["prediction_ev"] >= 0).all() and (ensemble["pbe_gap_ev"] >= 0).all()
    assert (ensemble["pbe_gap_source"] == "predicted").all()


# -- predicting with the PBE gaps a user knows (issue #32, point 1) ------------------------------------------
def _gaas_and_si():
    from pymatgen.core import Lattice, Structure

    gaas = Structure.from_spacegroup("F-43m", Lattice.cubic(5.65), ["Ga", "As"], [[0, 0, 0], [0.25, 0.25, 0.25]])
    si = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]])
    return gaas, si


def test_the_readme_python_example_uses_the_pbe_gap_it_passes():
    _needs_ensemble()
    import re
    import warnings

    from cgcnn.errors import InputWarning

    block = re.search(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    namespace = {"structure": _gaas_and_si()[0]}
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)  # the example as shown draws no warning
        exec(compile(block, "README.md", "exec"), namespace)
    row = namespace["table"].iloc[0]
    assert len(namespace["table"]) == 1 and row["material_id"] == "my-id"
    assert row["pbe_gap_source"] == "given" and row["pbe_gap_ev"] == pytest.approx(1.2)
    assert "PBE gap predicted" not in row["domain_note"]


def test_pbe_gaps_named_by_an_id_no_structure_has_are_said_as_the_cli_says_them():
    _needs_ensemble()
    from cgcnn.errors import InputWarning

    gaas, si = _gaas_and_si()
    model = cgcnn.load_model(device="cpu")
    with pytest.warns(
        InputWarning, match=r"^pbe: 1 id\(s\) name no input structure and were not used \(first: my-id\)"
    ):
        table = model.predict(gaas, pbe={"my-id": 1.2})
    assert table["pbe_gap_source"].tolist() == ["predicted"]
    with pytest.warns(InputWarning, match=r"pbe: 1 id\(s\) .*\(first: mp-2534\); a single structure is named '0'"):
        model.predict([si, gaas], pbe={"mp-2534": 1.2})


def test_ids_or_aligned_pbe_gaps_reach_the_structure_they_name(recwarn):
    _needs_ensemble()
    gaas, si = _gaas_and_si()
    model = cgcnn.load_model(device="cpu")
    named = model.predict([si, gaas], ids=["si", "mp-2534"], pbe={"mp-2534": 1.2})
    aligned = model.predict([si, gaas], pbe=[None, 1.2])
    one = model.predict(gaas, pbe=1.2)
    assert named["material_id"].tolist() == ["si", "mp-2534"] and aligned["material_id"].tolist() == ["0", "1"]
    for table in (named, aligned):
        assert table["pbe_gap_source"].tolist() == ["predicted", "given"]
        assert table["pbe_gap_ev"].iloc[1] == pytest.approx(1.2)
    assert one["pbe_gap_source"].tolist() == ["given"]
    assert np.allclose(one["prediction_ev"], named["prediction_ev"].iloc[1:], atol=1e-5)
    assert not [w for w in recwarn if issubclass(w.category, cgcnn.errors.InputWarning)]


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"pbe": [1.2]}, r"pbe= gives 1 gap\(s\) for 2 structure\(s\); give one per structure"),
        ({"ids": ["a"]}, r"ids= gives 1 id\(s\) for 2 structure\(s\)"),
        ({"ids": ["a", "a"]}, r"ids= names 'a' twice"),
        ({"pbe": [1.2, -1.0]}, r"pbe= gives '1' the PBE gap -1.0 eV, outside 0-30 eV"),
        ({"pbe": {"0": 1200}}, r"pbe= gives '0' the PBE gap 1200 eV, outside 0-30 eV; give it in eV"),
    ],
)
def test_pbe_gaps_or_ids_that_do_not_fit_the_structures_are_refused_saying_why(kwargs, says):
    _needs_ensemble()
    from cgcnn.errors import DatasetError

    with pytest.raises(DatasetError, match=says):
        cgcnn.load_model(device="cpu").predict(list(_gaas_and_si()), **kwargs)
