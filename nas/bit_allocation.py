"""Bit allocation for a fixed architecture as an integer linear program (HAWQ-V3), solved by HiGHS.

Why an ILP: with the architecture fixed, every cost a budget can name (deployed size, BitOps, a latency
table's per-block entries) is a sum over blocks, and each block's share depends only on that block's own
quantization genes. One binary variable per (block, combination of its quantization genes) with
``Σ_o x[b, o] = 1`` per block then makes "the least total sensitivity under these budgets" a small
0/1 program that ``scipy.optimize.milp`` solves exactly in milliseconds.

The per-block shares are not derived from formulas but measured with the run's own cheap evaluator
(analytic costs, latency tables): ``delta[m][b][o] = m(base with block b at option o) − m(base)``, where
``base`` has every block at its first option. :func:`allocate` checks the answer against the evaluator
itself, so a metric that is not additive after all is an error instead of a silently broken budget.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from nas.objectives import Constraint
from search_spaces import Genome, InputError, SearchSpace
from search_spaces.genome import Value

__all__ = ["BitProblem", "BlockBits", "Infeasible", "allocate", "bit_problem", "best_achievable", "read_architecture"]

#: Re-solves with a tightened bound when the solver's feasibility tolerance let an answer exceed a budget.
_TIGHTEN_ROUNDS = 6

Evaluate = Callable[[Sequence[Genome]], Sequence[Mapping[str, float]]]


class Infeasible(Exception):
    """No bit allocation of the architecture meets the constraints (``best``: best achievable per constraint)."""

    def __init__(self, constraints: Sequence[Constraint], best: Mapping[str, float]) -> None:
        self.constraints, self.best = tuple(constraints), dict(best)
        super().__init__(f"no bit allocation meets {[str(c) for c in constraints]}")


@dataclass(frozen=True)
class BlockBits:
    """One block's quantization genes and every combination of their choices (its ILP options)."""

    block: str
    genes: tuple[str, ...]
    options: tuple[tuple[Value, ...], ...]


@dataclass(frozen=True)
class BitProblem:
    """Costs and sensitivities of every (block, option) of one architecture.

    Attributes:
        base: the architecture with every block at its first option.
        blocks: the blocks with quantization genes, in the space's gene order.
        cost: per block, the sensitivity of each option (what the ILP minimises).
        value: the metrics of ``base``.
        delta: per metric, per block, the change of the metric when that block takes each option.
        base_score: the total sensitivity of ``base`` (``cost`` holds each option's change of it).
    """

    base: Genome
    blocks: tuple[BlockBits, ...]
    cost: tuple[np.ndarray, ...]
    value: Mapping[str, float]
    delta: Mapping[str, tuple[np.ndarray, ...]]
    base_score: float = 0.0

    def genome(self, picks: Sequence[int]) -> Genome:
        """The architecture with block ``i`` at option ``picks[i]``."""
        values = {g: v for block, p in zip(self.blocks, picks) for g, v in zip(block.genes, block.options[p])}
        return self.base.with_values(values)

    def predicted(self, metric: str, picks: Sequence[int]) -> float:
        """``metric`` of :meth:`genome` from the per-block shares (exact for additive metrics)."""
        return self.value[metric] + float(sum(d[p] for d, p in zip(self.delta[metric], picks)))

    def sensitivity(self, picks: Sequence[int]) -> float:
        """Total sensitivity of :meth:`genome`."""
        return self.base_score + float(sum(c[p] for c, p in zip(self.cost, picks)))


def bit_problem(space: SearchSpace, architecture: Genome, score: Callable[[Sequence[Genome]], np.ndarray],
                evaluate: Evaluate, metrics: Sequence[str]) -> BitProblem:
    """The ILP data of ``architecture`` (its quantization genes are ignored).

    Args:
        score: total sensitivity of genomes (e.g. ``QuantSensitivity.score``: Σ over active quantization genes).
        evaluate: exact cheap metrics of genomes (analytic costs, latency tables).
        metrics: the metrics budgets may name.
    """
    quant = [g for g in space.genes if g.kind == "quant" and space.is_active(architecture, g)]
    by_block: dict[str, list] = {}
    for gene in quant:
        by_block.setdefault(gene.name.rpartition(".")[0], []).append(gene)
    blocks = tuple(BlockBits(name, tuple(g.name for g in genes), tuple(itertools.product(*(g.choices for g in genes))))
                   for name, genes in by_block.items())
    base = space.canonical(architecture.with_values({g: o for b in blocks for g, o in zip(b.genes, b.options[0])}))
    variants = [base] + [base.with_values(dict(zip(b.genes, option))) for b in blocks for option in b.options]
    rows, scores = list(evaluate(variants)), np.asarray(score(variants), dtype=np.float64)
    missing = [m for m in metrics if m not in rows[0]]
    if missing:
        raise ValueError(f"the evaluator does not provide {missing} (it has {sorted(rows[0])})")
    cost, delta, at = [], {m: [] for m in metrics}, 1
    for block in blocks:
        span = slice(at, at + len(block.options))
        cost.append(scores[span] - scores[0])
        for m in metrics:
            delta[m].append(np.array([r[m] for r in rows[span]], dtype=np.float64) - rows[0][m])
        at = span.stop
    return BitProblem(base, blocks, tuple(cost), {m: float(rows[0][m]) for m in metrics},
                      {m: tuple(v) for m, v in delta.items()}, float(scores[0]))


