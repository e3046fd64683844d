"""Blocks that are a chain of conv layers, declared once and built, run, extracted and sorted from the declaration.

``mbconv``, ``fused_mbconv``, ``bottleneck`` and ``dsconv_dual`` are each a main path of conv + BN + act
layers (:class:`~search_spaces.chains.Step`), an optional squeeze-excite after one of them and a shortcut around
them. Each op type is declared once, torch-free, as a :class:`~search_spaces.chains.Chain` in
:mod:`search_spaces.chains` (re-exported here); :class:`StaticChainBlock` (the static module) and
:class:`ElasticChainBlock` (its weight-sharing twin) do the rest from that one list:

- ``__init__``: one layer per step under the step's name, ``se`` right after the step it follows, then
  the shortcut (``proj`` families: ``shortcut`` in the static module, ``pool`` and ``proj`` in the elastic
  one; the others: an ``identity`` flag) and the post-add activation ``act``. The names and their order are
  the state-dict keys, so checkpoints of the hand-written blocks load unchanged.
- ``forward``: the steps in order, the SE where it sits, the shortcut (``none``, ``identity``, or ``proj`` =
  average-pool for the stride, ``ceil_mode``, then 1×1 conv + BN), the post-add activation.
- ``extract(spec)``: every elastic layer extracts its slice for ``spec``, in forward order.
- ``sort_channels()``: the hidden channels, from the output of ``hidden[0]`` to the input of ``hidden[1]``,
  are reordered by how much ``hidden[1]`` reads them: the producer and every layer between permute their
  outputs, every layer after the producer its inputs (a no-op for depthwise layers), the SE its channels.

The analytic layer lists of these blocks (``search_spaces.costs.chain_layers``) are derived from the same
declaration, so costs and modules cannot drift apart; a test checks a static module's parameter count against
them all the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from search_spaces import BlockSpec
from search_spaces.chains import SPEC_ACT, Chain, Step

from ..elastic import ElasticConvBNAct, ElasticSE
from ..quant import QuantMode
from ..static import ConvBNAct, SqueezeExcite, make_act
from .registry import ElasticBlock, importance, spec_modes

__all__ = ["SPEC_ACT", "Chain", "ElasticChainBlock", "StaticChainBlock", "Step"]

def _pool(stride: int) -> nn.Module:
    return nn.AvgPool2d(stride, ceil_mode=True) if stride > 1 else nn.Identity()


class StaticChainBlock(nn.Module):
    """The static module of a chain family (subclasses set ``chain``)."""

    chain: ClassVar[Chain]

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        chain = self.chain
        for step in chain.steps:
            i, o = step.channels(spec)
            setattr(self, step.name, ConvBNAct(i, o, step.kernel_of(spec), step.stride_of(spec),
                                               groups=i if step.depthwise else 1, act=step.act_of(spec)))
            if step.name == chain.se_after:
                self.se: nn.Module = SqueezeExcite(o) if spec.se else nn.Identity()
        kind = chain.shortcut(spec)
        if chain.has_proj:
            self.shortcut: nn.Module | None = None if kind == "none" else nn.Identity()
            if kind == "proj":
                self.shortcut = nn.Sequential(_pool(spec.stride), ConvBNAct(spec.in_ch, spec.out_ch))
        else:
            self.identity = kind == "identity"
        if chain.post_act is not None:
            self.act = make_act(chain.post_act)

    def forward(self, x: Tensor) -> Tensor:  # (B, in, H, W) -> (B, out, H/s, W/s)
        chain, y = self.chain, x
        for step in chain.steps:
            y = getattr(self, step.name)(y)
            if step.name == chain.se_after:
                y = self.se(y)
        if chain.has_proj:  # operand order of the add as the blocks always had it (exported graphs unchanged)
            y = y if self.shortcut is None else y + self.shortcut(x)
        elif self.identity:
            y = x + y
        return y if chain.post_act is None else self.act(y)


class ElasticChainBlock(ElasticBlock):
    """The elastic twin of a chain family (subclasses set ``chain`` and ``static_block``)."""

    chain: ClassVar[Chain]
    static_block: ClassVar[type[StaticChainBlock]]

    def __init__(self, big: BlockSpec, w_modes: Sequence[QuantMode], a_modes: Sequence[QuantMode]) -> None:
        super().__init__()
        chain, q = self.chain, {"w_modes": w_modes, "a_modes": a_modes}
        for step in chain.steps:
            i, o = step.channels(big)
            setattr(self, step.name, ElasticConvBNAct(i, o, step.kernel_of(big), step.stride_of(big),
                                                      depthwise=step.depthwise, act=step.act_of(big), **q))
            if step.name == chain.se_after:
                self.se = ElasticSE(o, **q) if big.se else None
        if chain.has_proj:
            self.pool = _pool(big.stride)
            self.proj = ElasticConvBNAct(big.in_ch, big.out_ch, **q) if chain.shortcut(big) == "proj" else None
        if chain.post_act is not None:
            self.act = make_act(chain.post_act)

    def forward(self, x: Tensor, spec: BlockSpec) -> Tensor:  # (B, in, H, W) -> (B, out, H/s, W/s)
        chain, y = self.chain, x
        w, a = spec_modes(spec)
        for step in chain.steps:
            y = getattr(self, step.name)(y, step.channels(spec)[1], step.kernel_of(spec), w, a)
            if step.name == chain.se_after and self.se is not None:
                y = self.se(y, w, a)
        kind = chain.shortcut(spec)
        if kind == "proj":
            y = y + self.proj(self.pool(x), spec.out_ch, 1, w, a)
        elif kind == "identity":
            y = y + x if chain.has_proj else x + y
        return y if chain.post_act is None else self.act(y)

    def extract(self, spec: BlockSpec) -> StaticChainBlock:
        chain = self.chain
        w, a = spec_modes(spec)
        static = self.static_block(spec)
        for step in chain.steps:
            i, o = step.channels(spec)
            setattr(static, step.name, getattr(self, step.name).extract(i, o, step.kernel_of(spec), w, a))
            if step.name == chain.se_after and self.se is not None:
                static.se = self.se.extract(o, w, a)
        if chain.shortcut(spec) == "proj":
            static.shortcut[1] = self.proj.extract(spec.in_ch, spec.out_ch, 1, w, a)
        return static

    @torch.no_grad()
    def sort_channels(self) -> None:
        chain = self.chain
        names = [s.name for s in chain.steps]
        lo, hi = (names.index(n) for n in chain.hidden)
        perm = torch.argsort(importance(getattr(self, chain.hidden[1]).conv), descending=True)
        for index in range(lo, hi + 1):
            step, layer = chain.steps[index], getattr(self, names[index])
            if index > lo:
                layer.permute_in(perm)
            if index < hi:
                layer.permute_out(perm)
            if step.name == chain.se_after and self.se is not None:
                self.se.permute_channels(perm)
