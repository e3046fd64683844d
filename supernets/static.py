"""Static (deployable) layers every block is made of, and LSQ fake quantization attached to a static network.

Every conv/linear layer has a ``quant`` slot in front of it: ``nn.Identity`` for float models, a
``FrozenFakeQuant`` in subnets extracted from a quantized supernet (their weights then already lie on
the quantization grid). The blocks built from these layers are in :mod:`supernets.blocks`.
"""

from __future__ import annotations

import torch.nn.functional as F
from timm.layers import get_act_layer
from torch import Tensor, nn
from torch.nn.utils import parametrize

from search_spaces.blocks import se_channels

from .quant import LsqActQuantizer, LsqWeightQuantizer, QuantMode

__all__ = ["ConvBNAct", "QuantLinear", "SqueezeExcite", "make_act", "strip_fake_quant", "attach_lsq"]

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

