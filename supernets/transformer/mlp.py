"""Pre-LN MLP, static and elastic side by side, so the extracted form sits beside the one it comes from.

Hidden units can be reordered by importance (:meth:`ElasticMlp.sort_hidden`), so narrow subnets keep the
important ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..quant import QuantMode
from ..static import QuantLinear
from .layers import ElasticLayerNorm, ElasticQuantLinear, Modes

__all__ = ["Mlp", "ElasticMlp"]


class Mlp(nn.Module):
    """Pre-LN MLP with a residual: ``x + fc2(gelu(fc1(norm(x))))``."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1, self.fc2 = QuantLinear(width, hidden), QuantLinear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, d)
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


class ElasticMlp(nn.Module):
    """Pre-LN MLP with elastic width and hidden units."""

    def __init__(self, max_width: int, max_hidden: int, *, w_modes: Sequence[QuantMode],
                 a_modes: Sequence[QuantMode]) -> None:
        super().__init__()
        self.norm = ElasticLayerNorm(max_width)
        self.fc1 = ElasticQuantLinear(max_width, max_hidden, w_modes=w_modes, a_modes=a_modes)
        self.fc2 = ElasticQuantLinear(max_hidden, max_width, w_modes=w_modes, a_modes=a_modes)

    def forward(self, x: Tensor, d: int, hidden: int, fc1: Modes, fc2: Modes) -> Tensor:  # (B, T, d)
        return x + self.fc2(F.gelu(self.fc1(self.norm(x), hidden, fc1)), d, fc2)

    def extract(self, d: int, hidden: int, fc1: Modes, fc2: Modes) -> Mlp:
        static = Mlp(d, hidden)
        static.norm = self.norm.extract(d)
        static.fc1, static.fc2 = self.fc1.extract(d, hidden, fc1), self.fc2.extract(hidden, d, fc2)
        return static

    @torch.no_grad()
    def sort_hidden(self) -> None:
        """Most important hidden units first: L1 norm of their column of the down projection."""
        order = torch.argsort(self.fc2.weight[0].abs().sum(dim=0), descending=True)
        self.fc1.permute_out(order)
        self.fc2.permute_in(order)
