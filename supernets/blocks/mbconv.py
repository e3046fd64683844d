"""MobileNetV2/V3 inverted residual (``mbconv``): the static block and its elastic twin."""

from __future__ import annotations

from .chain import SPEC_ACT, Chain, ElasticChainBlock, StaticChainBlock, Step
from .registry import register_elastic_block, register_static_block

__all__ = ["MBCONV", "ElasticMBConv", "MBConv"]

MBCONV = Chain(
    steps=(Step("expand", "in", "mid", act=SPEC_ACT),
           Step("dw", "mid", "mid", "k", strided=True, depthwise=True, act=SPEC_ACT),
           Step("project", "mid", "out")),
    hidden=("expand", "project"), se_after="dw", shortcuts=("identity",))


@register_static_block("mbconv")
class MBConv(StaticChainBlock):
    """Inverted residual: 1×1 expand, k×k depthwise, optional SE, 1×1 project, optional identity add."""

    chain = MBCONV


@register_elastic_block("mbconv")
class ElasticMBConv(ElasticChainBlock):
    chain, static_block = MBCONV, MBConv
