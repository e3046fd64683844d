"""SpaceEvo's meta-space: search spaces as points, written ``MACRO-BLOCKS-WINDOWS``.

A *macro-architecture* fixes the stem, the stages (channel list, stride, width-window size), the depth
choices and the head. A *candidate space* picks, per stage, one block type and one width window (a
contiguous slice of the stage's channel list). ``c10-1234-0120`` reads: macro ``c10``; stage 1 uses
block type 1 (MBv2), stage 2 type 2 (MBv3+SE), ...; stage 1 the window starting at channel index 0,
stage 2 at index 1, ... Every candidate is an ordinary qnas space: ``get_space("spaceevo",
candidate="c10-1234-0120")`` (elastic depth, width inside the window, kernel and expand per block).

Block types (digit: name, op, activation, SE, kernel and expand choices):

- 0 MBv1-dual: ``dsconv_dual``, relu (two depthwise-separable convs, residual).
- 1 MBv2: ``mbconv``, relu, no SE; mid = in × expand.
- 2 MBv3+SE: ``mbconv``, hswish, SE; mid = in × expand.
- 3 ResNet: ``bottleneck``, relu, no SE; mid = out × expand.
- 4 ResNet+SE: ``bottleneck``, relu, SE.
- 5 FusedMBConv: ``fused_mbconv``, relu (EfficientNetV2 uses SiLU; qnas blocks know relu and hswish).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .blocks import BlockSpec, make_divisible
from .cnn import StagedCnnSpace, check_int
from .errors import InputError, nearest
from .genome import Gene, Genome
from .registry import register_space

__all__ = ["BlockType", "StageDef", "MacroArch", "BLOCK_TYPES", "MACROS", "CandidateSpace", "parse_candidate",
           "uniform_candidates", "all_combos", "stage_block", "stage_input_sizes", "SpaceEvoSpace"]


@dataclass(frozen=True)
class BlockType:
    """One block type of the meta-space and its per-block choices."""

    name: str
    op: str
    act: str
    se: bool
    kernels: tuple[int, ...]
    expands: tuple[float, ...]


BLOCK_TYPES: tuple[BlockType, ...] = (
    BlockType("MBv1-dual", "dsconv_dual", "relu", False, (3, 5), (1.0,)),
    BlockType("MBv2", "mbconv", "relu", False, (3, 5), (3.0, 4.0, 6.0)),
    BlockType("MBv3+SE", "mbconv", "hswish", True, (3, 5), (3.0, 4.0, 6.0)),
    BlockType("ResNet", "bottleneck", "relu", False, (3,), (0.5, 1.0, 1.5)),
    BlockType("ResNet+SE", "bottleneck", "relu", True, (3,), (0.5, 1.0, 1.5)),
    BlockType("FusedMBConv", "fused_mbconv", "relu", False, (3,), (1.0, 2.0, 3.0)),
)
"""Dense k×k convs (ResNet, FusedMBConv) keep kernel 3 only (SpaceEvo adds 5 and 7): on two shared CPU cores
5×5 dense convs would dominate the training budget of every candidate's supernet."""
_LEGEND = ", ".join(f"{i}={t.name}" for i, t in enumerate(BLOCK_TYPES))


@dataclass(frozen=True)
class StageDef:
    """A stage of the macro-architecture: its channel list, stride and width-window size."""

    channels: tuple[int, ...]
    stride: int
    window: int

    @property
    def n_windows(self) -> int:
        return len(self.channels) - self.window + 1

    def widths(self, start: int) -> tuple[int, ...]:
        """The width window starting at channel index ``start``."""
        return self.channels[start:start + self.window]


@dataclass(frozen=True)
class MacroArch:
    """Everything a candidate space does not choose."""

    name: str
    stem_channels: int
    stem_stride: int
    stages: tuple[StageDef, ...]
    depths: tuple[int, ...]
    head_channels: int

    def teacher_widths(self) -> tuple[int, ...]:
        """Output width of each teacher stage (the widest channel): the student stages read these."""
        return tuple(s.channels[-1] for s in self.stages)


MACROS: dict[str, MacroArch] = {m.name: m for m in (
    # CIFAR-10, 32x32: stem stride 2 -> 16x16, 8x8, 4x4, 4x4 (a stride-2 last stage would leave 2x2).
    # Depth 1-2 per stage: on two shared CPU cores every candidate's supernet must train in minutes.
    MacroArch("c10", 16, 2, (StageDef((16, 24, 32), 1, 2), StageDef((24, 32, 40, 48), 2, 2),
                             StageDef((48, 64, 80, 96), 2, 2), StageDef((64, 96, 128, 160), 1, 2)),
              (1, 2), 192),
    # Tiny 8x8 inputs, for tests.
    MacroArch("tiny", 8, 1, (StageDef((8, 16, 24), 1, 2), StageDef((16, 24, 32), 2, 2)), (1, 2), 32),
)}


