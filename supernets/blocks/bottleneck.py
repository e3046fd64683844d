"""ResNet bottleneck (``bottleneck``): the static block and its elastic twin, built from the declaration
:data:`search_spaces.chains.BOTTLENECK`."""

from __future__ import annotations

from search_spaces.chains import BOTTLENECK

from .chain import ElasticChainBlock, StaticChainBlock
from .registry import register_elastic_block, register_static_block

__all__ = ["BOTTLENECK", "Bottleneck", "ElasticBottleneck"]


@register_static_block("bottleneck")
class Bottleneck(StaticChainBlock):
    """ResNet bottleneck; the projection shortcut average-pools for the stride (once-for-all style)."""

    chain = BOTTLENECK


@register_elastic_block("bottleneck")
class ElasticBottleneck(ElasticChainBlock):
    chain, static_block = BOTTLENECK, Bottleneck
