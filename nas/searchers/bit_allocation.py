"""Bit-allocation baselines: ``ilp-bits`` (HAWQ-V3 on a fixed architecture) and ``nas-then-ilp`` (two stages).

They are what users run instead of a joint search, so qnas can measure its own claim against them on the
same supernet and with the same evaluator: every allocation is a candidate measured like any other.

- ``ilp-bits``: one candidate per budget, the bits of a fixed architecture (``largest`` or a genome file)
  that minimise the total sensitivity (Hessian trace × quantization perturbation by default) under that
  budget and the run's constraints on cheap metrics (:mod:`nas.bit_allocation`).
- ``nas-then-ilp``: first a search over the architecture with every quantization gene pinned (8 bits:
  the float/W8A8 NAS users do today) for ``nas_trials`` measured candidates, then, per budget, the ILP on
  the ``top_k`` best architectures found (by the first objective) that can meet it.

Both stop proposing when their candidates are asked: set ``search.budget`` to the number they propose.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from nas.bit_allocation import BitProblem, Infeasible, allocate, best_achievable, bit_problem, read_architecture
from nas.objectives import Constraint, Objective, parse_constraint
from search_spaces import Genome, InputError, SearchSpace
from search_spaces.pinned import PinnedSpace, pin_quant

from .base import Searcher, check_option, get_searcher, register_searcher
from .context import SearchContext

__all__ = ["IlpBitsSearcher", "NasThenIlpSearcher", "SENSITIVITY_SOURCES"]

SENSITIVITY_SOURCES = ("hessian", "kl")
"""Sensitivities a run measures on its supernet; any other value of ``sensitivity`` is a saved table's path."""


class _BitAllocator(Searcher):
    """Shared parts: budgets, the sensitivity table, the cheap evaluator and one ILP per (architecture, budget)."""

    finite: ClassVar[bool] = True  # proposes a fixed number of candidates, then nothing (no conformance suite)
    path_options: ClassVar[Mapping[str, tuple[str, ...]]] = {"sensitivity": ("hessian", "kl")}

    def __init__(self, space: SearchSpace, objectives: Sequence[Objective], *, constraints: Sequence[Constraint] = (),
                 seed: int = 0, context: SearchContext | None = None, budgets: Sequence[str] = (),
                 sensitivity: str = "hessian", hessian_samples: int = 16) -> None:
        super().__init__(space, objectives, constraints=constraints, seed=seed)
        check_option("hessian_samples", _positive(hessian_samples) and hessian_samples <= 1000, hessian_samples,
                     "an integer in 1..1000 (Rademacher vectors per batch of the Hessian trace)")
        self.context = context or SearchContext()
        self.budgets = _parse_budgets(budgets)
        check_option("sensitivity", isinstance(sensitivity, str) and bool(sensitivity), sensitivity,
                     f"one of {list(SENSITIVITY_SOURCES)} or the path of a saved sensitivity table")
        self.table = self._table(sensitivity)
        self._evaluator = self.context.cheap
        if self._evaluator is None:
            from nas.evaluators import AnalyticEvaluator

            self._evaluator = AnalyticEvaluator(space)
        cheap = set(self._evaluator.metrics)
        for i, budget in enumerate(self.budgets):
            if budget.metric not in cheap and not (self.context.cheap is None and budget.metric.startswith("latency")):
                raise InputError(f"cannot budget {budget.metric!r}: the ILP budgets exact cheap metrics "
                                 f"({', '.join(sorted(cheap))})", field=f"search.options.budgets[{i}]")
        self.extra = [c for c in self.constraints if c.metric in cheap]  # the run's constraints the ILP can honour
        self._problems: dict[str, BitProblem] = {}
        self.allocations: list[dict[str, Any]] = []

    def _table(self, sensitivity: str) -> Any:
        if sensitivity not in SENSITIVITY_SOURCES:
            from predictors.accuracy import QuantSensitivity

            path = Path(sensitivity).expanduser()
            if not path.is_file():
                raise InputError(f"expected one of {list(SENSITIVITY_SOURCES)} or a saved sensitivity table; "
                                 f"no such file {str(path)!r}", field="search.options.sensitivity")
            return QuantSensitivity.load(path, self.space)
        return self.context.sensitivity

    def _evaluate(self, genomes: Sequence[Genome]) -> list[dict[str, float]]:
        return [dict(r) for r in self._evaluator.evaluate(list(genomes))]

    def _problem(self, architecture: Genome) -> BitProblem:
        if self.table is None:
            raise InputError("no sensitivity table: a run measures it on its supernet (add a supernet section) or "
                             "give a saved table's path", field="search.options.sensitivity")
        key = self.space.canonical(architecture).key
        if key not in self._problems:
            metrics = sorted({c.metric for c in [*self.budgets, *self.extra]})
            self._problems[key] = bit_problem(self.space, architecture, self.table.score, self._evaluate, metrics)
        return self._problems[key]

    def _allocate(self, architecture: Genome, budget: Constraint) -> Genome | None:
        """The ILP's genome for ``architecture`` under ``budget`` (and the run's cheap constraints), or None."""
        problem = self._problem(architecture)
        try:
            genome, picks = allocate(problem, [budget, *self.extra], self._evaluate)
        except Infeasible:
            return None
        self.allocations.append({"budget": str(budget), "architecture": problem.base.key, "key": genome.key,
                                 "sensitivity": problem.sensitivity(picks),
                                 **{m: problem.predicted(m, picks) for m in problem.value}})
        return genome

    def _check_reachable(self, architecture: Genome, index: int, budget: Constraint, what: str) -> None:
        """One error line naming the budget and the best value ``architecture`` can reach."""
        problem = self._problem(architecture) if self.table is not None else None
        if problem is None:
            return
        best = best_achievable(problem, budget)
        if budget.violation(best) > 0:
            word = "smallest" if budget.op == "<=" else "largest"
            raise InputError(f"budget '{budget}' cannot be met: the {word} {budget.metric} {what} reaches is {best:g}",
                             field=f"search.options.budgets[{index}]")

    def tell(self, genomes: Sequence[Genome], results: Sequence[Mapping[str, float]]) -> None:
        self._finish_batch(genomes, results)