@dataclass(frozen=True)
class CandidateSpace:
    """A point of the meta-space: macro name, block-type digit and window start per stage."""

    macro: str
    blocks: tuple[int, ...]
    windows: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.macro}-{''.join(map(str, self.blocks))}-{''.join(map(str, self.windows))}"

    @property
    def arch(self) -> MacroArch:
        return MACROS[self.macro]

    def combos(self) -> list[tuple[int, int, int]]:
        """(stage, block type, window) of every stage: the lookup-table entries this space needs."""
        return list(zip(range(len(self.blocks)), self.blocks, self.windows))

    def describe(self) -> str:
        return " | ".join(f"s{i + 1} {BLOCK_TYPES[b].name} {list(self.arch.stages[i].widths(w))}"
                          for i, b, w in self.combos())

    def mutated(self, rng: np.random.Generator) -> CandidateSpace:
        """SpaceEvo's mutation: one stage gets another block type, one stage another width window."""
        blocks, windows = list(self.blocks), list(self.windows)
        i = int(rng.integers(len(blocks)))
        blocks[i] = _other(blocks[i], len(BLOCK_TYPES), rng)
        j = int(rng.integers(len(windows)))
        windows[j] = _other(windows[j], self.arch.stages[j].n_windows, rng)
        return CandidateSpace(self.macro, tuple(blocks), tuple(windows))


def _other(value: int, n: int, rng: np.random.Generator) -> int:
    choices = [c for c in range(n) if c != value]
    return choices[int(rng.integers(len(choices)))] if choices else value


def _digits(part: str, start: int, allowed: Sequence[int], what: str, source: str | None, field: str,
            stage: int = 0) -> tuple[int, ...]:
    """Parse one digit per stage; a bad one names its 1-based position and the allowed digits."""
    out = []
    for i, ch in enumerate(part):
        if not ch.isdigit() or int(ch) not in allowed:
            legend = f" ({_LEGEND})" if what == "block type" else " (start of the window in the channel list)"
            span = f"{min(allowed)}-{max(allowed)}" if len(allowed) > 1 else f"{min(allowed)}"
            raise InputError(f"position {start + i} ({ch!r}): the {what} of stage s{stage + i + 1} must be a digit "
                             f"{span}{legend}", source=source, field=field)
        out.append(int(ch))
    return tuple(out)


def parse_candidate(text: Any, *, source: str | None = None, field: str = "candidate") -> CandidateSpace:
    """Parse ``MACRO-BLOCKS-WINDOWS`` (e.g. ``c10-1234-0120``), naming the position of the first bad digit."""
    form = "MACRO-BLOCKS-WINDOWS, e.g. 'c10-1111-0000'"
    if not isinstance(text, str) or text.count("-") != 2:
        raise InputError(f"expected a candidate space written {form}, got {text!r}", source=source, field=field)
    macro_name, blocks, windows = text.split("-")
    if macro_name not in MACROS:
        raise InputError(f"unknown macro-architecture {macro_name!r}{nearest(macro_name, MACROS)} "
                         f"(known: {sorted(MACROS)})", source=source, field=field)
    macro, n = MACROS[macro_name], len(MACROS[macro_name].stages)
    parts = (("blocks", blocks, len(macro_name) + 2), ("windows", windows, len(text) - len(windows) + 1))
    for label, digits, at in parts:
        if len(digits) != n:
            raise InputError(f"the {label} part {digits!r} (from position {at}) has {len(digits)} digits; macro "
                             f"{macro_name!r} has {n} stages, one digit each", source=source, field=field)
    parsed_blocks = _digits(blocks, len(macro_name) + 2, range(len(BLOCK_TYPES)), "block type", source, field)
    start = len(macro_name) + n + 3
    parsed_windows = tuple(_digits(windows[i], start + i, range(s.n_windows), "width window", source, field, i)[0]
                           for i, s in enumerate(macro.stages))
    return CandidateSpace(macro_name, parsed_blocks, parsed_windows)


def uniform_candidates(macro: str) -> list[CandidateSpace]:
    """SpaceEvo's seeds: one block type in every stage, the same window index everywhere (clipped)."""
    arch = MACROS[macro]
    n_win = max(s.n_windows for s in arch.stages)
    return [CandidateSpace(macro, (t,) * len(arch.stages), tuple(min(j, s.n_windows - 1) for s in arch.stages))
            for t in range(len(BLOCK_TYPES)) for j in range(n_win)]


def all_combos(macro: str) -> list[tuple[int, int, int]]:
    """Every (stage, block type, window) of a macro-architecture (what a complete lookup table covers)."""
    arch = MACROS[macro]
    return [(i, t, w) for i, s in enumerate(arch.stages) for t in range(len(BLOCK_TYPES)) for w in range(s.n_windows)]


