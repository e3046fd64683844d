"""EfficientNetV2's FusedMBConv (``fused_mbconv``): k×k expand conv, optional SE, 1×1 project; static and
elastic. The structure is documented in :mod:`search_spaces.blocks`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from search_spaces import BlockSpec

from ..elastic import ElasticConvBNAct, ElasticSE
from ..quant import QuantMode
from ..static import ConvBNAct, SqueezeExcite
from .registry import ElasticBlock, importance, register_elastic_block, register_static_block, spec_modes

__all__ = ["ElasticFusedMBConv", "FusedMBConv"]


@register_static_block("fused_mbconv")
class FusedMBConv(nn.Module):
    """k×k expand conv (strided), optional SE, 1×1 project, optional identity add."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        self.fused = ConvBNAct(spec.in_ch, spec.mid_ch, spec.kernel, spec.stride, act=spec.act)
        self.se: nn.Module = SqueezeExcite(spec.mid_ch) if spec.se else nn.Identity()
        self.project = ConvBNAct(spec.mid_ch, spec.out_ch)
        self.identity = spec.shortcut == "identity"

    def forward(self, x: Tensor) -> Tensor:  # (B, in, H, W) -> (B, out, H/s, W/s)
        y = self.project(self.se(self.fused(x)))
        return x + y if self.identity else y


@register_elastic_block("fused_mbconv")
class ElasticFusedMBConv(ElasticBlock):
    def __init__(self, big: BlockSpec, w_modes: Sequence[QuantMode], a_modes: Sequence[QuantMode]) -> None:
        super().__init__()
        q = {"w_modes": w_modes, "a_modes": a_modes}
        self.fused = ElasticConvBNAct(big.in_ch, big.mid_ch, big.kernel, big.stride, act=big.act, **q)
        self.se = ElasticSE(big.mid_ch, **q) if big.se else None
        self.project = ElasticConvBNAct(big.mid_ch, big.out_ch, **q)

    def forward(self, x: Tensor, spec: BlockSpec) -> Tensor:  # (B, in, H, W) -> (B, out, H/s, W/s)
        w, a = spec_modes(spec)
        y = self.fused(x, spec.mid_ch, spec.kernel, w, a)  # (B, mid, H/s, W/s)
        if self.se is not None:
            y = self.se(y, w, a)
        y = self.project(y, spec.out_ch, 1, w, a)
        return x + y if spec.shortcut == "identity" else y

    def extract(self, spec: BlockSpec) -> FusedMBConv:
        w, a = spec_modes(spec)
        static = FusedMBConv(spec)
        static.fused = self.fused.extract(spec.in_ch, spec.mid_ch, spec.kernel, w, a)
        if self.se is not None:
            static.se = self.se.extract(spec.mid_ch, w, a)
        static.project = self.project.extract(spec.mid_ch, spec.out_ch, 1, w, a)
        return static

    @torch.no_grad()
    def sort_channels(self) -> None:
        perm = torch.argsort(importance(self.project.conv), descending=True)
        self.fused.permute_out(perm)
        if self.se is not None:
            self.se.permute_channels(perm)
        self.project.permute_in(perm)
