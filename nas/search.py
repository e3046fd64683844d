"""``run_search``: the one loop every search goes through (ask → evaluate new → journal → tell).

Why one short loop: budget accounting, caching, provenance, crash safety and resume are easy to get
subtly wrong, and every searcher (random, NSGA-II, Optuna, ...) must get them the same way.

- Only distinct candidates count against the budget; a genome proposed again is answered from the
  cache, and the searcher is still told about every genome it asked for.
- Resume is a replay: the same seeded searcher runs again, and candidates found in ``prior`` (the
  journal of the interrupted run) are answered from it instead of being evaluated. Their metrics are
  bit-identical floats, so the searcher takes the same path and the final front equals the
  uninterrupted run's, and nothing is evaluated twice.
- Each result is journaled as soon as the evaluator yields it (:func:`nas.evaluators.evaluate_each`),
  not at the end of its batch: a kill at any instant loses only the evaluations in flight.
- A searcher that proposes nothing new for ``stall_limit`` batches in a row stops the search with a
  message instead of looping forever (a tiny space, or a converged population).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from nas.evaluators import Evaluator, evaluate_each
from nas.objectives import Constraint, Objective, objective_matrix
from nas.pareto import Normalization, front_indices, hypervolume, normalization_from_extremes, total_violation
from search_spaces import Genome, SearchSpace

__all__ = ["Trial", "HypervolumePoint", "SearchResult", "SearcherLike", "run_search"]


class SearcherLike(Protocol):
    """The part of ``nas.searchers.Searcher`` that the loop uses."""

    def ask(self) -> list[Genome]: ...

    def tell(self, genomes: list[Genome], results: list[dict[str, float]]) -> None: ...


class JournalLike(Protocol):
    def append(self, record: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class Trial:
    """One evaluated candidate: its genome, every metric, where each came from, cost and batch (read-only)."""

    genome: Genome
    metrics: Mapping[str, float]
    sources: Mapping[str, str]
    seconds: float
    batch: int
    finished_at: str = ""

    @property
    def key(self) -> str:
        return self.genome.key

    def to_record(self) -> dict[str, Any]:
        """The journal line of this trial."""
        return {"key": self.key, "genome": self.genome.to_dict(), "metrics": dict(self.metrics),
                "sources": dict(self.sources), "seconds": self.seconds, "batch": self.batch,
                "finished_at": self.finished_at}


@dataclass(frozen=True)
class HypervolumePoint:
    """Hypervolume of the feasible front after a batch."""

    batch: int
    evaluations: int
    front_size: int
    hypervolume: float


@dataclass(frozen=True)
class SearchResult:
    """What a search found; ``front`` is empty when no candidate met the constraints (see ``closest``)."""

    trials: tuple[Trial, ...]
    front: tuple[Trial, ...]
    closest: tuple[Trial, ...]
    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...]
    budget: int
    evaluated: int
    reused: int
    batches: int
    history: tuple[HypervolumePoint, ...]
    normalization: Normalization
    stop_reason: str

    @property
    def feasible(self) -> bool:
        """Whether any candidate satisfied every constraint."""
        return bool(self.front)

    @property
    def hypervolume(self) -> float:
        return self.history[-1].hypervolume if self.history else 0.0


@dataclass
class _Loop:
    """State of one :func:`run_search` call (kept out of the signature to keep the entry point short)."""

    space: SearchSpace
    evaluator: Evaluator
    searcher: SearcherLike
    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...]
    budget: int
    journal: JournalLike | None
    prior: Mapping[str, Trial]
    normalization: Normalization
    clock: Callable[[], str]
    trials: dict[str, Trial] = field(default_factory=dict)
    front: list[Trial] = field(default_factory=list)
    history: list[HypervolumePoint] = field(default_factory=list)
    evaluated: int = 0
    reused: int = 0

    def step(self, batch: int) -> int:
        """Ask one batch, evaluate what is new, tell; returns how many new distinct candidates it had.

        When the budget ends inside a batch, only the first new candidates are evaluated and the
        searcher is not told (the search is over; a partial ``tell`` would confuse population-based
        searchers)."""
        genomes = list(self.searcher.ask())
        new: dict[str, Genome] = {}
        for genome in genomes:
            if genome.key not in self.trials and genome.key not in new:
                new[genome.key] = genome
        room = self.budget - len(self.trials)
        complete = len(new) <= room
        chosen = list(new.values())[:room]
        self._admit(chosen, batch)
        if complete:
            self.searcher.tell(genomes, [dict(self.trials[g.key].metrics) for g in genomes])
        return len(chosen)

    def _admit(self, genomes: list[Genome], batch: int) -> None:
        fresh = [g for g in genomes if g.key not in self.prior]
        done = {t.key: t for t in self._evaluate(fresh, batch)}
        for genome in genomes:  # in proposal order, so a replay orders trials exactly as the original
            trial = done.get(genome.key) or self.prior[genome.key]
            self.trials[genome.key] = trial
        self.evaluated += len(fresh)
        self.reused += len(genomes) - len(fresh)
        self._update_front([self.trials[g.key] for g in genomes])

    def _evaluate(self, genomes: list[Genome], batch: int) -> list[Trial]:
        """Evaluate ``genomes``, journaling each one the moment its result exists (a crash loses only those in
        flight); ``seconds`` is the wall time since the previous result of the batch (its own, when sequential)."""
        sources = self.evaluator.metrics
        trials: dict[int, Trial] = {}
        last = time.perf_counter()
        for position, metrics in evaluate_each(self.evaluator, genomes):
            now = time.perf_counter()
            values = {m: float(v) for m, v in metrics.items()}
            trial = Trial(genomes[position], values, {m: sources[m] for m in values}, now - last, batch, self.clock())
            last = now
            if self.journal is not None:
                self.journal.append(trial.to_record())
            trials[position] = trial
        return [trials[i] for i in range(len(genomes))]

    def _update_front(self, added: list[Trial]) -> None:
        pool = self.front + added
        rows = [t.metrics for t in pool]
        F = objective_matrix(rows, self.objectives)
        self.front = [pool[i] for i in front_indices(F, total_violation(rows, self.constraints))]

    def record(self, batch: int) -> HypervolumePoint:
        F = objective_matrix([t.metrics for t in self.front], self.objectives)
        point = HypervolumePoint(batch, len(self.trials), len(self.front), hypervolume(F, self.normalization))
        self.history.append(point)
        return point

    def stalled_message(self, batches: int) -> str:
        return (f"stopped early: the searcher proposed no new candidate in {batches} batches in a row ({len(self.trials)}"
                f" of {self.budget} evaluated; the space has {self.space.cardinality():,} subnets)")

    def result(self, batches: int, stop_reason: str) -> SearchResult:
        trials = tuple(self.trials.values())
        rows = [t.metrics for t in trials]
        violation = total_violation(rows, self.constraints)
        front = tuple(trials[i] for i in front_indices(objective_matrix(rows, self.objectives), violation))
        closest = () if front else tuple(trials[i] for i in np.argsort(violation, kind="stable")[:5])
        return SearchResult(trials, front, closest, self.objectives, self.constraints, self.budget, self.evaluated,
                            self.reused, batches, tuple(self.history), self.normalization, stop_reason)


def run_search(
    space: SearchSpace,
    evaluator: Evaluator,
    searcher: SearcherLike,
    *,
    objectives: Sequence[Objective],
    constraints: Sequence[Constraint] = (),
    budget: int,
    journal: JournalLike | None = None,
    prior: Mapping[str, Trial] | None = None,
    normalization: Normalization | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_batch: Callable[[Sequence[HypervolumePoint]], None] | None = None,
    stall_limit: int = 20,
    clock: Callable[[], str] = lambda: "",
) -> SearchResult:
    """Search until ``budget`` distinct candidates are evaluated (or the searcher runs dry).

    ``prior`` holds trials of an interrupted run (by genome key) to replay instead of evaluating;
    ``journal`` receives one record per true evaluation; ``progress(done, budget)`` and
    ``on_batch(hypervolume_history)`` are called after every batch.
    """
    if budget < 1:
        raise ValueError(f"budget must be at least 1, got {budget}")
    norm = normalization or normalization_from_extremes(space, evaluator, objectives)
    loop = _Loop(space, evaluator, searcher, tuple(objectives), tuple(constraints), budget, journal,
                 dict(prior or {}), norm, clock)
    batch, stalled, reason = 0, 0, ""
    while len(loop.trials) < budget and not reason:
        added = loop.step(batch)
        stalled = 0 if added else stalled + 1
        loop.record(batch)
        batch += 1
        if stalled >= stall_limit:
            reason = loop.stalled_message(stall_limit)
        if progress is not None:
            progress(len(loop.trials), budget)
        if on_batch is not None:
            on_batch(tuple(loop.history))
    return loop.result(batch, reason or f"budget reached: {len(loop.trials)} distinct candidates evaluated")
