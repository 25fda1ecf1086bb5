import json

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from cgcnn import study


@pytest.mark.parametrize("name", ["fixture", "default", "paper"])
def test_bundled_profiles_use_the_study_graph_settings(name):
    profile = study.load_profile(name)
    assert profile.name == name
    assert (profile.graph.radius, profile.graph.max_neighbors) == (7.0, 14)
    assert profile.etl.graph == profile.graph           # one source of graph settings
    assert profile.model.nbr_fea_len == 36              # 0, 0.2, ..., 7.0 Å
    assert set(profile.adapt.policies) == {"none", "embedding", "convs", "head"}
    assert len(profile.seeds) >= 2
    assert profile.adapt.train.val_fraction > 0


def test_paper_profile_has_the_original_base_architecture():
    model = study.load_profile("paper").model
    assert (model.atom_fea_len, model.n_conv, model.h_fea_len, model.n_h) == (64, 3, 128, 1)


def _profile_dict(**changes):
    data = json.loads(study.profile_path("fixture").read_text())
    data.update(changes)
    return data


def test_a_misspelt_key_is_rejected(tmp_path):
    data = _profile_dict()
    data["adapt"]["lr_gird"] = [0.1]
    path = tmp_path / "typo.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValidationError, match="lr_gird"):
        study.load_profile(path)


def test_conflicting_graph_settings_in_the_etl_section_are_rejected():
    data = _profile_dict(etl={"graph": {"radius": 8.0, "max_neighbors": 12}})
    with pytest.raises(ValidationError, match="etl.graph differs"):
        study.StudyProfile.model_validate(data)


@pytest.mark.parametrize("change, message", [
    ({"seeds": [1, 1]}, "unique"),
    ({"seeds": []}, "at least 1"),
])
def test_invalid_seeds_are_rejected(change, message):
    with pytest.raises(ValidationError, match=message):
        study.StudyProfile.model_validate(_profile_dict(**change))


def test_adaptation_needs_a_validation_split():
    data = _profile_dict()
    data["adapt"]["train"]["val_fraction"] = 0.0
    with pytest.raises(ValidationError, match="validation split"):
        study.StudyProfile.model_validate(data)


def test_overrides_and_a_run_config_round_trip(tmp_path):
    profile = study.load_profile("fixture", seeds=[5, 6, 7], device="cpu")
    assert profile.seeds == [5, 6, 7] and profile.device == "cpu"
    run_config = tmp_path / "config.json"
    run_config.write_text(json.dumps({"run_id": "x", "profile": "fixture", "settings": profile.to_dict()}))
    assert study.load_profile(run_config) == profile


def test_unknown_profile_name_lists_the_bundled_ones():
    with pytest.raises(FileNotFoundError, match="fixture, default, paper"):
        study.load_profile("fast")


def test_train_config_carries_the_profile_device():
    profile = study.load_profile("fixture", device="cpu")
    cfg = profile.train_config(profile.adapt.train, lr=0.5, seed=3)
    assert (cfg.device, cfg.lr, cfg.seed) == ("cpu", 0.5, 3)
    assert cfg.epochs == profile.adapt.train.epochs


def test_control_defaults_to_the_adaptation_settings():
    adapt = study.load_profile("fixture").adapt
    assert adapt.control == adapt.train
    assert adapt.control_grid == adapt.lr_grid


def test_work_bucket_copies_a_local_source_into_the_run(tmp_path):
    source = tmp_path / "shared" / "bucket"
    (source / "raw").mkdir(parents=True)
    (source / "raw" / "a.csv").write_text("material_id\nfx-1\n")
    run = tmp_path / "runs" / "r1"
    work = study.work_bucket(run, str(source))
    assert work == str((run / "bucket").resolve())
    assert (run / "bucket" / "raw" / "a.csv").read_text() == "material_id\nfx-1\n"
    assert sorted(p.name for p in source.rglob("*")) == ["a.csv", "raw"]  # nothing added to the source
    assert study.work_bucket(run, work) == work                           # already inside the run
    assert study.work_bucket(run, "s3://bucket/prefix") == "s3://bucket/prefix"


