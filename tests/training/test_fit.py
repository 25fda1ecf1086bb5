"""Training (cgcnn.training.fit): splits, the normaliser, reproducibility, resume, early stopping,
and what a run writes; training configs (cgcnn.config)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

import cgcnn
from cgcnn.config import ModelConfig, TrainConfig, load_config
from cgcnn.data.dataset import CrystalDataset
from cgcnn.prediction.inference import resolve_device
from cgcnn.training.checkpoint import read_checkpoint
from cgcnn.training.fit import fit, lr_factor, split_indices
from cgcnn.training.normalizer import Normalizer


def weights(path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["state_dict"]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def without_timing(history: pd.DataFrame) -> pd.DataFrame:
    return history.drop(columns=["seconds"])


# -- splits and normaliser -----------------------------------------------------------------


def test_split_is_disjoint_complete_and_seeded():
    train, val, test = split_indices(24, 0.2, 0.125, seed=0)
    assert (len(train), len(val), len(test)) == (16, 5, 3)  # round(4.8) = 5, round(3.0) = 3
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(24))
    again = split_indices(24, 0.2, 0.125, seed=0)
    other = split_indices(24, 0.2, 0.125, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    assert not np.array_equal(val, other[1])


def test_split_refuses_too_few_samples():
    with pytest.raises(ValueError, match="too few"):
        split_indices(2, 0.5, 0.4, seed=0)


def test_normaliser_by_hand():
    norm = Normalizer.fit([1.0, 2.0, 3.0, 6.0])
    assert norm.mean == 3.0 and norm.std == pytest.approx(
        math.sqrt(14 / 3)
    )  # (4 + 1 + 0 + 9) / (4 - 1), like torch.std
    assert norm.denorm(norm.norm(5.0)) == pytest.approx(5.0)
    assert Normalizer.fit([2.0, 2.0]).std == 1.0  # a constant target is not scaled
    with pytest.raises(ValueError, match="empty"):
        Normalizer.fit([])


def test_normaliser_is_fitted_on_the_training_split_only(
    tiny_graphs, tiny_targets, tiny_features, tiny_train_config, tiny_model_config, tmp_path
):
    cfg = tiny_train_config.model_copy(update={"epochs": 1})
    train, val, test = split_indices(24, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    ids = list(tiny_targets)
    # validation and test crystals get absurd labels: they must not move the normaliser
    targets = {m: (1000.0 if k in set(val) | set(test) else y) for k, (m, y) in enumerate(tiny_targets.items())}
    ds = CrystalDataset(tiny_graphs, targets, tiny_features)
    assert ds.ids == ids
    result = fit(ds, cfg, tmp_path, model_config=tiny_model_config, progress=False)
    train_labels = np.array([tiny_targets[ids[k]] for k in train], dtype=np.float32)
    assert result.normalizer.mean == pytest.approx(float(train_labels.astype(np.float64).mean()))
    assert result.normalizer.mean < 20  # far below the 1000 eV of the held-out crystals
    assert read_checkpoint(result.best_checkpoint)["normalizer"] == result.normalizer.to_dict()
    assert set(result.splits["train"]) == {ids[k] for k in train}


# -- a run -----------------------------------------------------------------------------------


def test_training_loss_falls(tiny_run):
    losses = tiny_run.history["train_loss"].to_numpy()
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0]


def test_huber_loss_is_recorded_and_pulls_less_on_a_wrong_label(
    tiny_dataset, tiny_train_config, tiny_model_config, tmp_path
):
    # one label 50 eV off: under the MSE it dominates the loss, under the Huber loss it counts linearly
    targets = dict(zip(tiny_dataset.ids, tiny_dataset.y.tolist()))
    targets[tiny_dataset.ids[0]] += 50.0
    ds = CrystalDataset(tiny_dataset.graphs, targets, tiny_dataset.features)
    runs = {}
    for loss in ("mse", "huber"):
        cfg = tiny_train_config.model_copy(update={"loss": loss, "huber_delta": 0.5})
        runs[loss] = fit(ds, cfg, tmp_path / loss, model_config=tiny_model_config, progress=False)
    assert read_checkpoint(runs["huber"].best_checkpoint)["train_config"]["loss"] == "huber"
    assert not same_weights(weights(runs["mse"].best_checkpoint), weights(runs["huber"].best_checkpoint))
    # Huber(r) <= r^2 / 2 for every residual, and the wrong label makes the gap large
    assert runs["huber"].history["train_loss"].iloc[0] < 0.5 * runs["mse"].history["train_loss"].iloc[0]


def test_an_unknown_loss_is_refused():
    with pytest.raises(ValidationError, match="loss"):
        TrainConfig(loss="l1")


def test_history_csv_has_one_row_per_epoch(tiny_run, tiny_train_config):
    history = pd.read_csv(tiny_run.last_checkpoint.parent / "history.csv")
    assert history["epoch"].tolist() == list(range(tiny_train_config.epochs))
    assert {"epoch", "lr", "train_loss", "train_mae", "val_mae", "seconds"} <= set(history.columns)
    assert (history["lr"] == tiny_train_config.lr).all()  # scheduler "none"


def test_best_checkpoint_is_the_epoch_of_least_validation_mae(tiny_run):
    history = tiny_run.history
    best = read_checkpoint(tiny_run.best_checkpoint)
    assert best["epoch"] == tiny_run.best_epoch == int(history.loc[history["val_mae"].idxmin(), "epoch"])
    assert best["best_val_mae"] == tiny_run.best_val_mae == pytest.approx(history["val_mae"].min())


def test_run_json_records_what_produced_the_run(tiny_run, tiny_train_config):
    out = tiny_run.last_checkpoint.parent
    run = json.loads((out / "run.json").read_text())
    assert run["train_config"] == tiny_train_config.to_dict()
    assert run["git_sha"] is None or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", run["git_sha"])  # None outside git
    assert run["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert run["versions"]["cgcnn-da"] in (None, cgcnn.__version__)
    assert run["n"] == {"train": 16, "val": 5, "test": 3}
    splits = json.loads((out / "splits.json").read_text())
    assert {k: len(v) for k, v in splits.items()} == run["n"]
    assert not set(splits["train"]) & set(splits["val"]) and not set(splits["val"]) & set(splits["test"])


def test_fit_refuses_an_unlabelled_dataset(tiny_graphs, tiny_features, tiny_train_config, tmp_path):
    with pytest.raises(ValueError, match="labelled"):
        fit(CrystalDataset(tiny_graphs, None, tiny_features), tiny_train_config, tmp_path, progress=False)


# -- reproducibility and resume --------------------------------------------------------------


def test_same_seed_same_weights_other_seed_other_weights(
    tiny_run, tiny_dataset, tiny_train_config, tiny_model_config, tmp_path
):
    again = fit(tiny_dataset, tiny_train_config, tmp_path / "again", model_config=tiny_model_config, progress=False)
    seed_1 = tiny_train_config.model_copy(update={"seed": 1})
    other = fit(tiny_dataset, seed_1, tmp_path / "other", model_config=tiny_model_config, progress=False)
    assert same_weights(weights(again.last_checkpoint), weights(tiny_run.last_checkpoint))
    pd.testing.assert_frame_equal(without_timing(again.history), without_timing(tiny_run.history))
    assert not same_weights(weights(other.last_checkpoint), weights(tiny_run.last_checkpoint))


def test_resume_ends_where_an_uninterrupted_run_ends(tiny_dataset, tiny_train_config, tiny_model_config, tmp_path):
    four = tiny_train_config.model_copy(update={"epochs": 4})
    two = tiny_train_config.model_copy(update={"epochs": 2})
    straight = fit(tiny_dataset, four, tmp_path / "straight", model_config=tiny_model_config, progress=False)
    fit(tiny_dataset, two, tmp_path / "resumed", model_config=tiny_model_config, progress=False)
    assert read_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 1
    resumed = fit(tiny_dataset, four, tmp_path / "resumed", model_config=tiny_model_config, resume=True, progress=False)

    assert same_weights(weights(resumed.last_checkpoint), weights(straight.last_checkpoint))
    pd.testing.assert_frame_equal(without_timing(resumed.history), without_timing(straight.history))
    a, b = read_checkpoint(resumed.last_checkpoint), read_checkpoint(straight.last_checkpoint)
    assert a["epoch"] == b["epoch"] == 3
    assert torch.equal(a["generator_state"], b["generator_state"])
    assert resumed.best_epoch == straight.best_epoch
    assert len(pd.read_csv(tmp_path / "resumed" / "history.csv")) == 4


def test_early_stopping_stops_after_patience_epochs_without_improvement(
    tiny_dataset, tiny_train_config, tiny_model_config, tmp_path
):
    cfg = tiny_train_config.model_copy(update={"epochs": 40, "patience": 2})
    result = fit(tiny_dataset, cfg, tmp_path, model_config=tiny_model_config, progress=False)
    val = result.history["val_mae"].to_numpy()
    assert len(val) < 40
    # the best epoch is exactly `patience` epochs before the end, and nothing after it beat it
    assert result.best_epoch == len(val) - 1 - cfg.patience
    assert (val[result.best_epoch + 1 :] >= val[result.best_epoch]).all()
    assert (val[: result.best_epoch] > val[result.best_epoch]).all()


# -- schedule, device, configs ---------------------------------------------------------------


def test_learning_rate_schedules():
    step = TrainConfig(scheduler="multistep", lr_milestones=[2, 4], lr_gamma=0.1, epochs=6)
    assert [lr_factor(step, e) for e in range(6)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    cosine = TrainConfig(scheduler="cosine", epochs=4)
    c = 0.5 * math.cos(math.pi / 4)
    assert [lr_factor(cosine, e) for e in range(4)] == pytest.approx([1, 0.5 + c, 0.5, 0.5 - c])
    assert lr_factor(TrainConfig(scheduler="none"), 99) == 1


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")


def test_unknown_config_keys_are_rejected(tmp_path):
    with pytest.raises(ValidationError, match="foo"):
        TrainConfig(foo=1)
    with pytest.raises(ValidationError, match="atom_fea_lenn"):
        ModelConfig(atom_fea_lenn=8)
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"epochs": 5, "learning_rate": 0.1}))  # the key is "lr"
    with pytest.raises(ValidationError, match="learning_rate"):
        load_config(TrainConfig, path)


def test_load_config_applies_overrides_and_choices(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"epochs": 5, "optimizer": "adam"}))
    cfg = load_config(TrainConfig, path, epochs=7, lr=None)  # None = not given
    assert (cfg.epochs, cfg.optimizer, cfg.lr) == (7, "adam", 0.01)
    with pytest.raises(ValidationError):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValidationError, match="val_fraction"):
        TrainConfig(val_fraction=0.6, test_fraction=0.5)
