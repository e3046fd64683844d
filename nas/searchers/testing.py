"""Conformance suite every registered searcher must pass (shipped, like optuna's sampler tests).

Use it from a test module by subclassing and providing a ``searcher_name`` fixture::

    @pytest.fixture(params=list_searchers())
    def searcher_name(request):
        return request.param

    class TestSearchers(SearcherConformance):
        pass

The problems are analytic (costs of a small real ``mbv3`` space), so the whole suite runs in
seconds. :func:`drive` is the reference search loop: the contract the real loop must honour too.
"""

from __future__ import annotations

import inspect
import math
import pickle
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pytest

from nas.objectives import Constraint, Objective
from search_spaces import Genome, InputError, SearchSpace, get_space

from .base import Searcher, get_searcher, missing_requirements, searcher_class
from .context import SearchContext

__all__ = ["SearcherConformance", "DriveLog", "drive", "run_batches", "small_space", "evaluate", "bitops_limit",
           "fast_options", "make_searcher", "TWO_OBJECTIVES", "THREE_OBJECTIVES"]

TWO_OBJECTIVES = (Objective("size_kb"), Objective("macs", "max"))  # macs stands in for accuracy
THREE_OBJECTIVES = (Objective("size_kb"), Objective("macs", "max"), Objective("bitops"))
# Small settings that still leave several generations inside the suite's budgets.
_FAST = {"population_size": 12, "batch_size": 8, "n_startup_trials": 10}
# Model-based searchers fit ridge regression, not the default ensemble: the suite checks the ask/tell
# contract, and the ensemble's gradient boosting would be most of its time.
_FAST_CONTEXT = SearchContext(model="ridge")


@dataclass
class DriveLog:
    """What :func:`drive` saw: every batch asked and every distinct genome evaluated, in order."""

    batches: list[list[Genome]] = field(default_factory=list)
    evaluated: dict[Genome, dict[str, float]] = field(default_factory=dict)


def drive(searcher: Searcher, evaluate: Callable[[Genome], Mapping[str, float]], budget: int, *,
          max_idle_asks: int = 20) -> DriveLog:
    """The reference loop: ask, evaluate new genomes, tell the whole batch, until ``budget`` genomes.

    Only distinct new genomes count against the budget (repeats come from the cache). When the
    budget ends inside a batch, only its first new genomes are evaluated and that batch is not told.
    Raises RuntimeError after ``max_idle_asks`` asks in a row without a new genome.
    """
    log, idle = DriveLog(), 0
    while len(log.evaluated) < budget:
        batch = searcher.ask()
        log.batches.append(batch)
        new = [g for g in batch if g not in log.evaluated]
        idle = 0 if new else idle + 1
        if idle >= max_idle_asks:
            raise RuntimeError(f"{max_idle_asks} asks in a row proposed nothing new "
                               f"after {len(log.evaluated)} of {budget} evaluations")
        room = budget - len(log.evaluated)
        for genome in new[:room]:
            log.evaluated[genome] = dict(evaluate(genome))
        if len(new) > room:
            break
        searcher.tell(batch, [log.evaluated[g] for g in batch])
    return log


@lru_cache(maxsize=None)
def small_space() -> SearchSpace:
    """A two-stage ``mbv3`` space for 8×8 inputs: 34 genes, ~1.9e15 networks, costs in microseconds."""
    return get_space("mbv3", stage_channels=[16, 24], stage_strides=[1, 2], stage_se=[False, True],
                     stage_act=["relu", "hswish"], image_size=8, in_channels=1, head_channels=32)


def evaluate(genome: Genome) -> dict[str, float]:
    """Analytic metrics of a genome of :func:`small_space`."""
    return _costs(genome).copy()


@lru_cache(maxsize=None)
def _costs(genome: Genome) -> dict[str, float]:
    costs = small_space().costs(genome)
    return {"size_kb": float(costs.size_kb), "macs": float(costs.macs), "bitops": float(costs.bitops)}


@lru_cache(maxsize=None)
def bitops_limit(share: float = 0.2) -> Constraint:
    """``bitops <= X`` with X the ``share`` quantile of random samples: ~20% of them are feasible."""
    rng = np.random.default_rng(12345)
    values = [_costs(small_space().sample(rng))["bitops"] for _ in range(2000)]
    return Constraint("bitops", "<=", float(np.quantile(values, share)))


def fast_options(name: str) -> dict[str, Any]:
    """Small populations and batches for the options searcher ``name`` has."""
    params = inspect.signature(searcher_class(name).__init__).parameters
    return {key: value for key, value in _FAST.items() if key in params}


def make_searcher(name: str, *, seed: int = 0, objectives: tuple[Objective, ...] = TWO_OBJECTIVES,
                  constraints: tuple[Constraint, ...] = (), **options: Any) -> Searcher:
    """Searcher ``name`` on :func:`small_space` with :func:`fast_options` (overridable)."""
    if missing_requirements(name):
        pytest.skip(f"searcher {name!r} needs {missing_requirements(name)}")
    options.setdefault("context", _FAST_CONTEXT)  # reaches only the model-based searchers
    return get_searcher(name, small_space(), objectives, constraints=constraints, seed=seed,
                        **{**fast_options(name), **options})


