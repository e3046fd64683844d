"""ILP bit allocation (HAWQ-V3) and the ilp-bits / nas-then-ilp searchers: exact answers, budgets, bad input."""

import itertools
import json
import pickle

import numpy as np
import pytest

from nas.bit_allocation import Infeasible, allocate, best_achievable, bit_problem
from nas.evaluators import AnalyticEvaluator
from nas.objectives import Constraint, Objective, parse_constraint
from nas.search import run_search
from nas.searchers import SearchContext, get_searcher
from predictors.accuracy import QuantSensitivity
from search_spaces import InputError
from search_spaces.testing import tiny_mbv3

SPACE = tiny_mbv3(w_bits=[2, 4, 8], a_bits=[4, 8], depths=[1, 2])
ARCH = SPACE.largest()  # 4 blocks with bits: 6 options each, 1296 allocations
OBJECTIVES = (Objective("macs", "max"), Objective("size_kb"))


class BlockLatency:
    """An additive latency of invented per-block costs (a latency table's shape: a sum over blocks)."""

    metrics = {"latency_ms": "predicted"}

    def evaluate(self, genomes):
        out = []
        for genome in genomes:
            blocks = SPACE.blocks(genome)
            out.append({"latency_ms": sum(b.out_ch * (1 + b.w_bits / 8) * (1 + b.a_bits / 16) / 1000 for b in blocks)})
        return out


class Cheap:
    metrics = {**AnalyticEvaluator(SPACE).metrics, **BlockLatency.metrics}

    def evaluate(self, genomes):
        return [a | b for a, b in zip(AnalyticEvaluator(SPACE).evaluate(genomes), BlockLatency().evaluate(genomes))]


def table(seed: int = 0) -> QuantSensitivity:
    rng = np.random.default_rng(seed)
    rows = {g.name: {c: float(rng.random() * (9 - c) ** 2) for c in g.choices} for g in SPACE.genes if g.kind == "quant"}
    return QuantSensitivity(SPACE, rows, metric="test")


def brute_force(sens: QuantSensitivity, constraints):
    """Every allocation of ARCH's active quantization genes; the least total sensitivity meeting the constraints."""
    genes = [g for g in SPACE.genes if g.kind == "quant" and SPACE.is_active(ARCH, g)]
    genomes = [ARCH.with_values(dict(zip([g.name for g in genes], values)))
               for values in itertools.product(*(g.choices for g in genes))]
    rows = Cheap().evaluate(genomes)
    scores = sens.score(genomes)
    ok = [i for i, r in enumerate(rows) if all(c.violation(r[c.metric]) == 0 for c in constraints)]
    return (min(scores[i] for i in ok) if ok else None), len(genomes)


def budgets():
    largest = Cheap().evaluate([ARCH])[0]
    out = []
    for share in (0.9, 0.6, 0.45):
        out.append([Constraint("size_kb", "<=", share * largest["size_kb"])])
        out.append([Constraint("bitops", "<=", share ** 2 * largest["bitops"])])
        out.append([Constraint("latency_ms", "<=", (0.5 + share / 2) * largest["latency_ms"])])
    out.append([Constraint("size_kb", "<=", 0.6 * largest["size_kb"]), Constraint("bitops", "<=", 0.3 * largest["bitops"])])
    return out


@pytest.mark.parametrize("constraints", budgets(), ids=lambda cs: " & ".join(str(c) for c in cs))
def test_the_ilp_answer_equals_brute_force_and_meets_the_budget(constraints):
    sens = table()
    problem = bit_problem(SPACE, ARCH, sens.score, Cheap().evaluate, ["size_kb", "bitops", "latency_ms"])
    expected, n = brute_force(sens, constraints)
    assert n == 6 ** 4 and expected is not None
    genome, picks = allocate(problem, constraints, Cheap().evaluate)
    assert sens.score([genome])[0] == pytest.approx(expected, rel=1e-9)
    assert problem.sensitivity(picks) == pytest.approx(expected, rel=1e-9)
    exact = Cheap().evaluate([genome])[0]
    for c in constraints:
        assert c.violation(exact[c.metric]) == 0  # met exactly, not within a solver tolerance
        assert problem.predicted(c.metric, picks) == pytest.approx(exact[c.metric], rel=1e-12)