def best_achievable(problem: BitProblem, constraint: Constraint) -> float:
    """The lowest (``<=``) or highest (``>=``) value of the constraint's metric any allocation reaches."""
    pick = np.argmin if constraint.op == "<=" else np.argmax
    return problem.predicted(constraint.metric, [int(pick(d)) for d in problem.delta[constraint.metric]])


def allocate(problem: BitProblem, constraints: Sequence[Constraint], evaluate: Evaluate) -> tuple[Genome, list[int]]:
    """The allocation of least total sensitivity meeting every constraint, checked with ``evaluate``.

    Raises :class:`Infeasible` when none exists; ``ValueError`` when a metric turns out not to be additive.
    """
    bounds = [c.bound for c in constraints]
    for _ in range(_TIGHTEN_ROUNDS):
        picks = _solve(problem, constraints, bounds)
        genome = problem.genome(picks)
        exact = dict(evaluate([genome])[0])
        for c in constraints:
            drift = abs(exact[c.metric] - problem.predicted(c.metric, picks))
            if drift > 1e-6 * max(1.0, abs(exact[c.metric])):
                raise ValueError(f"{c.metric} is not a sum over blocks of their own bit-widths (the allocation's "
                                 f"{c.metric} is {exact[c.metric]:g}, its block shares sum to "
                                 f"{problem.predicted(c.metric, picks):g}); the ILP cannot budget it")
        over = [(i, c.violation(exact[c.metric])) for i, c in enumerate(constraints)]
        if not any(v > 0 for _, v in over):
            return genome, picks
        for i, v in over:  # within the solver's tolerance: ask for a little more room and solve again
            step = max(v, 1e-9 * max(1.0, abs(bounds[i])))
            bounds[i] += -step if constraints[i].op == "<=" else step
    raise ValueError(f"the ILP answer kept exceeding {[str(c) for c in constraints]} by rounding")


def _solve(problem: BitProblem, constraints: Sequence[Constraint], bounds: Sequence[float]) -> list[int]:
    from scipy.optimize import Bounds, LinearConstraint, milp

    sizes = [len(b.options) for b in problem.blocks]
    n = sum(sizes)
    if n == 0:
        return []
    starts = np.cumsum([0, *sizes])
    one_hot = np.zeros((len(sizes), n))
    for i, (a, b) in enumerate(zip(starts[:-1], starts[1:])):
        one_hot[i, a:b] = 1.0
    rows = [LinearConstraint(one_hot, 1.0, 1.0)]
    for c, bound in zip(constraints, bounds):
        row, room = np.concatenate(problem.delta[c.metric]), bound - problem.value[c.metric]
        scale = max(1.0, float(np.abs(row).max()), abs(room))  # keep HiGHS's tolerances relative
        lo, hi = (-math.inf, room / scale) if c.op == "<=" else (room / scale, math.inf)
        rows.append(LinearConstraint(row[None, :] / scale, lo, hi))
    cost = np.concatenate(problem.cost)
    result = milp(cost, constraints=rows, integrality=np.ones(n), bounds=Bounds(0, 1))
    if result.status == 2 or result.x is None:
        raise Infeasible(constraints, {str(c): best_achievable(problem, c) for c in constraints})
    if result.status != 0:
        raise RuntimeError(f"HiGHS did not finish the bit allocation: {result.message}")
    return [int(np.argmax(result.x[a:b])) for a, b in zip(starts[:-1], starts[1:])]


def read_architecture(space: SearchSpace, value: str) -> Genome:
    """``largest``, ``smallest`` or a genome file (``arch.json`` of an exported subnet, or ``Genome.to_dict``)."""
    if value in ("largest", "smallest"):
        return getattr(space, value)()
    from pathlib import Path

    from search_spaces.inputs import read_json

    path = Path(value).expanduser()
    if not path.is_file():
        raise InputError(f"expected 'largest', 'smallest' or a genome file; no such file {str(path)!r}",
                         field="search.options.architecture")
    data = read_json(path, what="genome file")
    genome = data.get("genome", data) if isinstance(data, dict) else data
    return space.from_dict(genome, source=str(path))
