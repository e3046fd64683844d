"""Coverage of a latency table for a search space: which blocks it lacks, and how often a search would miss one.

Why it is checked before anything trains: a strict table that lacks a block fails at the first subnet
holding it, after the supernet has trained; a non-strict one predicts such subnets with the learned
fallback. Listing the space's distinct blocks (looked up through the table's bit mapping, as the
predictor does) and drawing random subnets tells the user both up front, with the keys to fill in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from search_spaces import SearchSpace

from .slots import SlotPlan
from .table import LatencyTable, map_bits

__all__ = ["Coverage", "table_coverage", "DEFAULT_SAMPLES"]

DEFAULT_SAMPLES = 1000
"""Random subnets drawn to estimate how many would need the fallback."""


@dataclass(frozen=True)
class Coverage:
    """How much of a space a table covers.

    ``missing``: keys of needed blocks the table lacks, in slot order (stem first); ``unused``: table
    entries no subnet of the space looks up; ``fallback_share``: share of ``sampled`` random subnets
    holding at least one missing block. ``exhaustive`` is False where the space's blocks could not be
    enumerated and ``needed`` counts the blocks seen in the sampled subnets only.
    """

    needed: int
    missing: tuple[str, ...]
    unused: tuple[str, ...]
    unfilled: int
    sampled: int
    fallback_share: float
    exhaustive: bool = True

    @property
    def present(self) -> int:
        return self.needed - len(self.missing)

    @property
    def complete(self) -> bool:
        return not self.missing

    def summary(self) -> str:
        """One line: blocks present of needed and, when incomplete, the fallback share."""
        what = "blocks" if self.exhaustive else f"blocks seen in {self.sampled} random subnets"
        if self.complete:
            return f"all {self.needed} {what}"
        return (f"{self.present} of {self.needed} {what}; {self.fallback_share:.1%} of {self.sampled} random subnets "
                "need the fallback")

    def problem(self, *, strict: bool, shown: int = 3) -> str | None:
        """Why the table cannot serve the space, or None: no entry is a block of it (a table for other options
        or widths), or, for a strict table, any needed block is missing (it would fail mid-search)."""
        if self.needed and not self.present:
            return (f"none of the table's {len(self.unused)} entries is one of the {self.needed} blocks this space "
                    f"needs (first needed: {self.missing[0]}): a table for other space options or bit-widths?")
        if strict and self.missing:
            return (f"the strict table lacks {len(self.missing)} of the {self.needed} blocks this space needs, first: "
                    f"{', '.join(self.missing[:shown])}; time and fill them (qnas latency template lists them all) "
                    "or use the table with strict: false (the learned fallback fills them, flagged)")
        return None

    def lines(self, shown: int = 3) -> list[str]:
        """The report of ``qnas latency check``: blocks, missing keys, fallback share, unused and unfilled rows."""
        share = self.present / self.needed if self.needed else 1.0
        what = "blocks the space needs" if self.exhaustive else f"blocks seen in {self.sampled} random subnets"
        out = [f"blocks: {self.present} of {self.needed} {what} ({share:.0%})"]
        if self.missing:
            out.append(f"missing: {len(self.missing)}, first: {', '.join(self.missing[:shown])}")
            out.append(f"fallback: {self.fallback_share:.1%} of {self.sampled} random subnets hold a missing block")
        if self.unused:
            out.append(f"unused: {len(self.unused)} entries are no block of this space, first: "
                       f"{', '.join(self.unused[:shown])}")
        if self.unfilled:
            out.append(f"unfilled: {self.unfilled} rows have no timing yet (mean_ms, std_ms, count empty)")
        return out


def table_coverage(table: LatencyTable, space: SearchSpace, *, samples: int = DEFAULT_SAMPLES,
                   seed: int = 0) -> Coverage:
    """The coverage of ``table`` for ``space`` (``samples`` random subnets drawn with ``seed``)."""
    rng = np.random.default_rng(seed)
    genomes = [space.sample(rng) for _ in range(samples)]
    try:
        plan = SlotPlan.for_space(space)
    except ValueError:  # a space whose blocks cannot be enumerated: judge by the sampled subnets
        return _sampled_coverage(table, space, genomes)
    mapping = table.header.bits_measured_as
    needed: dict[str, None] = {}
    missing_at: list[np.ndarray] = []  # per slot: the table lacks the block of each combination
    for slot in plan.slots:
        flags = np.zeros(slot.combos, dtype=bool)
        for flat, block in plan.slot_blocks(slot):
            if block is not None:
                key = map_bits(block, mapping).key()
                needed.setdefault(key)
                flags[flat] = key not in table.entries
        missing_at.append(flags)
    idx = plan.indices(genomes)
    uses = np.zeros(len(genomes), dtype=bool)
    for slot, flags in zip(plan.slots, missing_at):
        uses |= plan.present(slot, idx) & flags[plan.flat(slot, idx)]
    return _coverage(table, needed, uses, exhaustive=True)


def _sampled_coverage(table: LatencyTable, space: SearchSpace, genomes: list) -> Coverage:
    needed: dict[str, None] = {}
    uses = np.zeros(len(genomes), dtype=bool)
    for i, genome in enumerate(genomes):
        keys = [table.key_for(b) for b in space.blocks(genome)]
        needed.update(dict.fromkeys(keys))
        uses[i] = any(k not in table.entries for k in keys)
    return _coverage(table, needed, uses, exhaustive=False)


def _coverage(table: LatencyTable, needed: dict[str, None], uses: np.ndarray, *, exhaustive: bool) -> Coverage:
    return Coverage(needed=len(needed), missing=tuple(k for k in needed if k not in table.entries),
                    unused=tuple(k for k in table.entries if k not in needed), unfilled=len(table.unfilled),
                    sampled=int(uses.size), fallback_share=float(uses.mean()) if uses.size else 0.0,
                    exhaustive=exhaustive)