@register_searcher("ilp-bits")
class IlpBitsSearcher(_BitAllocator):
    """HAWQ-V3: for one fixed architecture, the least-sensitive bits under each budget (one candidate each)."""

    path_options: ClassVar[Mapping[str, tuple[str, ...]]] = {"sensitivity": ("hessian", "kl"),
                                                             "architecture": ("largest",)}

    def __init__(self, space: SearchSpace, objectives: Sequence[Objective], *, constraints: Sequence[Constraint] = (),
                 seed: int = 0, context: SearchContext | None = None, architecture: str = "largest",
                 budgets: Sequence[str] = (), sensitivity: str = "hessian", hessian_samples: int = 16) -> None:
        super().__init__(space, objectives, constraints=constraints, seed=seed, context=context, budgets=budgets,
                         sensitivity=sensitivity, hessian_samples=hessian_samples)
        check_option("architecture", isinstance(architecture, str) and bool(architecture), architecture,
                     "'largest', 'smallest' or the path of a genome file")
        self.architecture = read_architecture(space, architecture)
        self._batch_size = len(self.budgets)
        self._done = False
        for i, budget in enumerate(self.budgets):
            if budget.metric in self._evaluator.metrics:
                self._check_reachable(self.architecture, i, budget, "this architecture")
                if self.table is None:  # no sensitivity yet (checking a config): bound the metric alone
                    _check_alone(self.space, self.architecture, self._evaluate, i, budget)

    def ask(self) -> list[Genome]:
        if self._pending is not None:
            return list(self._pending)
        if self._done:
            return self._start_batch([])
        out = []
        for i, budget in enumerate(self.budgets):
            genome = self._allocate(self.architecture, budget)
            if genome is None:  # only the run's own constraints can make a reachable budget infeasible
                raise InputError(f"budget '{budget}' together with the constraints {[str(c) for c in self.extra]} "
                                 "cannot be met by this architecture", field=f"search.options.budgets[{i}]")
            out.append(genome)
        self._done = True
        return self._start_batch(out)

    def _state(self) -> dict[str, Any]:
        return {"done": self._done}

    def _load_state(self, body: dict[str, Any]) -> None:
        self._done = bool(body["done"])


