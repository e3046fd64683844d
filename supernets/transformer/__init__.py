"""The transformer supernet, one module per op family with its static module and elastic twin side by side.

:mod:`.embedding`, :mod:`.attention`, :mod:`.mlp` and :mod:`.head` each hold a static block and the elastic block
it is extracted from, built on the shared elastic primitives of :mod:`.layers`; :mod:`.model` holds the
standalone :class:`StaticTransformer` a subnet is extracted to, :mod:`.supernet` the supernet that assembles the
elastic blocks, :mod:`.graphs` and :mod:`.export` the ONNX export.
"""

from .attention import Attention, ElasticAttention
from .embedding import ElasticPatchEmbedding, ElasticTokenEmbedding, PatchEmbedding, TokenEmbedding, patchify
from .head import ClassifierHead, ElasticClassifierHead
from .layers import ElasticLayerNorm, ElasticQuantLinear
from .mlp import ElasticMlp, Mlp
from .model import StaticTransformer
from .supernet import TransformerSupernet

__all__ = ["Attention", "ClassifierHead", "ElasticAttention", "ElasticClassifierHead", "ElasticLayerNorm",
           "ElasticMlp", "ElasticPatchEmbedding", "ElasticQuantLinear", "ElasticTokenEmbedding", "Mlp",
           "PatchEmbedding", "StaticTransformer", "TokenEmbedding", "TransformerSupernet", "patchify"]
