"""Ranking and error metrics of a predictor: what the search needs is the order, so τ comes first.

A search only compares candidates, so Kendall τ (and Spearman ρ) on held-out genomes says more
about a predictor than its RMSE; all are reported, as EQ-Net and DyNAS-T do.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

__all__ = ["ranking_metrics"]

ArrayLike = Sequence[float] | np.ndarray


def _rank_stat(fn, a: np.ndarray, b: np.ndarray) -> float:
    """A rank correlation, NaN (not an exception or a warning) when either side is constant."""
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(fn(a, b)[0])


def ranking_metrics(y_true: ArrayLike, y_pred: ArrayLike, lo: ArrayLike | None = None,
                    hi: ArrayLike | None = None) -> dict[str, float]:
    """Kendall τ-b, Spearman ρ, RMSE, MAPE (percent) and, given intervals, their coverage and width.

    Args:
        y_true: measured accuracies.
        y_pred: predicted accuracies, same length.
        lo, hi: optional interval bounds; ``coverage`` is the fraction with ``lo <= y_true <= hi``.

    Returns:
        JSON-ready floats: ``kendall_tau``, ``spearman``, ``rmse``, ``mape``, ``n`` and, with
        intervals, ``coverage`` and ``mean_width``. Correlations are NaN for constant inputs.
    """
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values but y_pred has {p.size}")
    err = p - t
    out = {
        "kendall_tau": _rank_stat(stats.kendalltau, t, p),
        "spearman": _rank_stat(stats.spearmanr, t, p),
        "rmse": float(np.sqrt(np.mean(err**2))) if t.size else float("nan"),
        "mape": float(100 * np.mean(np.abs(err) / np.maximum(np.abs(t), 1e-12))) if t.size else float("nan"),
        "n": int(t.size),
    }
    if (lo is None) != (hi is None):
        raise ValueError("give both lo and hi, or neither")
    if lo is not None and hi is not None:
        low = np.asarray(lo, dtype=np.float64).ravel()
        high = np.asarray(hi, dtype=np.float64).ravel()
        if low.shape != t.shape or high.shape != t.shape:
            raise ValueError(f"lo/hi must have {t.size} values, got {low.size} and {high.size}")
        out["coverage"] = float(np.mean((low <= t) & (t <= high))) if t.size else float("nan")
        out["mean_width"] = float(np.mean(high - low)) if t.size else float("nan")
    return out
