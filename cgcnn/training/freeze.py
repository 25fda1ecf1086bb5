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

from torch import nn

POLICIES = ("none", "embedding", "convs", "head")
HEAD_TRAINED = ("fc_out", "fidelity_embedding", "condition_to_fc", "pbe_skip")


def frozen_prefixes(model: nn.Module, policy: str) -> list[str]:
    """Names of the top-level modules a policy freezes."""
    if policy not in POLICIES:
        raise ValueError(f"unknown freeze policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if policy == "none":
        return []
    if policy == "embedding":
        return ["embedding"]
    if policy == "convs":
        return ["embedding", "convs"]
    return [name for name, _ in model.named_children() if name not in HEAD_TRAINED]


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
