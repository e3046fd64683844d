"""SpaceEvo's MobileNetV1-dual (``dsconv_dual``): two depthwise-separable convs with a residual; static
and elastic, built from the declaration :data:`search_spaces.chains.DSCONV_DUAL`. The structure is documented
in :mod:`search_spaces.blocks`."""

from __future__ import annotations

from search_spaces.chains import DSCONV_DUAL

from .chain import ElasticChainBlock, StaticChainBlock
from .registry import register_elastic_block, register_static_block

__all__ = ["DSCONV_DUAL", "DsConvDual", "ElasticDsConvDual"]


@register_static_block("dsconv_dual")
class DsConvDual(StaticChainBlock):
    """Two depthwise-separable convs (the first strided) with a residual (SpaceEvo's MobileNetV1-dual)."""

    chain = DSCONV_DUAL


@register_elastic_block("dsconv_dual")
class ElasticDsConvDual(ElasticChainBlock):
    chain, static_block = DSCONV_DUAL, DsConvDual
