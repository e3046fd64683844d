"""SpaceEvo's MobileNetV1-dual (``dsconv_dual``): two depthwise-separable convs with a residual; static
and elastic. The structure is documented in :mod:`search_spaces.blocks`."""

from __future__ import annotations

from .chain import SPEC_ACT, Chain, ElasticChainBlock, StaticChainBlock, Step
from .registry import register_elastic_block, register_static_block

__all__ = ["DSCONV_DUAL", "DsConvDual", "ElasticDsConvDual"]

DSCONV_DUAL = Chain(
    steps=(Step("dw1", "in", "in", "k", strided=True, depthwise=True, act=SPEC_ACT),
           Step("pw1", "in", "out", act=SPEC_ACT),
           Step("dw2", "out", "out", "k", depthwise=True, act=SPEC_ACT),
           Step("pw2", "out", "out", act=SPEC_ACT)),
    hidden=("pw1", "pw2"),  # the channels between pw1 and pw2 move together, ordered by how much pw2 reads them
    shortcuts=("identity", "proj"))


@register_static_block("dsconv_dual")
class DsConvDual(StaticChainBlock):
    """Two depthwise-separable convs (the first strided) with a residual (SpaceEvo's MobileNetV1-dual)."""

    chain = DSCONV_DUAL


@register_elastic_block("dsconv_dual")
class ElasticDsConvDual(ElasticChainBlock):
    chain, static_block = DSCONV_DUAL, DsConvDual
