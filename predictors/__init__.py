"""Predictors that let the search try many candidates while measuring few.

- :mod:`predictors.accuracy`: genome → accuracy (scikit-learn models, CV+ intervals, APQ transfer,
  measured-accuracy datasets, ranking metrics).
- :mod:`predictors.latency`: per-block latency tables and the latency predictor.

The accuracy API is re-exported here lazily, so ``import predictors.latency`` does not pull in
scikit-learn.
"""

from __future__ import annotations

from typing import Any

_ACCURACY = (
    "AccuracyPredictor", "PredictorDataset", "TransferPredictor", "list_models", "make_predictor",
    "ranking_metrics", "register_model",
)

__all__ = list(_ACCURACY)


def __getattr__(name: str) -> Any:
    if name in _ACCURACY:
        from . import accuracy

        return getattr(accuracy, name)
    raise AttributeError(f"module 'predictors' has no attribute {name!r}")
