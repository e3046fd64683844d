"""``resnet``: a once-for-all ResNet style space of bottleneck blocks with per-block bit-widths.

Per stage: depth (leading blocks) and width (base width × multiplier); per block: bottleneck expand
ratio (mid channels = width × ratio) and weight/activation bits. The first block of every stage has
a projection shortcut (avg-pool for the stride, then 1×1 conv), the others an identity shortcut.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .blocks import BlockSpec, make_divisible
from .cnn import StagedCnnSpace, check_option, float_tuple
from .genome import Gene, Genome
from .registry import register_space

__all__ = ["ResNetSpace"]


@register_space("resnet")
class ResNetSpace(StagedCnnSpace):
    """ResNet bottleneck space (elastic depth, expand ratio, width multiplier, bits)."""

    def __init__(self, *, in_channels: int = 3, num_classes: int = 10, image_size: int = 32,
                 resolutions: Sequence[int] | None = None, stem_channels: int = 32, stem_stride: int = 1,
                 stage_channels: Sequence[int] = (64, 128, 256, 512), stage_strides: Sequence[int] = (1, 2, 2, 2),
                 depths: Sequence[int] = (1, 2, 3), expands: Sequence[float] = (0.2, 0.25, 0.35),
                 width_mults: Sequence[float] = (0.65, 0.8, 1.0), kernel: int = 3, se: bool = False,
                 w_bits: Sequence[int] = (4, 6, 8), a_bits: Sequence[int] = (4, 6, 8), first_last_bits: int = 8,
                 search_granularity: bool = False, search_symmetry: bool = False) -> None:
        self.expands = float_tuple("expands", expands)
        check_option("kernel", isinstance(kernel, int) and not isinstance(kernel, bool) and kernel in (1, 3, 5, 7),
                     kernel, "one of 1, 3, 5, 7")
        check_option("se", isinstance(se, bool), se, "true or false")
        self.kernel, self.se = kernel, se
        super().__init__(in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                         resolutions=resolutions, stem_channels=stem_channels, stem_stride=stem_stride,
                         stage_channels=stage_channels, stage_strides=stage_strides, depths=depths,
                         width_mults=width_mults, w_bits=w_bits, a_bits=a_bits, first_last_bits=first_last_bits,
                         search_granularity=search_granularity, search_symmetry=search_symmetry)

    def options(self) -> dict[str, Any]:
        return {**self._common_options(), "expands": list(self.expands), "kernel": self.kernel, "se": self.se}

    def _block_arch_genes(self, prefix: str, active_if: tuple[str, int]) -> list[Gene]:
        return [Gene(f"{prefix}.expand", self.expands, "arch", active_if)]

    def _block(self, genome: Genome, prefix: str, stage: int, first: bool, in_size: int, in_ch: int,
               out_ch: int, stride: int, quant: dict[str, Any]) -> BlockSpec:
        mid = make_divisible(out_ch * float(genome[f"{prefix}.expand"]), 8)
        return BlockSpec("bottleneck", in_size, in_ch, out_ch, kernel=self.kernel, stride=stride, mid_ch=mid,
                         se=self.se, act="relu", shortcut="proj" if first else "identity", slot=prefix, **quant)

    def _stem_act(self) -> str:
        return "relu"

    def _head(self, in_size: int, in_ch: int) -> BlockSpec:
        flb = self.first_last_bits
        return BlockSpec("head", in_size, in_ch, self.num_classes, mid_ch=0, act="relu", w_bits=flb, a_bits=flb,
                         slot="head")
