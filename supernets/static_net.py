"""A standalone subnet: the static blocks of its genome in order (what extraction returns and export converts)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from search_spaces import BlockSpec

from .blocks import build_block

__all__ = ["StaticNet"]


class StaticNet(nn.Module):
    """A standalone subnet: its blocks in order.

    When the subnet's resolution differs from the data's ``image_size`` the input is resized first
    (elastic resolution); the decision is made here, once, so the forward traces cleanly for export.
    """

    def __init__(self, specs: Sequence[BlockSpec], blocks: Sequence[nn.Module] | None = None, *,
                 image_size: int | None = None) -> None:
        super().__init__()
        self.specs = tuple(specs)
        self.input_size = self.specs[0].in_size
        self.resize = image_size is not None and image_size != self.input_size
        self.blocks = nn.Sequential(*(blocks if blocks is not None else [build_block(s) for s in self.specs]))

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, classes)
        if self.resize:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return self.blocks(x)
