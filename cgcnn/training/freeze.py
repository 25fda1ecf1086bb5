"""Freeze policies for domain adaptation.

===========  ==========================================================
policy       trained
===========  ==========================================================
none         every layer
embedding    all but the atom embedding
convs        ``conv_to_fc``, hidden layers and output (embedding and all
             convolutions frozen)
head         only the output layer ``fc_out``
===========  ==========================================================

The layers of multi-fidelity / PBE-aware variants (``fidelity_embedding``,
``condition_to_fc``, ``pbe_skip``) are new to a fine-tuned model and are trained under
every policy.

Frozen batch-norm layers keep their running statistics: :func:`train_mode` puts every
fully frozen module back in eval mode after ``model.train()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the table below is read by the config types: no torch at import
    from torch import nn

HEAD_TRAINED = ("fc_out", "fidelity_embedding", "condition_to_fc", "pbe_skip")
ALL_BUT_HEAD = "*"  # every top-level module except those of HEAD_TRAINED


@dataclass(frozen=True)
class Policy:
    """What a freeze policy freezes (top-level module names, or :data:`ALL_BUT_HEAD`) and its
    name for a reader."""

    frozen: tuple[str, ...]
    label: str


# The one table of freeze policies: the config type (cgcnn.config.FreezePolicy), the CLI's
# choices, the study's models (m2_<policy>) and their labels all follow from it.  A new policy
# is one line here; profiles that study every policy (the default) pick it up.
POLICY_TABLE: dict[str, Policy] = {
    "none": Policy((), "nothing frozen"),
    "embedding": Policy(("embedding",), "embedding frozen"),
    "convs": Policy(("embedding", "convs"), "embedding + convs frozen"),
    "head": Policy((ALL_BUT_HEAD,), "all but output frozen"),
}
POLICIES = tuple(POLICY_TABLE)


def frozen_prefixes(model: nn.Module, policy: str) -> list[str]:
    """Names of the top-level modules a policy freezes."""
    if policy not in POLICY_TABLE:
        raise ValueError(f"unknown freeze policy {policy!r}; choose one of {', '.join(POLICIES)}")
    frozen = POLICY_TABLE[policy].frozen
    if ALL_BUT_HEAD in frozen:
        return [name for name, _ in model.named_children() if name not in HEAD_TRAINED]
    return list(frozen)


def apply_freeze(model: nn.Module, policy: str) -> list[str]:
    """Set ``requires_grad`` by policy; returns the frozen module names."""
    frozen = frozen_prefixes(model, policy)
    for name, p in model.named_parameters():
        p.requires_grad = not any(name == f or name.startswith(f + ".") for f in frozen)
    model._frozen_modules = frozen  # type: ignore[attr-defined]
    return frozen


def train_mode(model: nn.Module) -> nn.Module:
    """``model.train()``, except frozen modules (and their batch norms) stay in eval mode."""
    model.train()
    for name in getattr(model, "_frozen_modules", []):
        model.get_submodule(name).eval()
    return model
