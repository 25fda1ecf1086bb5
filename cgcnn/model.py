"""The CGCNN network (Xie & Grossman, PRL 120, 145301, 2018) over edge lists.

Parameter names equal those of the original implementation, so its ``state_dict`` loads
unchanged: ``embedding``, ``convs.K.fc_full``, ``convs.K.bn1``, ``convs.K.bn2``,
``conv_to_fc``, ``fcs.K`` (when ``n_h > 1``) and ``fc_out``.

Multi-fidelity and PBE-aware variants (``ModelConfig.fidelities``, ``pbe_input``,
``composition``; inputs described in :mod:`cgcnn.inputs`) add, beside those:
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

from cgcnn.batch import Batch
from cgcnn.config import GraphConfig, ModelConfig
from cgcnn.features import gaussian_expand


class ConvLayer(nn.Module):
    """One CGCNN convolution.

    For atom i with neighbours j (edge features u_ij):

        z_ij = [v_i, v_j, u_ij]
        g_ij = BN1(W z_ij + b)                      (2F features, split into gate | core)
        m_i  = sum_j sigmoid(gate_ij) * softplus(core_ij)
        v_i' = softplus(v_i + BN2(m_i))

    ``W z_ij`` is computed as ``W_i v_i + W_j v_j + W_u u_ij``: the atom terms are
    projected once per atom and gathered per edge, which gives the same result as the
    dense concatenation with about a third of the arithmetic.

    Shapes:
        x: [N, F] atom features; edge_attr: [E, G]; edge_index: [2, E] (row 0 neighbour j,
        row 1 centre i).  Returns [N, F].
    """

    def __init__(self, atom_fea_len: int, nbr_fea_len: int):
        super().__init__()
        self.atom_fea_len = atom_fea_len
        self.nbr_fea_len = nbr_fea_len
        self.fc_full = nn.Linear(2 * atom_fea_len + nbr_fea_len, 2 * atom_fea_len)
        self.sigmoid = nn.Sigmoid()
        self.softplus1 = nn.Softplus()
        self.bn1 = nn.BatchNorm1d(2 * atom_fea_len)
        self.bn2 = nn.BatchNorm1d(atom_fea_len)
        self.softplus2 = nn.Softplus()

    def forward(
        self, x: torch.Tensor, edge_attr: torch.Tensor, edge_index: torch.Tensor, regular: int | None = None
    ) -> torch.Tensor:
        """``regular=M`` says every atom has exactly M edges, grouped by centre (the
        usual case): sums then run over a [N, M] view instead of a scatter."""
        if not self.training and not torch.is_grad_enabled():
            return self._infer(x, edge_attr, edge_index, regular)
        a = self.atom_fea_len
        w = self.fc_full.weight  # [2F, 2F + G]
        src, dst = edge_index[0], edge_index[1]
        # Atom projections, once per atom: centre role [N, 2F] and neighbour role [N, 2F].
        proj = x @ torch.cat([w[:, :a], w[:, a : 2 * a]], dim=0).t()
        p_centre, p_nbr = proj[:, : 2 * a], proj[:, 2 * a :]
        gated = torch.addmm(self.fc_full.bias, edge_attr, w[:, 2 * a :].t())
        n = x.shape[0]
        if regular:
            gated = (gated.view(n, regular, 2 * a) + p_centre.unsqueeze(1)).view(-1, 2 * a)
        else:
            gated = gated + p_centre.index_select(0, dst)
        gated = self.bn1(gated + p_nbr.index_select(0, src))
        gate, core = gated.chunk(2, dim=1)
        msg = self.sigmoid(gate) * self.softplus1(core)
        return self.softplus2(x + self.bn2(_sum_by_centre(msg, dst, n, regular)).to(x.dtype))

    def _infer(self, x: torch.Tensor, edge_attr: torch.Tensor, edge_index: torch.Tensor, regular: int | None) -> torch.Tensor:
        """:meth:`forward` for inference (eval mode, no autograd), same result: BN1's running
        statistics are folded into ``W`` and ``b`` and the [E, 2F] edge tensor is updated in
        place, which saves about a third of the time and of the memory of a batch."""
        a = self.atom_fea_len
        bn = self.bn1
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        w = self.fc_full.weight * scale.unsqueeze(1)
        bias = (self.fc_full.bias - bn.running_mean) * scale + bn.bias
        src, dst = edge_index[0], edge_index[1]
        proj = x @ torch.cat([w[:, :a], w[:, a : 2 * a]], dim=0).t()
        p_centre, p_nbr = proj[:, : 2 * a], proj[:, 2 * a :]
        gated = torch.addmm(bias, edge_attr, w[:, 2 * a :].t())
        n = x.shape[0]
        if regular:
            gated.view(n, regular, 2 * a).add_(p_centre.unsqueeze(1))
        else:
            gated.add_(p_centre.index_select(0, dst))
        gated.add_(p_nbr.index_select(0, src))
        gate, core = gated.chunk(2, dim=1)
        msg = nn.functional.softplus(core).mul_(gate.sigmoid_())
        return self.softplus2(x + self.bn2(_sum_by_centre(msg, dst, n, regular)).to(x.dtype))

    def extra_repr(self) -> str:
        return f"atom_fea_len={self.atom_fea_len}, nbr_fea_len={self.nbr_fea_len}"


def _sum_by_centre(msg: torch.Tensor, dst: torch.Tensor, n: int, regular: int | None) -> torch.Tensor:
    """Sum of the messages [E, F] arriving at each of ``n`` atoms -> [n, F] (a view when every
    atom has ``regular`` edges grouped by centre, else a scatter)."""
    if regular:
        return msg.view(n, regular, -1).sum(dim=1)
    return torch.zeros((n, msg.shape[1]), dtype=msg.dtype, device=msg.device).index_add_(0, dst, msg)


def mean_pool(x: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """Mean of the atom features of every crystal. Shapes: x [N, F], batch [N] -> [B, F]."""
    sums = torch.zeros((num_graphs, x.shape[1]), dtype=x.dtype, device=x.device).index_add_(0, batch, x)
    counts = torch.bincount(batch, minlength=num_graphs).clamp_min(1).to(x.dtype)
    return sums / counts.unsqueeze(1)


class CGCNN(nn.Module):
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

    # ------------------------------------------------------------------ per-crystal inputs
    def _add_conditioning(self, config: ModelConfig, h: int) -> None:
        from cgcnn.inputs import MAGPIE_DIM

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

    def load_base_weights(self, state: dict) -> list[str]:
        """Load a plain (or same-variant) CGCNN ``state_dict``; layers it lacks keep their
        zero start.  Returns the names that were not in ``state``."""
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        new_layers = ("fidelity_embedding.", "condition_to_fc.", "pbe_skip.", "composition_")
        unexpected = [k for k in state if k not in own]
        if unexpected or any(not k.startswith(new_layers) for k in missing):
            raise ValueError(f"the base weights do not fit this architecture (missing {missing[:3]}, unexpected {unexpected[:3]})")
        self.load_state_dict({**own, **state})
        return missing

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
                raise ValueError("this model reads composition features; attach them with cgcnn.inputs.attach_inputs")
            parts.append((comp.float() - self.composition_mean) / self.composition_std)
        return torch.cat(parts, dim=1)

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
