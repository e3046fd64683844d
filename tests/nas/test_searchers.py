"""Every registered searcher runs through the shipped conformance suite; plus registry and input checks."""

import inspect
import pickle
import shutil

import numpy as np
import pytest

from nas.objectives import Objective
from nas.searchers import (Searcher, get_searcher, list_searchers, missing_requirements, register_searcher,
                           searcher_class, searcher_options)
from nas.searchers.pymoo_searchers import reference_directions
from nas.searchers.testing import (TWO_OBJECTIVES, SearcherConformance, bitops_limit, drive, evaluate, fast_options,
                                   make_searcher, run_batches, small_space)
from search_spaces import InputError, get_space

# Bit allocators (ilp-bits, nas-then-ilp) propose one candidate per budget and stop: tests/nas/test_bit_allocation.py
FINITE = [n for n in list_searchers() if getattr(searcher_class(n), "finite", False)]
CHEAP = [n for n in list_searchers() if not searcher_class(n).expensive and n not in FINITE]
EXPENSIVE = [n for n in list_searchers() if searcher_class(n).expensive]
PYMOO = ["nsga2", "nsga3", "agemoea2", "smsemoa"]


@pytest.fixture(params=CHEAP)
def searcher_name(request):
    return request.param


class TestRegisteredSearchers(SearcherConformance):
    pass


def test_expected_searchers_are_registered():
    assert {"random", "optuna-nsga2", "optuna-tpe", "optuna-gp", *PYMOO} <= set(list_searchers())
    assert set(FINITE) == {"ilp-bits", "nas-then-ilp"}


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPENSIVE)
def test_expensive_searchers_on_a_tiny_budget(name):
    """Model-based searchers take seconds per proposal: one short run checks validity, seeding and resume."""
    options = {"batch_size": 1, "n_startup_trials": 3}
    searcher = make_searcher(name, seed=2, **options)
    first = run_batches(searcher, 3)  # start-up (random) trials
    saved = pickle.loads(pickle.dumps(searcher.state_dict()))
    later = run_batches(searcher, 1)  # the first model-based proposal
    resumed = make_searcher(name, seed=2, **options)
    resumed.load_state_dict(saved)
    assert run_batches(resumed, 1) == later
    assert run_batches(make_searcher(name, seed=2, **options), 3) == first
    for genome in (g for batch in first + later for g in batch):
        small_space().validate(genome)
        assert small_space().canonical(genome) == genome


# ---- registry and bad input ----------------------------------------------------------------------
def test_unknown_searcher_names_the_nearest():
    with pytest.raises(InputError, match=r"did you mean 'nsga2'") as err:
        get_searcher("nsga_2", small_space(), TWO_OBJECTIVES)
    assert err.value.field == "search.algorithm" and "optuna-tpe" in str(err.value)


def test_unknown_option_names_the_nearest():
    with pytest.raises(InputError, match=r"did you mean 'population_size'") as err:
        get_searcher("nsga2", small_space(), TWO_OBJECTIVES, populaton_size=10)
    assert err.value.field == "search.options.populaton_size"


@pytest.mark.parametrize("name, option, value", [("nsga2", "population_size", 1), ("random", "batch_size", 0),
                                                 ("optuna-tpe", "n_startup_trials", "ten"),
                                                 ("nsga2", "mutation_prob", 1.5)])
def test_bad_option_values_are_refused_by_name(name, option, value):
    with pytest.raises(InputError) as err:
        get_searcher(name, small_space(), TWO_OBJECTIVES, **{option: value})
    assert err.value.field == f"search.options.{option}"


def test_bad_objectives_are_refused():
    with pytest.raises(InputError, match="needs 1 or more objectives"):
        get_searcher("random", small_space(), [])
    with pytest.raises(InputError, match="repeat"):
        get_searcher("random", small_space(), [Objective("macs"), Objective("macs", "max")])


def test_options_are_keyword_only_with_defaults():
    for name in list_searchers():
        for option, default in searcher_options(name).items():
            assert default is not inspect.Parameter.empty, f"{name}.{option} has no default"
    assert searcher_options("nsga2")["population_size"] == 50
    assert searcher_options("optuna-tpe")["batch_size"] == 16


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_searcher("nsga2")(type("Again", (Searcher,), {}))


def test_missing_optional_package_is_named(monkeypatch):
    monkeypatch.setattr(searcher_class("agemoea2"), "requires", ("no_such_package_qnas",))
    assert missing_requirements("agemoea2") == ["no_such_package_qnas"]
    with pytest.raises(InputError, match="pip install no_such_package_qnas"):
        get_searcher("agemoea2", small_space(), TWO_OBJECTIVES)


def test_tell_must_match_the_last_ask():
    searcher = get_searcher("nsga2", small_space(), TWO_OBJECTIVES, population_size=6)
    batch = searcher.ask()
    with pytest.raises(ValueError, match="exactly the genomes"):
        searcher.tell(batch[::-1], [evaluate(g) for g in batch[::-1]])
    with pytest.raises(InputError, match="lacks metrics"):
        searcher.tell(batch, [{"size_kb": 1.0} for _ in batch])
    assert searcher.ask() == batch  # still pending: asking again hands out the same batch
    searcher.tell(batch, [evaluate(g) for g in batch])
    with pytest.raises(ValueError, match="without a pending"):
        searcher.tell(batch, [evaluate(g) for g in batch])


