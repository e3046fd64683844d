"""EfficientNetV2's FusedMBConv (``fused_mbconv``): k×k expand conv, optional SE, 1×1 project; static and
elastic. The structure is documented in :mod:`search_spaces.blocks`."""

from __future__ import annotations

from .chain import SPEC_ACT, Chain, ElasticChainBlock, StaticChainBlock, Step
from .registry import register_elastic_block, register_static_block

__all__ = ["FUSED_MBCONV", "ElasticFusedMBConv", "FusedMBConv"]

FUSED_MBCONV = Chain(
    steps=(Step("fused", "in", "mid", "k", strided=True, act=SPEC_ACT),
           Step("project", "mid", "out")),
    hidden=("fused", "project"), se_after="fused", shortcuts=("identity",))


@register_static_block("fused_mbconv")
class FusedMBConv(StaticChainBlock):
    """k×k expand conv (strided), optional SE, 1×1 project, optional identity add."""

    chain = FUSED_MBCONV


@register_elastic_block("fused_mbconv")
class ElasticFusedMBConv(ElasticChainBlock):
    chain, static_block = FUSED_MBCONV, FusedMBConv
