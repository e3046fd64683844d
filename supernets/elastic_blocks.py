"""Elastic blocks: one per block slot of a space, sized for the largest choice at that slot.

``forward(x, spec)`` runs the block described by ``spec`` (a :class:`BlockSpec` from
``space.blocks(genome)``), ``extract(spec)`` builds the matching static module, and
``sort_channels()`` reorders the hidden channels by importance so every narrower subnet keeps the
most important ones (once-for-all's channel re-organisation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from search_spaces import BlockSpec

from .elastic import ElasticConvBNAct, ElasticLinear, ElasticSE
from .quant import QuantMode
from .static import Bottleneck, ConvBNAct, Head, MBConv, make_act

__all__ = ["ElasticBlock", "build_elastic_block", "spec_modes", "register_elastic_block"]


def spec_modes(spec: BlockSpec) -> tuple[QuantMode, QuantMode]:
    """(weight mode, activation mode) of a block."""
    w = QuantMode(spec.w_bits, "channel" if spec.w_per_channel else "tensor", spec.w_symmetric)
    return w, QuantMode(spec.a_bits, "tensor", symmetric=False)


def _importance(conv: nn.Conv2d) -> Tensor:
    """L1 norm of the weights that read each input channel: larger = more important."""
    return conv.weight.detach().abs().sum(dim=(0, 2, 3))


class ElasticBlock(nn.Module):
    """Base of elastic blocks."""

    def forward(self, x: Tensor, spec: BlockSpec) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extract(self, spec: BlockSpec) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def sort_channels(self) -> None:
        """Blocks without hidden elastic channels have nothing to sort."""


class ElasticStem(ElasticBlock):
    def __init__(self, big: BlockSpec, w_modes: Sequence[QuantMode], a_modes: Sequence[QuantMode]) -> None:
        super().__init__()
        self.conv = ElasticConvBNAct(big.in_ch, big.out_ch, big.kernel, big.stride, act=big.act,
                                     w_modes=w_modes, a_modes=a_modes)

    def forward(self, x: Tensor, spec: BlockSpec) -> Tensor:
        return self.conv(x, spec.out_ch, spec.kernel, *spec_modes(spec))

    def extract(self, spec: BlockSpec) -> ConvBNAct:
        return self.conv.extract(spec.in_ch, spec.out_ch, spec.kernel, *spec_modes(spec))


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
        perm = torch.argsort(_importance(self.project.conv), descending=True)
        self.expand.permute_out(perm)
        self.dw.permute_out(perm)
        if self.se is not None:
            self.se.permute_channels(perm)
        self.project.permute_in(perm)


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
        perm = torch.argsort(_importance(self.conv3.conv), descending=True)
        self.conv1.permute_out(perm)
        self.conv2.permute_in(perm)
        self.conv2.permute_out(perm)
        if self.se is not None:
            self.se.permute_channels(perm)
        self.conv3.permute_in(perm)


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


Builder = Callable[[BlockSpec, Sequence[QuantMode], Sequence[QuantMode]], ElasticBlock]
_ELASTIC: dict[str, Builder] = {}


def register_elastic_block(op: str) -> Callable[[Builder], Builder]:
    """Register the elastic block class of an op type (duplicates raise)."""

    def wrap(builder: Builder) -> Builder:
        if op in _ELASTIC:
            raise ValueError(f"op type {op!r} already has an elastic block")
        _ELASTIC[op] = builder
        return builder

    return wrap


for _op, _cls in (("conv", ElasticStem), ("mbconv", ElasticMBConv), ("bottleneck", ElasticBottleneck),
                  ("head", ElasticHead)):
    register_elastic_block(_op)(_cls)


def build_elastic_block(big: BlockSpec, w_modes: Sequence[QuantMode], a_modes: Sequence[QuantMode]) -> ElasticBlock:
    """The elastic block for a slot whose largest configuration is ``big``."""
    if big.op not in _ELASTIC:
        raise ValueError(f"no elastic block for op type {big.op!r}; known: {sorted(_ELASTIC)}")
    return _ELASTIC[big.op](big, w_modes, a_modes)


# SpaceEvo's extra block types register themselves (after every name above exists).
from . import meta_blocks  # noqa: E402,F401  isort: skip