def test_state_of_another_setup_is_refused():
    state = get_searcher("nsga2", small_space(), TWO_OBJECTIVES, population_size=6).state_dict()
    other = get_searcher("nsga2", get_space("mbv3"), TWO_OBJECTIVES, population_size=6)
    with pytest.raises(InputError, match="space"):
        other.load_state_dict(state)


# ---- randomness --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["nsga2", "smsemoa", "optuna-tpe"])
def test_global_numpy_random_state_is_untouched(name):
    np.random.seed(123)
    untouched = np.random.rand()
    np.random.seed(123)
    drive(make_searcher(name), evaluate, 24)
    assert np.random.rand() == untouched


def test_interleaved_searchers_do_not_disturb_each_other():
    alone = [run_batches(make_searcher(n, seed=7), 3) for n in ("nsga2", "nsga3")]
    a, b = make_searcher("nsga2", seed=7), make_searcher("nsga3", seed=7)
    together: list[list] = [[], []]
    for _ in range(3):
        np.random.seed(0)  # the caller's own use of the global state must not matter either
        together[0] += run_batches(a, 1)
        together[1] += run_batches(b, 1)
    assert together == alone


# ---- searcher specifics --------------------------------------------------------------------------
def test_random_search_never_repeats_and_stops_when_exhausted():
    tiny = get_space("mbv3", stage_channels=[16], stage_strides=[1], stage_se=[False], stage_act=["relu"],
                     depths=[1], kernels=[3, 5], expands=[3], w_bits=[4, 8], a_bits=[8], image_size=8)
    searcher = get_searcher("random", tiny, TWO_OBJECTIVES, batch_size=3)
    seen = []
    for _ in range(3):
        batch = searcher.ask()
        searcher.tell(batch, [{"size_kb": 1.0, "macs": 1.0} for _ in batch])
        seen += batch
    assert len(seen) == len(set(seen)) == tiny.cardinality() == 4


@pytest.mark.parametrize("name", ["random", "nsga2", "optuna-nsga2"])
def test_a_tiny_space_is_exhausted_gracefully(name):
    """Four networks in all: the searcher finds them, then proposes nothing new (the driver stops it)."""
    tiny = get_space("mbv3", stage_channels=[16], stage_strides=[1], stage_se=[False], stage_act=["relu"],
                     depths=[1], kernels=[3, 5], expands=[3], w_bits=[4, 8], a_bits=[8], image_size=8)
    searcher = get_searcher(name, tiny, TWO_OBJECTIVES, seed=1, **fast_options(name))
    metrics = {"size_kb": 1.0, "macs": 1.0, "bitops": 1.0}
    log = drive(searcher, lambda g: metrics, 4)
    assert len(log.evaluated) == 4
    with pytest.raises(RuntimeError, match="nothing new"):
        drive(searcher, lambda g: metrics, 5, max_idle_asks=3)


def test_pymoo_never_reproposes_a_told_genome():
    searcher = make_searcher("nsga2", population_size=10)
    log = drive(searcher, evaluate, 60)
    asked = [g for batch in log.batches for g in batch]
    assert len(asked) == len(set(asked))


@pytest.mark.parametrize("n_obj, n_points, expected", [(2, 50, 50), (3, 50, 45), (3, 12, 10), (8, 50, 36),
                                                         (5, 8, 8), (1, 50, 1)])
def test_reference_directions_fit_the_population(n_obj, n_points, expected):
    dirs = reference_directions(n_obj, n_points, seed=0)
    assert dirs.shape == (expected, n_obj) and np.allclose(dirs.sum(axis=1), 1.0)


def test_optuna_sqlite_storage_resumes_identically(tmp_path):
    def build(folder):
        return make_searcher("optuna-tpe", seed=3, storage_dir=folder, constraints=(bitops_limit(),),
                             batch_size=4, n_startup_trials=4)

    searcher = build(tmp_path / "a")
    run_batches(searcher, 1)
    saved = pickle.loads(pickle.dumps(searcher.state_dict()))
    later = run_batches(searcher, 2)
    assert (tmp_path / "a" / "optuna.db").is_file()
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # b holds the trials of 2 batches told after `saved`

    reference = build(tmp_path / "c")
    run_batches(reference, 1)
    resumed = build(tmp_path / "c")  # a new process attaching to the same database
    resumed.load_state_dict(reference.state_dict())
    assert run_batches(resumed, 2) == later

    stale = build(tmp_path / "b")
    stale.load_state_dict(saved)  # the database ran ahead of the state: the replay starts the study afresh
    assert run_batches(stale, 2) == later
    assert len(stale._study.get_trials()) == 12


def test_optuna_state_holds_no_sampler_and_a_diverging_replay_is_refused():
    searcher = make_searcher("optuna-nsga2", seed=2, population_size=8, batch_size=8)
    run_batches(searcher, 2)
    state = searcher.state_dict()
    assert set(state["body"]) == {"told"} and len(state["body"]["told"]) == 2
    indices, results = state["body"]["told"][1]
    state["body"]["told"][1] = (indices[::-1], results[::-1])  # not what the seeded sampler proposes
    with pytest.raises(InputError, match="diverged at batch 1") as info:
        make_searcher("optuna-nsga2", seed=2, population_size=8, batch_size=8).load_state_dict(state)
    assert info.value.field == "search.resume"


def test_optuna_storage_of_another_search_is_refused(tmp_path):
    make_searcher("optuna-tpe", storage_dir=tmp_path)
    with pytest.raises(InputError, match="another search"):
        make_searcher("optuna-tpe", storage_dir=tmp_path, objectives=(Objective("size_kb"), Objective("bitops")))
