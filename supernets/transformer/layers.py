"""Elastic primitives every transformer block is built from: a linear and a LayerNorm over leading slices.

A layer runs the slice it is given (one LSQ step per bit-width and mode) and extracts the static layer with
the sliced, fake-quantized weights copied in and its activation quantizer frozen, so an extracted subnet
computes what the supernet computes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..quant import LsqActQuantizer, LsqWeightQuantizer, QuantMode
from ..static import QuantLinear

__all__ = ["ElasticQuantLinear", "ElasticLayerNorm", "Modes"]


Modes = tuple[QuantMode, QuantMode]  # (weight, activation)


class ElasticQuantLinear(nn.Module):
    """quant → linear with elastic input and output features (leading slices); ``parts`` stacked linears
    (QKV's three) share the input quantizer and keep a weight quantizer each, so each part's leading
    output rows are its own."""

    def __init__(self, max_in: int, max_out: int, *, w_modes: Sequence[QuantMode], a_modes: Sequence[QuantMode],
                 parts: int = 1) -> None:
        super().__init__()
        self.parts = parts
        self.weight = nn.Parameter(torch.empty(parts, max_out, max_in))
        self.bias = nn.Parameter(torch.zeros(parts, max_out))
        bound = max_in ** -0.5  # nn.Linear's default uniform init
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)
        self.w_quant = nn.ModuleList(LsqWeightQuantizer(out_channels=max_out, modes=w_modes) for _ in range(parts))
        self.a_quant = LsqActQuantizer(modes=a_modes, unsigned=False)

    def sliced(self, in_f: int, out_f: int, w_mode: QuantMode) -> tuple[Tensor, Tensor]:
        """(weight ``(parts·out_f, in_f)`` fake-quantized, bias ``(parts·out_f,)``)."""
        w = torch.cat([q(self.weight[j, :out_f, :in_f].contiguous(), w_mode) for j, q in enumerate(self.w_quant)])
        return w, self.bias[:, :out_f].reshape(-1)

    def forward(self, x: Tensor, out_f: int, modes: Modes) -> Tensor:  # (..., in_f) -> (..., parts·out_f)
        w, b = self.sliced(x.shape[-1], out_f, modes[0])
        return F.linear(self.a_quant(x, modes[1]), w, b)

    @torch.no_grad()
    def extract(self, in_f: int, out_f: int, modes: Modes) -> QuantLinear:
        static = QuantLinear(in_f, self.parts * out_f)
        w, b = self.sliced(in_f, out_f, modes[0])
        static.linear.weight.copy_(w)
        static.linear.bias.copy_(b)
        static.quant = self.a_quant.frozen(modes[1])
        return static

    @torch.no_grad()
    def permute_out(self, perm: Tensor) -> None:
        """Reorder every part's output rows (and their per-channel steps) by ``perm``."""
        self.weight.copy_(self.weight[:, perm])
        self.bias.copy_(self.bias[:, perm])
        for q in self.w_quant:
            q.permute_channels(perm)

    @torch.no_grad()
    def permute_in(self, perm: Tensor) -> None:
        self.weight.copy_(self.weight[:, :, perm])


class ElasticLayerNorm(nn.LayerNorm):
    """LayerNorm over the leading ``d`` features."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        d = x.shape[-1]
        return F.layer_norm(x, (d,), self.weight[:d], self.bias[:d], self.eps)

    @torch.no_grad()
    def extract(self, d: int) -> nn.LayerNorm:
        static = nn.LayerNorm(d, eps=self.eps)
        static.weight.copy_(self.weight[:d])
        static.bias.copy_(self.bias[:d])
        return static
