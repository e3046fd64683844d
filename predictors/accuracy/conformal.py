"""Cross-fitting and conformal intervals, and the :class:`AccuracyPredictor` base class built on them.

Why CV+ (Barber, Candès, Ramdas & Tibshirani, "Predictive inference with the jackknife+", 2021):
the search refits its predictor on a few hundred measured genomes, too few to give away a
calibration split as split-conformal would. Model selection already fits K fold models and gets an
out-of-fold residual for *every* training genome; CV+ turns exactly those into intervals, so
uncertainty costs no extra fits and uses all the data. Conformalised quantile regression would need
a quantile model per α and still a split.

Guarantee: if the training genomes and the query genome are exchangeable (e.g. both sampled from
the same distribution), K-fold CV+ covers the true accuracy with probability at least
``1 - 2α - min(2(1 - 1/K)/(n/K + 1), (1 - K/n)/(K + 1))``; in practice coverage is close to
``1 - α`` (the tests check 90% intervals cover 80–98% of held-out genomes). Genomes the search
picks *because* they look good are not exchangeable with the training set, so treat intervals
there as calibrated guidance, not a guarantee. Bounds are always finite: when ``α`` is too small
for ``n`` (``(1 - α)(n + 1) > n``) the extreme order statistic is used instead of infinity.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from search_spaces import Genome, InputError, SearchSpace

from .metrics import ranking_metrics

__all__ = ["AccuracyPredictor", "MIN_SAMPLES", "cv_plus_interval", "kfold_assignments"]

#: Fewest measured genomes a predictor can be cross-validated (and so fitted) with.
MIN_SAMPLES = 10
_CHUNK = 1 << 22  # elements of the (n, m) CV+ matrices built at once
# Predictor matrices are small (hundreds of rows): one BLAS/OpenMP thread is as fast, and multi-thread
# BLAS on a loaded machine spends far longer waiting for its threads than computing.
_THREADS = 1


def kfold_assignments(n: int, n_folds: int, seed: int) -> np.ndarray:
    """Fold id of each of ``n`` samples: a seeded permutation dealt round-robin (sizes differ by ≤ 1)."""
    order = np.random.default_rng(seed).permutation(n)
    folds = np.empty(n, dtype=np.int64)
    folds[order] = np.arange(n) % n_folds
    return folds


def cv_plus_interval(fold_preds: np.ndarray, fold_of: np.ndarray, residuals: np.ndarray,
                     alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """CV+ bounds for ``m`` queries from ``K`` fold models.

    Args:
        fold_preds: ``(K, m)`` predictions of each fold model (trained without fold k).
        fold_of: ``(n,)`` fold of each training sample.
        residuals: ``(n,)`` absolute out-of-fold residuals ``|y_i - μ_{-k(i)}(x_i)|``.
        alpha: miscoverage level in (0, 1).
    """
    n = residuals.size
    k_lo = min(max(math.floor(alpha * (n + 1)), 1), n) - 1  # 0-based order statistic
    k_hi = min(max(math.ceil((1 - alpha) * (n + 1)), 1), n) - 1
    m = fold_preds.shape[1]
    lo, hi = np.empty(m), np.empty(m)
    step = max(1, _CHUNK // max(n, 1))
    for start in range(0, m, step):
        mu = fold_preds[fold_of, start:start + step]  # (n, chunk)
        lo[start:start + step] = np.partition(mu - residuals[:, None], k_lo, axis=0)[k_lo]
        hi[start:start + step] = np.partition(mu + residuals[:, None], k_hi, axis=0)[k_hi]
    return lo, hi


class AccuracyPredictor(ABC):
    """Genome → accuracy regressor with cross-validated model choice and CV+ intervals.

    ``fit`` standardises the targets; for every candidate model it fits (and tunes) the model on all
    samples, then cross-fits it over the same K seeded folds reusing the tuned hyperparameters, and
    keeps the candidate with the best out-of-fold Kendall τ (ties: the first listed) together with
    its fold models for :meth:`predict_interval`. Tuning once rather than in every fold makes a fit
    ~K times cheaper (the search refits every round); the optimism it adds to the CV scores is small
    next to fold noise for models with a handful of hyperparameters. Subclasses provide the
    features and the models through four hooks.

    Args:
        space: the search space of the genomes.
        n_folds: K of the K-fold cross-validation (model choice, reported scores, CV+).
        seed: seeds the folds and every model, so a refit on the same data gives the same predictor.
    """

    interval_method = "cv+"

    def __init__(self, space: SearchSpace, *, n_folds: int = 5, seed: int = 0) -> None:
        if n_folds < 2:
            raise ValueError(f"n_folds must be at least 2, got {n_folds}")
        self.space, self.n_folds, self.seed = space, n_folds, seed
        self._fitted = False

    # ---- hooks ------------------------------------------------------------------------------
    @abstractmethod
    def _encode(self, genomes: Sequence[Genome], *, fit: bool) -> np.ndarray:
        """Feature matrix; ``fit=True`` on the training genomes (learn scalers there)."""

    @abstractmethod
    def _candidates(self) -> list[str]:
        """Names of the models to cross-validate; the best one is kept."""

    @abstractmethod
    def _fit_model(self, name: str, X: np.ndarray, z: np.ndarray, tuned: Any = None) -> Any:
        """A fitted model for standardised targets ``z``; fold fits get ``tuned``, the full-data model."""

    @abstractmethod
    def _predict_model(self, model: Any, X: np.ndarray) -> np.ndarray:
        """Standardised predictions of a model from :meth:`_fit_model`."""

    def _target_scaling(self, target: np.ndarray) -> tuple[float, float]:
        """Mean and scale used to standardise the targets (a transfer model keeps its base's)."""
        return float(target.mean()), float(target.std()) or 1.0

    def _extra_report(self) -> dict[str, Any]:
        """Subclass details for :meth:`report`."""
        return {}

    # ---- public API --------------------------------------------------------------------------
    def fit(self, genomes: Sequence[Genome], y: Sequence[float]) -> AccuracyPredictor:
        """Fit on measured genomes (at least :data:`MIN_SAMPLES`); returns ``self``."""
        genomes = list(genomes)
        target = self._check_targets(genomes, y)
        state = np.random.get_state()  # libsvm draws a seed from NumPy's global generator: give it back
        try:
            with threadpool_limits(limits=_THREADS):
                self._fit_all(genomes, target)
        finally:
            np.random.set_state(state)
        return self

    def _fit_all(self, genomes: list[Genome], target: np.ndarray) -> None:
        X = self._encode(genomes, fit=True)
        self._y_mean, self._y_scale = self._target_scaling(target)
        z = (target - self._y_mean) / self._y_scale
        self._folds = kfold_assignments(len(z), min(self.n_folds, len(z)), self.seed)
        self._scores: dict[str, dict[str, float]] = {}
        best: tuple[float, str, Any, list[Any], np.ndarray] | None = None
        for name in self._candidates():
            full = self._fit_model(name, X, z)
            models, oof = self._cross_fit(name, X, z, full)
            self._scores[name] = ranking_metrics(target, oof * self._y_scale + self._y_mean)
            tau = self._scores[name]["kendall_tau"]
            tau = -np.inf if np.isnan(tau) else tau
            if best is None or tau > best[0]:
                best = (tau, name, full, models, oof)
        assert best is not None
        _, self._name, self._model, self._fold_models, oof = best
        self._residuals = np.abs(z - oof)
        self._n_train, self._n_features = len(z), X.shape[1]
        self._fitted = True

    def predict(self, genomes: Sequence[Genome]) -> np.ndarray:
        """Predicted accuracies, shape ``(n,)``."""
        X = self._encode_query(genomes)
        if X.shape[0] == 0:
            return np.empty(0)
        with threadpool_limits(limits=_THREADS):
            return self._predict_model(self._model, X) * self._y_scale + self._y_mean

    def predict_interval(self, genomes: Sequence[Genome], alpha: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
        """CV+ interval ``(lo, hi)`` of nominal coverage ``1 - alpha`` (see the module docstring)."""
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        X = self._encode_query(genomes)
        if X.shape[0] == 0:
            return np.empty(0), np.empty(0)
        with threadpool_limits(limits=_THREADS):
            fold_preds = np.stack([self._predict_model(m, X) for m in self._fold_models])  # (K, m)
        lo, hi = cv_plus_interval(fold_preds, self._folds, self._residuals, alpha)
        return lo * self._y_scale + self._y_mean, hi * self._y_scale + self._y_mean

    def report(self) -> dict[str, Any]:
        """JSON-ready summary: chosen model, sample count, out-of-fold metrics of every candidate."""
        self._require_fitted()
        return {"model": self._name, "n_train": self._n_train, "n_features": self._n_features,
                "n_folds": int(self._folds.max()) + 1, "seed": self.seed, "cv": dict(self._scores[self._name]),
                "cv_scores": {k: dict(v) for k, v in self._scores.items()},
                "interval_method": self.interval_method, **self._extra_report()}

    # ---- internals ------------------------------------------------------------------------------
    def _cross_fit(self, name: str, X: np.ndarray, z: np.ndarray, tuned: Any) -> tuple[list[Any], np.ndarray]:
        """K models, each fit without one fold, and their out-of-fold predictions."""
        oof = np.empty_like(z)
        models = []
        for k in range(int(self._folds.max()) + 1):
            held = self._folds == k
            model = self._fit_model(name, X[~held], z[~held], tuned)
            oof[held] = self._predict_model(model, X[held])
            models.append(model)
        return models, oof

    def _check_targets(self, genomes: list[Genome], y: Sequence[float]) -> np.ndarray:
        target = np.asarray(y, dtype=np.float64).ravel()
        if target.size != len(genomes):
            raise ValueError(f"got {len(genomes)} genomes but {target.size} accuracies")
        bad = np.flatnonzero(~np.isfinite(target))
        if bad.size:
            raise InputError(f"accuracies must be finite; bad at positions {bad[:5].tolist()}", field="accuracy")
        if target.size < MIN_SAMPLES:
            raise InputError(f"got {target.size} measured genomes; need at least {MIN_SAMPLES} to cross-validate "
                             f"a predictor", field="accuracy")
        return target

    def _encode_query(self, genomes: Sequence[Genome]) -> np.ndarray:
        self._require_fitted()
        return self._encode(list(genomes), fit=False)

    def _require_fitted(self) -> None:
        if not self._fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted yet; call fit(genomes, y) first")
