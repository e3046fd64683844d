"""Static (deployable) modules built from block signatures.

``build_block(spec)`` turns a :class:`search_spaces.BlockSpec` into a plain PyTorch module whose
parameter count equals ``search_spaces.costs`` (a test checks it). Every conv/linear layer has a
``quant`` slot in front of it: ``nn.Identity`` for float models, a ``FrozenFakeQuant`` in subnets
extracted from a quantized supernet (their weights then already lie on the quantization grid).
The same modules are what latency profiling measures and what INT8 export converts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from timm.layers import get_act_layer
from torch import Tensor, nn
from torch.nn.utils import parametrize

from search_spaces import BlockSpec
from search_spaces.blocks import se_channels

from .quant import LsqActQuantizer, LsqWeightQuantizer, QuantMode

__all__ = ["ConvBNAct", "QuantLinear", "SqueezeExcite", "MBConv", "Bottleneck", "Head", "StaticNet",
           "build_block", "register_static_block", "make_act", "strip_fake_quant", "attach_lsq"]

_ACTS = {"relu": "relu", "hswish": "hard_swish", "hsigmoid": "hard_sigmoid"}


def make_act(name: str | None) -> nn.Module:
    """Activation module by qnas name (timm's factory picks the fused torch implementation)."""
    if name is None:
        return nn.Identity()
    return get_act_layer(_ACTS[name])()


class ConvBNAct(nn.Module):
    """quant → conv → BN → act; the unit every block is made of."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, *, groups: int = 1,
                 act: str | None = None, bn: bool = True, bias: bool = False) -> None:
        super().__init__()
        self.quant: nn.Module = nn.Identity()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=bias)
        self.bn: nn.Module = nn.BatchNorm2d(out_ch) if bn else nn.Identity()
        self.act = make_act(act)

    def forward(self, x: Tensor) -> Tensor:  # (B, C_in, H, W) -> (B, C_out, H/s, W/s)
        return self.act(self.bn(self.conv(self.quant(x))))


class QuantLinear(nn.Module):
    """quant → linear (the classifier)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.quant: nn.Module = nn.Identity()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x: Tensor) -> Tensor:  # (B, C) -> (B, classes)
        return self.linear(self.quant(x))


class SqueezeExcite(nn.Module):
    """MobileNetV3 squeeze-excite: pool → 1×1 reduce → ReLU → 1×1 expand → hard-sigmoid gate."""

    def __init__(self, channels: int, reduced: int | None = None) -> None:
        super().__init__()
        reduced = reduced or se_channels(channels)
        self.reduce = ConvBNAct(channels, reduced, act="relu", bn=False, bias=True)
        self.expand = ConvBNAct(reduced, channels, bn=False, bias=True)
        self.gate = make_act("hsigmoid")

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W)
        s = F.adaptive_avg_pool2d(x, 1)  # (B, C, 1, 1)
        return x * self.gate(self.expand(self.reduce(s)))