@register_searcher("nas-then-ilp")
class NasThenIlpSearcher(_BitAllocator):
    """Two stages, as users do it today: architecture search at pinned bits, then ILP bits per budget."""

    def __init__(self, space: SearchSpace, objectives: Sequence[Objective], *, constraints: Sequence[Constraint] = (),
                 seed: int = 0, context: SearchContext | None = None, budgets: Sequence[str] = (),
                 sensitivity: str = "hessian", hessian_samples: int = 16, inner: str = "nsga2", nas_trials: int = 40,
                 inner_options: Mapping[str, Any] | None = None, top_k: int = 3, nas_bits: int = 8) -> None:
        super().__init__(space, objectives, constraints=constraints, seed=seed, context=context, budgets=budgets,
                         sensitivity=sensitivity, hessian_samples=hessian_samples)
        check_option("nas_trials", _positive(nas_trials), nas_trials, "a positive integer")
        check_option("inner_options", inner_options is None or isinstance(inner_options, Mapping), inner_options,
                     "a mapping of the inner searcher's options, e.g. {population_size: 20}")
        check_option("top_k", _positive(top_k), top_k, "a positive integer")
        check_option("nas_bits", _positive(nas_bits), nas_bits, "a positive integer (bits of the first stage)")
        check_option("inner", inner not in (self.name, "ilp-bits"), inner, "an architecture searcher (e.g. nsga2)")
        self.pinned = PinnedSpace(space, pin_quant(space, nas_bits))
        try:
            self.inner = get_searcher(inner, self.pinned, objectives, seed=seed, context=self.context,
                                      **dict(inner_options or {}))
        except InputError as err:
            field = (err.field or "").replace("search.options.", "search.options.inner_options.")
            raise InputError(err.detail, field=field if inner_options else err.field) from None
        self.nas_trials, self.top_k = nas_trials, top_k
        self._batch_size = max(self.inner.batch_size, top_k * len(self.budgets))
        self._measured: dict[str, tuple[Genome, dict[str, float]]] = {}
        self._inner_batch: list[Genome] | None = None
        self._stage = "nas"  # nas -> nas-last (its final batch asked) -> ilp -> done
        self._notes: list[str] = []
        for i, budget in enumerate(self.budgets):  # a budget below the space's smallest subnet
            if budget.metric in self._evaluator.metrics:
                _check_alone(space, space.smallest(), self._evaluate, i, budget, "the smallest subnet")

    @property
    def first_stage(self) -> list[tuple[Genome, dict[str, float]]]:
        """The candidates measured by the architecture search (at pinned bits) and their metrics."""
        return list(self._measured.values())

    # ---- stage 1: the architecture search at pinned bits ----------------------------------------------
    def ask(self) -> list[Genome]:
        if self._pending is not None:
            return list(self._pending)
        while self._stage == "nas":
            batch = self.inner.ask()
            if not batch:
                self._stage = "ilp"
                break
            self._inner_batch = batch
            new = [g for g in dict.fromkeys(self.space.canonical(g) for g in batch) if g.key not in self._measured]
            room = self.nas_trials - len(self._measured)
            if new:
                if len(new) >= room:  # the last batch of stage 1: the inner searcher is not told again
                    self._stage, new = "nas-last", new[:room]
                return self._start_batch(new)
            self._tell_inner()  # everything already measured: answer from the cache and ask again
        if self._stage == "done":
            return self._start_batch([])
        self._stage = "done"
        return self._start_batch(self._second_stage())

    def tell(self, genomes: Sequence[Genome], results: Sequence[Mapping[str, float]]) -> None:
        self._finish_batch(genomes, results)
        if self._stage == "done":
            return
        for genome, result in zip(genomes, results):
            self._measured[genome.key] = (genome, {k: float(v) for k, v in result.items()})
        if self._stage == "nas":
            self._tell_inner()
        else:
            self._stage = "ilp"

    def _tell_inner(self) -> None:
        batch, self._inner_batch = self._inner_batch or [], None
        self.inner.tell(batch, [self._measured[self.space.canonical(g).key][1] for g in batch])
        if len(self._measured) >= self.nas_trials:
            self._stage = "ilp"

    # ---- stage 2: ILP bits on the best architectures ---------------------------------------------------
    def _ranked(self) -> list[Genome]:
        """Stage-1 architectures, best first by the first objective (failed evaluations last)."""
        first = self.objectives[0]

        def rank(item: tuple[Genome, dict[str, float]]) -> float:
            value = item[1].get(first.metric, math.nan)
            return math.inf if not math.isfinite(value) else first.to_min(value)

        return [g for g, _ in sorted(self._measured.values(), key=rank)]

    def _second_stage(self) -> list[Genome]:
        out: dict[str, Genome] = {}
        ranked = self._ranked()
        for budget in self.budgets:
            found = 0
            for architecture in ranked:
                genome = self._allocate(architecture, budget)
                if genome is not None:
                    out.setdefault(genome.key, genome)
                    found += 1
                if found == self.top_k:
                    break
            if not found:
                self._notes.append(self._unmet(budget, ranked))
        return [g for g in out.values() if g.key not in self._measured]

    def _unmet(self, budget: Constraint, ranked: Sequence[Genome]) -> str:
        """The note for a budget that no first-stage architecture meets, with the best value they reach."""
        what = f"budget '{budget}': none of the {len(ranked)} architectures the first stage measured can meet it"
        if self.extra:
            what += f" together with the constraints {[str(c) for c in self.extra]}"
        reach = [best_achievable(self._problem(a), budget) for a in ranked]
        if reach:
            best = min(reach) if budget.op == "<=" else max(reach)
            word = "smallest" if budget.op == "<=" else "largest"
            what += f" (the {word} {budget.metric} they reach is {best:g})"
        return what + "; no candidate for it"

    def notes(self) -> list[str]:
        return list(self._notes)

    def _state(self) -> dict[str, Any]:
        indices = self.space.to_indices
        return {"stage": self._stage, "inner": self.inner.state_dict(), "allocations": self.allocations,
                "notes": self._notes,
                "inner_batch": None if self._inner_batch is None else [self.pinned.to_indices(g).tolist()
                                                                       for g in self._inner_batch],
                "measured": [(indices(g).tolist(), r) for g, r in self._measured.values()]}

    def _load_state(self, body: dict[str, Any]) -> None:
        self._stage, self.allocations = body["stage"], list(body["allocations"])
        self._notes = list(body.get("notes", []))
        self.inner.load_state_dict(body["inner"])
        batch = body["inner_batch"]
        self._inner_batch = None if batch is None else [self.pinned.from_indices(i) for i in batch]
        self._measured = {}
        for indices, result in body["measured"]:
            genome = self.space.from_indices(indices)
            self._measured[genome.key] = (genome, dict(result))


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _parse_budgets(budgets: Any) -> tuple[Constraint, ...]:
    """``['size_kb <= 30', ...]`` in the constraint syntax; each is an error naming its entry."""
    ok = isinstance(budgets, (list, tuple)) and len(budgets) > 0
    check_option("budgets", ok, budgets, "a non-empty list of budgets like 'size_kb <= 30' (one candidate each)")
    out = []
    for i, text in enumerate(budgets):
        try:
            if not isinstance(text, str):
                raise ValueError(f"expected a string like 'size_kb <= 30', got {text!r}")
            out.append(parse_constraint(text))
        except ValueError as err:
            raise InputError(str(err), field=f"search.options.budgets[{i}]") from None
    return tuple(out)


def _check_alone(space: SearchSpace, genome: Genome, evaluate: Any, index: int, budget: Constraint,
                 what: str = "this architecture") -> None:
    """The budget's metric at ``genome`` with every quantization gene at its cheapest choice must meet it."""
    cheapest = {g.name: g.choices[0] for g in space.genes if g.kind == "quant"}
    low = evaluate([space.canonical(genome.with_values(cheapest))])[0][budget.metric]
    if budget.op == "<=" and budget.violation(low) > 0:
        raise InputError(f"budget '{budget}' cannot be met: the smallest {budget.metric} {what} reaches is {low:g}",
                         field=f"search.options.budgets[{index}]")
