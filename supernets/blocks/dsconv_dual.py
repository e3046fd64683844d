"""SpaceEvo's MobileNetV1-dual (``dsconv_dual``): two depthwise-separable convs with a residual; static
and elastic. The structure is documented in :mod:`search_spaces.blocks`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from search_spaces import BlockSpec

from ..elastic import ElasticConvBNAct
from ..quant import QuantMode
from ..static import ConvBNAct
from .registry import ElasticBlock, importance, register_elastic_block, register_static_block, spec_modes

__all__ = ["DsConvDual", "ElasticDsConvDual"]


def _proj(spec: BlockSpec) -> nn.Module:
    """The ``proj`` shortcut of ``bottleneck``: average-pool for the stride, then 1×1 conv + BN."""
    pool = nn.AvgPool2d(spec.stride, ceil_mode=True) if spec.stride > 1 else nn.Identity()
    return nn.Sequential(pool, ConvBNAct(spec.in_ch, spec.out_ch))


@register_static_block("dsconv_dual")
class DsConvDual(nn.Module):
    """Two depthwise-separable convs (the first strided) with a residual (SpaceEvo's MobileNetV1-dual)."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        i, o, k = spec.in_ch, spec.out_ch, spec.kernel
        self.dw1 = ConvBNAct(i, i, k, spec.stride, groups=i, act=spec.act)
        self.pw1 = ConvBNAct(i, o, act=spec.act)
        self.dw2 = ConvBNAct(o, o, k, groups=o, act=spec.act)
        self.pw2 = ConvBNAct(o, o, act=spec.act)
        self.shortcut: nn.Module | None = _proj(spec) if spec.shortcut == "proj" else (
            nn.Identity() if spec.shortcut == "identity" else None)

    def forward(self, x: Tensor) -> Tensor:  # (B, in, H, W) -> (B, out, H/s, W/s)
        y = self.pw2(self.dw2(self.pw1(self.dw1(x))))
        return y if self.shortcut is None else y + self.shortcut(x)


@register_elastic_block("dsconv_dual")
class ElasticDsConvDual(ElasticBlock):
    def __init__(self, big: BlockSpec, w_modes: Sequence[QuantMode], a_modes: Sequence[QuantMode]) -> None:
        super().__init__()
        q = {"w_modes": w_modes, "a_modes": a_modes}
        self.dw1 = ElasticConvBNAct(big.in_ch, big.in_ch, big.kernel, big.stride, depthwise=True, act=big.act, **q)
        self.pw1 = ElasticConvBNAct(big.in_ch, big.out_ch, act=big.act, **q)
        self.dw2 = ElasticConvBNAct(big.out_ch, big.out_ch, big.kernel, depthwise=True, act=big.act, **q)
        self.pw2 = ElasticConvBNAct(big.out_ch, big.out_ch, act=big.act, **q)
        self.pool = nn.AvgPool2d(big.stride, ceil_mode=True) if big.stride > 1 else nn.Identity()
        self.proj = ElasticConvBNAct(big.in_ch, big.out_ch, **q) if big.shortcut == "proj" else None

    def forward(self, x: Tensor, spec: BlockSpec) -> Tensor:  # (B, in, H, W) -> (B, out, H/s, W/s)
        w, a = spec_modes(spec)
        y = self.pw1(self.dw1(x, spec.in_ch, spec.kernel, w, a), spec.out_ch, 1, w, a)
        y = self.pw2(self.dw2(y, spec.out_ch, spec.kernel, w, a), spec.out_ch, 1, w, a)
        if spec.shortcut == "proj":
            return y + self.proj(self.pool(x), spec.out_ch, 1, w, a)
        return y + x if spec.shortcut == "identity" else y

    def extract(self, spec: BlockSpec) -> DsConvDual:
        w, a = spec_modes(spec)
        static = DsConvDual(spec)
        static.dw1 = self.dw1.extract(spec.in_ch, spec.in_ch, spec.kernel, w, a)
        static.pw1 = self.pw1.extract(spec.in_ch, spec.out_ch, 1, w, a)
        static.dw2 = self.dw2.extract(spec.out_ch, spec.out_ch, spec.kernel, w, a)
        static.pw2 = self.pw2.extract(spec.out_ch, spec.out_ch, 1, w, a)
        if spec.shortcut == "proj":
            static.shortcut[1] = self.proj.extract(spec.in_ch, spec.out_ch, 1, w, a)
        return static

    @torch.no_grad()
    def sort_channels(self) -> None:
        """The channels between ``pw1`` and ``pw2`` move together, ordered by how much ``pw2`` reads them."""
        perm = torch.argsort(importance(self.pw2.conv), descending=True)
        self.pw1.permute_out(perm)
        self.dw2.permute_out(perm)
        self.pw2.permute_in(perm)
