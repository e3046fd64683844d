"""Blocks, one module per op family with its static module and elastic twin side by side.

``build_block(spec)`` makes the static module of a :class:`search_spaces.BlockSpec` (its parameter count
equals ``search_spaces.costs``: a test checks it); ``build_elastic_block(big, ...)`` the weight-sharing
block of a supernet slot whose largest configuration is ``big``. A new op family is one module here that
registers both forms (see :mod:`supernets.blocks.registry`) and one import line below. A family whose block is a
chain of conv layers (``mbconv``, ``fused_mbconv``, ``bottleneck``, ``dsconv_dual``) only declares its layers as a
:class:`~search_spaces.chains.Chain` (in :mod:`search_spaces.chains`, torch-free, where the analytic costs are
derived from it too): the generic static module and elastic block build, run, extract and channel-sort it from
that list.
"""

from __future__ import annotations

from . import bottleneck, conv, dsconv_dual, fused_mbconv, head, mbconv  # noqa: F401  (registration)
from .bottleneck import Bottleneck, ElasticBottleneck
from .chain import Chain, ElasticChainBlock, StaticChainBlock, Step
from .conv import ElasticStem
from .dsconv_dual import DsConvDual, ElasticDsConvDual
from .fused_mbconv import ElasticFusedMBConv, FusedMBConv
from .head import ElasticHead, Head
from .mbconv import ElasticMBConv, MBConv
from .registry import (ElasticBlock, build_block, build_elastic_block, importance, register_elastic_block,
                       register_static_block, spec_modes)

__all__ = ["Bottleneck", "Chain", "DsConvDual", "ElasticBlock", "ElasticBottleneck", "ElasticChainBlock",
           "ElasticDsConvDual", "ElasticFusedMBConv", "ElasticHead", "ElasticMBConv", "ElasticStem", "FusedMBConv",
           "Head", "MBConv", "StaticChainBlock", "Step", "build_block", "build_elastic_block", "importance",
           "register_elastic_block", "register_static_block", "spec_modes"]
