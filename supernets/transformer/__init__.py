"""The transformer supernet: elastic layers (:mod:`.elastic`), static modules (:mod:`.static`), the supernet."""

from .static import StaticTransformer
from .supernet import TransformerSupernet

__all__ = ["StaticTransformer", "TransformerSupernet"]
