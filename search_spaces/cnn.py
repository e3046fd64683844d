"""Shared skeleton of the CNN spaces: stem → stages (elastic depth and width) → head.

A stage of depth ``d`` runs its first ``d`` blocks (once-for-all's elastic depth). Each block carries
its own quantization genes (weight and activation bits, optionally weight granularity and
symmetry); the stem and head are held at ``first_last_bits`` as is customary.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

from .blocks import BlockSpec, make_divisible
from .errors import InputError, shown
from .genome import Gene, Genome
from .space import SearchSpace

__all__ = ["StagedCnnSpace", "BITS_ALLOWED", "MAX_CHOICES", "UPPER_BOUNDS"]

BITS_ALLOWED = (2, 3, 4, 5, 6, 8, 32)

MAX_CHOICES = 64
"""Most values in one option list: the choices of one gene, or one entry per stage."""

UPPER_BOUNDS: dict[str, int] = {
    "image_size": 4096, "resolutions": 4096, "in_channels": 4096, "stem_channels": 8192, "stage_channels": 8192,
    "head_channels": 8192, "num_classes": 100_000, "stem_stride": 8, "depths": 64, "expands": 16, "width_mults": 8,
    "hidden": 8192, "heads": 64, "num_layers": 64, "in_features": 1_000_000, "num_nodes": 10**9,
    "num_edges": 10**10,
}
"""Largest value of each size option of the built-in spaces: larger ones are typos, and would make
``qnas validate``, profiling or training exhaust memory or run for days. Messages state the bound."""


def check_option(name: str, ok: bool, got: Any, expected: str) -> None:
    """Raise the standard error for a bad space option."""
    if not ok:
        raise InputError(f"got {shown(got)}, expected {expected}", field=f"search_space.options.{name}")


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """An integer option between ``minimum`` and its :data:`UPPER_BOUNDS` entry (when it has one)."""
    top = UPPER_BOUNDS.get(name)
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum and (top is None or value <= top)
    kind = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer of at least {minimum}")
    check_option(name, ok, value, kind if top is None else f"{kind} (at most {top})")
    return int(value)


def check_list(name: str, values: Any) -> None:
    """A non-empty list of at most :data:`MAX_CHOICES` values."""
    if isinstance(values, (list, tuple)) and len(values) > MAX_CHOICES:
        raise InputError(f"got a list of {len(values)} values, expected at most {MAX_CHOICES}",
                         field=f"search_space.options.{name}")
    check_option(name, isinstance(values, (list, tuple)) and len(values) > 0, values, "a non-empty list")


def int_tuple(name: str, values: Any, *, minimum: int = 1, allowed: Sequence[int] | None = None) -> tuple[int, ...]:
    """Validate a non-empty list of integers (>= minimum and within :data:`UPPER_BOUNDS`, or within ``allowed``)
    and make it a tuple."""
    check_list(name, values)
    check_option(name, all(isinstance(v, int) and not isinstance(v, bool) for v in values), values,
                 "a non-empty list of integers")
    if allowed is not None:
        check_option(name, all(v in allowed for v in values), values, f"values from {list(allowed)}")
    else:
        top = UPPER_BOUNDS.get(name)
        check_option(name, all(minimum <= v <= (top or v) for v in values), values,
                     f"integers >= {minimum}" if top is None else f"integers in {minimum}..{top}")
    check_option(name, len(set(values)) == len(values), values, "no repeated values")
    return tuple(values)


def float_tuple(name: str, values: Any) -> tuple[float, ...]:
    """Validate a non-empty list of positive finite numbers (within :data:`UPPER_BOUNDS`) and make it a sorted
    tuple."""
    check_list(name, values)
    top = UPPER_BOUNDS.get(name, math.inf)
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= top
             and (not isinstance(v, float) or math.isfinite(v)) for v in values)
    check_option(name, ok, values, "a non-empty list of positive finite numbers"
                 + (f" up to {top}" if top < math.inf else ""))
    return tuple(sorted(float(v) for v in values))


class StagedCnnSpace(SearchSpace):
    """Stem → stages of blocks → head; subclasses define the blocks' own genes and structure."""

    def __init__(self, *, in_channels: int, num_classes: int, image_size: int, resolutions: Sequence[int] | None,
                 stem_channels: int, stem_stride: int, stage_channels: Sequence[int], stage_strides: Sequence[int],
                 depths: Sequence[int], width_mults: Sequence[float], w_bits: Sequence[int], a_bits: Sequence[int],
                 first_last_bits: int, search_granularity: bool, search_symmetry: bool) -> None:
        for name, value in (("in_channels", in_channels), ("image_size", image_size),
                            ("stem_channels", stem_channels), ("stem_stride", stem_stride)):
            check_int(name, value)
        check_int("num_classes", num_classes, 2)
        check_option("first_last_bits", first_last_bits in BITS_ALLOWED, first_last_bits, f"one of {BITS_ALLOWED}")
        self.in_channels, self.num_classes, self.image_size = in_channels, num_classes, image_size
        self.resolutions = None if resolutions is None else tuple(sorted(int_tuple("resolutions", resolutions)))
        self.stem_channels, self.stem_stride = stem_channels, stem_stride
        self.stage_channels = int_tuple("stage_channels", stage_channels)
        strides_ok = isinstance(stage_strides, (list, tuple)) and len(stage_strides) == len(self.stage_channels) \
            and all(isinstance(s, int) and not isinstance(s, bool) and s in (1, 2) for s in stage_strides)
        check_option("stage_strides", strides_ok, stage_strides, f"{len(self.stage_channels)} strides, each 1 or 2")
        self.stage_strides = tuple(stage_strides)
        self.depths = tuple(sorted(int_tuple("depths", depths)))
        self.width_mults = float_tuple("width_mults", width_mults)
        self.w_bits = tuple(sorted(int_tuple("w_bits", w_bits, allowed=BITS_ALLOWED)))
        self.a_bits = tuple(sorted(int_tuple("a_bits", a_bits, allowed=BITS_ALLOWED)))
        self.first_last_bits = first_last_bits
        self.search_granularity, self.search_symmetry = bool(search_granularity), bool(search_symmetry)
        super().__init__()

    # ---- per-space hooks ------------------------------------------------------------------------
    @abstractmethod
    def _block_arch_genes(self, prefix: str, active_if: tuple[str, int]) -> list[Gene]:
        """Architecture genes of one block (named ``prefix + ".kernel"`` and so on)."""

    @abstractmethod
    def _block(self, genome: Genome, prefix: str, stage: int, first: bool, in_size: int, in_ch: int,
               out_ch: int, stride: int, quant: dict[str, Any]) -> BlockSpec:
        """The block at ``prefix`` for ``genome``."""

    @abstractmethod
    def _stem_act(self) -> str: ...

    @abstractmethod
    def _head(self, in_size: int, in_ch: int) -> BlockSpec: ...

    def _common_options(self) -> dict[str, Any]:
        return {"in_channels": self.in_channels, "num_classes": self.num_classes, "image_size": self.image_size,
                "resolutions": None if self.resolutions is None else list(self.resolutions),
                "stem_channels": self.stem_channels, "stem_stride": self.stem_stride,
                "stage_channels": list(self.stage_channels), "stage_strides": list(self.stage_strides),
                "depths": list(self.depths), "width_mults": list(self.width_mults), "w_bits": list(self.w_bits),
                "a_bits": list(self.a_bits), "first_last_bits": self.first_last_bits,
                "search_granularity": self.search_granularity, "search_symmetry": self.search_symmetry}

    # ---- genes ---------------------------------------------------------------------------------
    def stage_widths(self, stage: int) -> tuple[int, ...]:
        """Channel choices of a stage (0-based): its base width times each width multiplier."""
        return tuple(sorted({make_divisible(self.stage_channels[stage] * m, 8) for m in self.width_mults}))

    def _declare_genes(self) -> list[Gene]:
        genes: list[Gene] = []
        if self.resolutions is not None and len(self.resolutions) > 1:
            genes.append(Gene("resolution", self.resolutions))
        for i in range(len(self.stage_channels)):
            stage = f"s{i + 1}"
            genes.append(Gene(f"{stage}.depth", self.depths))
            if len(self.stage_widths(i)) > 1:
                genes.append(Gene(f"{stage}.width", self.stage_widths(i)))
            for j in range(max(self.depths)):
                prefix, active = f"{stage}.b{j + 1}", (f"{stage}.depth", j + 1)
                genes += self._block_arch_genes(prefix, active)
                genes += self._block_quant_genes(prefix, active)
        return genes

    def _block_quant_genes(self, prefix: str, active_if: tuple[str, int]) -> list[Gene]:
        genes = [Gene(f"{prefix}.w_bits", self.w_bits, "quant", active_if),
                 Gene(f"{prefix}.a_bits", self.a_bits, "quant", active_if)]
        if self.search_granularity:
            genes.append(Gene(f"{prefix}.w_granularity", ("tensor", "channel"), "quant", active_if))
        if self.search_symmetry:
            genes.append(Gene(f"{prefix}.w_symmetry", ("asymmetric", "symmetric"), "quant", active_if))
        return genes

    def feature_interactions(self) -> list[tuple[str, str]]:
        """(depth of stage k, activation bits of stage k+1's first block): that block quantizes the output
        of stage k's *last* block, which the depth picks, and a weight-sharing supernet learns one
        activation scale for all of them, so the damage of low activation bits depends on the depth
        before. On the CIFAR-10 supernet the pair was the largest structure left in the ensemble's
        residuals, and the joint feature ranks held-out subnets better at every sample size (BENCHMARKS.md,
        ``predictor_benchmark.py``)."""
        if len(self.depths) < 2 or len(self.a_bits) < 2:
            return []
        return [(f"s{i}.depth", f"s{i + 1}.b1.a_bits") for i in range(1, len(self.stage_channels))]

    def _quant(self, genome: Genome, prefix: str) -> dict[str, Any]:
        quant: dict[str, Any] = {"w_bits": genome[f"{prefix}.w_bits"], "a_bits": genome[f"{prefix}.a_bits"]}
        if self.search_granularity:
            quant["w_per_channel"] = genome[f"{prefix}.w_granularity"] == "channel"
        if self.search_symmetry:
            quant["w_symmetric"] = genome[f"{prefix}.w_symmetry"] == "symmetric"
        return quant

    # ---- genome -> blocks ---------------------------------------------------------------------
    def input_size(self, genome: Genome) -> int:
        """Input resolution of the subnet."""
        return int(genome["resolution"]) if "resolution" in genome else (
            self.resolutions[0] if self.resolutions else self.image_size)

    def blocks(self, genome: Genome) -> list[BlockSpec]:
        self.validate(genome)
        size, flb = self.input_size(genome), self.first_last_bits
        out = [BlockSpec("conv", size, self.in_channels, self.stem_channels, kernel=3, stride=self.stem_stride,
                         act=self._stem_act(), w_bits=flb, a_bits=flb, slot="stem")]
        size, ch = math.ceil(size / self.stem_stride), self.stem_channels
        for i in range(len(self.stage_channels)):
            stage = f"s{i + 1}"
            width = int(genome[f"{stage}.width"]) if f"{stage}.width" in genome else self.stage_widths(i)[-1]
            for j in range(int(genome[f"{stage}.depth"])):
                prefix, stride = f"{stage}.b{j + 1}", self.stage_strides[i] if j == 0 else 1
                block = self._block(genome, prefix, i, j == 0, size, ch, width, stride, self._quant(genome, prefix))
                out.append(block)
                size, ch = block.out_size, width
        return out + [self._head(size, ch)]
