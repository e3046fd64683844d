"""A search space with some genes held at one value: architecture-only search over a joint space.

Why: the two-stage baseline (architecture search at 8 bits, then bit allocation) must search the
architecture of the *same* space with the quantization genes fixed. Rather than a space option per
space, :class:`PinnedSpace` wraps any space and narrows the pinned genes to a single choice; its genomes
are genomes of the base space (same name and genes), which ``base.canonical`` turns into the base's
canonical form before they are evaluated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .blocks import BlockSpec
from .errors import InputError
from .genome import Gene, Genome, Value
from .space import SearchSpace

__all__ = ["PinnedSpace", "pin_quant"]


class PinnedSpace(SearchSpace):
    """``base`` with each gene of ``pinned`` allowed only its pinned value."""

    def __init__(self, base: SearchSpace, pinned: Mapping[str, Value]) -> None:
        for name, value in pinned.items():
            gene = base.gene(name)
            if value not in gene.choices:
                raise InputError(f"cannot pin {value!r}; allowed: {list(gene.choices)}", field=name)
        self.base, self.pinned = base, dict(pinned)
        self.name = base.name  # its genomes are the base space's genomes
        self.has_blocks = base.has_blocks
        super().__init__()

    def _declare_genes(self) -> list[Gene]:
        return [dataclasses.replace(g, choices=(self.pinned[g.name],)) if g.name in self.pinned else g
                for g in self.base.genes]

    def options(self) -> dict[str, Any]:
        return {**self.base.options(), "pinned": dict(self.pinned)}

    def blocks(self, genome: Genome) -> list[BlockSpec]:
        return self.base.blocks(self.base.canonical(genome))

    def feature_interactions(self) -> list[tuple[str, str]]:
        return [(a, b) for a, b in self.base.feature_interactions() if a not in self.pinned and b not in self.pinned]


def pin_quant(space: SearchSpace, bits: int) -> dict[str, Value]:
    """Every quantization gene at ``bits`` where it is a choice, else at its largest choice (e.g. W8A8)."""
    return {g.name: bits if bits in g.choices else g.choices[-1] for g in space.genes if g.kind == "quant"}
