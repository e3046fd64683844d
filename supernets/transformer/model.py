"""The standalone transformer a subnet is extracted to: its static blocks in order, kept apart from the supernet
so export and latency code can build one without the elastic layers.

Every linear is a :class:`~supernets.static.QuantLinear`, so the CNN tools apply unchanged
(:func:`~supernets.static.strip_fake_quant`, :func:`~supernets.static.attach_lsq`,
:func:`~supernets.deploy.fake_quant_model`); LayerNorm, softmax and GELU stay float.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from search_spaces.transformer import TransformerBlock

__all__ = ["StaticTransformer"]


class StaticTransformer(nn.Module):
    """A standalone transformer subnet: its blocks in order, with the signatures they were built from."""

    def __init__(self, specs: Sequence[TransformerBlock], blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.specs = tuple(specs)
        self.front = self.specs[0].front
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)
