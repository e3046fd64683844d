"""Learned fallback for blocks a table lacks: fitted on the table's own entries, always flagged.

Model: ``log(ms) = a + b * log(MACs) + GBR(op features)``. The log-linear part extrapolates to blocks
bigger than any entry (trees alone would cap at the largest seen latency); gradient boosting on the
numeric op features (sizes, channels, kernel, stride, bits, op/activation/shortcut one-hot) fits what
MACs miss (depthwise convs, squeeze-excite, memory-bound layers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from search_spaces import BlockSpec, InputError
from search_spaces.blocks import ACTIVATIONS, OP_TYPES, SHORTCUTS
from search_spaces.costs import block_costs

__all__ = ["FEATURE_NAMES", "block_features", "LatencyFallback"]

FEATURE_NAMES = ("log_macs", "log_params", "in_ch", "out_ch", "mid_ch", "in_size", "out_size", "kernel", "stride",
                 "se", "w_bits", "a_bits", *(f"op={o}" for o in OP_TYPES), *(f"act={a}" for a in ACTIVATIONS),
                 *(f"shortcut={s}" for s in SHORTCUTS))
MIN_ENTRIES = 2


def block_features(blocks: Sequence[BlockSpec]) -> np.ndarray:
    """(n, len(FEATURE_NAMES)) numeric features of blocks."""
    rows = []
    for b in blocks:
        costs = block_costs(b)
        rows.append([math.log1p(costs.macs), math.log1p(costs.params), b.in_ch, b.out_ch, b.mid_ch, b.in_size,
                     b.out_size, b.kernel, b.stride, float(b.se), b.w_bits, b.a_bits,
                     *(float(b.op == o) for o in OP_TYPES), *(float(b.act == a) for a in ACTIVATIONS),
                     *(float(b.shortcut == s) for s in SHORTCUTS)])
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(FEATURE_NAMES))


class LatencyFallback:
    """Gradient boosting on op features over a log-MACs trend; deterministic for a given ``seed``."""

    def __init__(self, *, n_estimators: int = 200, max_depth: int = 3, learning_rate: float = 0.05,
                 seed: int = 0) -> None:
        self.n_estimators, self.max_depth, self.learning_rate, self.seed = n_estimators, max_depth, learning_rate, seed
        self._trend: tuple[float, float] | None = None
        self._gbr = None

    @property
    def fitted(self) -> bool:
        return self._trend is not None

    def fit(self, blocks: Sequence[BlockSpec], ms: Sequence[float], *, source: str | None = None) -> LatencyFallback:
        """Fit on measured blocks (their bits as measured); needs at least two entries."""
        y = np.log(np.maximum(np.asarray(ms, dtype=np.float64), 1e-6))
        if len(y) < MIN_ENTRIES:
            raise InputError(f"the learned fallback needs at least {MIN_ENTRIES} table entries, got {len(y)}",
                             source=source, field="entries")
        x = block_features(blocks)
        log_macs = x[:, 0]
        if np.ptp(log_macs) > 0:
            slope, intercept = np.polyfit(log_macs, y, 1)
        else:
            slope, intercept = 0.0, float(y.mean())
        self._trend = (float(slope), float(intercept))
        residual = y - (slope * log_macs + intercept)
        self._gbr = None
        if len(y) >= 5:
            from sklearn.ensemble import GradientBoostingRegressor

            self._gbr = GradientBoostingRegressor(n_estimators=self.n_estimators, max_depth=self.max_depth,
                                                  learning_rate=self.learning_rate, subsample=1.0,
                                                  random_state=self.seed).fit(x, residual)
        return self

    def predict(self, blocks: Sequence[BlockSpec]) -> np.ndarray:
        """Predicted latency (ms) of each block."""
        if self._trend is None:
            raise RuntimeError("LatencyFallback.predict called before fit")
        x = block_features(blocks)
        log_ms = self._trend[0] * x[:, 0] + self._trend[1]
        if self._gbr is not None:
            log_ms = log_ms + self._gbr.predict(x)
        return np.exp(log_ms)
