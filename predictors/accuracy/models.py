"""Registry of scikit-learn accuracy models, and the predictor that chooses among them.

``@register_model("name")`` registers a factory ``(seed, n_samples) -> unfitted regressor``
(duplicates raise, like every qnas registry). The factory sees the training-set size so a model
can shrink for tiny data (the MLP does). ``"auto"`` and ``"ensemble"`` are not models but
strategies of :class:`RegressorPredictor`: cross-validated choice, and the mean of several models.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.ensemble import ExtraTreesRegressor, HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, DotProduct, WhiteKernel
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.neural_network import MLPRegressor
from sklearn.svm import SVR

from search_spaces import Genome, InputError, SearchSpace
from search_spaces.registries import Registry

from .conformal import AccuracyPredictor
from .features import COST_FEATURES, FeatureEncoder
from .sensitivity import QuantSensitivity

__all__ = ["AUTO_CANDIDATES", "ENSEMBLE_MEMBERS", "RegressorPredictor", "build_model", "list_models",
           "make_predictor", "register_model"]

ModelFactory = Callable[[int, int], Any]
_STRATEGIES = ("auto", "ensemble")
_MODELS: Registry[ModelFactory] = Registry("accuracy model", field="model", reserved=_STRATEGIES)

#: Models ``"auto"`` cross-validates by default: the most accurate of those that fit 400 genomes in
#: a fraction of a second (trees ranked worst on one-hot genomes; the MLP is slower and no better).
AUTO_CANDIDATES = ("ridge", "svr", "gp")
#: Members of ``"ensemble"`` by default: a linear, a kernel and a tree model. On real CIFAR-10 supernet
#: accuracies their mean ranked held-out subnets better than ``"auto"`` at every training size
#: (BENCHMARKS.md, ``predictor_benchmark.py``): the three err differently, and cross-validated choice
#: among them is noisy on a few dozen samples.
ENSEMBLE_MEMBERS = ("ridge", "gp", "hgb")


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering a model factory ``(seed, n_samples) -> regressor`` under ``name``."""
    return _MODELS.register(name)


def list_models() -> list[str]:
    """Names of all registered models, sorted (``"auto"`` and ``"ensemble"`` are strategies, not listed)."""
    return _MODELS.names()


def build_model(name: str, *, seed: int = 0, n_samples: int = 100) -> Any:
    """An unfitted regressor of the registered model ``name``."""
    return _MODELS.get(name)(seed, n_samples)


def _check_names(names: Sequence[str], *, field: str) -> None:
    for name in names:
        _MODELS.get(name, field=field)


# ---- built-in models --------------------------------------------------------------------------
@register_model("ridge")
def _ridge(seed: int, n_samples: int) -> Any:
    """Linear in the one-hot genes: the strong small-data baseline (DyNAS-T's first choice)."""
    return RidgeCV(alphas=np.logspace(-2, 3, 11))