def test_a_budget_at_exactly_the_reachable_value_is_met():
    sens = table(3)
    problem = bit_problem(SPACE, ARCH, sens.score, Cheap().evaluate, ["size_kb"])
    tight = Constraint("size_kb", "<=", best_achievable(problem, Constraint("size_kb", "<=", 0)))
    genome, _ = allocate(problem, [tight], Cheap().evaluate)
    assert Cheap().evaluate([genome])[0]["size_kb"] == tight.bound
    with pytest.raises(Infeasible) as err:
        allocate(problem, [Constraint("size_kb", "<=", tight.bound - 0.01)], Cheap().evaluate)
    assert err.value.best["size_kb <= " + format(tight.bound - 0.01, "g")] == tight.bound


def test_a_metric_that_is_not_additive_is_refused():
    def squared(genomes):
        return [{"size_kb": r["size_kb"] ** 2} for r in AnalyticEvaluator(SPACE).evaluate(genomes)]

    problem = bit_problem(SPACE, ARCH, table().score, squared, ["size_kb"])
    bound = 0.5 * squared([ARCH])[0]["size_kb"]
    with pytest.raises(ValueError, match="not a sum over blocks"):
        allocate(problem, [Constraint("size_kb", "<=", bound)], squared)


# ---- the searchers -------------------------------------------------------------------------------
def context():
    return SearchContext(cheap=Cheap(), sensitivity=table())


def test_ilp_bits_proposes_one_allocation_per_budget_then_stops():
    big = Cheap().evaluate([ARCH])[0]
    texts = [f"size_kb <= {0.6 * big['size_kb']}", f"latency_ms <= {0.8 * big['latency_ms']}"]
    searcher = get_searcher("ilp-bits", SPACE, OBJECTIVES, context=context(), budgets=texts)
    result = run_search(SPACE, Cheap(), searcher, objectives=OBJECTIVES, budget=2)
    assert len(result.trials) == 2
    for trial, text in zip(result.trials, texts):
        c = parse_constraint(text)
        assert c.violation(trial.metrics[c.metric]) == 0
        assert SPACE.canonical(trial.genome.with_values({g.name: ARCH[g.name] for g in SPACE.genes
                                                         if g.kind == "arch"})) == trial.genome
    assert searcher.ask() == []
    state = pickle.loads(pickle.dumps(searcher.state_dict()))
    again = get_searcher("ilp-bits", SPACE, OBJECTIVES, context=context(), budgets=texts)
    again.load_state_dict(state)
    assert again.ask() == []


def test_a_budget_below_the_architecture_is_one_error_naming_it_and_the_reachable_value():
    sens = table()
    problem = bit_problem(SPACE, ARCH, sens.score, Cheap().evaluate, ["size_kb"])
    low = best_achievable(problem, Constraint("size_kb", "<=", 0))
    with pytest.raises(InputError) as err:
        get_searcher("ilp-bits", SPACE, OBJECTIVES, context=context(), budgets=["bitops <= 1e99", "size_kb <= 1"])
    assert err.value.field == "search.options.budgets[1]"
    assert "size_kb <= 1" in str(err.value) and f"{low:g}" in str(err.value) and "\n" not in str(err.value)


def test_a_budget_below_the_smallest_subnet_is_refused_by_nas_then_ilp():
    smallest = AnalyticEvaluator(SPACE).evaluate([SPACE.smallest()])[0]["size_kb"]
    with pytest.raises(InputError, match=f"smallest size_kb the smallest subnet reaches is {smallest:g}") as err:
        get_searcher("nas-then-ilp", SPACE, OBJECTIVES, context=context(), budgets=[f"size_kb <= {smallest / 2}"])
    assert err.value.field == "search.options.budgets[0]"


@pytest.mark.parametrize("options, field, message", [
    ({"budgets": []}, "search.options.budgets", "non-empty list"),
    ({"budgets": "size_kb <= 3"}, "search.options.budgets", "non-empty list"),
    ({"budgets": ["size_kb < 3"]}, "search.options.budgets[0]", "METRIC <= NUMBER"),
    ({"budgets": [7]}, "search.options.budgets[0]", "expected a string"),
    ({"budgets": ["accuracy <= 0.9"]}, "search.options.budgets[0]", "cannot budget 'accuracy'"),
    ({"budgets": ["size_kb <= 1e9"], "architecture": "no/such/arch.json"}, "search.options.architecture",
     "no such file"),
    ({"budgets": ["size_kb <= 1e9"], "sensitivity": "no/such/table.json"}, "search.options.sensitivity",
     "no such file"),
    ({"budgets": ["size_kb <= 1e9"], "hessian_samples": 0}, "search.options.hessian_samples", "1..1000"),
    ({"budgets": ["size_kb <= 1e9"], "budget": 3}, "search.options.budget", "did you mean 'budgets'"),
])
def test_malformed_options_are_one_error_naming_the_option(options, field, message):
    with pytest.raises(InputError, match=message) as err:
        get_searcher("ilp-bits", SPACE, OBJECTIVES, context=context(), **options)
    assert err.value.field == field and "\n" not in str(err.value)


