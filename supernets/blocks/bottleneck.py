"""ResNet bottleneck (``bottleneck``): the static block and its elastic twin."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from search_spaces import BlockSpec

from ..elastic import ElasticConvBNAct, ElasticSE
from ..quant import QuantMode
from ..static import ConvBNAct, SqueezeExcite, make_act
from .registry import ElasticBlock, importance, register_elastic_block, register_static_block, spec_modes

__all__ = ["Bottleneck", "ElasticBottleneck"]


@register_static_block("bottleneck")
class Bottleneck(nn.Module):
    """ResNet bottleneck; the projection shortcut average-pools for the stride (once-for-all style)."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(spec.in_ch, spec.mid_ch, act="relu")
        self.conv2 = ConvBNAct(spec.mid_ch, spec.mid_ch, spec.kernel, spec.stride, act="relu")
        self.se: nn.Module = SqueezeExcite(spec.mid_ch) if spec.se else nn.Identity()
        self.conv3 = ConvBNAct(spec.mid_ch, spec.out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if spec.shortcut == "proj":
            pool = nn.AvgPool2d(spec.stride, ceil_mode=True) if spec.stride > 1 else nn.Identity()
            self.shortcut = nn.Sequential(pool, ConvBNAct(spec.in_ch, spec.out_ch))
        self.act = make_act("relu")

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv3(self.se(self.conv2(self.conv1(x))))
        return self.act(y + self.shortcut(x))


@register_elastic_block("bottleneck")
class ElasticBottleneck(ElasticBlock):
    def __init__(self, big: BlockSpec, w_modes: Sequence[QuantMode], a_modes: Sequence[QuantMode]) -> None:
        super().__init__()
        q = {"w_modes": w_modes, "a_modes": a_modes}
        self.conv1 = ElasticConvBNAct(big.in_ch, big.mid_ch, act="relu", **q)
        self.conv2 = ElasticConvBNAct(big.mid_ch, big.mid_ch, big.kernel, big.stride, act="relu", **q)
        self.se = ElasticSE(big.mid_ch, **q) if big.se else None
        self.conv3 = ElasticConvBNAct(big.mid_ch, big.out_ch, **q)
        self.pool = nn.AvgPool2d(big.stride, ceil_mode=True) if big.stride > 1 else nn.Identity()
        self.proj = ElasticConvBNAct(big.in_ch, big.out_ch, **q) if big.shortcut == "proj" else None
        self.act = make_act("relu")

    def forward(self, x: Tensor, spec: BlockSpec) -> Tensor:
        w, a = spec_modes(spec)
        y = self.conv2(self.conv1(x, spec.mid_ch, 1, w, a), spec.mid_ch, spec.kernel, w, a)
        if self.se is not None:
            y = self.se(y, w, a)
        y = self.conv3(y, spec.out_ch, 1, w, a)
        short = self.proj(self.pool(x), spec.out_ch, 1, w, a) if spec.shortcut == "proj" else x
        return self.act(y + short)

    def extract(self, spec: BlockSpec) -> Bottleneck:
        w, a = spec_modes(spec)
        static = Bottleneck(spec)
        static.conv1 = self.conv1.extract(spec.in_ch, spec.mid_ch, 1, w, a)
        static.conv2 = self.conv2.extract(spec.mid_ch, spec.mid_ch, spec.kernel, w, a)
        if self.se is not None:
            static.se = self.se.extract(spec.mid_ch, w, a)
        static.conv3 = self.conv3.extract(spec.mid_ch, spec.out_ch, 1, w, a)
        if spec.shortcut == "proj":
            static.shortcut[1] = self.proj.extract(spec.in_ch, spec.out_ch, 1, w, a)
        return static

    @torch.no_grad()
    def sort_channels(self) -> None:
        perm = torch.argsort(importance(self.conv3.conv), descending=True)
        self.conv1.permute_out(perm)
        self.conv2.permute_in(perm)
        self.conv2.permute_out(perm)
        if self.se is not None:
            self.se.permute_channels(perm)
        self.conv3.permute_in(perm)