@register_model("svr")
def _svr(seed: int, n_samples: int) -> Any:
    """RBF-SVR with a small grid search as in DyNAS-T (3 seeded folds; 6 points keep it cheap enough to
    refit every round)."""
    grid = {"C": [10.0, 100.0], "gamma": [0.001, 0.003, 0.01], "epsilon": [0.1]}
    folds = KFold(n_splits=min(3, max(2, n_samples // 5)), shuffle=True, random_state=seed)
    return GridSearchCV(SVR(kernel="rbf"), grid, cv=folds, scoring="neg_mean_squared_error")


@register_model("rf")
def _rf(seed: int, n_samples: int) -> Any:
    """60 trees: more did not rank held-out subnets better, and the fit time grows with the trees."""
    return RandomForestRegressor(n_estimators=60, max_features=0.33, n_jobs=1, random_state=seed)


@register_model("extra_trees")
def _extra_trees(seed: int, n_samples: int) -> Any:
    return ExtraTreesRegressor(n_estimators=60, max_features=0.5, n_jobs=1, random_state=seed)


@register_model("hgb")
def _hgb(seed: int, n_samples: int) -> Any:
    """Boosting with shallow trees and a small leaf size, as suits a few hundred samples."""
    return HistGradientBoostingRegressor(max_iter=100, learning_rate=0.1, max_leaf_nodes=8,
                                         min_samples_leaf=max(3, n_samples // 50), l2_regularization=1.0,
                                         early_stopping=False, random_state=seed)


@register_model("mlp")
def _mlp(seed: int, n_samples: int) -> Any:
    """OFA/APQ's 3×400 MLP from 1000 samples on; 3×128 below, where it is as accurate and much faster."""
    width = 400 if n_samples >= 1000 else 128
    # half the samples at most: cross-validation folds and the early-stopping split fit on fewer rows
    # than ``n_samples``, and a larger batch only makes scikit-learn warn and clip it
    return MLPRegressor(hidden_layer_sizes=(width,) * 3, alpha=0.1, learning_rate_init=3e-3,
                        batch_size=min(64, max(1, n_samples // 2)), max_iter=300, early_stopping=n_samples >= 50,
                        validation_fraction=0.15, n_iter_no_change=15, random_state=seed)


@register_model("gp")
def _gp(seed: int, n_samples: int) -> Any:
    """GP with a linear + RBF kernel: additive gene effects plus smooth interactions, and noise."""
    kernel = (ConstantKernel(0.1, (1e-3, 1e2)) * DotProduct(sigma_0=1.0, sigma_0_bounds="fixed")
              + ConstantKernel(1.0, (1e-3, 1e2)) * RBF(length_scale=5.0, length_scale_bounds=(0.5, 100.0))
              + WhiteKernel(0.1, (1e-4, 1.0)))
    return GaussianProcessRegressor(kernel=kernel, normalize_y=False, n_restarts_optimizer=0, random_state=seed)


def frozen(model: Any) -> Any:
    """An unfitted copy of a fitted model with its tuned hyperparameters fixed (for fold refits)."""
    if isinstance(model, MeanEnsemble):
        return MeanEnsemble([frozen(m) for m in model.members])
    if isinstance(model, GridSearchCV):
        return clone(model.best_estimator_)
    if isinstance(model, RidgeCV):
        return Ridge(alpha=float(model.alpha_))
    if isinstance(model, GaussianProcessRegressor):
        return clone(model).set_params(kernel=model.kernel_, optimizer=None)
    return clone(model)


def fit_quietly(model: Any, X: np.ndarray, y: np.ndarray) -> Any:
    """``model.fit(X, y)`` without convergence warnings: a model that did not converge shows in its CV scores."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y)


class MeanEnsemble:
    """Mean of several fitted regressors (stacking would need another CV level for few samples)."""

    def __init__(self, members: list[Any]) -> None:
        self.members = members

    def fit(self, X: np.ndarray, y: np.ndarray) -> MeanEnsemble:
        for member in self.members:
            member.fit(X, y)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.mean([member.predict(X) for member in self.members], axis=0)


# ---- the predictor ------------------------------------------------------------------------------
class RegressorPredictor(AccuracyPredictor):
    """One-hot genes (+ log costs and bit counts) → registered scikit-learn model(s); see :func:`make_predictor`."""

    def __init__(self, space: SearchSpace, *, model: str = "ensemble", candidates: Sequence[str] = AUTO_CANDIDATES,
                 members: Sequence[str] = ENSEMBLE_MEMBERS, analytic_features: bool = True,
                 interactions: bool = True, sensitivity: QuantSensitivity | None = None, n_folds: int = 5,
                 seed: int = 0) -> None:
        super().__init__(space, n_folds=n_folds, seed=seed)
        if model not in _STRATEGIES:
            _check_names([model], field="model")
        _check_names(candidates, field="candidates")
        _check_names(members, field="members")
        if model == "auto" and not candidates:
            raise InputError("model 'auto' needs at least one candidate", field="candidates")
        if model == "ensemble" and not members:
            raise InputError("model 'ensemble' needs at least one member", field="members")
        self.model, self.candidates, self.members = model, tuple(candidates), tuple(members)
        self.analytic_features = analytic_features
        self.encoder = FeatureEncoder(space, costs=COST_FEATURES if analytic_features else (),
                                      interactions=interactions, bit_counts=analytic_features,
                                      sensitivity=sensitivity)

    def _encode(self, genomes: Sequence[Genome], *, fit: bool) -> np.ndarray:
        return self.encoder.fit_transform(genomes) if fit else self.encoder.transform(genomes)

    def _candidates(self) -> list[str]:
        return list(self.candidates) if self.model == "auto" else [self.model]

    def _fit_model(self, name: str, X: np.ndarray, z: np.ndarray, tuned: Any = None) -> Any:
        if tuned is not None:
            model = frozen(tuned)
        elif name == "ensemble":
            model = MeanEnsemble([build_model(m, seed=self.seed, n_samples=len(z)) for m in self.members])
        else:
            model = build_model(name, seed=self.seed, n_samples=len(z))
        return fit_quietly(model, X, z)

    def _predict_model(self, model: Any, X: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(X), dtype=np.float64).ravel()

    def _extra_report(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"requested": self.model, "analytic_features": self.analytic_features,
                                 "interactions": self.encoder.interactions,
                                 "quant_sensitivity": (self.encoder.sensitivity.metric
                                                       if self.encoder.sensitivity is not None else False)}
        if self.model == "auto":
            extra["candidates"] = list(self.candidates)
        if self.model == "ensemble":
            extra["members"] = list(self.members)
        return extra


def make_predictor(space: SearchSpace, model: str = "ensemble", *, analytic_features: bool = True,
                   interactions: bool = True, seed: int = 0, candidates: Sequence[str] = AUTO_CANDIDATES,
                   members: Sequence[str] = ENSEMBLE_MEMBERS, n_folds: int = 5,
                   sensitivity: QuantSensitivity | None = None) -> RegressorPredictor:
    """An unfitted accuracy predictor for ``space``.

    Args:
        space: the search space.
        model: ``"ensemble"`` (mean of ``members``; the default), a name from :func:`list_models`, or
            ``"auto"`` (best cross-validated Kendall τ among ``candidates``).
        analytic_features: add standardised log MACs, log BitOps, log size and the bit-width histogram
            (how many active layers use each weight / activation bit-width) to the one-hot genes.
        interactions: add the joint one-hot of the gene pairs the space declares in
            :meth:`SearchSpace.feature_interactions` (e.g. a stage's depth and the activation bits of
            the next stage's first block).
        seed: seeds folds and models.
        candidates: the models ``"auto"`` compares.
        members: the models ``"ensemble"`` averages.
        n_folds: K of the K-fold cross-validation.
        sensitivity: a per-layer quantization-sensitivity table of the space (measured on the supernet):
            its sum over the genome's bit-widths becomes one more feature.
    """
    return RegressorPredictor(space, model=model, candidates=candidates, members=members,
                              analytic_features=analytic_features, interactions=interactions,
                              sensitivity=sensitivity, n_folds=n_folds, seed=seed)
