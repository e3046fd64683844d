"""Evaluators turn genomes into metrics and say how each metric was obtained.

Why the ``source`` of a metric matters: a Pareto front that mixes measured accuracy with predicted
latency and analytic size must say so, or users deploy a subnet on the strength of a guess. Every
evaluator declares its metrics as ``{name: source}`` with source one of :data:`SOURCES`; the search
loop writes that provenance into every journal line and the report.

The analytic evaluator is here; the supernet (``measured`` accuracy) and latency tables
(``predicted``) join through :class:`CompositeEvaluator`.

Why results can stream: an expensive evaluator (a supernet in this process or on Ray workers) may
take minutes per batch. One that also has ``evaluate_iter(genomes)`` yields ``(position, metrics)``
as each candidate finishes, so the search loop journals every result the moment it exists and a
crash loses only the evaluations still in flight (:func:`evaluate_each`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol, runtime_checkable

from search_spaces import Genome, SearchSpace

__all__ = ["SOURCES", "ANALYTIC_METRICS", "Evaluator", "AnalyticEvaluator", "CompositeEvaluator", "evaluate_each"]

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


def evaluate_each(evaluator: Evaluator, genomes: Sequence[Genome]) -> Iterator[tuple[int, dict[str, float]]]:
    """``(position, metrics)`` of every genome as soon as it is known, each position exactly once.

    Evaluators with ``evaluate_iter`` stream (in completion order); the others give the batch at once.
    """
    stream = getattr(evaluator, "evaluate_iter", None)
    pairs = stream(list(genomes)) if stream is not None else enumerate(evaluator.evaluate(list(genomes)))
    seen: set[int] = set()
    for position, metrics in pairs:
        if position in seen or not 0 <= position < len(genomes):
            raise RuntimeError(f"{type(evaluator).__name__} yielded position {position} twice or out of range")
        seen.add(position)
        yield position, metrics
    if len(seen) != len(genomes):
        raise RuntimeError(f"{type(evaluator).__name__} returned {len(seen)} results for {len(genomes)} genomes")


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
        found = dict(self.evaluate_iter(genomes))
        return [found[i] for i in range(len(genomes))]

    def evaluate_only(self, genomes: Sequence[Genome], metrics: Sequence[str]) -> list[dict[str, float]]:
        """``metrics`` (and whatever their evaluators give besides) without running the other evaluators and
        without caching: e.g. the size of the space's extremes, without measuring their accuracy."""
        unknown = sorted(set(metrics) - set(self._metrics))
        if unknown:
            raise KeyError(f"no evaluator provides {unknown}")
        rows: list[dict[str, float]] = [{} for _ in genomes]
        for evaluator in self.evaluators:
            if set(evaluator.metrics) & set(metrics):
                for position, result in evaluate_each(evaluator, genomes):
                    rows[position].update(_checked(evaluator, result))
        return rows

    def evaluate_iter(self, genomes: Sequence[Genome]) -> Iterator[tuple[int, dict[str, float]]]:
        """Cached genomes first, then the new ones as the last streaming evaluator finishes each.

        Evaluators without ``evaluate_iter`` (analytic costs, tables: instant) run on the whole batch
        first, so a streamed result is complete when it is yielded.
        """
        where: dict[str, list[int]] = {}
        for position, genome in enumerate(genomes):
            if genome.key in self._cache:
                yield position, dict(self._cache[genome.key])
            else:
                where.setdefault(genome.key, []).append(position)
        todo = [genomes[positions[0]] for positions in where.values()]
        if not todo:
            return
        ordered = sorted(self.evaluators, key=lambda e: hasattr(e, "evaluate_iter"))  # stable: batch ones first
        merged: list[dict[str, float]] = [{} for _ in todo]
        for evaluator in ordered[:-1]:
            for row, (_, result) in zip(merged, sorted(evaluate_each(evaluator, todo), key=lambda pair: pair[0])):
                row.update(_checked(evaluator, result))
        for j, result in evaluate_each(ordered[-1], todo):
            row = merged[j] | _checked(ordered[-1], result)
            self._cache[todo[j].key] = row
            for position in where[todo[j].key]:
                yield position, dict(row)


def _checked(evaluator: Evaluator, result: Mapping[str, float]) -> dict[str, float]:
    """The evaluator's declared metrics of one result as floats; a broken evaluator is a bug: say which one."""
    name = type(evaluator).__name__
    missing = [m for m in evaluator.metrics if m not in result]
    if missing:
        raise RuntimeError(f"{name} did not return the metrics {missing}")
    bad = [m for m in evaluator.metrics if isinstance(result[m], bool) or not isinstance(result[m], (int, float))]
    if bad:
        raise RuntimeError(f"{name} returned non-numeric values for {bad}")
    return {m: float(result[m]) for m in evaluator.metrics}
