"""ResNet bottleneck (``bottleneck``): the static block and its elastic twin."""

from __future__ import annotations

from .chain import Chain, ElasticChainBlock, StaticChainBlock, Step
from .registry import register_elastic_block, register_static_block

__all__ = ["BOTTLENECK", "Bottleneck", "ElasticBottleneck"]

BOTTLENECK = Chain(
    steps=(Step("conv1", "in", "mid", act="relu"),
           Step("conv2", "mid", "mid", "k", strided=True, act="relu"),
           Step("conv3", "mid", "out")),
    hidden=("conv1", "conv3"), se_after="conv2",
    shortcuts=("identity", "proj"), otherwise="identity",  # a bottleneck always adds its input back
    post_act="relu")


@register_static_block("bottleneck")
class Bottleneck(StaticChainBlock):
    """ResNet bottleneck; the projection shortcut average-pools for the stride (once-for-all style)."""

    chain = BOTTLENECK


@register_elastic_block("bottleneck")
class ElasticBottleneck(ElasticChainBlock):
    chain, static_block = BOTTLENECK, Bottleneck
