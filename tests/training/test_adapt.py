"""Domain adaptation (cgcnn.training.adapt, cgcnn.training.freeze): which weights each freeze policy trains,
frozen batch norms, the normaliser policies, and the from-scratch control."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from cgcnn.config import AdaptConfig, GraphConfig
from cgcnn.data.building import build_graphs
from cgcnn.data.dataset import CrystalDataset
from cgcnn.data.features import AtomFeatures
from cgcnn.training.adapt import adapt, apply_freeze, train_control
from cgcnn.training.checkpoint import build_model, load_checkpoint, read_checkpoint
from cgcnn.training.fit import split_indices
from cgcnn.training.freeze import frozen_prefixes, train_mode

KCL_A = 6.29  # rock salt KCl, Å

FROZEN = {
    "none": (),
    "embedding": ("embedding.",),
    "convs": ("embedding.", "convs."),
    "head": ("embedding.", "convs.", "conv_to_fc."),
}


def kcl_structure(a: float) -> Structure:
    fcc = Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])
    return Structure(fcc, ["K", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture(scope="module")
def base(tiny_run):
    return load_checkpoint(tiny_run.last_checkpoint)


@pytest.fixture(scope="module")
def experimental(tiny_graphs, tiny_targets, tiny_features) -> CrystalDataset:
    """The tiny crystals with "experimental" labels: a different scale and offset."""
    return CrystalDataset(tiny_graphs, {m: 0.5 * y + 1.0 for m, y in tiny_targets.items()}, tiny_features)


@pytest.fixture(scope="module")
def adapt_train(tiny_train_config):
    return tiny_train_config.model_copy(update={"epochs": 1, "seed": 3})


@pytest.fixture(scope="module")
def adapted(base, experimental, adapt_train, tmp_path_factory):
    """policy -> FitResult of one epoch of adaptation (normaliser refitted)."""
    runs = {}
    for policy in FROZEN:
        out = tmp_path_factory.mktemp(f"adapt-{policy}")
        runs[policy] = adapt(
            base, experimental, AdaptConfig(freeze=policy, normalizer="refit", train=adapt_train), out, progress=False
        )
    return runs


# -- freeze policies -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_weights(tiny_run) -> dict[str, torch.Tensor]:
    """The base weights as written on disk (independent of any object adapt() was given)."""
    return read_checkpoint(tiny_run.last_checkpoint)["state_dict"]


@pytest.mark.parametrize("policy", list(FROZEN))
def test_freeze_policy_trains_exactly_the_unfrozen_weights(policy, base, base_weights, adapted):
    before = base_weights
    assert all(torch.equal(before[k], v) for k, v in base.model.state_dict().items())  # adapt left the base alone
    after = read_checkpoint(adapted[policy].last_checkpoint)["state_dict"]
    assert before.keys() == after.keys()
    frozen = [k for k in before if k.startswith(FROZEN[policy])]
    trainable = [name for name, _ in base.model.named_parameters() if not name.startswith(FROZEN[policy])]
    for k in frozen:  # weights and batch-norm statistics alike
        assert torch.equal(before[k], after[k]), f"{k} changed under freeze={policy}"
    for k in trainable:
        if k.endswith("fc_full.bias"):
            continue  # bn1 subtracts the batch mean right after it: its gradient is zero up to rounding
        assert not torch.equal(before[k], after[k]), f"{k} did not change under freeze={policy}"
    assert {k for k in after if not k.startswith(FROZEN[policy])} >= {"fc_out.weight", "fc_out.bias"}


@pytest.mark.parametrize("policy", ["none", "embedding"])
def test_trained_batch_norms_update_their_statistics(policy, base_weights, adapted):
    before = base_weights
    after = read_checkpoint(adapted[policy].last_checkpoint)["state_dict"]
    # 16 training crystals in batches of 6: three steps, three batch-norm updates
    for k in range(2):
        key = f"convs.{k}.bn1.num_batches_tracked"
        assert int(after[key]) == int(before[key]) + 3
        assert not torch.equal(before[f"convs.{k}.bn1.running_mean"], after[f"convs.{k}.bn1.running_mean"])


def test_frozen_batch_norms_keep_their_running_statistics(base_weights, adapted):
    before = base_weights
    after = read_checkpoint(adapted["convs"].last_checkpoint)["state_dict"]
    for k in range(2):
        for bn in ("bn1", "bn2"):
            for buf in ("running_mean", "running_var", "num_batches_tracked"):
                assert torch.equal(before[f"convs.{k}.{bn}.{buf}"], after[f"convs.{k}.{bn}.{buf}"])


def test_apply_freeze_sets_requires_grad_and_train_mode_keeps_frozen_modules_in_eval(base):
    model = build_model(base.model_config, base.features, base.graph_config)
    assert apply_freeze(model, "convs") == ["embedding", "convs"]
    grads = {name: p.requires_grad for name, p in model.named_parameters()}
    assert not grads["embedding.weight"] and not grads["convs.1.bn2.weight"]
    assert grads["conv_to_fc.weight"] and grads["fc_out.bias"]
    train_mode(model)
    assert not model.convs[0].bn1.training and not model.embedding.training
    assert model.conv_to_fc.training and model.fc_out.training
    assert frozen_prefixes(model, "head") == ["embedding", "convs", "conv_to_fc", "conv_to_fc_softplus"]
    with pytest.raises(ValueError, match="unknown freeze policy 'all'"):
        apply_freeze(model, "all")


# -- normaliser ------------------------------------------------------------------------------


def test_refit_normaliser_is_fitted_on_the_adaptation_training_split(adapted, experimental, adapt_train):
    train, _, _ = split_indices(
        len(experimental), adapt_train.val_fraction, adapt_train.test_fraction, adapt_train.seed
    )
    expected = float(experimental.y[train].astype(np.float64).mean())
    for result in adapted.values():
        assert result.normalizer.mean == pytest.approx(expected)


def test_keep_normaliser_keeps_the_base_scale(base, experimental, adapt_train, tmp_path):
    cfg = AdaptConfig(freeze="head", normalizer="keep", train=adapt_train)
    result = adapt(base, experimental, cfg, tmp_path, progress=False)
    assert result.normalizer == base.normalizer
    assert load_checkpoint(result.best_checkpoint).normalizer == base.normalizer


def test_adapted_checkpoint_keeps_the_base_features_and_graph_settings(base, adapted):
    loaded = load_checkpoint(adapted["none"].best_checkpoint)
    assert loaded.features == base.features and loaded.graph_config == base.graph_config
    assert loaded.model_config == base.model_config


# -- control ---------------------------------------------------------------------------------


def test_control_starts_from_random_weights_on_the_same_split(base, experimental, adapt_train, adapted, tmp_path):
    # A learning rate of 1e-12 leaves the weights where they started.
    still = adapt_train.model_copy(update={"optimizer": "sgd", "momentum": 0.0, "lr": 1e-12})
    control = train_control(experimental, still, tmp_path, model_config=base.model_config, progress=False)
    assert control.splits == adapted["none"].splits
    torch.manual_seed(still.seed)
    fresh = build_model(base.model_config, base.features, base.graph_config)
    trained = read_checkpoint(control.last_checkpoint)["state_dict"]
    base_weights = base.model.state_dict()
    for name, p in fresh.named_parameters():
        torch.testing.assert_close(trained[name], p.detach(), rtol=0, atol=1e-8)
    assert not torch.allclose(trained["convs.0.fc_full.weight"], base_weights["convs.0.fc_full.weight"], atol=1e-3)
    assert read_checkpoint(control.last_checkpoint)["meta"]["role"] == "control"


# -- refusals --------------------------------------------------------------------------------


def test_adapting_to_graphs_with_other_settings_is_refused(
    base, tiny_items, tiny_targets, tiny_features, adapt_train, tmp_path
):
    graphs, _ = build_graphs(tiny_items[:8], GraphConfig(radius=4.2, max_neighbors=12), progress=False)
    ds = CrystalDataset(graphs, {m: tiny_targets[m] for m in graphs.ids}, tiny_features)
    with pytest.raises(ValueError, match="r4.2-n12.*r4-n12"):
        adapt(base, ds, AdaptConfig(train=adapt_train), tmp_path, progress=False)


def test_element_missing_from_the_base_feature_table_is_refused(
    base, tiny_items, tiny_targets, tiny_features, adapt_train, tmp_path
):
    kcl = [(f"KCl-{k}", kcl_structure(KCL_A * s)) for k, s in enumerate((0.97, 0.99, 1.01, 1.03))]
    graphs, _ = build_graphs(kcl + tiny_items, base.graph_config, progress=False)
    # the dataset's own table knows potassium; the base model's does not
    with_k = AtomFeatures.from_dict({**tiny_features.to_dict(), "19": [0.5] * tiny_features.length})
    ds = CrystalDataset(graphs, {**tiny_targets, **{m: 4.0 for m, _ in kcl}}, with_k)
    assert len(ds) == 28 and not base.features.supports(19)
    with pytest.raises(ValueError, match=r"K \(Z=19\)"):
        adapt(base, ds, AdaptConfig(train=adapt_train), tmp_path, progress=False)


def test_freeze_policies_are_one_table_the_config_cli_profiles_and_labels_follow():
    from typing import get_args

    from cgcnn.cli import build_parser
    from cgcnn.config import FreezePolicy
    from cgcnn.study.display import label
    from cgcnn.study.profiles import load_profile
    from cgcnn.training.freeze import POLICIES, POLICY_TABLE

    assert get_args(FreezePolicy) == POLICIES == tuple(POLICY_TABLE)
    adapt = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "adapt")[1]
    assert next(a.choices for a in adapt._actions if a.dest == "freeze") == POLICIES
    for name, policy in POLICY_TABLE.items():
        assert label(f"m2_{name}") == f"M2, {policy.label}"
    # a profile that studies every policy does not list them: a new policy in the table needs no profile edit
    assert load_profile("fixture").adapt.policies == list(POLICIES)
