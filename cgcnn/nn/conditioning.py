"""Conditioning of the CGCNN on per-crystal descriptors: fidelity, PBE gap, composition.

The paper's network reads only the crystal graph.  The study's variants
(``ModelConfig.fidelities``, ``pbe_input``, ``composition``; the descriptors are described in
:mod:`cgcnn.data.descriptors`) also read, per crystal:

* ``fidelity_embedding`` — one learned vector per fidelity;
* the PBE gap and a "known" flag, through ``pbe_skip`` — a direct linear path from the PBE gap
  to the output, so the head learns the correction to PBE;
* Magpie composition features, standardised with buffers fitted on the training split.

Together they are joined to the crystal representation at the first hidden layer by
``condition_to_fc``.  Every new layer starts at zero, so a variant initialised from a plain
CGCNN first predicts exactly what that model predicts.  :class:`ConditioningMixin` adds these
layers to :class:`cgcnn.nn.model.CGCNN` under the names above (they are part of its
``state_dict``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cgcnn.config import ModelConfig
from cgcnn.data.batch import Batch
from cgcnn.data.descriptors import MAGPIE_DIM

NEW_LAYERS = ("fidelity_embedding.", "condition_to_fc.", "pbe_skip.", "composition_")  # state_dict prefixes


class ConditioningMixin:
    """The conditioning layers of a :class:`~cgcnn.nn.model.CGCNN` and the tensors they read."""

    def _add_conditioning(self, config: ModelConfig, h: int) -> None:
        width = 0
        if config.fidelities:
            self.fidelity_embedding = nn.Embedding(len(config.fidelities), config.fidelity_dim)
            width += config.fidelity_dim
        if config.pbe_input:
            width += 2  # PBE gap (eV, 0 when unknown) and "known" flag
            self.pbe_skip = nn.Linear(2, 1, bias=False)
            nn.init.zeros_(self.pbe_skip.weight)
        if config.composition == "magpie":
            width += MAGPIE_DIM
            self.register_buffer("composition_mean", torch.zeros(MAGPIE_DIM))
            self.register_buffer("composition_std", torch.ones(MAGPIE_DIM))
        if width:
            self.condition_to_fc = nn.Linear(width, h, bias=False)
            nn.init.zeros_(self.condition_to_fc.weight)

    def fit_input_scaling(self, composition: np.ndarray) -> None:
        """Standardise composition features with the mean / std of ``composition`` (the
        training split's rows); constant columns keep unit scale."""
        comp = torch.as_tensor(np.asarray(composition, dtype=np.float32))
        std = comp.std(dim=0, unbiased=False)
        self.composition_mean.copy_(comp.mean(dim=0))
        self.composition_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def _pbe(self, batch: Batch, n: int, device) -> torch.Tensor:
        pbe = batch.inputs.get("pbe")
        if pbe is None:
            return torch.zeros((n, 2), device=device)
        known = torch.isfinite(pbe)
        return torch.stack([torch.where(known, pbe, torch.zeros_like(pbe)), known.to(pbe.dtype)], dim=1).float()

    def _conditions(self, batch: Batch, n: int, device) -> torch.Tensor | None:
        """The per-crystal inputs joined to the crystal representation, [B, width] (None
        for a plain CGCNN).  Without a ``fidelity`` input the model's default fidelity is
        used; without ``pbe`` the PBE gap counts as unknown."""
        cfg = self.config
        if not cfg.conditioned:
            return None
        parts = []
        if cfg.fidelities:
            idx = batch.inputs.get("fidelity")
            if idx is None:
                idx = torch.full((n,), len(cfg.fidelities) - 1, dtype=torch.long, device=device)
            parts.append(self.fidelity_embedding(idx.long()))
        if cfg.pbe_input:
            parts.append(self._pbe(batch, n, device))
        if cfg.composition == "magpie":
            comp = batch.inputs.get("composition")
            if comp is None:
                raise ValueError(
                    "this model reads composition features; attach them with cgcnn.data.descriptors.attach_inputs"
                )
            parts.append((comp.float() - self.composition_mean) / self.composition_std)
        return torch.cat(parts, dim=1)
