"""EfficientNetV2's FusedMBConv (``fused_mbconv``): k×k expand conv, optional SE, 1×1 project; static and
elastic, built from the declaration :data:`search_spaces.chains.FUSED_MBCONV`. The structure is documented in
:mod:`search_spaces.blocks`."""

from __future__ import annotations

from search_spaces.chains import FUSED_MBCONV

from .chain import ElasticChainBlock, StaticChainBlock
from .registry import register_elastic_block, register_static_block

__all__ = ["FUSED_MBCONV", "ElasticFusedMBConv", "FusedMBConv"]


@register_static_block("fused_mbconv")
class FusedMBConv(StaticChainBlock):
    """k×k expand conv (strided), optional SE, 1×1 project, optional identity add."""

    chain = FUSED_MBCONV


@register_elastic_block("fused_mbconv")
class ElasticFusedMBConv(ElasticChainBlock):
    chain, static_block = FUSED_MBCONV, FusedMBConv
