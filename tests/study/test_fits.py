"""cgcnn.study.fits: one fit cache — a fit is stored once, read back, and resumed after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch

from cgcnn.study.fits import FitCache, dataset_digest, fit_key
from cgcnn.training.checkpoint import read_checkpoint
from cgcnn.training.fit import fit

REPO = Path(__file__).resolve().parents[2]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["state_dict"]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_fit_runs_once_and_is_read_back(tiny_dataset, tiny_train_config, tiny_model_config, tmp_path):
    cache = FitCache(tmp_path / "cache")
    spec = {"kind": "test", "train": tiny_train_config.to_dict(), "data": dataset_digest(tiny_dataset)}
    calls = []

    def work(out):
        calls.append(out)
        return fit(tiny_dataset, tiny_train_config, out, model_config=tiny_model_config, progress=False, resume=True)

    first = cache.fit(spec, work)
    again = cache.fit(spec, work)
    assert len(calls) == 1  # the second request reads the fit back
    assert again.folder == first.folder and again.record == first.record
    assert first.checkpoint.is_file() and (first.folder / "history.csv").is_file()
    assert not (first.folder / "last.pt").exists()  # resume state is dropped once the fit is complete
    assert not (first.folder / ".lock").exists()
    assert first.epochs_run == tiny_train_config.epochs
    assert json.loads((first.folder / "spec.json").read_text()) == spec

    copy = first.copy_to(tmp_path / "run" / "models" / "m1")
    assert copy.read_bytes() == first.checkpoint.read_bytes()  # a stage that reads a fit back writes the same bytes


def test_the_key_follows_what_determines_a_fit(tiny_dataset, tiny_train_config):
    spec = {"train": tiny_train_config.to_dict(), "data": dataset_digest(tiny_dataset), "fit": ["a", "b"]}
    assert fit_key(spec) == fit_key(json.loads(json.dumps(spec)))
    assert fit_key({**spec, "fit": ["a", "c"]}) != fit_key(spec)  # other training materials
    other = tiny_train_config.model_copy(update={"lr": 0.02}).to_dict()
    assert fit_key({**spec, "train": other}) != fit_key(spec)  # other settings
    labels = tiny_dataset.subset_positions(range(len(tiny_dataset)))
    labels.y = labels.y + 1.0
    assert dataset_digest(labels) != dataset_digest(tiny_dataset)  # other labels, other data


def test_the_cache_of_a_run_folder_is_shared_by_its_output_root(tmp_path):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    assert FitCache.of_run(run).root.resolve() == (tmp_path / "runs" / ".cache").resolve()
    (run / "config.json").write_text(json.dumps({"cache": str(tmp_path / "elsewhere")}))
    assert FitCache.of_run(run).root == tmp_path / "elsewhere"


_CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from conftest import tiny_items_and_targets
    from cgcnn.config import GraphConfig, ModelConfig, TrainConfig
    from cgcnn.data.dataset import CrystalDataset
    from cgcnn.data.features import AtomFeatures
    from cgcnn.data.building import build_graphs
    from cgcnn.study.fits import FitCache, dataset_digest
    from cgcnn.training.fit import fit

    items, targets = tiny_items_and_targets()
    graphs, _ = build_graphs(items, GraphConfig(radius=4.0, max_neighbors=12), progress=False)
    ds = CrystalDataset(graphs, targets, AtomFeatures.default())
    cfg = TrainConfig(epochs={epochs}, batch_size=4, optimizer="adam", lr=0.01, scheduler="none",
                      val_fraction=0.2, test_fraction=0.0, seed=0, device="cpu")
    model = ModelConfig(atom_fea_len=8, n_conv=1, h_fea_len=16)
    spec = {{"kind": "kill-test", "train": cfg.to_dict(), "data": dataset_digest(ds)}}
    done = FitCache({root!r}).fit(spec, lambda out: fit(ds, cfg, out, model_config=model, progress=False, resume=True))
    print(done.folder)
    """
)


def _child(root: Path, epochs: int) -> subprocess.Popen:
    code = _CHILD.format(tests=str(REPO / "tests"), root=str(root), epochs=epochs)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)


def test_a_fit_killed_half_way_resumes_and_ends_with_the_uninterrupted_weights(tmp_path):
    epochs = 40
    straight = _child(tmp_path / "straight", epochs)
    killed = _child(tmp_path / "killed", epochs)
    partial = None
    deadline = time.time() + 300
    while time.time() < deadline and killed.poll() is None:  # wait for a few finished epochs, then SIGKILL
        found = list((tmp_path / "killed" / "fits").glob("*/*.partial/history.csv"))
        if found and len(found[0].read_text().splitlines()) > 5:
            partial = found[0].parent
            break
        time.sleep(0.05)
    assert partial is not None, "the child finished before it could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    epochs_before = read_checkpoint(partial / "last.pt")["epoch"] + 1
    assert 0 < epochs_before < epochs

    resumed = _child(tmp_path / "killed", epochs)
    out_resumed, _ = resumed.communicate(timeout=300)
    out_straight, _ = straight.communicate(timeout=300)
    assert resumed.returncode == straight.returncode == 0
    a, b = Path(out_resumed.strip().splitlines()[-1]), Path(out_straight.strip().splitlines()[-1])
    assert a.name == b.name  # the same key: the same fit
    assert _same(_weights(a / "best.pt"), _weights(b / "best.pt"))
    history = (a / "history.csv").read_text().splitlines()
    assert len(history) - 1 == json.loads((a / "fit.json").read_text())["epochs_run"]
    assert not partial.exists()  # renamed into place once complete
