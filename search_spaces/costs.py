"""Analytic costs that need no training: MACs, parameters, model size, BitOps.

Conventions (kept identical to the modules the supernet extracts, which a test checks):

- MACs count conv and linear multiply-accumulates only (BN, activations, pooling, adds are free).
- ``params`` is the parameter count of the extracted PyTorch module: conv/linear weights, biases
  (squeeze-excite convs and the classifier have one), BN weight and bias.
- ``size_bytes`` is the deployed size: every conv/linear weight at its block's weight bits, plus one
  float32 bias per output channel of every conv/linear (BN folded into it).
- ``bitops`` = Σ MACs · w_bits · a_bits over conv/linear layers (32 for unquantized ones).

The layer list of a conv-chain op (``mbconv``, ``fused_mbconv``, ``bottleneck``, ``dsconv_dual``) is derived
from its declaration in :mod:`search_spaces.chains` (:func:`chain_layers`), the one the supernet's static
module and elastic block are built from; only ``conv`` (the stem) and ``head`` are listed by hand here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .blocks import BlockSpec, se_channels
from .chains import CHAINS, Chain
from .registries import Registry

__all__ = ["Layer", "Costs", "block_layers", "block_costs", "chain_layers", "model_costs", "register_op_layers"]


@dataclass(frozen=True)
class Layer:
    """One conv or linear layer of a block, enough to cost it."""

    in_ch: int
    out_ch: int
    kernel: int
    out_size: int  # output H (= W); 1 for linear layers and pooled SE convs
    groups: int = 1
    bias: bool = False
    bn: bool = True

    @property
    def weights(self) -> int:
        return self.out_ch * (self.in_ch // self.groups) * self.kernel * self.kernel

    @property
    def macs(self) -> int:
        return self.weights * self.out_size * self.out_size

    @property
    def params(self) -> int:
        return self.weights + (self.out_ch if self.bias else 0) + (2 * self.out_ch if self.bn else 0)


@dataclass(frozen=True)
class Costs:
    """Analytic costs of a block or a whole subnet."""

    macs: int
    params: int
    size_bytes: float
    bitops: int

    def __add__(self, other: Costs) -> Costs:
        return Costs(self.macs + other.macs, self.params + other.params,
                     self.size_bytes + other.size_bytes, self.bitops + other.bitops)

    @property
    def size_kb(self) -> float:
        return self.size_bytes / 1024


_LAYERS: Registry[Callable[[BlockSpec], list[Layer]]] = Registry("op type", field="op")


def register_op_layers(op: str) -> Callable[[Callable[[BlockSpec], list[Layer]]], Callable[[BlockSpec], list[Layer]]]:
    """Register the layer list of an op type (raise on duplicates, like every qnas registry)."""
    return _LAYERS.register(op)


def _se_layers(channels: int) -> list[Layer]:
    reduced = se_channels(channels)
    return [Layer(channels, reduced, 1, 1, bias=True, bn=False), Layer(reduced, channels, 1, 1, bias=True, bn=False)]


@register_op_layers("conv")
def _conv_layers(b: BlockSpec) -> list[Layer]:
    return [Layer(b.in_ch, b.out_ch, b.kernel, b.out_size)]


def chain_layers(chain: Chain, b: BlockSpec) -> list[Layer]:
    """The layers of a conv-chain block, read off its declaration: one per step (the steps before the strided
    one at the input size, the others at the output size; depthwise steps one group per channel), the SE's two
    convs after ``se_after`` when ``b.se``, then the ``proj`` shortcut's 1×1 conv when the block runs one."""
    layers, size = [], b.in_size
    for step in chain.steps:
        if step.strided:
            size = b.out_size
        i, o = step.channels(b)
        layers.append(Layer(i, o, step.kernel_of(b), size, groups=i if step.depthwise else 1))
        if step.name == chain.se_after and b.se:
            layers += _se_layers(o)
    if chain.shortcut(b) == "proj":
        layers.append(Layer(b.in_ch, b.out_ch, 1, b.out_size))
    return layers


def _register_chain(op: str, chain: Chain) -> None:
    def layers(b: BlockSpec) -> list[Layer]:
        return chain_layers(chain, b)

    layers.__qualname__ = f"chain_layers[{op}]"  # what a duplicate registration names
    register_op_layers(op)(layers)


for _op, _chain in CHAINS.items():  # mbconv, fused_mbconv, bottleneck, dsconv_dual
    _register_chain(_op, _chain)
del _op, _chain


@register_op_layers("head")
def _head_layers(b: BlockSpec) -> list[Layer]:
    layers = [Layer(b.in_ch, b.mid_ch, 1, b.in_size)] if b.mid_ch > 0 else []
    return layers + [Layer(b.mid_ch or b.in_ch, b.out_ch, 1, 1, bias=True, bn=False)]


def block_layers(block: BlockSpec) -> list[Layer]:
    """The conv/linear layers of a block, in forward order."""
    return _LAYERS.get(block.op)(block)


def block_costs(block: BlockSpec) -> Costs:
    """Analytic costs of one block at its bit-widths."""
    layers = block_layers(block)
    macs = sum(layer.macs for layer in layers)
    weights = sum(layer.weights for layer in layers)
    biases = sum(layer.out_ch for layer in layers)
    size = weights * block.w_bits / 8 + biases * 4
    return Costs(macs, sum(layer.params for layer in layers), size, macs * block.w_bits * block.a_bits)


def model_costs(blocks: Iterable[BlockSpec]) -> Costs:
    """Sum of :func:`block_costs` over a subnet's blocks."""
    total = Costs(0, 0, 0.0, 0)
    for block in blocks:
        total = total + block_costs(block)
    return total
