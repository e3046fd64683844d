"""Accuracy predictors: genome → accuracy with cross-validated model choice and CV+ intervals.

``make_predictor(space)`` (by default the mean of ridge, GP and gradient boosting) gives an
:class:`AccuracyPredictor` (``fit``, ``predict``, ``predict_interval``, ``report``);
:class:`TransferPredictor` is the APQ-style full-precision → quantized transfer predictor with the
same interface; :class:`QuantSensitivity` adds a measured per-layer sensitivity prior as a feature.
Torch is imported only when a :class:`TransferPredictor` is trained. Typical use in a search run::

    data = PredictorDataset.load(run_dir / "accuracy.csv", space)
    pred = make_predictor(space, seed=0).fit(data.genomes, data.accuracies)
    lo, hi = pred.predict_interval(candidates, alpha=0.1)
    transfer = TransferPredictor(space).pretrain(fp.genomes, fp.accuracies)  # fp = data.select("fp-supernet")
"""

from .conformal import MIN_SAMPLES, AccuracyPredictor, cv_plus_interval, kfold_assignments
from .dataset import COLUMNS, PredictorDataset, Row, synthetic_accuracy
from .features import COST_FEATURES, FeatureEncoder
from .metrics import ranking_metrics
from .sensitivity import SENSITIVITY_JSON, QuantSensitivity
from .hessian import HESSIAN_JSON, HessianSensitivity
from .models import (AUTO_CANDIDATES, ENSEMBLE_MEMBERS, RegressorPredictor, build_model, list_models,
                     make_predictor, register_model)
from .transfer import TransferPredictor

__all__ = [
    "AUTO_CANDIDATES", "AccuracyPredictor", "COLUMNS", "COST_FEATURES", "ENSEMBLE_MEMBERS", "FeatureEncoder",
    "HESSIAN_JSON", "HessianSensitivity",
    "MIN_SAMPLES", "PredictorDataset", "QuantSensitivity", "RegressorPredictor", "Row", "SENSITIVITY_JSON",
    "TransferPredictor", "build_model",
    "cv_plus_interval", "kfold_assignments", "list_models", "make_predictor", "ranking_metrics", "register_model",
    "synthetic_accuracy",
]
