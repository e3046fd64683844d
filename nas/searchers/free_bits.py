"""Raise the bit-widths that cost nothing: a quantization gene lowered without any gain is a wasted measurement.

Under a latency objective on a table that times sub-8-bit blocks as 8-bit, or a size objective that activation
bits do not change, a random joint genome lowers many bits that buy nothing in any objective or constraint,
while each of them can only cost accuracy. :func:`raise_free_bits` moves every active quantization gene to its
highest bit-width whose exact cheap metrics (the objectives and constraints a table or the analytic costs give)
are no worse than before. The one assumption is the monotone prior every bit allocator makes (HAWQ-V3's ILP
included): the *measured* metrics, accuracy, never improve when bits are lowered.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from nas.objectives import Constraint, Objective
from search_spaces import Gene, Genome, SearchSpace

__all__ = ["raise_free_bits", "cheap_directions", "bit_genes"]

#: Relative slack of "no worse": table sums of equal entries may differ in the last bits of a float.
_RTOL = 1e-9


def bit_genes(space: SearchSpace) -> list[Gene]:
    """The quantization genes whose choices are bit-widths (numbers): granularity or symmetry choices have no
    order the prior speaks of, so they are never touched."""
    return [g for g in space.genes if g.is_bit_width]


def cheap_directions(objectives: Sequence[Objective], constraints: Sequence[Constraint],
                     cheap_metrics: set[str]) -> dict[str, str]:
    """``{cheap metric: "min" | "max" | "equal"}`` for every cheap metric an objective or a constraint names.

    A constraint counts by its value, not by its slack: raising bits never spends room that the searcher
    itself should decide how to use. A metric wanted low by one and high by another must stay as it is.
    """
    wanted: dict[str, set[str]] = {}
    for objective in objectives:
        if objective.metric in cheap_metrics:
            wanted.setdefault(objective.metric, set()).add(objective.direction)
    for constraint in constraints:
        if constraint.metric in cheap_metrics:
            wanted.setdefault(constraint.metric, set()).add("min" if constraint.op == "<=" else "max")
    return {metric: ways.pop() if len(ways) == 1 else "equal" for metric, ways in wanted.items()}


def raise_free_bits(genomes: Sequence[Genome], space: SearchSpace,
                    cheap_evaluate: Callable[[Sequence[Genome]], list[dict[str, float]]],
                    directions: Mapping[str, str]) -> list[Genome]:
    """Each genome with every active bit-width gene at its highest bit-width that leaves every metric of
    ``directions`` no worse (genes in declaration order, each to the highest such bit-width, one batch of
    cheap evaluations per gene)."""
    current = [space.canonical(g) for g in genomes]
    base = cheap_evaluate(current)
    for gene in bit_genes(space):
        variants: list[tuple[int, Genome]] = []
        for i, genome in enumerate(current):
            if space.is_active(genome, gene):
                higher = sorted((c for c in gene.choices if c > genome[gene.name]), reverse=True)
                variants += [(i, genome.with_values({gene.name: c})) for c in higher]
        if not variants:
            continue
        rows = cheap_evaluate([v for _, v in variants])
        raised: set[int] = set()
        for (i, variant), row in zip(variants, rows):  # highest bit-width first, so the first free one wins
            if i not in raised and _no_worse(row, base[i], directions):
                current[i], base[i] = variant, row
                raised.add(i)
    return current


def _no_worse(new: Mapping[str, float], old: Mapping[str, float], directions: Mapping[str, str]) -> bool:
    for metric, direction in directions.items():
        a, b = float(new[metric]), float(old[metric])
        if not (math.isfinite(a) and math.isfinite(b)):
            if a == b:  # the same infinity (never NaN) is no change
                continue
            return False
        slack = _RTOL * max(abs(a), abs(b))
        worse = {"min": a > b + slack, "max": a < b - slack, "equal": abs(a - b) > slack}[direction]
        if worse:
            return False
    return True