class MBConv(nn.Module):
    """Inverted residual: 1×1 expand, k×k depthwise, optional SE, 1×1 project, optional identity add."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        mid = spec.mid_ch
        self.expand = ConvBNAct(spec.in_ch, mid, act=spec.act)
        self.dw = ConvBNAct(mid, mid, spec.kernel, spec.stride, groups=mid, act=spec.act)
        self.se: nn.Module = SqueezeExcite(mid) if spec.se else nn.Identity()
        self.project = ConvBNAct(mid, spec.out_ch)
        self.identity = spec.shortcut == "identity"

    def forward(self, x: Tensor) -> Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.identity else y


class Bottleneck(nn.Module):
    """ResNet bottleneck; the projection shortcut average-pools for the stride (once-for-all style)."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(spec.in_ch, spec.mid_ch, act="relu")
        self.conv2 = ConvBNAct(spec.mid_ch, spec.mid_ch, spec.kernel, spec.stride, act="relu")
        self.se: nn.Module = SqueezeExcite(spec.mid_ch) if spec.se else nn.Identity()
        self.conv3 = ConvBNAct(spec.mid_ch, spec.out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if spec.shortcut == "proj":
            pool = nn.AvgPool2d(spec.stride, ceil_mode=True) if spec.stride > 1 else nn.Identity()
            self.shortcut = nn.Sequential(pool, ConvBNAct(spec.in_ch, spec.out_ch))
        self.act = make_act("relu")

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv3(self.se(self.conv2(self.conv1(x))))
        return self.act(y + self.shortcut(x))


class Head(nn.Module):
    """Optional 1×1 conv + BN + act, global average pool, linear classifier."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        self.conv: nn.Module = ConvBNAct(spec.in_ch, spec.mid_ch, act=spec.act) if spec.mid_ch else nn.Identity()
        self.classifier = QuantLinear(spec.mid_ch or spec.in_ch, spec.out_ch)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, classes)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.conv(x), 1), 1))


_BUILDERS: dict[str, Callable[[BlockSpec], nn.Module]] = {}


def register_static_block(op: str) -> Callable[[Callable[[BlockSpec], nn.Module]], Callable[[BlockSpec], nn.Module]]:
    """Register how an op type becomes a static module (duplicates raise)."""

    def wrap(fn: Callable[[BlockSpec], nn.Module]) -> Callable[[BlockSpec], nn.Module]:
        if op in _BUILDERS:
            raise ValueError(f"op type {op!r} already has a static builder")
        _BUILDERS[op] = fn
        return fn

    return wrap


register_static_block("conv")(lambda s: ConvBNAct(s.in_ch, s.out_ch, s.kernel, s.stride, act=s.act))
register_static_block("mbconv")(MBConv)
register_static_block("bottleneck")(Bottleneck)
register_static_block("head")(Head)


def build_block(spec: BlockSpec) -> nn.Module:
    """A freshly initialised static module for ``spec``."""
    if spec.op not in _BUILDERS:
        raise ValueError(f"no static module for op type {spec.op!r}; known: {sorted(_BUILDERS)}")
    return _BUILDERS[spec.op](spec)


class StaticNet(nn.Module):
    """A standalone subnet: its blocks in order.

    When the subnet's resolution differs from the data's ``image_size`` the input is resized first
    (elastic resolution); the decision is made here, once, so the forward traces cleanly for export.
    """

    def __init__(self, specs: Sequence[BlockSpec], blocks: Sequence[nn.Module] | None = None, *,
                 image_size: int | None = None) -> None:
        super().__init__()
        self.specs = tuple(specs)
        self.input_size = self.specs[0].in_size
        self.resize = image_size is not None and image_size != self.input_size
        self.blocks = nn.Sequential(*(blocks if blocks is not None else [build_block(s) for s in self.specs]))

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, classes)
        if self.resize:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return self.blocks(x)


class _BoundActQuant(nn.Module):
    """An LSQ activation quantizer fixed to one mode (fits a ``quant`` slot)."""

    def __init__(self, mode: QuantMode) -> None:
        super().__init__()
        self.mode, self.quantizer = mode, LsqActQuantizer(modes=[mode], unsigned=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.quantizer(x, self.mode)


class _BoundWeightQuant(nn.Module):
    """An LSQ weight quantizer fixed to one mode, used as a weight parametrization."""

    def __init__(self, out_channels: int, mode: QuantMode) -> None:
        super().__init__()
        self.mode, self.quantizer = mode, LsqWeightQuantizer(out_channels=out_channels, modes=[mode])

    def forward(self, w: Tensor) -> Tensor:
        return self.quantizer(w, self.mode)


def attach_lsq(model: nn.Module, *, w_mode: QuantMode, a_mode: QuantMode) -> nn.Module:
    """Quantization-aware training of one static network with the supernet's own LSQ quantizers, in place.

    Every conv/linear layer with a ``quant`` slot gets a learnable activation quantizer there and a
    learnable weight quantizer as a parametrization of its weight: the same fake-quantization
    arithmetic a subnet runs inside the supernet, without the elastic slicing, so it is the
    like-for-like reference for the supernet's training-step cost.
    """
    for module in list(model.modules()):
        if isinstance(module, (ConvBNAct, QuantLinear)):
            layer = module.conv if isinstance(module, ConvBNAct) else module.linear
            module.quant = _BoundActQuant(a_mode).to(layer.weight.device)
            weight_quant = _BoundWeightQuant(layer.weight.shape[0], w_mode).to(layer.weight.device)
            parametrize.register_parametrization(layer, "weight", weight_quant)
    return model


def strip_fake_quant(model: nn.Module) -> nn.Module:
    """Replace every activation fake-quantizer by ``nn.Identity`` in place (for float export and INT8 conversion)."""
    for module in model.modules():
        if isinstance(module, (ConvBNAct, QuantLinear)):
            module.quant = nn.Identity()
    return model


# SpaceEvo's extra block types register themselves (after every name above exists).
from . import meta_static  # noqa: E402,F401  isort: skip
