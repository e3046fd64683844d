"""The stem (``conv``): one conv + BN + act, static and elastic."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from search_spaces import BlockSpec

from ..elastic import ElasticConvBNAct
from ..quant import QuantMode
from ..static import ConvBNAct
from .registry import ElasticBlock, register_elastic_block, register_static_block, spec_modes

__all__ = ["ElasticStem", "conv_block"]


@register_static_block("conv")
def conv_block(spec: BlockSpec) -> ConvBNAct:
    """The stem: one conv + BN + act."""
    return ConvBNAct(spec.in_ch, spec.out_ch, spec.kernel, spec.stride, act=spec.act)


@register_elastic_block("conv")
class ElasticStem(ElasticBlock):
    def __init__(self, big: BlockSpec, w_modes: Sequence[QuantMode], a_modes: Sequence[QuantMode]) -> None:
        super().__init__()
        self.conv = ElasticConvBNAct(big.in_ch, big.out_ch, big.kernel, big.stride, act=big.act,
                                     w_modes=w_modes, a_modes=a_modes)

    def forward(self, x: Tensor, spec: BlockSpec) -> Tensor:
        return self.conv(x, spec.out_ch, spec.kernel, *spec_modes(spec))

    def extract(self, spec: BlockSpec) -> ConvBNAct:
        return self.conv.extract(spec.in_ch, spec.out_ch, spec.kernel, *spec_modes(spec))
