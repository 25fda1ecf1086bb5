"""The CGCNN network (Xie & Grossman, PRL 120, 145301, 2018) over edge lists.

Parameter names equal those of the original implementation, so its ``state_dict`` loads
unchanged: ``embedding``, ``convs.K.fc_full``, ``convs.K.bn1``, ``convs.K.bn2``,
``conv_to_fc``, ``fcs.K`` (when ``n_h > 1``) and ``fc_out``.

Multi-fidelity and PBE-aware variants (``ModelConfig.fidelities``, ``pbe_input``,
``composition``; inputs described in :mod:`cgcnn.data.descriptors`) add, beside those:
``fidelity_embedding`` (one learned vector per fidelity), ``condition_to_fc`` (the
per-crystal inputs joined to the crystal representation at the first hidden layer),
``pbe_skip`` (a direct linear path from the PBE gap to the output, so the head learns the
correction to PBE) and the composition scaling buffers.  New layers start at zero, so a
variant initialised from a plain CGCNN (:meth:`CGCNN.load_base_weights`) first predicts
exactly what that model predicts.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cgcnn.config import GraphConfig, ModelConfig
from cgcnn.data.batch import Batch
from cgcnn.data.features import gaussian_expand
from cgcnn.nn.conditioning import NEW_LAYERS, ConditioningMixin
from cgcnn.nn.layers import ConvLayer, mean_pool

__all__ = ["CGCNN", "ConvLayer", "mean_pool"]


class CGCNN(ConditioningMixin, nn.Module):
    """Crystal Graph Convolutional Neural Network for a scalar target.

    Input step (not part of the ``state_dict``): atomic numbers are looked up in the
    atom-feature table, distances are expanded in Gaussians; both are buffers set from
    the feature table and graph settings, so a checkpoint rebuilds them exactly.

    Args:
        config: architecture.
        atom_table: [n_Z, orig_atom_fea_len] atom-feature table indexed by atomic number.
        graph: graph settings (Gaussian centres and width).
    """

    def __init__(self, config: ModelConfig, *, atom_table: np.ndarray, graph: GraphConfig):
        super().__init__()
        if atom_table.shape[1] != config.orig_atom_fea_len:
            raise ValueError(f"atom-feature length {atom_table.shape[1]} != model's {config.orig_atom_fea_len}")
        if graph.n_gaussians != config.nbr_fea_len:
            raise ValueError(
                f"graph settings give {graph.n_gaussians} distance features but the model expects "
                f"{config.nbr_fea_len} (check radius / step)"
            )
        self.config = config
        self.graph_config = graph
        self.register_buffer("atom_table", torch.tensor(np.array(atom_table, dtype=np.float32)), persistent=False)
        self.register_buffer("centers", torch.as_tensor(graph.centers, dtype=torch.float32), persistent=False)
        self.width = float(graph.step)

        f, h = config.atom_fea_len, config.h_fea_len
        self.embedding = nn.Linear(config.orig_atom_fea_len, f)
        self.convs = nn.ModuleList([ConvLayer(f, config.nbr_fea_len) for _ in range(config.n_conv)])
        self.conv_to_fc = nn.Linear(f, h)
        self.conv_to_fc_softplus = nn.Softplus()
        if config.n_h > 1:
            self.fcs = nn.ModuleList([nn.Linear(h, h) for _ in range(config.n_h - 1)])
            self.softpluses = nn.ModuleList([nn.Softplus() for _ in range(config.n_h - 1)])
        self.fc_out = nn.Linear(h, 1)
        self._add_conditioning(config, h)

    def load_base_weights(self, state: dict) -> list[str]:
        """Load a plain (or same-variant) CGCNN ``state_dict``; layers it lacks keep their
        zero start.  Returns the names that were not in ``state``."""
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if unexpected or any(not k.startswith(NEW_LAYERS) for k in missing):
            raise ValueError(
                f"the base weights do not fit this architecture (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        self.load_state_dict({**own, **state})
        return missing

    def conv_features(self, batch: Batch) -> torch.Tensor:
        """Pooled crystal features after the last convolution. Shape [B, atom_fea_len]."""
        x = self.embedding(self.atom_table.index_select(0, batch.atomic_numbers))
        edge_attr = gaussian_expand(batch.distances.to(self.centers.dtype), self.centers, self.width)
        regular = batch.regular
        for conv in self.convs:
            x = conv(x, edge_attr, batch.edge_index, regular)
        return mean_pool(x, batch.batch, batch.num_graphs)

    def _head(self, crys: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        # As in the original: softplus before and after conv_to_fc.
        hidden = self.conv_to_fc(self.conv_to_fc_softplus(crys))
        if cond is not None:
            hidden = hidden + self.condition_to_fc(cond.to(hidden.dtype))
        crys = self.conv_to_fc_softplus(hidden)
        if self.config.n_h > 1:
            for fc, sp in zip(self.fcs, self.softpluses):
                crys = sp(fc(crys))
        return crys

    def forward(self, batch: Batch) -> torch.Tensor:
        """Normalised prediction of every crystal. Shape [B]."""
        crys = self.conv_features(batch)
        cond = self._conditions(batch, batch.num_graphs, crys.device)
        out = self.fc_out(self._head(crys, cond))
        if self.config.pbe_input:
            out = out + self.pbe_skip(self._pbe(batch, batch.num_graphs, crys.device).to(out.dtype))
        return out.squeeze(1)

    @torch.no_grad()
    def embed(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(last-convolution crystal features [B, atom_fea_len], post-FC hidden vector [B, h_fea_len])."""
        crys = self.conv_features(batch)
        return crys, self._head(crys, self._conditions(batch, batch.num_graphs, crys.device))
