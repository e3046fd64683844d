"""Free bits: a quantization gene is lowered only where an exact cheap objective or constraint gains by it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nas.evaluators import AnalyticEvaluator
from nas.objectives import Constraint, Objective
from nas.searchers import SearchContext, get_searcher
from nas.searchers.free_bits import _no_worse, bit_genes, cheap_directions, raise_free_bits
from nas.searchers.testing import drive, evaluate, small_space
from search_spaces import InputError, get_space
from search_spaces.testing import TINY_MBV3_DEFAULT_CHOICES

ACCURACY = Objective("accuracy", "max")


@pytest.fixture(scope="module")
def space():
    return small_space()


@pytest.fixture(scope="module")
def cheap(space):
    return AnalyticEvaluator(space)


@pytest.fixture(scope="module")
def genomes(space):
    rng = np.random.default_rng(7)
    return [space.sample(rng) for _ in range(40)]


def cheap_rows(cheap):
    return lambda genomes: [dict(r) for r in cheap.evaluate(list(genomes))]


def active_bits(space, genome, suffix):
    return [genome[g.name] for g in space.genes
            if g.kind == "quant" and g.name.endswith(suffix) and space.is_active(genome, g)]


def top(space, suffix):
    return max(max(g.choices) for g in space.genes if g.kind == "quant" and g.name.endswith(suffix))


def test_activation_bits_rise_under_a_size_objective_and_weight_bits_stay(space, cheap, genomes):
    directions = cheap_directions((ACCURACY, Objective("size_kb")), (), set(cheap.metrics))
    assert directions == {"size_kb": "min"}
    raised = raise_free_bits(genomes, space, cheap_rows(cheap), directions)
    lowered_before = sum(b < top(space, "a_bits") for g in genomes for b in active_bits(space, g, "a_bits"))
    assert lowered_before > 20  # the test could fail: random genomes lower many activations
    for before, after in zip(genomes, raised):
        assert after == space.canonical(after)
        assert set(active_bits(space, after, "a_bits")) == {top(space, "a_bits")}
        assert active_bits(space, after, "w_bits") == active_bits(space, before, "w_bits")
        assert [after[g.name] for g in space.genes if g.kind == "arch"] == \
               [before[g.name] for g in space.genes if g.kind == "arch"]
        assert evaluate(after)["size_kb"] == evaluate(before)["size_kb"]


def test_a_bit_that_buys_bitops_is_kept(space, cheap, genomes):
    directions = cheap_directions((ACCURACY, Objective("bitops")), (), set(cheap.metrics))
    assert raise_free_bits(genomes, space, cheap_rows(cheap), directions) == [space.canonical(g) for g in genomes]


def test_a_constraint_counts_by_its_value_not_by_its_room(space, cheap, genomes):
    roomy = Constraint("size_kb", "<=", 1e9)
    directions = cheap_directions((ACCURACY,), (roomy,), set(cheap.metrics))
    assert directions == {"size_kb": "min"}
    raised = raise_free_bits(genomes, space, cheap_rows(cheap), directions)
    assert [active_bits(space, g, "w_bits") for g in raised] == [active_bits(space, g, "w_bits") for g in genomes]


def test_with_nothing_cheap_to_lose_every_bit_rises(space, cheap, genomes):
    raised = raise_free_bits(genomes[:5], space, cheap_rows(cheap), {})
    for genome in raised:
        assert set(active_bits(space, genome, "bits")) == {top(space, "bits")}


def test_metrics_of_other_evaluators_do_not_count(cheap):
    directions = cheap_directions((ACCURACY, Objective("latency_ms")), (Constraint("accuracy", ">=", 0.5),),
                                  set(cheap.metrics))
    assert directions == {}


def test_a_metric_wanted_both_ways_must_stay_as_it_is(space, cheap, genomes):
    directions = cheap_directions((ACCURACY, Objective("size_kb", "max")), (Constraint("size_kb", "<=", 1e9),),
                                  set(cheap.metrics))
    assert directions == {"size_kb": "equal"}
    raised = raise_free_bits(genomes, space, cheap_rows(cheap), directions)
    assert [evaluate(g)["size_kb"] for g in raised] == [evaluate(g)["size_kb"] for g in genomes]


@pytest.mark.parametrize("new, old, ok", [(math.inf, 1.0, False), (math.nan, 1.0, False), (math.inf, math.inf, True),
                                          (1.0, math.nan, False), (1.0, 1.0 + 1e-12, True), (1.1, 1.0, False)])
def test_a_value_that_is_not_finite_is_never_no_worse_unless_unchanged(new, old, ok):
    assert _no_worse({"m": new}, {"m": old}, {"m": "min"}) is ok


def test_granularity_and_symmetry_genes_are_never_touched():
    space = get_space("mbv3", **TINY_MBV3_DEFAULT_CHOICES, search_granularity=True, search_symmetry=True)
    others = [g for g in space.genes if g.kind == "quant" and g not in bit_genes(space)]
    assert others and all(isinstance(c, str) for g in others for c in g.choices)
    rng = np.random.default_rng(3)
    genomes = [space.sample(rng) for _ in range(30)]
    raised = raise_free_bits(genomes, space, lambda gs: [{} for _ in gs], {})
    assert [[g[o.name] for o in others] for g in raised] == [[g[o.name] for o in others] for g in genomes]
    assert {g[b.name] for g in raised for b in bit_genes(space) if space.is_active(g, b)} == \
           {max(b.choices) for b in bit_genes(space)}


def synthetic(genome):
    """Accuracy that grows with the network and with every bit (the monotone prior holds)."""
    row = evaluate(genome)
    bits = sum(float(genome[g.name]) for g in small_space().genes if g.kind == "quant")
    return {**row, "accuracy": math.log(row["macs"]) + bits / 50}


@pytest.mark.parametrize("raise_bits", [True, False])
def test_the_searcher_never_proposes_a_free_lowered_bit(space, cheap, raise_bits):
    searcher = get_searcher("predictor-nsga2", space, (ACCURACY, Objective("size_kb")), seed=3,
                            context=SearchContext(cheap=cheap), n_startup_trials=10, batch_size=4,
                            population_size=12, generations=3, raise_free_bits=raise_bits)
    log = drive(searcher, synthetic, budget=22)
    asked = [g for batch in log.batches for g in batch]
    assert len(log.evaluated) == 22 and len(searcher.rounds) >= 2
    lowered = [b for g in asked for b in active_bits(space, g, "a_bits") if b < top(space, "a_bits")]
    assert (not lowered) if raise_bits else len(lowered) > 10


def test_the_option_must_be_a_boolean(space):
    with pytest.raises(InputError) as err:
        get_searcher("predictor-nsga2", space, (ACCURACY,), context=SearchContext(cheap=AnalyticEvaluator(space)),
                     raise_free_bits="yes")
    assert err.value.field == "search.options.raise_free_bits"


def test_with_no_cheap_objective_the_option_is_refused_when_asked(space, cheap):
    searcher = get_searcher("predictor-nsga2", space, (ACCURACY,), context=SearchContext(cheap=cheap),
                            raise_free_bits=True)
    with pytest.raises(InputError, match="no objective or constraint is on an exact cheap metric") as err:
        searcher.ask()
    assert err.value.field == "search.options.raise_free_bits"


def test_without_cheap_metrics_the_option_is_refused_when_asked(space):
    searcher = get_searcher("predictor-nsga2", space, (ACCURACY, Objective("size_kb")), raise_free_bits=True)
    with pytest.raises(InputError, match="no exact cheap metrics") as err:
        searcher.ask()
    assert err.value.field == "search.options.raise_free_bits"
