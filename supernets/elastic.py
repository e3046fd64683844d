"""Elastic (weight-sharing) layers: any leading-channel / centre-kernel slice of the largest layer.

Each elastic layer runs the configuration it is *given* (no stored "active" flags) and can build
the equivalent static layer (:mod:`supernets.static`) with the sliced weights copied in and its
quantizers frozen. Weights are shared by all bit-widths; each layer keeps one LSQ step (and zero
point) per bit-width and quantization mode (EQ-Net).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_spaces.blocks import se_channels

from .distributed import sync_batch_norm, sync_group
from .quant import LsqActQuantizer, LsqWeightQuantizer, QuantMode
from .static import ConvBNAct, QuantLinear, SqueezeExcite, make_act

__all__ = ["ElasticConvBNAct", "ElasticLinear", "ElasticSE", "act_modes"]


def act_modes(bits: Sequence[int]) -> list[QuantMode]:
    """Activation modes: per-tensor, asymmetric with an integer zero point (SpaceEvo's [0, 255])."""
    return [QuantMode(b, "tensor", symmetric=False) for b in sorted(set(bits))]


def _elastic_bn(bn: nn.BatchNorm2d, y: Tensor, training: bool) -> Tensor:
    """BatchNorm over the leading ``C`` channels; running statistics are updated in place (views)."""
    c = y.shape[1]
    factor = 0.0
    if training:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    world = sync_group() if training else None
    if world is not None:  # several training processes: statistics of the global batch
        return sync_batch_norm(y, bn.weight[:c], bn.bias[:c], bn.running_mean[:c], bn.running_var[:c],
                               momentum=factor, eps=bn.eps, world=world)
    return F.batch_norm(y, bn.running_mean[:c], bn.running_var[:c], bn.weight[:c], bn.bias[:c],
                        training, factor, bn.eps)


class ElasticConvBNAct(nn.Module):
    """quant → conv → BN → act with elastic input/output channels and centre-cropped kernel."""

    def __init__(self, max_in: int, max_out: int, max_kernel: int = 1, stride: int = 1, *, depthwise: bool = False,
                 act: str | None = None, bn: bool = True, bias: bool = False,
                 w_modes: Sequence[QuantMode], a_modes: Sequence[QuantMode]) -> None:
        super().__init__()
        groups = max_in if depthwise else 1
        self.conv = nn.Conv2d(max_in, max_out, max_kernel, stride, max_kernel // 2, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(max_out) if bn else None
        self.act_name, self.depthwise = act, depthwise
        self.act = make_act(act)
        self.w_quant = LsqWeightQuantizer(out_channels=max_out, modes=w_modes)
        self.a_quant = LsqActQuantizer(modes=a_modes, unsigned=False)

    def sliced_weight(self, in_ch: int, out_ch: int, kernel: int) -> Tensor:
        """The leading ``out_ch × in_ch`` filters, centre-cropped to ``kernel``."""
        w = self.conv.weight[:out_ch, : (1 if self.depthwise else in_ch)]  # (out, in/groups, K, K)
        big = w.shape[-1]
        if kernel != big:
            start = (big - kernel) // 2
            w = w[:, :, start:start + kernel, start:start + kernel]
        return w.contiguous()

    def forward(self, x: Tensor, out_ch: int, kernel: int, w_mode: QuantMode, a_mode: QuantMode) -> Tensor:
        in_ch = x.shape[1]  # (B, in_ch, H, W)
        if self.depthwise:
            out_ch = in_ch
        w = self.w_quant(self.sliced_weight(in_ch, out_ch, kernel), w_mode)
        bias = None if self.conv.bias is None else self.conv.bias[:out_ch]
        y = F.conv2d(self.a_quant(x, a_mode), w, bias, self.conv.stride, kernel // 2,
                     groups=in_ch if self.depthwise else 1)  # (B, out_ch, H/s, W/s)
        if self.bn is not None:
            y = _elastic_bn(self.bn, y, self.training)
        return self.act(y)

    @torch.no_grad()
    def extract(self, in_ch: int, out_ch: int, kernel: int, w_mode: QuantMode, a_mode: QuantMode) -> ConvBNAct:
        """Static layer computing exactly what :meth:`forward` computes for this configuration."""
        if self.depthwise:
            out_ch = in_ch
        static = ConvBNAct(in_ch, out_ch, kernel, self.conv.stride[0], groups=in_ch if self.depthwise else 1,
                           act=self.act_name, bn=self.bn is not None, bias=self.conv.bias is not None)
        static.conv.weight.copy_(self.w_quant(self.sliced_weight(in_ch, out_ch, kernel), w_mode))
        if self.conv.bias is not None:
            static.conv.bias.copy_(self.conv.bias[:out_ch])
        if self.bn is not None:
            _copy_bn(self.bn, static.bn, out_ch)
        static.quant = self.a_quant.frozen(a_mode)
        return static

    @torch.no_grad()
    def permute_out(self, perm: Tensor) -> None:
        """Reorder output channels (filters, bias, BN, per-channel steps) by ``perm``."""
        self.conv.weight.copy_(self.conv.weight[perm])
        if self.conv.bias is not None:
            self.conv.bias.copy_(self.conv.bias[perm])
        if self.bn is not None:
            for t in (self.bn.weight, self.bn.bias, self.bn.running_mean, self.bn.running_var):
                t.copy_(t[perm])
        self.w_quant.permute_channels(perm)

    @torch.no_grad()
    def permute_in(self, perm: Tensor) -> None:
        """Reorder input channels (a no-op for depthwise convs, whose channels move with the output)."""
        if not self.depthwise:
            self.conv.weight.copy_(self.conv.weight[:, perm])


def _copy_bn(src: nn.BatchNorm2d, dst: nn.Module, c: int) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).copy_(getattr(src, name)[:c])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


class ElasticLinear(nn.Module):
    """quant → linear with elastic input features (the classifier)."""

    def __init__(self, max_in: int, out_features: int, *, w_modes: Sequence[QuantMode],
                 a_modes: Sequence[QuantMode]) -> None:
        super().__init__()
        self.linear = nn.Linear(max_in, out_features)
        self.w_quant = LsqWeightQuantizer(out_channels=out_features, modes=w_modes)
        self.a_quant = LsqActQuantizer(modes=a_modes, unsigned=False)

    def forward(self, x: Tensor, w_mode: QuantMode, a_mode: QuantMode) -> Tensor:  # (B, in) -> (B, out)
        w = self.w_quant(self.linear.weight[:, : x.shape[1]].contiguous(), w_mode)
        return F.linear(self.a_quant(x, a_mode), w, self.linear.bias)

    @torch.no_grad()
    def extract(self, in_features: int, w_mode: QuantMode, a_mode: QuantMode) -> QuantLinear:
        static = QuantLinear(in_features, self.linear.out_features)
        static.linear.weight.copy_(self.w_quant(self.linear.weight[:, :in_features].contiguous(), w_mode))
        static.linear.bias.copy_(self.linear.bias)
        static.quant = self.a_quant.frozen(a_mode)
        return static


class ElasticSE(nn.Module):
    """Squeeze-excite on elastic channels; the reduced width follows the active channels."""

    def __init__(self, max_channels: int, *, w_modes: Sequence[QuantMode], a_modes: Sequence[QuantMode]) -> None:
        super().__init__()
        r = se_channels(max_channels)
        self.reduce = ElasticConvBNAct(max_channels, r, act="relu", bn=False, bias=True, w_modes=w_modes,
                                       a_modes=a_modes)
        self.expand = ElasticConvBNAct(r, max_channels, bn=False, bias=True, w_modes=w_modes, a_modes=a_modes)
        self.gate = make_act("hsigmoid")

    def forward(self, x: Tensor, w_mode: QuantMode, a_mode: QuantMode) -> Tensor:  # (B, C, H, W)
        c = x.shape[1]
        s = F.adaptive_avg_pool2d(x, 1)  # (B, C, 1, 1)
        s = self.reduce(s, se_channels(c), 1, w_mode, a_mode)
        return x * self.gate(self.expand(s, c, 1, w_mode, a_mode))

    def extract(self, c: int, w_mode: QuantMode, a_mode: QuantMode) -> SqueezeExcite:
        r = se_channels(c)
        static = SqueezeExcite(c, r)
        static.reduce = self.reduce.extract(c, r, 1, w_mode, a_mode)
        static.expand = self.expand.extract(r, c, 1, w_mode, a_mode)
        return static

    @torch.no_grad()
    def permute_channels(self, perm: Tensor) -> None:
        """Follow a reordering of the gated channels."""
        self.reduce.permute_in(perm)
        self.expand.permute_out(perm)
