"""cgcnn.study.profiles: the bundled profiles, validation, overrides, and the AdaptConfig of a grid point."""

import json

import pytest
from pydantic import ValidationError

from cgcnn.config import AdaptConfig, ConfigError
from cgcnn.study import profiles


@pytest.mark.parametrize("name", ["fixture", "default", "paper", "study", "ship"])
def test_bundled_profiles_use_the_study_graph_settings(name):
    profile = profiles.load_profile(name)
    assert profile.name == name
    assert (profile.graph.radius, profile.graph.max_neighbors) == (7.0, 14)
    assert profile.etl.graph == profile.graph  # one source of graph settings
    assert profile.model.nbr_fea_len == 36  # 0, 0.2, ..., 7.0 Å
    assert "none" in profile.adapt.policies and set(profile.adapt.policies) <= {"none", "embedding", "convs", "head"}
    assert len(profile.seeds) >= 2
    assert profile.adapt.train.val_fraction > 0


def test_paper_profile_has_the_original_base_architecture():
    model = profiles.load_profile("paper").model
    assert (model.atom_fea_len, model.n_conv, model.h_fea_len, model.n_h) == (64, 3, 128, 1)


def _profile_dict(**changes):
    data = json.loads(profiles.profile_path("fixture").read_text())
    data.update(changes)
    return data


def test_a_misspelt_key_is_rejected(tmp_path):
    data = _profile_dict()
    data["adapt"]["lr_gird"] = [0.1]
    path = tmp_path / "typo.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValidationError, match="lr_gird"):
        profiles.load_profile(path)


def test_a_file_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="broken.json"):
        profiles.load_profile(path)


def test_conflicting_graph_settings_in_the_etl_section_are_rejected():
    data = _profile_dict(etl={"graph": {"radius": 8.0, "max_neighbors": 12}})
    with pytest.raises(ValidationError, match="etl.graph differs"):
        profiles.StudyProfile.model_validate(data)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"seeds": [1, 1]}, "unique"),
        ({"seeds": []}, "at least 1"),
    ],
)
def test_invalid_seeds_are_rejected(change, message):
    with pytest.raises(ValidationError, match=message):
        profiles.StudyProfile.model_validate(_profile_dict(**change))


def test_adaptation_needs_a_validation_split():
    data = _profile_dict()
    data["adapt"]["train"]["val_fraction"] = 0.0
    with pytest.raises(ValidationError, match="validation split"):
        profiles.StudyProfile.model_validate(data)


def test_overrides_and_a_run_config_round_trip(tmp_path):
    profile = profiles.load_profile("fixture", seeds=[5, 6, 7], device="cpu")
    assert profile.seeds == [5, 6, 7] and profile.device == "cpu"
    run_config = tmp_path / "config.json"
    run_config.write_text(json.dumps({"run_id": "x", "profile": "fixture", "settings": profile.to_dict()}))
    assert profiles.load_profile(run_config) == profile


def test_overrides_apply_to_a_run_config_and_are_validated(tmp_path):
    profile = profiles.load_profile("fixture", workers=3)
    assert profile.workers == 3
    assert profile.with_overrides(seeds=[9]).seeds == [9]
    run_config = tmp_path / "config.json"
    run_config.write_text(json.dumps({"run_id": "x", "profile": "fixture", "settings": profile.to_dict()}))
    assert profiles.load_profile(run_config, seeds=[4], device="cpu").seeds == [4]
    with pytest.raises(ValidationError, match="unique"):
        profiles.load_profile(run_config, seeds=[4, 4])


def test_unknown_profile_name_lists_the_bundled_ones():
    with pytest.raises(FileNotFoundError, match="fixture, default, study, paper"):
        profiles.load_profile("fast")


def test_train_config_carries_the_profile_device():
    profile = profiles.load_profile("fixture", device="cpu")
    cfg = profile.train_config(profile.adapt.train, lr=0.5, seed=3)
    assert (cfg.device, cfg.lr, cfg.seed) == ("cpu", 0.5, 3)
    assert cfg.epochs == profile.adapt.train.epochs


def test_adapt_config_is_the_package_config_of_one_grid_point():
    profile = profiles.load_profile("fixture", device="cpu")
    cfg = profile.adapt_config("convs", lr=0.5, seed=3)
    assert isinstance(cfg, AdaptConfig)
    assert (cfg.freeze, cfg.normalizer) == ("convs", profile.adapt.normalizer)
    assert cfg.train == profile.train_config(profile.adapt.train, lr=0.5, seed=3)
    assert profile.control_config(lr=0.5, seed=3) == profile.train_config(profile.adapt.control, lr=0.5, seed=3)


def test_adapt_settings_take_the_package_defaults():
    adapt = profiles.AdaptSettings.model_validate({"train": {"val_fraction": 0.2}, "lr_grid": [0.01]})
    assert adapt.normalizer == AdaptConfig().normalizer
    assert adapt.policies == ["none", "embedding", "convs", "head"]


def test_control_defaults_to_the_adaptation_settings():
    adapt = profiles.load_profile("fixture").adapt
    assert adapt.control == adapt.train
    assert adapt.control_grid == adapt.lr_grid


def test_cv_settings_default_to_five_grouped_folds_and_reject_unknown_keys():
    from pydantic import ValidationError

    cv = profiles.CVSettings()
    assert (cv.folds, cv.repeats) == (5, 2)
    with pytest.raises(ValidationError, match="fold"):
        profiles.CVSettings.model_validate({"fold": 3})
    assert profiles.load_profile("study").cv.repeats >= 2
