"""Classifier head (``head``): optional 1×1 conv, global average pool, linear; static and elastic."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_spaces import BlockSpec

from ..elastic import ElasticConvBNAct, ElasticLinear
from ..quant import QuantMode
from ..static import ConvBNAct, QuantLinear
from .registry import ElasticBlock, register_elastic_block, register_static_block, spec_modes

__all__ = ["ElasticHead", "Head"]


@register_static_block("head")
class Head(nn.Module):
    """Optional 1×1 conv + BN + act, global average pool, linear classifier."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        self.conv: nn.Module = ConvBNAct(spec.in_ch, spec.mid_ch, act=spec.act) if spec.mid_ch else nn.Identity()
        self.classifier = QuantLinear(spec.mid_ch or spec.in_ch, spec.out_ch)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, classes)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.conv(x), 1), 1))


@register_elastic_block("head")
class ElasticHead(ElasticBlock):
    def __init__(self, big: BlockSpec, w_modes: Sequence[QuantMode], a_modes: Sequence[QuantMode]) -> None:
        super().__init__()
        q = {"w_modes": w_modes, "a_modes": a_modes}
        self.conv = ElasticConvBNAct(big.in_ch, big.mid_ch, act=big.act, **q) if big.mid_ch else None
        self.classifier = ElasticLinear(big.mid_ch or big.in_ch, big.out_ch, **q)

    def forward(self, x: Tensor, spec: BlockSpec) -> Tensor:  # (B, C, H, W) -> (B, classes)
        w, a = spec_modes(spec)
        if self.conv is not None:
            x = self.conv(x, spec.mid_ch, 1, w, a)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)  # (B, C)
        return self.classifier(x, w, a)

    def extract(self, spec: BlockSpec) -> Head:
        w, a = spec_modes(spec)
        static = Head(spec)
        if self.conv is not None:
            static.conv = self.conv.extract(spec.in_ch, spec.mid_ch, 1, w, a)
        static.classifier = self.classifier.extract(spec.mid_ch or spec.in_ch, w, a)
        return static
