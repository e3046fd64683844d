"""Static modules of the SpaceEvo block types that are new op types (their elastic twins: ``meta_blocks``).

``dsconv_dual`` (MobileNetV1-dual) and ``fused_mbconv`` (EfficientNetV2's FusedMBConv); the structure of
each is documented in :mod:`search_spaces.blocks`. Imported at the end of :mod:`supernets.static`, so
every path that builds blocks (latency profiling, INT8 export, extraction) knows them.
"""

from __future__ import annotations

from torch import Tensor, nn

from search_spaces import BlockSpec

from .static import ConvBNAct, SqueezeExcite, register_static_block

__all__ = ["DsConvDual", "FusedMBConv"]


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
