"""``mbv3``: a MobileNetV3 / once-for-all style space with per-block bit-widths.

Per stage: depth (leading blocks), optionally width; per block: depthwise kernel {3, 5, 7}, expand
ratio {3, 4, 6}, weight and activation bits. Squeeze-excite and the activation (ReLU or hard-swish)
are fixed per stage, as in MobileNetV3-Large. Defaults suit 32×32 inputs; set ``image_size``,
``stem_stride`` and ``stage_strides`` for 8×8 or 28×28 (see experiments/).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .blocks import ACTIVATIONS, BlockSpec, make_divisible
from .cnn import StagedCnnSpace, check_int, check_option, int_tuple
from .genome import Gene, Genome
from .registry import register_space

__all__ = ["MobileNetV3Space"]


@register_space("mbv3")
class MobileNetV3Space(StagedCnnSpace):
    """MobileNetV3-like inverted-residual space (elastic depth, kernel, expand, width, bits)."""

    def __init__(self, *, in_channels: int = 3, num_classes: int = 10, image_size: int = 32,
                 resolutions: Sequence[int] | None = None, stem_channels: int = 16, stem_stride: int = 1,
                 stage_channels: Sequence[int] = (24, 40, 80, 112, 160),
                 stage_strides: Sequence[int] = (1, 2, 2, 1, 2),
                 stage_se: Sequence[bool] = (False, True, False, True, True),
                 stage_act: Sequence[str] = ("relu", "relu", "hswish", "hswish", "hswish"),
                 depths: Sequence[int] = (2, 3, 4), kernels: Sequence[int] = (3, 5, 7),
                 expands: Sequence[int] = (3, 4, 6), width_mults: Sequence[float] = (1.0,),
                 head_channels: int = 640, w_bits: Sequence[int] = (4, 6, 8), a_bits: Sequence[int] = (4, 6, 8),
                 first_last_bits: int = 8, search_granularity: bool = False, search_symmetry: bool = False) -> None:
        n = len(int_tuple("stage_channels", stage_channels))
        check_option("stage_se", isinstance(stage_se, (list, tuple)) and len(stage_se) == n and all(
            isinstance(v, bool) for v in stage_se), stage_se, f"{n} booleans (one per stage)")
        check_option("stage_act", isinstance(stage_act, (list, tuple)) and len(stage_act) == n and all(
            a in ACTIVATIONS for a in stage_act), stage_act, f"{n} activations from {ACTIVATIONS}")
        self.stage_se, self.stage_act = tuple(stage_se), tuple(stage_act)
        self.kernels = tuple(sorted(int_tuple("kernels", kernels, allowed=(3, 5, 7))))
        self.expands = tuple(sorted(int_tuple("expands", expands)))
        self.head_channels = check_int("head_channels", head_channels, 0)  # 0: no head conv
        super().__init__(in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                         resolutions=resolutions, stem_channels=stem_channels, stem_stride=stem_stride,
                         stage_channels=stage_channels, stage_strides=stage_strides, depths=depths,
                         width_mults=width_mults, w_bits=w_bits, a_bits=a_bits, first_last_bits=first_last_bits,
                         search_granularity=search_granularity, search_symmetry=search_symmetry)

    def options(self) -> dict[str, Any]:
        return {**self._common_options(), "stage_se": list(self.stage_se), "stage_act": list(self.stage_act),
                "kernels": list(self.kernels), "expands": list(self.expands), "head_channels": self.head_channels}

    def _block_arch_genes(self, prefix: str, active_if: tuple[str, int]) -> list[Gene]:
        return [Gene(f"{prefix}.kernel", self.kernels, "arch", active_if),
                Gene(f"{prefix}.expand", self.expands, "arch", active_if)]

    def _block(self, genome: Genome, prefix: str, stage: int, first: bool, in_size: int, in_ch: int,
               out_ch: int, stride: int, quant: dict[str, Any]) -> BlockSpec:
        identity = stride == 1 and in_ch == out_ch
        return BlockSpec("mbconv", in_size, in_ch, out_ch, kernel=int(genome[f"{prefix}.kernel"]), stride=stride,
                         mid_ch=make_divisible(in_ch * int(genome[f"{prefix}.expand"]), 8),
                         se=self.stage_se[stage], act=self.stage_act[stage],
                         shortcut="identity" if identity else "none", slot=prefix, **quant)

    def _stem_act(self) -> str:
        return "hswish"

    def _head(self, in_size: int, in_ch: int) -> BlockSpec:
        flb = self.first_last_bits
        return BlockSpec("head", in_size, in_ch, self.num_classes, mid_ch=self.head_channels, act="hswish",
                         w_bits=flb, a_bits=flb, slot="head")
