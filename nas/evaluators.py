"""Evaluators turn genomes into metrics and say how each metric was obtained.

Why the ``source`` of a metric matters: a Pareto front that mixes measured accuracy with predicted
latency and analytic size must say so, or users deploy a subnet on the strength of a guess. Every
evaluator declares its metrics as ``{name: source}`` with source one of :data:`SOURCES`; the search
loop writes that provenance into every journal line and the report.

Only the analytic evaluator exists now; the supernet (``measured`` accuracy), predictors
(``predicted``) and latency tables join through :class:`CompositeEvaluator`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from search_spaces import Genome, SearchSpace

__all__ = ["SOURCES", "ANALYTIC_METRICS", "Evaluator", "AnalyticEvaluator", "CompositeEvaluator"]

SOURCES = ("measured", "predicted", "analytic")
ANALYTIC_METRICS = ("macs", "params", "size_kb", "bitops")


@runtime_checkable
class Evaluator(Protocol):
    """What the search loop needs from anything that scores candidates.

    ``metrics`` maps each metric the evaluator provides to its source (``"measured"``,
    ``"predicted"`` or ``"analytic"``). ``evaluate`` scores a batch (batches let a supernet share BN
    recalibration or a remote worker) and returns one ``{metric: value}`` dict per genome, in order,
    holding every declared metric.
    """

    @property
    def metrics(self) -> Mapping[str, str]: ...

    def evaluate(self, genomes: Sequence[Genome]) -> list[dict[str, float]]: ...


class AnalyticEvaluator:
    """MACs, parameters, deployed size (KiB) and BitOps from the space's block list; no training."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    @property
    def metrics(self) -> Mapping[str, str]:
        return {name: "analytic" for name in ANALYTIC_METRICS}

    def evaluate(self, genomes: Sequence[Genome]) -> list[dict[str, float]]:
        out = []
        for genome in genomes:
            costs = self.space.costs(genome)
            out.append({"macs": float(costs.macs), "params": float(costs.params), "size_kb": float(costs.size_kb),
                        "bitops": float(costs.bitops)})
        return out


class CompositeEvaluator:
    """Several evaluators as one: their metrics merged (no name twice), results cached by ``genome.key``.

    The cache makes a genome that two searches (or a predictor loop and its verification) both ask
    for cost one evaluation; :meth:`remember` preloads it, e.g. from a run's journal.
    """

    def __init__(self, evaluators: Sequence[Evaluator]) -> None:
        if not evaluators:
            raise ValueError("CompositeEvaluator needs at least one evaluator")
        merged: dict[str, str] = {}
        for evaluator in evaluators:
            for metric, source in evaluator.metrics.items():
                if metric in merged:
                    raise ValueError(f"metric {metric!r} is provided by two evaluators")
                if source not in SOURCES:
                    raise ValueError(f"metric {metric!r}: source {source!r} is not one of {SOURCES}")
                merged[metric] = source
        self.evaluators = tuple(evaluators)
        self._metrics = merged
        self._cache: dict[str, dict[str, float]] = {}

    @property
    def metrics(self) -> Mapping[str, str]:
        return dict(self._metrics)

    @property
    def bounds(self) -> Mapping[str, tuple[float, float]]:
        """Natural bounds of metrics whose evaluators declare them (e.g. accuracy in [0, 1])."""
        merged: dict[str, tuple[float, float]] = {}
        for evaluator in self.evaluators:
            merged.update(getattr(evaluator, "bounds", {}) or {})
        return merged

    def remember(self, genome_key: str, metrics: Mapping[str, float]) -> None:
        """Preload the cache with known metrics of a genome."""
        self._cache[genome_key] = {m: float(metrics[m]) for m in self._metrics}

    def evaluate(self, genomes: Sequence[Genome]) -> list[dict[str, float]]:
        todo = list({g.key: g for g in genomes if g.key not in self._cache}.values())
        if todo:
            merged: list[dict[str, float]] = [{} for _ in todo]
            for evaluator in self.evaluators:
                results = evaluator.evaluate(todo)
                _check(evaluator, todo, results)
                for row, result in zip(merged, results):
                    row.update({m: float(result[m]) for m in evaluator.metrics})
            for genome, row in zip(todo, merged):
                self._cache[genome.key] = row
        return [dict(self._cache[g.key]) for g in genomes]


def _check(evaluator: Evaluator, genomes: Sequence[Genome], results: Sequence[Mapping[str, float]]) -> None:
    """A broken evaluator is a bug: say which one and what it returned, not a KeyError later."""
    name = type(evaluator).__name__
    if len(results) != len(genomes):
        raise RuntimeError(f"{name} returned {len(results)} results for {len(genomes)} genomes")
    for result in results:
        missing = [m for m in evaluator.metrics if m not in result]
        if missing:
            raise RuntimeError(f"{name} did not return the metrics {missing}")
        bad = [m for m in evaluator.metrics if isinstance(result[m], bool) or not isinstance(result[m], (int, float))]
        if bad:
            raise RuntimeError(f"{name} returned non-numeric values for {bad}")
