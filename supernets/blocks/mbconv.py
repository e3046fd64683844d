"""MobileNetV2/V3 inverted residual (``mbconv``): the static block and its elastic twin."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from search_spaces import BlockSpec

from ..elastic import ElasticConvBNAct, ElasticSE
from ..quant import QuantMode
from ..static import ConvBNAct, SqueezeExcite
from .registry import ElasticBlock, importance, register_elastic_block, register_static_block, spec_modes

__all__ = ["ElasticMBConv", "MBConv"]


@register_static_block("mbconv")
class MBConv(nn.Module):
    """Inverted residual: 1×1 expand, k×k depthwise, optional SE, 1×1 project, optional identity add."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        mid = spec.mid_ch
        self.expand = ConvBNAct(spec.in_ch, mid, act=spec.act)
        self.dw = ConvBNAct(mid, mid, spec.kernel, spec.stride, groups=mid, act=spec.act)
        self.se: nn.Module = SqueezeExcite(mid) if spec.se else nn.Identity()
        self.project = ConvBNAct(mid, spec.out_ch)
        self.identity = spec.shortcut == "identity"

    def forward(self, x: Tensor) -> Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.identity else y


@register_elastic_block("mbconv")
class ElasticMBConv(ElasticBlock):
    def __init__(self, big: BlockSpec, w_modes: Sequence[QuantMode], a_modes: Sequence[QuantMode]) -> None:
        super().__init__()
        q = {"w_modes": w_modes, "a_modes": a_modes}
        self.expand = ElasticConvBNAct(big.in_ch, big.mid_ch, act=big.act, **q)
        self.dw = ElasticConvBNAct(big.mid_ch, big.mid_ch, big.kernel, big.stride, depthwise=True, act=big.act, **q)
        self.se = ElasticSE(big.mid_ch, **q) if big.se else None
        self.project = ElasticConvBNAct(big.mid_ch, big.out_ch, **q)

    def forward(self, x: Tensor, spec: BlockSpec) -> Tensor:  # (B, in, H, W) -> (B, out, H/s, W/s)
        w, a = spec_modes(spec)
        y = self.dw(self.expand(x, spec.mid_ch, 1, w, a), spec.mid_ch, spec.kernel, w, a)
        if self.se is not None:
            y = self.se(y, w, a)
        y = self.project(y, spec.out_ch, 1, w, a)
        return x + y if spec.shortcut == "identity" else y

    def extract(self, spec: BlockSpec) -> MBConv:
        w, a = spec_modes(spec)
        static = MBConv(spec)
        static.expand = self.expand.extract(spec.in_ch, spec.mid_ch, 1, w, a)
        static.dw = self.dw.extract(spec.mid_ch, spec.mid_ch, spec.kernel, w, a)
        if self.se is not None:
            static.se = self.se.extract(spec.mid_ch, w, a)
        static.project = self.project.extract(spec.mid_ch, spec.out_ch, 1, w, a)
        return static

    @torch.no_grad()
    def sort_channels(self) -> None:
        perm = torch.argsort(importance(self.project.conv), descending=True)
        self.expand.permute_out(perm)
        self.dw.permute_out(perm)
        if self.se is not None:
            self.se.permute_channels(perm)
        self.project.permute_in(perm)
