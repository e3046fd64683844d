"""The block registry: how each op type becomes a static module and an elastic (weight-sharing) block.

Each op family lives in one module of this package with both forms side by side: the static module
(what a subnet is extracted to, latency profiling times and export converts) and its elastic twin
inside the supernet (``forward(x, spec)`` runs the configuration ``spec`` names, ``extract(spec)``
builds the static module with the sliced weights copied in, ``sort_channels()`` reorders hidden
channels by importance, once-for-all's channel re-organisation). A family registers both with
:func:`register_static_block` and :func:`register_elastic_block`; importing :mod:`supernets.blocks`
registers every built-in family.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from search_spaces import BlockSpec
from search_spaces.registries import Registry

from ..quant import QuantMode

__all__ = ["ElasticBlock", "build_block", "build_elastic_block", "importance", "register_elastic_block",
           "register_static_block", "spec_modes"]

StaticBuilder = Callable[[BlockSpec], nn.Module]
_STATIC: Registry[StaticBuilder] = Registry("static block", field="op")


def register_static_block(op: str) -> Callable[[StaticBuilder], StaticBuilder]:
    """Register how an op type becomes a static module (duplicates raise)."""
    return _STATIC.register(op)


def build_block(spec: BlockSpec) -> nn.Module:
    """A freshly initialised static module for ``spec``."""
    return _STATIC.get(spec.op)(spec)


def spec_modes(spec: BlockSpec) -> tuple[QuantMode, QuantMode]:
    """(weight mode, activation mode) of a block."""
    w = QuantMode(spec.w_bits, "channel" if spec.w_per_channel else "tensor", spec.w_symmetric)
    return w, QuantMode(spec.a_bits, "tensor", symmetric=False)


def importance(conv: nn.Conv2d) -> Tensor:
    """L1 norm of the weights that read each input channel: larger = more important."""
    return conv.weight.detach().abs().sum(dim=(0, 2, 3))


class ElasticBlock(nn.Module):
    """Base of elastic blocks."""

    def forward(self, x: Tensor, spec: BlockSpec) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extract(self, spec: BlockSpec) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def sort_channels(self) -> None:
        """Blocks without hidden elastic channels have nothing to sort."""


ElasticBuilder = Callable[[BlockSpec, Sequence[QuantMode], Sequence[QuantMode]], ElasticBlock]
_ELASTIC: Registry[ElasticBuilder] = Registry("elastic block", field="op")


def register_elastic_block(op: str) -> Callable[[ElasticBuilder], ElasticBuilder]:
    """Register the elastic block class of an op type (duplicates raise)."""
    return _ELASTIC.register(op)


def build_elastic_block(big: BlockSpec, w_modes: Sequence[QuantMode], a_modes: Sequence[QuantMode]) -> ElasticBlock:
    """The elastic block for a slot whose largest configuration is ``big``."""
    return _ELASTIC.get(big.op)(big, w_modes, a_modes)
