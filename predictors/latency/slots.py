"""Which genes decide which block: the structure that makes tables enumerable and prediction vectorised.

A *slot* is a place in the network (``stem``, ``s2.b1``, ``head``). Starting from the largest
genome (every slot present), changing one gene at a time shows which genes change a slot's block
(its *deciding* genes: own kernel/expand/bits, the stage widths, the resolution) and which make it
disappear (its *presence* genes: the stage depth). Every block a slot can take is then one
combination of its deciding genes, so a space's distinct blocks can be listed without sampling, and
a genome's latency is a sum of per-slot array lookups. Works for any space built from the
:class:`SearchSpace` interface; :class:`SlotPlan` raises ``ValueError`` where a space does not fit
(duplicate slot names, too many combinations) and callers fall back to ``space.blocks``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from search_spaces import BlockSpec, Genome, SearchSpace

__all__ = ["Slot", "SlotPlan", "MAX_COMBOS"]

MAX_COMBOS = 200_000  # per slot; beyond this enumeration is too slow to be useful


@dataclass(frozen=True)
class Slot:
    """One place in the network: the genes deciding its block and the gene values that keep it present."""

    name: str
    genes: tuple[int, ...]  # indices into space.genes
    sizes: tuple[int, ...]  # number of choices of each deciding gene
    presence: tuple[tuple[int, tuple[bool, ...]], ...]  # (gene index, present for each choice)

    @property
    def combos(self) -> int:
        return int(np.prod(self.sizes, dtype=np.int64)) if self.sizes else 1


class SlotPlan:
    """Slots of a space, their deciding genes, and the block of every combination."""

    _cache: dict[tuple[str, str], SlotPlan] = {}

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.base = space.largest()
        base_blocks = space.blocks(self.base)
        names = [b.slot for b in base_blocks]
        if len(set(names)) != len(names) or not all(names):
            raise ValueError(f"space {space.name!r}: blocks need unique, non-empty slot names")
        self._lookups = [{c: i for i, c in enumerate(g.choices)} for g in space.genes]
        deciding, presence = self._probe(base_blocks)
        self.slots = tuple(
            Slot(n, tuple(deciding[n]), tuple(len(space.genes[g].choices) for g in deciding[n]), tuple(presence[n]))
            for n in names)
        for slot in self.slots:
            if slot.combos > MAX_COMBOS:
                raise ValueError(f"slot {slot.name!r} has {slot.combos} combinations (> {MAX_COMBOS})")

    @classmethod
    def for_space(cls, space: SearchSpace) -> SlotPlan:
        """Cached per space name and fingerprint (building one costs a few hundred ``space.blocks`` calls)."""
        key = (space.name, space.fingerprint())
        if key not in cls._cache:
            cls._cache[key] = cls(space)
        return cls._cache[key]

    def _probe(self, base_blocks: list[BlockSpec]) -> tuple[dict[str, list[int]], dict[str, list]]:
        base = {b.slot: b for b in base_blocks}
        deciding: dict[str, list[int]] = {n: [] for n in base}
        presence: dict[str, list] = {n: [] for n in base}
        for gi, gene in enumerate(self.space.genes):
            present = {n: [True] * len(gene.choices) for n in base}
            changed: set[str] = set()
            for ci, choice in enumerate(gene.choices):
                if choice == self.base[gene.name]:
                    continue
                after = {b.slot: b for b in self.space.blocks(self.base.with_values({gene.name: choice}))}
                for n, block in base.items():
                    if n not in after:
                        present[n][ci] = False
                    elif after[n] != block:
                        changed.add(n)
            for n in base:
                if n in changed:
                    deciding[n].append(gi)
                if not all(present[n]):
                    presence[n].append((gi, tuple(present[n])))
        return deciding, presence

    # ---- enumeration -------------------------------------------------------------------------------
    def slot_blocks(self, slot: Slot) -> Iterator[tuple[int, BlockSpec | None]]:
        """(flat combination index, block or None when absent) for every combination of the deciding genes."""
        genes = [self.space.genes[g] for g in slot.genes]
        for flat, combo in enumerate(itertools.product(*(g.choices for g in genes))):
            genome = self.base.with_values({g.name: v for g, v in zip(genes, combo)})
            found = [b for b in self.space.blocks(genome) if b.slot == slot.name]
            yield flat, (found[0] if found else None)

    def distinct_blocks(self, mapper: Callable[[BlockSpec], BlockSpec] = lambda b: b) -> list[BlockSpec]:
        """Every distinct (mapped) block the space can produce, in slot order, without duplicates."""
        seen: dict[str, BlockSpec] = {}
        for slot in self.slots:
            for _, block in self.slot_blocks(slot):
                if block is not None:
                    mapped = mapper(block)
                    seen.setdefault(mapped.key(), mapped)
        return list(seen.values())

    # ---- vectorised genomes ---------------------------------------------------------------------------
    def indices(self, genomes: Sequence[Genome]) -> np.ndarray:
        """(n, n_genes) choice indices (like ``space.to_indices``, without its per-genome validation:
        much faster for many genomes)."""
        lookups = self._lookups
        rows = [[lk[v] for lk, (_, v) in zip(lookups, g.values)] for g in genomes]
        return np.asarray(rows, dtype=np.int64).reshape(len(genomes), len(lookups))

    def flat(self, slot: Slot, idx: np.ndarray) -> np.ndarray:
        """Flat combination index of ``slot`` for each row of ``idx`` (C order over its deciding genes)."""
        if not slot.genes:
            return np.zeros(len(idx), dtype=np.int64)
        return np.ravel_multi_index(tuple(idx[:, g] for g in slot.genes), slot.sizes)

    def present(self, slot: Slot, idx: np.ndarray) -> np.ndarray:
        """Whether ``slot`` exists in each row's network."""
        mask = np.ones(len(idx), dtype=bool)
        for gi, allowed in slot.presence:
            mask &= np.asarray(allowed, dtype=bool)[idx[:, gi]]
        return mask
