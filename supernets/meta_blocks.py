"""Elastic blocks of the SpaceEvo block types that are new op types (static modules: ``meta_static``).

Imported at the end of :mod:`supernets.elastic_blocks`, so every supernet knows them; each passes the
shipped extraction conformance suite (:mod:`supernets.testing`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from search_spaces import BlockSpec

from .elastic import ElasticConvBNAct, ElasticSE
from .elastic_blocks import ElasticBlock, _importance, register_elastic_block, spec_modes
from .meta_static import DsConvDual, FusedMBConv
from .quant import QuantMode

__all__ = ["ElasticDsConvDual", "ElasticFusedMBConv"]


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
        perm = torch.argsort(_importance(self.pw2.conv), descending=True)
        self.pw1.permute_out(perm)
        self.dw2.permute_out(perm)
        self.pw2.permute_in(perm)


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
        perm = torch.argsort(_importance(self.project.conv), descending=True)
        self.fused.permute_out(perm)
        if self.se is not None:
            self.se.permute_channels(perm)
        self.project.permute_in(perm)
