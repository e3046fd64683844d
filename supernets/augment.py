"""Cheap tensor augmentation for in-memory image batches (random shifted crops, optional flips)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["augment_batch"]


def augment_batch(x: Tensor, gen: torch.Generator, *, flip: bool | None = None) -> Tensor:
    """Randomly shift each image by up to 1/8 of its size (zero padding) and, for RGB, flip it.

    ``flip=None`` flips only 3-channel images: mirrored digits are different digits.
    """
    b, c, h, w = x.shape  # (B, C, H, W)
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None, :])  # (B, H)
    cols = (dx[:, None] + torch.arange(w)[None, :])  # (B, W)
    out = padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]  # (B, C, H, W)
    if flip if flip is not None else c == 3:
        mirror = torch.rand(b, generator=gen) < 0.5
        out[mirror] = out[mirror].flip(-1)
    return out
