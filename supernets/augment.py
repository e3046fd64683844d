"""Cheap tensor augmentation for in-memory image batches (random shifted crops, optional flips).

The batch may live on any device; the random numbers are always drawn from the caller's CPU
``torch.Generator`` (then moved), so a run samples the same crops and flips on a CPU and on a GPU,
and checkpoints carry one generator state whatever the device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["augment_batch"]


def _to(t: Tensor, device: torch.device) -> Tensor:
    """Host tensor ``t`` on ``device`` without waiting for queued GPU work (no-op on the CPU)."""
    return t.to(device, non_blocking=device.type != "cpu")


def augment_batch(x: Tensor, gen: torch.Generator, *, flip: bool | None = None, rows: slice | None = None,
                  batch: int | None = None) -> Tensor:
    """Randomly shift each image by up to 1/8 of its size (zero padding) and, for RGB, flip it.

    ``flip=None`` flips only 3-channel images: mirrored digits are different digits. ``rows`` of a batch of
    ``batch`` images: ``x`` holds only those rows of the batch (a training process's shard); the random numbers
    are drawn for the whole batch, as without ``rows``, and ``x`` gets its rows' ones, so that
    ``augment_batch(whole[rows], g, rows=rows, batch=len(whole))`` equals ``augment_batch(whole, g)[rows]``.
    """
    b, c, h, w = x.shape  # (B, C, H, W)
    drawn, mine = (b, slice(None)) if rows is None else (batch, rows)
    if drawn is None or len(range(drawn)[mine]) != b:
        raise ValueError(f"{b} images cannot be the rows {rows} of a batch of {batch}")
    dev = x.device
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad))  # (B, C, H + 2p, W + 2p)
    dy = _to(torch.randint(0, 2 * pad + 1, (drawn,), generator=gen)[mine], dev)
    dx = _to(torch.randint(0, 2 * pad + 1, (drawn,), generator=gen)[mine], dev)
    ys = (dy[:, None] + torch.arange(h, device=dev)[None, :])  # (B, H)
    xs = (dx[:, None] + torch.arange(w, device=dev)[None, :])  # (B, W)
    out = padded[torch.arange(b, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                 ys[:, None, :, None], xs[:, None, None, :]]  # (B, C, H, W)
    if flip if flip is not None else c == 3:
        mirror = _to(torch.rand(drawn, generator=gen)[mine] < 0.5, dev)  # (B,)
        # A select, not masked assignment: the same values, without a device-to-host sync on CUDA.
        out = torch.where(mirror[:, None, None, None], out.flip(-1), out)  # (B, C, H, W)
    return out
