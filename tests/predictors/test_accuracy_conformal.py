"""CV+ intervals: exact order statistics, finite bounds, and empirical coverage near nominal."""

from __future__ import annotations

import math

import numpy as np
import pytest

from predictors.accuracy import cv_plus_interval, kfold_assignments, make_predictor, ranking_metrics, synthetic_accuracy
from search_spaces.testing import small_mbv3


def unique_samples(space, n, seed):
    rng, out = np.random.default_rng(seed), {}
    while len(out) < n:
        out.setdefault(space.sample(rng), None)
    return list(out)


@pytest.fixture(scope="module")
def task():
    space = small_mbv3()
    train, test = unique_samples(space, 200, 20), unique_samples(space, 500, 21)
    return space, train, synthetic_accuracy(space, train, seed=1), test, synthetic_accuracy(space, test, seed=1)


# CV+ guarantees coverage >= 1 - 2 alpha (Barber et al. 2021) and is near 1 - alpha in practice; the upper
# bound only says the intervals are not vacuous.
@pytest.mark.parametrize("name", ["auto", "ridge", "rf"])
def test_intervals_cover_near_nominal(name, task):
    space, train, y, test, y_test = task
    pred = make_predictor(space, name, seed=0).fit(train, y)
    for alpha, high in ((0.1, 0.98), (0.2, 0.92)):
        low = 1 - 2 * alpha
        lo, hi = pred.predict_interval(test, alpha=alpha)
        coverage = ranking_metrics(y_test, pred.predict(test), lo, hi)["coverage"]
        assert low <= coverage <= high, f"{name}: {1 - alpha:.0%} intervals cover {coverage:.3f}"
    narrow, wide = pred.predict_interval(test, alpha=0.3), pred.predict_interval(test, alpha=0.05)
    assert np.all(wide[0] <= narrow[0]) and np.all(wide[1] >= narrow[1])


def test_cv_plus_matches_the_definition():
    rng = np.random.default_rng(0)
    n, k, m, alpha = 23, 5, 7, 0.2
    folds = kfold_assignments(n, k, seed=1)
    preds, residuals = rng.normal(size=(k, m)), np.abs(rng.normal(size=n))
    lo, hi = cv_plus_interval(preds, folds, residuals, alpha)
    for j in range(m):
        lows = np.sort(preds[folds, j] - residuals)
        highs = np.sort(preds[folds, j] + residuals)
        assert lo[j] == lows[math.floor(alpha * (n + 1)) - 1]
        assert hi[j] == highs[math.ceil((1 - alpha) * (n + 1)) - 1]


def test_bounds_stay_finite_when_alpha_is_too_small_for_n(task):
    space, train, y, test, _ = task
    pred = make_predictor(space, "ridge").fit(train[:12], y[:12])
    lo, hi = pred.predict_interval(test[:30], alpha=0.01)
    assert np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo < hi)
    with pytest.raises(ValueError, match="alpha"):
        pred.predict_interval(test[:3], alpha=1.0)


def test_folds_are_balanced_and_seeded():
    folds = kfold_assignments(103, 5, seed=7)
    assert sorted(np.bincount(folds)) == [20, 20, 21, 21, 21]
    np.testing.assert_array_equal(folds, kfold_assignments(103, 5, seed=7))
    assert not np.array_equal(folds, kfold_assignments(103, 5, seed=8))
