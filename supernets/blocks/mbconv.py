"""MobileNetV2/V3 inverted residual (``mbconv``): the static block and its elastic twin, built from the
declaration :data:`search_spaces.chains.MBCONV`."""

from __future__ import annotations

from search_spaces.chains import MBCONV

from .chain import ElasticChainBlock, StaticChainBlock
from .registry import register_elastic_block, register_static_block

__all__ = ["MBCONV", "ElasticMBConv", "MBConv"]


@register_static_block("mbconv")
class MBConv(StaticChainBlock):
    """Inverted residual: 1×1 expand, k×k depthwise, optional SE, 1×1 project, optional identity add."""

    chain = MBCONV


@register_elastic_block("mbconv")
class ElasticMBConv(ElasticChainBlock):
    chain, static_block = MBCONV, MBConv
