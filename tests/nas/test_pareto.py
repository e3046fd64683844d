"""Non-dominated sorting, constraint handling, hypervolume in a fixed box, and picks along the front."""

from __future__ import annotations

import numpy as np
import pytest

from nas.evaluators import AnalyticEvaluator
from nas.objectives import Objective, parse_constraint
from nas.pareto import (Normalization, front_indices, hypervolume, nondominated_ranks, normalization_from_extremes,
                        spread, total_violation)
from search_spaces import get_space
from search_spaces.testing import TINY_MBV3_DEFAULT_CHOICES


def test_ranks_of_a_known_set():
    F = np.array([[1, 5], [2, 2], [5, 1], [3, 3], [6, 6], [2, 2]], dtype=float)
    assert nondominated_ranks(F).tolist() == [0, 0, 0, 1, 2, 0]
    assert nondominated_ranks(np.zeros((0, 2))).tolist() == []


def test_front_skips_infeasible_and_nan_and_is_ordered_by_first_objective():
    F = np.array([[5, 1], [1, 5], [0, 0], [2, 2], [np.nan, 0]], dtype=float)
    violation = np.array([0, 0, 0.5, 0, 0])
    assert front_indices(F, violation).tolist() == [1, 3, 0]
    assert front_indices(F, np.ones(5)).tolist() == []


def test_total_violation_is_relative_to_each_bound():
    constraints = [parse_constraint("size_kb <= 100"), parse_constraint("bitops >= 1e6")]
    rows = [{"size_kb": 50, "bitops": 2e6}, {"size_kb": 150, "bitops": 2e6}, {"size_kb": 100, "bitops": 5e5}]
    assert total_violation(rows, constraints).tolist() == pytest.approx([0.0, 0.5, 0.5])
    assert total_violation(rows, []).tolist() == [0.0, 0.0, 0.0]


def test_hypervolume_in_the_normalised_box():
    norm = Normalization(ideal=(0.0, 0.0), nadir=(10.0, 10.0))
    assert norm.reference_point.tolist() == [1.1, 1.1]
    assert hypervolume(np.array([[0.0, 0.0]]), norm) == pytest.approx(1.21)
    assert hypervolume(np.array([[5.0, 5.0], [0.0, 10.0]]), norm) == pytest.approx(0.6 * 0.6 + 0.1 * 0.5)
    assert hypervolume(np.array([[12.0, 0.0]]), norm) == 0.0  # outside the box: no volume
    assert hypervolume(np.zeros((0, 2)), norm) == 0.0


def test_one_objective_and_flat_objective():
    assert hypervolume(np.array([[2.0], [4.0]]), Normalization((0.0,), (10.0,))) == pytest.approx(0.9)
    flat = Normalization((3.0, 0.0), (3.0, 1.0))  # a flat objective gets span 1 instead of dividing by zero
    assert np.isfinite(flat.scale(np.array([[3.0, 0.5]]))).all()


def test_reference_box_comes_from_the_space_extremes_and_bounds_samples():
    space = get_space("mbv3", **TINY_MBV3_DEFAULT_CHOICES)
    evaluator = AnalyticEvaluator(space)
    objectives = [Objective("size_kb"), Objective("bitops")]
    norm = normalization_from_extremes(space, evaluator, objectives)
    rng = np.random.default_rng(0)
    rows = evaluator.evaluate([space.sample(rng) for _ in range(50)])
    scaled = norm.scale(np.array([[r["size_kb"], r["bitops"]] for r in rows]))
    assert (scaled >= 0).all() and (scaled <= 1).all()
    assert normalization_from_extremes(space, evaluator, objectives) == norm  # the same box every time


@pytest.mark.parametrize("n, k, expected", [(10, 3, [0, 4, 9]), (3, 5, [0, 1, 2]), (5, 0, []), (0, 3, []),
                                            (7, 1, [0])])
def test_spread_picks_evenly_with_both_ends(n, k, expected):
    assert spread(n, k) == expected


def test_golden_front_of_a_seeded_search():
    """Snapshot (like pymoo's golden tests): a change to the loop, sorting or hypervolume shows up here."""
    from conftest import StandInSearcher
    from nas.search import run_search

    space = get_space("mbv3", **TINY_MBV3_DEFAULT_CHOICES)  # the snapshot's space: exactly these options
    objectives, constraints = [Objective("size_kb"), Objective("bitops")], [parse_constraint("params >= 12000")]
    result = run_search(space, AnalyticEvaluator(space), StandInSearcher(space, objectives, population_size=10),
                        objectives=objectives, constraints=constraints, budget=40)
    assert [t.key for t in result.front] == ["be678450a0afd55c", "f3bf2085ec00d497", "48b33fedabc60813"]
    assert [(t.metrics["size_kb"], t.metrics["bitops"]) for t in result.front] == [
        (10.40625, 9506816.0), (10.5390625, 7999488.0), (11.416015625, 6594560.0)]
    assert result.hypervolume == pytest.approx(1.0347139070466493, rel=1e-12)