def stage_block(btype: BlockType, *, in_size: int, in_ch: int, out_ch: int, stride: int, first: bool, kernel: int,
                expand: float, slot: str = "", w_bits: int = 8, a_bits: int = 8) -> BlockSpec:
    """The block of type ``btype``; shared by candidate spaces and the block-wise distillation."""
    identity = stride == 1 and in_ch == out_ch
    mid, shortcut = 0, "identity" if identity else "none"
    if btype.op in ("mbconv", "fused_mbconv"):
        mid = make_divisible(in_ch * expand, 8)
    elif btype.op == "bottleneck":
        mid = make_divisible(out_ch * expand, 8)
    if btype.op in ("bottleneck", "dsconv_dual"):  # first block always projects: its width varies per subnet
        shortcut = "proj" if first or not identity else "identity"
    return BlockSpec(btype.op, in_size, in_ch, out_ch, kernel=kernel, stride=stride, mid_ch=mid, se=btype.se,
                     act=btype.act, shortcut=shortcut, w_bits=w_bits, a_bits=a_bits, slot=slot)


@register_space("spaceevo")
class SpaceEvoSpace(StagedCnnSpace):
    """One candidate of the meta-space as an ordinary space (elastic depth, width, kernel, expand)."""

    def __init__(self, *, candidate: str = "c10-1111-1111", in_channels: int = 3, num_classes: int = 10,
                 image_size: int = 32, w_bits: Sequence[int] = (8,), a_bits: Sequence[int] = (8,),
                 first_last_bits: int = 8) -> None:
        self.candidate = parse_candidate(candidate, field="search_space.options.candidate")
        self.arch = self.candidate.arch
        self.types = tuple(BLOCK_TYPES[b] for b in self.candidate.blocks)
        self.windows = tuple(s.widths(w) for s, w in zip(self.arch.stages, self.candidate.windows))
        n = len(self.windows)
        check_int("image_size", image_size)
        # Widths come from the windows (stage_widths below); the base class only validates this placeholder.
        super().__init__(in_channels=in_channels, num_classes=num_classes, image_size=image_size, resolutions=None,
                         stem_channels=self.arch.stem_channels, stem_stride=self.arch.stem_stride,
                         stage_channels=list(range(1, n + 1)), stage_strides=[s.stride for s in self.arch.stages],
                         depths=self.arch.depths, width_mults=(1.0,), w_bits=w_bits, a_bits=a_bits,
                         first_last_bits=first_last_bits, search_granularity=False, search_symmetry=False)
        self.stage_channels = tuple(w[-1] for w in self.windows)

    def options(self) -> dict[str, Any]:
        return {"candidate": str(self.candidate), "in_channels": self.in_channels, "num_classes": self.num_classes,
                "image_size": self.image_size, "w_bits": list(self.w_bits), "a_bits": list(self.a_bits),
                "first_last_bits": self.first_last_bits}

    def stage_widths(self, stage: int) -> tuple[int, ...]:
        return self.windows[stage]

    def _block_arch_genes(self, prefix: str, active_if: tuple[str, int]) -> list[Gene]:
        btype = self.types[int(prefix[1:prefix.index(".")]) - 1]
        genes = [Gene(f"{prefix}.kernel", btype.kernels, "arch", active_if)]
        if len(btype.expands) > 1:
            genes.append(Gene(f"{prefix}.expand", btype.expands, "arch", active_if))
        return genes

    def _block(self, genome: Genome, prefix: str, stage: int, first: bool, in_size: int, in_ch: int,
               out_ch: int, stride: int, quant: dict[str, Any]) -> BlockSpec:
        btype = self.types[stage]
        expand = float(genome[f"{prefix}.expand"]) if len(btype.expands) > 1 else btype.expands[0]
        return stage_block(btype, in_size=in_size, in_ch=in_ch, out_ch=out_ch, stride=stride, first=first,
                           kernel=int(genome[f"{prefix}.kernel"]), expand=expand, slot=prefix, **quant)

    def _stem_act(self) -> str:
        return "relu"

    def _head(self, in_size: int, in_ch: int) -> BlockSpec:
        flb = self.first_last_bits
        return BlockSpec("head", in_size, in_ch, self.num_classes, mid_ch=self.arch.head_channels, act="relu",
                         w_bits=flb, a_bits=flb, slot="head")


def stage_input_sizes(arch: MacroArch, image_size: int) -> tuple[int, ...]:
    """Input resolution of every stage for ``image_size`` inputs."""
    size, out = math.ceil(image_size / arch.stem_stride), []
    for stage in arch.stages:
        out.append(size)
        size = math.ceil(size / stage.stride)
    return tuple(out)