def _feasible_share(genomes: list[Genome], limit: Constraint) -> float:
    return float(np.mean([limit.violation(_costs(g)[limit.metric]) == 0 for g in genomes]))


def run_batches(searcher: Searcher, n: int) -> list[list[Genome]]:
    """``n`` rounds of ask, evaluate, tell (no budget, no cache); returns the batches."""
    batches = []
    for _ in range(n):
        batch = searcher.ask()
        searcher.tell(batch, [evaluate(g) for g in batch])
        batches.append(batch)
    return batches


class SearcherConformance:
    """Behaviour shared by all searchers: budget, validity, seeding, resume, constraints, failures."""

    budget = 40

    def test_respects_budget_exactly(self, searcher_name: str) -> None:
        calls: list[Genome] = []
        log = drive(make_searcher(searcher_name), lambda g: calls.append(g) or evaluate(g), self.budget)
        assert len(log.evaluated) == len(calls) == len(set(calls)) == self.budget

    def test_asks_are_valid_canonical_and_unique(self, searcher_name: str) -> None:
        searcher = make_searcher(searcher_name)
        log = drive(searcher, evaluate, self.budget)
        space = small_space()
        for batch in log.batches:
            assert 0 < len(batch) <= searcher.batch_size
            assert len(set(batch)) == len(batch), "duplicates inside one batch"
            for genome in batch:
                space.validate(genome)
                assert space.canonical(genome) == genome

    def test_seed_determines_the_sequence(self, searcher_name: str) -> None:
        runs = [drive(make_searcher(searcher_name, seed=s), evaluate, self.budget).batches for s in (3, 3, 4)]
        assert runs[0] == runs[1]
        assert runs[0] != runs[2]

    def test_resume_continues_identically(self, searcher_name: str) -> None:
        searcher = make_searcher(searcher_name, seed=5)
        run_batches(searcher, 3)
        saved = pickle.loads(pickle.dumps(searcher.state_dict()))
        later = run_batches(searcher, 3)
        pending = searcher.ask()
        mid_batch = pickle.loads(pickle.dumps(searcher.state_dict()))
        searcher.tell(pending, [evaluate(g) for g in pending])
        after = run_batches(searcher, 1)

        resumed = make_searcher(searcher_name, seed=5)
        resumed.load_state_dict(saved)
        assert run_batches(resumed, 3) == later
        again = make_searcher(searcher_name, seed=5)
        again.load_state_dict(mid_batch)
        assert again.ask() == pending, "a state taken between ask and tell hands the batch out again"
        again.tell(pending, [evaluate(g) for g in pending])
        assert run_batches(again, 1) == after

    def test_constraints_steer_towards_feasible(self, searcher_name: str) -> None:
        if searcher_name == "random":
            pytest.skip("random search is the baseline of this test")
        limit, budget = bitops_limit(), 3 * self.budget
        log = drive(make_searcher(searcher_name, seed=1, constraints=(limit,)), evaluate, budget)
        genomes = list(log.evaluated)
        baseline = list(drive(make_searcher("random", seed=1), evaluate, budget).evaluated)
        feasible = [g for g in genomes if limit.violation(_costs(g)["bitops"]) == 0]
        assert feasible, "no feasible candidate found"
        assert _feasible_share(genomes[budget // 2:], limit) > _feasible_share(baseline[budget // 2:], limit)

    def test_three_objectives(self, searcher_name: str) -> None:
        log = drive(make_searcher(searcher_name, objectives=THREE_OBJECTIVES), evaluate, self.budget)
        assert len(log.evaluated) == self.budget

    def test_single_objective(self, searcher_name: str) -> None:
        single = (Objective("macs", "max"),)
        if searcher_class(searcher_name).min_objectives > 1:
            with pytest.raises(InputError, match="or more objectives"):
                make_searcher(searcher_name, objectives=single)
            return
        log = drive(make_searcher(searcher_name, objectives=single), evaluate, self.budget)
        assert len(log.evaluated) == self.budget

    def test_failed_evaluations_are_tolerated(self, searcher_name: str) -> None:
        def flaky(genome: Genome) -> dict[str, float]:
            result = evaluate(genome)
            if int(genome.key, 16) % 4 == 0:  # a quarter of the evaluations "crash"
                result["macs"] = math.nan
            return result

        log = drive(make_searcher(searcher_name, constraints=(bitops_limit(),)), flaky, self.budget)
        assert len(log.evaluated) == self.budget

    def test_leaves_global_random_state_alone(self, searcher_name: str) -> None:
        np.random.seed(123)
        random.seed(123)
        expected = (np.random.rand(), random.random())
        np.random.seed(123)
        random.seed(123)
        drive(make_searcher(searcher_name), evaluate, self.budget)
        assert (np.random.rand(), random.random()) == expected