def test_a_genome_file_of_another_space_is_named(tmp_path):
    other = tiny_mbv3(w_bits=[4, 6], a_bits=[4, 8]).largest()
    path = tmp_path / "arch.json"
    path.write_text(json.dumps({"genome": {**other.to_dict(), "space": "resnet"}}))
    with pytest.raises(InputError, match="resnet") as err:
        get_searcher("ilp-bits", SPACE, OBJECTIVES, context=context(), architecture=str(path),
                     budgets=["size_kb <= 1e9"])
    assert err.value.source == str(path)
    path.write_text(json.dumps({"genome": other.to_dict()}))  # same space name, other bit choices
    with pytest.raises(InputError, match="not allowed") as err:
        get_searcher("ilp-bits", SPACE, OBJECTIVES, context=context(), architecture=str(path),
                     budgets=["size_kb <= 1e9"])
    assert err.value.source == str(path)
    path.write_text(json.dumps({"genome": SPACE.smallest().to_dict()}))
    searcher = get_searcher("ilp-bits", SPACE, OBJECTIVES, context=context(), architecture=str(path),
                            budgets=["size_kb <= 1e9"])
    assert searcher.architecture == SPACE.smallest()


def test_without_a_sensitivity_table_asking_is_an_error_naming_the_option():
    searcher = get_searcher("ilp-bits", SPACE, OBJECTIVES, budgets=["size_kb <= 1e9"])  # a config check: no table
    with pytest.raises(InputError) as err:
        searcher.ask()
    assert err.value.field == "search.options.sensitivity"


def run_two_stage(seed: int, budget_texts, nas_trials=12):
    searcher = get_searcher("nas-then-ilp", SPACE, OBJECTIVES, seed=seed, context=context(), budgets=budget_texts,
                            nas_trials=nas_trials, top_k=2, inner_options={"population_size": 6})
    return searcher, run_search(SPACE, Cheap(), searcher, objectives=OBJECTIVES, budget=nas_trials + 2 * 2,
                                stall_limit=3)


def test_nas_then_ilp_searches_at_8_bits_then_allocates_bits_on_the_best_architectures():
    big = Cheap().evaluate([ARCH])[0]["size_kb"]
    texts = [f"size_kb <= {0.5 * big}", f"size_kb <= {0.35 * big}"]
    searcher, result = run_two_stage(1, texts)
    first = [g for g, _ in searcher.first_stage]
    assert len(first) == 12
    for genome in first:  # every active quantization gene at 8 bits in stage 1
        assert all(genome[g.name] == 8 for g in SPACE.genes if g.kind == "quant" and SPACE.is_active(genome, g))
    later = [t for t in result.trials if t.genome not in first]
    assert 1 <= len(later) <= 4
    ranked = sorted(searcher.first_stage, key=lambda item: -item[1]["macs"])
    for trial in later:  # allocations of the best stage-1 architectures, each within one of the budgets
        assert any(parse_constraint(t).violation(trial.metrics["size_kb"]) == 0 for t in texts)
        arch = {g.name: trial.genome[g.name] for g in SPACE.genes if g.kind == "arch"}
        position = next(i for i, (g, _) in enumerate(ranked) if all(g[k] == v for k, v in arch.items()))
        assert position < len(ranked)
    assert [t.key for t in run_two_stage(1, texts)[1].trials] == [t.key for t in result.trials]
    assert [t.key for t in run_two_stage(2, texts)[1].trials] != [t.key for t in result.trials]


