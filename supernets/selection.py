"""What every supernet family shares: choosing the subnet a call runs, and whether its quantizers are ready.

A family (:mod:`supernets.families`) says how a genome becomes its block signatures (``specs``) and how
those signatures run (``_forward``); choosing the subnet (``subnet``, ``run``, ``forward``), where the
weights are and whether every quantization mode has been initialised are the same for all of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from search_spaces import Genome

from .device import module_device

__all__ = ["SubnetSelection"]


class SubnetSelection(nn.Module):
    """Base of the supernets: subclasses define :meth:`specs` and :meth:`_forward`."""

    def __init__(self) -> None:
        super().__init__()
        self._active: tuple[Any, ...] | None = None

    def specs(self, genome: Genome, *, quantize: bool = True) -> tuple[Any, ...]:  # pragma: no cover - abstract
        """The block signatures of ``genome``; with ``quantize=False`` every bit-width becomes 32 (float)."""
        raise NotImplementedError

    def _forward(self, x: Tensor, specs: Sequence[Any]) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @contextmanager
    def subnet(self, genome: Genome, *, quantize: bool = True) -> Iterator[Any]:
        """Activate ``genome`` for calls to ``self(x)`` inside the block; the previous state returns after."""
        previous = self._active
        self._active = self.specs(genome, quantize=quantize)
        try:
            yield self
        finally:
            self._active = previous

    def run(self, x: Tensor, genome: Genome, *, quantize: bool = True) -> Tensor:
        """Logits of subnet ``genome`` for the input batch ``x``."""
        return self._forward(x, self.specs(genome, quantize=quantize))

    def forward(self, x: Tensor) -> Tensor:
        if self._active is None:
            raise RuntimeError("no subnet is active: use `with supernet.subnet(genome):` or supernet.run(x, genome)")
        return self._forward(x, self._active)

    @property
    def device(self) -> torch.device:
        """Where the supernet's weights are (every block is kept on one device)."""
        return module_device(self)

    def quantizers_ready(self) -> bool:
        """Whether every declared quantization mode of every layer has been initialised."""
        return all(bool(b.all()) for name, b in self.named_buffers() if name.rsplit(".", 1)[-1].startswith("initialized"))
