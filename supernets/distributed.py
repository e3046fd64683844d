"""Data-parallel supernet training across processes: who this process is, and the three collectives it needs.

Why not ``DistributedDataParallel``: a sandwich step runs four or more *different* subnets through
``QuantSupernet.run`` (not ``forward``) and calls ``backward`` once per subnet, each touching its
own slices of the shared weights; DDP's reducer expects one forward and one backward per
iteration over ``forward`` and would need ``find_unused_parameters`` plus ``no_sync`` around all
but the last backward, with parameters that are used partially. Reducing by hand after the last
backward is simpler and exact: every rank samples the same subnets from the same seeded generator,
so every rank holds gradients for the same parameters, and one flattened all-reduce sums them.

For the result to equal a single process with the same global batch (to float tolerance, which the
tests check over a float and a QAT epoch; over many QAT epochs the different summation orders flip
roundings and the runs drift apart, as two single-process runs with different kernels would), three
more things are synchronised besides gradients:

* **BatchNorm statistics** (:func:`sync_batch_norm`, inside :func:`synced_step`): every elastic BN layer
  computes its batch mean and variance over the *global* batch, as ``SyncBatchNorm`` does (whose
  kernels exist for CUDA only); the running statistics then stay equal on every rank.
* **Loss weights** (:meth:`World.weight`): each rank's mean loss is scaled by its share of the global
  batch before ``backward``, so gradients summed over ranks are the global-batch mean gradient even
  when the batch does not divide evenly (and the BN all-reduce's backward sums correctly weighted terms).
* **LSQ gradient scales** (:func:`global_numel`): an activation step's gradient is scaled by
  ``1/sqrt(N * Qp)`` with ``N`` the activations it quantizes, i.e. of the global batch, not of the shard.

With one process nothing here runs: :data:`SINGLE` is the identity, and the code paths of a
single-process run are those of before (bit-identical results).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["World", "SINGLE", "synced_step", "sync_group", "global_numel", "sync_batch_norm"]


@dataclass(frozen=True)
class World:
    """This process's ``rank`` among ``size`` training processes (``size == 1``: no process group).

    ``sync_bn: False`` normalises each shard with its own statistics (plain DDP): two collectives less per
    BN layer and subnet, but no longer the result of one process.
    """

    rank: int = 0
    size: int = 1
    sync_bn: bool = True

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints and logs."""
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of a global batch of ``n`` (sizes differ by at most one)."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def weight(self, local: int, total: int) -> float:
        """The factor of this rank's mean loss: its share of the global batch (1 for a single process)."""
        return 1.0 if not self.distributed else local / total

    def all_reduce_grads(self, params: Iterable[nn.Parameter]) -> None:
        """Sum the (already loss-weighted) gradients of every rank, in one flattened all-reduce.

        Parameters without a gradient are skipped; they are the same on every rank (same subnets).
        """
        if not self.distributed:
            return
        import torch.distributed as dist

        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])  # (sum of numels,)
        dist.all_reduce(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        """``t`` summed over ranks (a new tensor; ``t`` itself when single)."""
        if not self.distributed:
            return t
        import torch.distributed as dist

        out = t.clone()
        dist.all_reduce(out)
        return out


SINGLE = World()
"""One process: every collective is the identity."""

_SYNC: contextvars.ContextVar[tuple[World, float] | None] = contextvars.ContextVar("qnas_step_sync", default=None)


@contextlib.contextmanager
def synced_step(world: World, share: float) -> Iterator[None]:
    """Within this block, elastic BN layers in training mode use statistics of the global batch and LSQ
    gradient scales count the global batch's activations; ``share``: this rank's part of that batch.

    Only the training step opens it: quantizer initialisation, BN recalibration and evaluation stay local.
    """
    if not world.distributed:
        yield
        return
    token = _SYNC.set((world, share))
    try:
        yield
    finally:
        _SYNC.reset(token)


def sync_group() -> World | None:
    """The world BN statistics are synchronised over now, or None (local statistics)."""
    active = _SYNC.get()
    return active[0] if active is not None and active[0].sync_bn else None


def global_numel(n: int) -> float:
    """How many elements a tensor of ``n`` on this rank stands for in the global batch (``n`` itself when local)."""
    active = _SYNC.get()
    return n if active is None else n / active[1]


def sync_batch_norm(y: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor, running_var: Tensor, *,
                    momentum: float, eps: float, world: World) -> Tensor:
    """``F.batch_norm`` in training mode over the global batch of ``world``: ``y`` is this rank's (B, C, H, W).

    The running statistics (views of the layer's buffers) are updated in place with the global mean and
    the unbiased global variance, as ``F.batch_norm`` updates them.
    """
    return _SyncBatchNorm.apply(y, weight, bias, running_mean, running_var, momentum, eps, world)


class _SyncBatchNorm(torch.autograd.Function):
    """SyncBatchNorm for any device (torch's needs CUDA kernels): one all-reduce forward, one backward.

    Forward: each rank's count, mean and sum of squared deviations are combined with Chan's parallel
    formula, from a (ranks, 2C + 1) table in which each rank fills its own row. Backward: the standard
    batch-norm input gradient with the sums of ``dy`` and ``dy * x_hat`` taken over every rank; the weight
    and bias gradients are this rank's part (the gradient all-reduce adds the others'). Sums accumulate in
    fp64, as the CPU's ``F.batch_norm`` does: a channel of nearly constant activations (zero-padded borders)
    has a variance near ``eps``, where fp32 sums visibly change the step.
    """

    @staticmethod
    def forward(ctx: Any, y: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor, running_var: Tensor,
                momentum: float, eps: float, world: World) -> Tensor:
        import torch.distributed as dist

        c, shape = y.shape[1], (1, y.shape[1], 1, 1)
        var, mean = torch.var_mean(y.double(), dim=(0, 2, 3), unbiased=False)  # (C,), (C,)
        count = torch.full((1,), y.numel() / c, dtype=torch.float64, device=y.device)
        table = torch.zeros(world.size, 2 * c + 1, dtype=torch.float64, device=y.device)
        table[world.rank] = torch.cat([count, mean, var * count])
        dist.all_reduce(table)  # (R, 2C + 1): every rank's row
        n, means, m2 = table[:, :1], table[:, 1:c + 1], table[:, c + 1:]  # (R, 1), (R, C), (R, C)
        total = n.sum()
        mean = (n * means).sum(0) / total  # (C,)
        var = (m2.sum(0) + (n * (means - mean) ** 2).sum(0)) / total  # (C,)
        running_mean.mul_(1 - momentum).add_(mean.float(), alpha=momentum)
        running_var.mul_(1 - momentum).add_((var * (total / (total - 1))).float(), alpha=momentum)
        invstd = torch.rsqrt(var + eps).float()  # (C,)
        x_hat = (y.float() - mean.float().view(shape)) * invstd.view(shape)  # (B, C, H, W)
        ctx.save_for_backward(x_hat, weight, invstd)
        ctx.world, ctx.total, ctx.dtype = world, total, y.dtype
        return (x_hat * weight.view(shape) + bias.view(shape)).to(y.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        import torch.distributed as dist

        x_hat, weight, invstd = ctx.saved_tensors
        c, shape = x_hat.shape[1], (1, x_hat.shape[1], 1, 1)
        dy = grad.float()  # (B, C, H, W)
        sum_dy = dy.double().sum((0, 2, 3))  # (C,)
        sum_dy_xhat = (dy.double() * x_hat.double()).sum((0, 2, 3))  # (C,)
        sums = torch.cat([sum_dy, sum_dy_xhat])
        dist.all_reduce(sums)  # over every rank's part of the batch
        mean_dy, mean_dy_xhat = (sums[:c] / ctx.total).float(), (sums[c:] / ctx.total).float()
        dx = (dy - mean_dy.view(shape) - x_hat * mean_dy_xhat.view(shape)) * (invstd * weight).view(shape)
        return (dx.to(ctx.dtype), sum_dy_xhat.to(weight.dtype), sum_dy.to(weight.dtype),
                None, None, None, None, None)
