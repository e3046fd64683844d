"""Ranking metrics agree with scipy and handle the edge cases the search loop hits."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from predictors.accuracy import ranking_metrics


def test_matches_scipy_and_numpy():
    rng = np.random.default_rng(0)
    y = rng.normal(70, 5, size=200)
    p = y + rng.normal(0, 3, size=200)
    p[:10] = np.round(p[:10])  # some ties
    m = ranking_metrics(y, p)
    assert m["kendall_tau"] == pytest.approx(stats.kendalltau(y, p)[0])
    assert m["spearman"] == pytest.approx(stats.spearmanr(y, p)[0])
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((p - y) ** 2)))
    assert m["mape"] == pytest.approx(100 * np.mean(np.abs(p - y) / np.abs(y)))
    assert m["n"] == 200 and "coverage" not in m


def test_coverage_and_width_of_intervals():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    m = ranking_metrics(y, y, lo=y - [0.5, 0.5, 0.5, 0.5], hi=[1.5, 1.9, 3.5, 4.0])
    assert m["coverage"] == 0.75 and m["mean_width"] == pytest.approx(0.725)
    with pytest.raises(ValueError, match="both"):
        ranking_metrics(y, y, lo=y)
    with pytest.raises(ValueError, match="y_pred"):
        ranking_metrics(y, y[:3])


def test_constant_predictions_give_nan_correlations_not_errors():
    m = ranking_metrics([1.0, 2.0, 3.0], [5.0, 5.0, 5.0])
    assert np.isnan(m["kendall_tau"]) and np.isnan(m["spearman"]) and m["rmse"] > 0