def test_write_json_is_atomic_and_turns_nan_into_null(tmp_path):
    path = study.write_json(tmp_path / "m.json", {"a": float("nan"), "b": np.float32(1.5), "c": [np.int64(2)]})
    assert json.loads(path.read_text()) == {"a": None, "b": 1.5, "c": [2]}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_summarise_gives_mean_and_sample_std_over_seeds():
    truth = pd.Series({"a": 1.0, "b": 2.0})
    preds = pd.DataFrame({
        "material_id": ["a", "b", "a", "b", "a", "b"],
        "model": ["m2", "m2", "m2", "m2", "pbe", "pbe"],
        "seed": [0, 0, 1, 1, np.nan, np.nan],
        "prediction": [1.5, 2.5, 1.0, 2.0, 0.0, 1.0],   # m2 MAE 0.5 (seed 0) and 0.0 (seed 1); pbe 1.0
    })
    per_seed, summary = study._summarise(preds, truth, ["a", "b"])
    assert len(per_seed) == 3
    assert summary.loc["m2", "mae"] == pytest.approx(0.25)
    assert summary.loc["m2", "mae_std"] == pytest.approx(np.std([0.5, 0.0], ddof=1))
    assert summary.loc["m2", "seeds"] == 2
    assert summary.loc["pbe", "mae"] == pytest.approx(1.0)
    assert np.isnan(summary.loc["pbe", "mae_std"]) and summary.loc["pbe", "seeds"] == 1
    # restricted to one material
    _, only_a = study._summarise(preds, truth, ["a"])
    assert only_a.loc["m2", "mae"] == pytest.approx(0.25) and only_a.loc["m2", "n"] == 1


def test_metrics_json_block_has_std_only_for_models_with_seeds():
    summary = pd.DataFrame(
        {"label": ["PBE", "M2"], "mae": [1.0, 0.25], "mae_std": [np.nan, 0.1], "rmse": [1.0, 0.3],
         "rmse_std": [np.nan, 0.1], "r2": [0.1, 0.9], "r2_std": [np.nan, 0.01], "max_error": [1.0, 0.5],
         "max_error_std": [np.nan, 0.1], "n": [2, 2], "seeds": [1, 3]},
        index=pd.Index(["pbe", "m2"], name="model"),
    )
    block = study._metrics_json_block(summary)
    assert block["pbe"] == {"mae": 1.0, "rmse": 1.0, "r2": 0.1, "max_error": 1.0, "n": 2, "label": "PBE", "seeds": 1}
    assert block["m2"]["mae_std"] == 0.1 and block["m2"]["seeds"] == 3


def test_display_table_writes_mean_plus_minus_std():
    summary = pd.DataFrame(
        {"label": ["M2"], "mae": [0.5], "mae_std": [0.1], "rmse": [0.6], "rmse_std": [np.nan],
         "r2": [0.75], "r2_std": [0.05], "n": [29], "seeds": [3]},
        index=["m2"],
    )
    table = study.display_table(summary)
    assert table.loc["m2", "MAE"] == "0.500 ± 0.100"
    assert table.loc["m2", "RMSE"] == "0.600"
    assert table.loc["m2", "R²"] == "0.750 ± 0.050"


def test_model_keys():
    assert study.model_key("convs") == "m2_convs"
    assert study.model_key("control") == "control"
    assert set(study.MODEL_LABELS) >= {"pbe", "pbe_linear", "hse06", "g0w0", "m1", "m2", "control"}


def test_missing_stage_outputs_name_the_notebook_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="01-etl.ipynb"):
        study.load_data(tmp_path)
    with pytest.raises(FileNotFoundError, match="01-base-model.ipynb"):
        study.base_checkpoint(tmp_path)
