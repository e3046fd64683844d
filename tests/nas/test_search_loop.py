"""``run_search``: budget of distinct evaluations, cache, provenance, determinism, replay, stalls, infeasibility."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import StandInSearcher
from nas import searchers
from nas.evaluators import AnalyticEvaluator, CompositeEvaluator, Evaluator
from nas.objectives import Objective, parse_constraint
from nas.pareto import normalization_from_extremes
from nas.search import SearchResult, run_search
from search_spaces import InputError, get_space
from search_spaces.testing import TINY_MBV3_DEFAULT_CHOICES

OBJECTIVES = (Objective("size_kb"), Objective("bitops"))


@pytest.fixture(scope="module")
def space():
    return get_space("mbv3", **TINY_MBV3_DEFAULT_CHOICES)


class Counting:
    """An evaluator wrapper that records every genome it really evaluates."""

    def __init__(self, inner: Evaluator) -> None:
        self.inner, self.keys = inner, []

    @property
    def metrics(self):
        return self.inner.metrics

    def evaluate(self, genomes):
        self.keys += [g.key for g in genomes]
        return self.inner.evaluate(genomes)


class Repeating(StandInSearcher):
    """Proposes every genome twice per batch and re-proposes the previous batch's first genome."""

    def __init__(self, space, **kwargs):
        super().__init__(space, OBJECTIVES, **kwargs)
        self.previous = None
        self.told_batches = []

    def ask(self):
        fresh = super().ask()[: self.batch_size // 2]
        batch = fresh + fresh + ([self.previous] if self.previous is not None else [])
        self.previous = fresh[0]
        return batch

    def tell(self, genomes, results):
        super().tell(genomes, results)
        self.told_batches.append((list(genomes), list(results)))


def search(space, searcher, evaluator=None, **kwargs) -> tuple[SearchResult, Counting]:
    counting = Counting(evaluator or AnalyticEvaluator(space))
    kwargs.setdefault("budget", 30)
    kwargs.setdefault("normalization", normalization_from_extremes(space, AnalyticEvaluator(space), OBJECTIVES))
    return run_search(space, counting, searcher, objectives=OBJECTIVES, **kwargs), counting


def test_budget_counts_distinct_true_evaluations_only(space):
    searcher = Repeating(space, population_size=8)
    result, counting = search(space, searcher, budget=30)
    assert len(result.trials) == 30 == result.evaluated
    assert len(counting.keys) == len(set(counting.keys)) == 30
    assert [t.key for t in result.trials] == counting.keys


def test_searcher_is_told_every_genome_it_asked_including_repeats(space):
    searcher = Repeating(space, population_size=8)
    result, _ = search(space, searcher, budget=40)
    by_key = {t.key: dict(t.metrics) for t in result.trials}
    for genomes, results in searcher.told_batches:
        assert len(genomes) == len(results) > len({g.key for g in genomes})
        assert results == [by_key[g.key] for g in genomes]


def test_budget_ending_mid_batch_evaluates_exactly_the_budget(space):
    searcher = StandInSearcher(space, OBJECTIVES, population_size=8, seed=1)
    result, counting = search(space, searcher, budget=13)
    assert len(counting.keys) == 13 and result.batches == 2
    assert searcher.told == 8  # the partial last batch is not told: the search is over


def test_results_carry_provenance_batch_and_journal_records(space):
    journal = []

    class ListJournal:
        def append(self, record):
            journal.append(record)

    result, _ = search(space, StandInSearcher(space, OBJECTIVES, population_size=5), budget=10,
                       journal=ListJournal(), clock=lambda: "now")
    assert [r["key"] for r in journal] == [t.key for t in result.trials]
    first = journal[0]
    assert first["sources"] == {m: "analytic" for m in ("macs", "params", "size_kb", "bitops")}
    assert first["batch"] == 0 and journal[-1]["batch"] == 1 and first["finished_at"] == "now"
    assert space.from_dict(first["genome"]).key == first["key"]


def test_same_seed_same_search(space):
    a, _ = search(space, StandInSearcher(space, OBJECTIVES, population_size=6, seed=4))
    b, _ = search(space, StandInSearcher(space, OBJECTIVES, population_size=6, seed=4))
    c, _ = search(space, StandInSearcher(space, OBJECTIVES, population_size=6, seed=5))
    assert [t.key for t in a.trials] == [t.key for t in b.trials] != [t.key for t in c.trials]
    assert [t.key for t in a.front] == [t.key for t in b.front]
    assert [p.hypervolume for p in a.history] == [p.hypervolume for p in b.history]


def test_replay_from_prior_evaluates_nothing_twice_and_ends_identically(space):
    full, _ = search(space, StandInSearcher(space, OBJECTIVES, population_size=6, seed=2), budget=36)
    prior = {t.key: t for t in full.trials[:15]}
    resumed, counting = search(space, StandInSearcher(space, OBJECTIVES, population_size=6, seed=2), budget=36,
                               prior=prior)
    assert not set(counting.keys) & set(prior) and len(counting.keys) == 21
    assert (resumed.evaluated, resumed.reused) == (21, 15)
    assert [t.key for t in resumed.trials] == [t.key for t in full.trials]
    assert [t.key for t in resumed.front] == [t.key for t in full.front]
    assert resumed.hypervolume == full.hypervolume


def test_front_is_feasible_and_non_dominated(space):
    constraint = parse_constraint("params >= 12000")
    result, _ = search(space, StandInSearcher(space, OBJECTIVES, population_size=10), budget=60,
                       constraints=[constraint])
    assert result.feasible and result.front and not result.closest
    assert all(t.metrics["params"] >= 12000 for t in result.front)
    feasible = [t for t in result.trials if t.metrics["params"] >= 12000]
    for member in result.front:
        a = np.array([member.metrics["size_kb"], member.metrics["bitops"]])
        assert not any(np.all(np.array([t.metrics["size_kb"], t.metrics["bitops"]]) <= a) and
                       np.any(np.array([t.metrics["size_kb"], t.metrics["bitops"]]) < a) for t in feasible)
    hv = [p.hypervolume for p in result.history]
    assert hv == sorted(hv) and len(hv) == result.batches  # the front only improves


def test_infeasible_search_reports_the_closest_candidates(space):
    result, _ = search(space, StandInSearcher(space, OBJECTIVES, population_size=10), budget=20,
                       constraints=[parse_constraint("size_kb <= 0.001")])
    assert not result.feasible and result.front == () and result.hypervolume == 0.0
    sizes = [t.metrics["size_kb"] for t in result.closest]
    assert len(sizes) == 5 and sizes == sorted(sizes) == sorted(t.metrics["size_kb"] for t in result.trials)[:5]


def test_a_searcher_that_runs_dry_stops_with_a_message(space):
    class Stuck(StandInSearcher):
        def ask(self):
            return [space.smallest()] * self.batch_size

    result, counting = search(space, Stuck(space, OBJECTIVES, population_size=4), budget=50, stall_limit=20)
    assert len(counting.keys) == 1 and result.batches == 21
    assert result.stop_reason.startswith("stopped early: the searcher proposed no new candidate in 20 batches")


def test_progress_and_batch_callbacks(space):
    seen, histories = [], []
    search(space, StandInSearcher(space, OBJECTIVES, population_size=5), budget=15,
           progress=lambda done, total: seen.append((done, total)), on_batch=histories.append)
    assert seen == [(5, 15), (10, 15), (15, 15)]
    assert [len(h) for h in histories] == [1, 2, 3]


def test_budget_must_be_positive(space):
    with pytest.raises(ValueError, match="budget"):
        search(space, StandInSearcher(space, OBJECTIVES), budget=0)


# ---- evaluators ----------------------------------------------------------------------------------
def test_analytic_evaluator_matches_space_costs(space):
    genome = space.sample(np.random.default_rng(0))
    costs = space.costs(genome)
    (row,) = AnalyticEvaluator(space).evaluate([genome])
    assert row == {"macs": costs.macs, "params": costs.params, "size_kb": costs.size_kb, "bitops": costs.bitops}
    assert isinstance(AnalyticEvaluator(space), Evaluator)


def test_composite_merges_and_caches_by_key(space):
    class Extra:
        metrics = {"answer": "predicted"}

        def __init__(self):
            self.calls = 0

        def evaluate(self, genomes):
            self.calls += len(genomes)
            return [{"answer": 42.0} for _ in genomes]

    extra = Extra()
    composite = CompositeEvaluator([AnalyticEvaluator(space), extra])
    assert composite.metrics == {"macs": "analytic", "params": "analytic", "size_kb": "analytic",
                                 "bitops": "analytic", "answer": "predicted"}
    g = space.sample(np.random.default_rng(1))
    rows = composite.evaluate([g, g])
    rows += composite.evaluate([g])
    assert extra.calls == 1 and rows[0] == rows[1] == rows[2] and rows[0]["answer"] == 42.0
    composite.remember("k" * 16, {**rows[0], "answer": 1.0})


def test_composite_rejects_clashes_and_broken_evaluators(space):
    with pytest.raises(ValueError, match="provided by two evaluators"):
        CompositeEvaluator([AnalyticEvaluator(space), AnalyticEvaluator(space)])

    class Broken:
        metrics = {"x": "measured"}

        def evaluate(self, genomes):
            return [{} for _ in genomes]

    with pytest.raises(RuntimeError, match="Broken did not return the metrics"):
        CompositeEvaluator([Broken()]).evaluate([space.smallest()])

    class BadSource:
        metrics = {"x": "guessed"}

    with pytest.raises(ValueError, match="source 'guessed'"):
        CompositeEvaluator([BadSource()])


class Streaming:
    """An expensive evaluator that yields each result as it finishes, in reverse order, and can die mid-batch."""

    metrics = {"answer": "measured"}

    def __init__(self, die_after: int | None = None) -> None:
        self.die_after, self.done = die_after, 0

    def evaluate(self, genomes):
        raise AssertionError("a streaming evaluator is read through evaluate_iter")

    def evaluate_iter(self, genomes):
        for position in reversed(range(len(genomes))):
            if self.done == self.die_after:
                raise KeyboardInterrupt("killed mid-batch")
            self.done += 1
            yield position, {"answer": float(position)}


class ListJournal:
    def __init__(self) -> None:
        self.records = []

    def append(self, record):
        self.records.append(record)


def test_composite_streams_the_expensive_evaluator_with_complete_rows(space):
    composite = CompositeEvaluator([Streaming(), AnalyticEvaluator(space)])
    genomes = [space.sample(np.random.default_rng(i)) for i in range(4)]
    composite.remember(genomes[1].key, {"answer": -1.0, **AnalyticEvaluator(space).evaluate([genomes[1]])[0]})
    pairs = list(composite.evaluate_iter(genomes + [genomes[0]]))
    assert [p for p, _ in pairs] == [1, 3, 2, 0, 4], "cached first, then as finished; a repeat with its twin"
    assert all(set(row) == set(composite.metrics) for _, row in pairs)
    assert composite.evaluate(genomes)[3]["answer"] == 2.0  # position within the evaluated batch, now cached


def test_each_result_is_journaled_before_the_batch_ends(space):
    """A crash mid-batch keeps every result that was already returned (the journal is written per candidate)."""
    journal, searcher = ListJournal(), StandInSearcher(space, OBJECTIVES, population_size=8)
    evaluator = CompositeEvaluator([AnalyticEvaluator(space), Streaming(die_after=11)])
    with pytest.raises(KeyboardInterrupt):
        run_search(space, evaluator, searcher, objectives=OBJECTIVES, budget=16, journal=journal,
                   normalization=normalization_from_extremes(space, AnalyticEvaluator(space), OBJECTIVES))
    assert len(journal.records) == 11 and [r["batch"] for r in journal.records] == [0] * 8 + [1] * 3
    assert all(r["metrics"]["answer"] >= 0 and r["seconds"] >= 0 for r in journal.records)


def test_the_hypervolume_box_measures_nothing_expensive_when_only_cheap_metrics_need_it(space):
    class Bounded(Streaming):
        bounds = {"answer": (0.0, 1.0)}

        def evaluate_iter(self, genomes):
            raise AssertionError("the box needs no measurement of a bounded metric")

    composite = CompositeEvaluator([AnalyticEvaluator(space), Bounded()])
    box = normalization_from_extremes(space, composite, (Objective("answer", "max"), Objective("size_kb")))
    sizes = sorted(space.costs(g).size_kb for g in (space.smallest(), space.largest()))
    assert box.ideal == (-1.0, sizes[0]) and box.nadir == (0.0, sizes[1])
    with pytest.raises(KeyError, match="no evaluator provides"):
        composite.evaluate_only([space.smallest()], ["latency_ms"])


# ---- every registered searcher: budget, distinctness and replay (tests generated from the registry) ----
def _registered() -> list[str]:
    return searchers.list_searchers()


@pytest.mark.parametrize("name", _registered())
def test_every_searcher_respects_the_budget_and_replays_identically(space, name):
    kwargs = {k: 6 for k in ("population_size", "batch_size") if k in searchers.searcher_options(name)}
    constraints = [parse_constraint("params >= 8000")]
    if searchers.searcher_class(name).expensive:
        pytest.skip(f"{name} is expensive; its own conformance suite covers it")

    def make():
        return searchers.get_searcher(name, space, OBJECTIVES, constraints=constraints, seed=3, **kwargs)

    try:
        first = make()
    except InputError as err:  # e.g. an optional package that is not installed
        pytest.skip(str(err))
    full, counting = search(space, first, budget=18, constraints=constraints)
    assert len(full.trials) == 18 and len(set(counting.keys)) == len(counting.keys) == 18
    prior = {t.key: t for t in full.trials[:8]}
    again, counting = search(space, make(), budget=18, constraints=constraints, prior=prior)
    assert (again.evaluated, again.reused) == (10, 8) and not set(counting.keys) & set(prior)
    assert [t.key for t in again.trials] == [t.key for t in full.trials]
    assert [t.key for t in again.front] == [t.key for t in full.front]