def test_a_budget_no_first_stage_architecture_meets_is_a_note_not_a_silent_gap():
    smallest = Cheap().evaluate([SPACE.smallest()])[0]["size_kb"]
    searcher, _ = run_two_stage(1, [f"size_kb <= {1e9}"])
    reach = min(best_achievable(searcher._problem(g), Constraint("size_kb", "<=", 0))
                for g, _ in searcher.first_stage)
    assert smallest < reach  # the space meets the budget below, the architectures stage 1 found do not
    budget = f"size_kb <= {(smallest + reach) / 2}"
    searcher, result = run_two_stage(1, [budget, f"size_kb <= {1e9}"])
    assert searcher.notes() == [f"budget '{parse_constraint(budget)}': none of the 12 architectures the first stage "
                                f"measured can meet it (the smallest size_kb they reach is {reach:g}); no candidate "
                                "for it"]
    assert not any(t.metrics["size_kb"] <= (smallest + reach) / 2 for t in result.trials)
    restored = get_searcher("nas-then-ilp", SPACE, OBJECTIVES, seed=1, context=context(),
                            budgets=[budget, f"size_kb <= {1e9}"], nas_trials=12, top_k=2,
                            inner_options={"population_size": 6})
    restored.load_state_dict(pickle.loads(pickle.dumps(searcher.state_dict())))
    assert restored.notes() == searcher.notes()  # a resumed run still reports it
    assert run_two_stage(1, [f"size_kb <= {1e9}"])[0].notes() == []


def test_nas_then_ilp_resumes_identically_between_stages():
    big = Cheap().evaluate([ARCH])[0]["size_kb"]
    texts = [f"size_kb <= {0.5 * big}"]
    make = lambda: get_searcher("nas-then-ilp", SPACE, OBJECTIVES, seed=4, context=context(), budgets=texts,  # noqa: E731
                                nas_trials=12, top_k=2, inner_options={"population_size": 6})
    searcher, batches = make(), []
    for _ in range(2):
        batch = searcher.ask()
        searcher.tell(batch, Cheap().evaluate(batch))
    state = pickle.loads(pickle.dumps(searcher.state_dict()))
    while batch:
        batch = searcher.ask()
        batches.append(batch)
        if batch:
            searcher.tell(batch, Cheap().evaluate(batch))
    resumed = make()
    resumed.load_state_dict(state)
    again = []
    while True:
        batch = resumed.ask()
        again.append(batch)
        if not batch:
            break
        resumed.tell(batch, Cheap().evaluate(batch))
    assert again == batches


def test_inner_options_are_checked_by_the_inner_searcher():
    with pytest.raises(InputError, match="population_size") as err:
        get_searcher("nas-then-ilp", SPACE, OBJECTIVES, context=context(), budgets=["size_kb <= 1e9"],
                     inner_options={"population_size": 1})
    assert err.value.field == "search.options.inner_options.population_size"


# ---- in a config ---------------------------------------------------------------------------------
def write_config(tmp_path, options) -> str:
    import yaml

    from search_spaces.testing import TINY_MBV3

    config = {"name": "ilp", "dataset": {"name": "digits"},
              "search_space": {"name": "mbv3", "options": TINY_MBV3 | {"w_bits": [2, 4, 8], "a_bits": [4, 8],
                                                                       "depths": [1, 2]}},
              "search": {"algorithm": "ilp-bits", "options": options, "budget": 1,
                         "objectives": [{"metric": "size_kb", "direction": "min"}]}}
    path = tmp_path / "ilp.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_configs_name_the_option_before_any_work(tmp_path):
    from nas.kinds import load_experiment
    from nas.runner import prepare
    from predictors.accuracy import HessianSensitivity

    path = write_config(tmp_path, {"budgets": ["size_kb <= 1e9"]})
    with pytest.raises(InputError, match="no supernet section") as err:
        prepare(load_experiment(path))
    assert err.value.field == "search.options.sensitivity" and err.value.source == path
    omega = {name: {str(c): v for c, v in row.items()} for name, row in table().values.items()}
    saved = HessianSensitivity(SPACE, omega, traces={}, samples=1, images=1).save(tmp_path / "h.json")
    assert prepare(load_experiment(write_config(tmp_path, {"budgets": ["size_kb <= 1e9"], "sensitivity": str(saved)})))
    with pytest.raises(InputError, match=r"budget 'size_kb <= 1' cannot be met: the smallest size_kb") as err:
        prepare(load_experiment(write_config(tmp_path, {"budgets": ["size_kb <= 1"], "sensitivity": str(saved)})))
    assert err.value.field == "search.options.budgets[0]"
    with pytest.raises(InputError, match="cannot budget 'latency_ms'.*size_kb") as err:  # no latency section
        prepare(load_experiment(write_config(tmp_path, {"budgets": ["size_kb <= 1e9", "latency_ms <= 1"],
                                                    "sensitivity": str(saved)})))
    assert err.value.field == "search.options.budgets[1]"
