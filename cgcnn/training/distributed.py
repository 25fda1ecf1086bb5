"""Data-parallel training with ``torch.distributed`` (DistributedDataParallel).

Launch any training command with torchrun and it trains on every process::

    torchrun --nproc_per_node 4 -m cgcnn train --graphs ds1.npz --targets ds1.csv --output runs/m1 ...
    python -m torch.distributed.run --nproc_per_node 2 -m cgcnn train ...     # the same

:func:`setup` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) and joins the process group: backend ``nccl`` on CUDA
(one GPU per process, ``cuda:LOCAL_RANK``), ``gloo`` on CPU.  Without those variables
training is the usual single process.

What changes under DDP (see :func:`cgcnn.training.fit.fit`):

* ``batch_size`` stays the *global* batch: each of N processes takes ``batch_size / N``
  crystals per step, and DDP averages the gradients, so N processes step like one process
  with the whole batch;
* the training positions are split by :class:`torch.utils.data.DistributedSampler`,
  reshuffled every epoch from ``seed + epoch`` (identical on every rank, so a resumed run
  continues the same order);
* BatchNorm is synchronised across processes by default (``TrainConfig.sync_batchnorm``):
  the statistics of the global batch are used, as in one process.  On CUDA this is
  :class:`torch.nn.SyncBatchNorm`; torch's version is GPU-only, so on CPU
  :class:`GlobalBatchNorm1d` does the same with a differentiable all-reduce;
* losses and validation errors are summed over ranks before they are recorded, so every
  rank takes the same early-stopping decision;
* only rank 0 writes files (``run.json``, checkpoints, history), atomically; the others
  wait at a barrier, and on resume every rank reads the same ``last.pt``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a distributed run (a single process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context() -> DistContext:
    """The context torchrun describes in the environment (single process without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return DistContext(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def setup(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group when launched by torchrun; returns the context and this
    process's device (``cuda:LOCAL_RANK`` on CUDA)."""
    ctx = context()
    if not ctx.enabled:
        return ctx, device
    if device.type == "cuda":
        torch.cuda.set_device(ctx.local_rank)
        device = torch.device("cuda", ctx.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return ctx, device


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def reduce_sums(ctx: DistContext, *values: float) -> list[float]:
    """Sums of ``values`` over every rank (the values themselves in one process)."""
    if not ctx.enabled:
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu().tolist()


def rank_positions(positions: np.ndarray, ctx: DistContext, *, epoch: int, seed: int, shuffle: bool) -> np.ndarray:
    """This rank's share of ``positions`` for one epoch (:class:`DistributedSampler`:
    shuffled from ``seed + epoch`` when asked, padded so that every rank has as many)."""
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(
        range(len(positions)), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=shuffle, seed=seed
    )
    sampler.set_epoch(epoch)
    return np.asarray(positions)[list(sampler)]


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics are those of the batch over *all* ranks (CPU and
    any device): per-feature sums, sums of squares and counts are all-reduced with autograd
    (``torch.distributed.nn.functional.all_reduce``), so gradients flow across ranks as in
    :class:`torch.nn.SyncBatchNorm`.  Same parameters and buffers as ``BatchNorm1d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        import warnings

        from torch.distributed.nn.functional import (
            all_reduce,  # differentiable all-reduce
        )

        xd = x.double()
        local = torch.cat([xd.sum(0), (xd * xd).sum(0), xd.new_tensor([x.shape[0]])])
        with (
            warnings.catch_warnings()
        ):  # deprecated in favour of a private module; still the public, autograd-aware one
            warnings.simplefilter("ignore", FutureWarning)
            total = all_reduce(local)
        f = x.shape[1]
        n = total[-1]
        mean = total[:f] / n
        var = total[f : 2 * f] / n - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(m * mean.to(self.running_mean.dtype))
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_var.mul_(1 - m).add_(m * unbiased.to(self.running_var.dtype))
        y = (xd - mean) / torch.sqrt(var + self.eps)
        if self.affine:
            y = y * self.weight.double() + self.bias.double()
        return y.to(x.dtype)


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm1d of ``model`` by its synchronised version for ``device``
    (parameters and running statistics kept; state-dict keys unchanged)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in list(model.named_children()):
        if type(child) is nn.BatchNorm1d:
            new = GlobalBatchNorm1d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            for p_new, p_old in zip(new.parameters(), child.parameters()):
                p_new.requires_grad_(p_old.requires_grad)
            setattr(model, name, new.to(next(child.buffers()).device))
        else:
            sync_batchnorm(child, device)
    return model


def data_parallel(model: nn.Module, ctx: DistContext, device: torch.device, *, sync: bool = True) -> nn.Module:
    """Under DDP: ``model`` with synchronised batch norm (``sync``) wrapped in
    :class:`~torch.nn.parallel.DistributedDataParallel`; in one process, the model itself."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if sync:
        sync_batchnorm(model, device)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
