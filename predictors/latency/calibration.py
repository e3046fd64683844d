"""Calibration: map raw block sums to end-to-end latency with a scale and an offset per device/backend.

Raw per-block sums rank subnets well but are biased: blocks run slower inside a whole network
(weights of the whole net exceed the caches), and quantize /
framework costs at the edges add a constant. A least-squares fit of ``measured = scale * raw +
offset`` on ~10 end-to-end subnets removes both. The fit minimises *relative* errors, because that
is what the benchmark scores (% of subnets within ±10%), and small subnets would otherwise count less;
the offset is kept only where leave-one-out says it generalises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["Calibration", "fit_calibration", "raw_latency"]


@dataclass(frozen=True)
class Calibration:
    """``ms = scale * raw + offset_ms``; ``mape`` is the in-sample mean absolute % error of the fit."""

    scale: float = 1.0
    offset_ms: float = 0.0
    n: int = 0
    mape: float = float("nan")

    def apply(self, raw_ms: np.ndarray | float) -> np.ndarray | float:
        return self.scale * raw_ms + self.offset_ms


def raw_latency(block_sum_ms: np.ndarray | float, n_blocks: np.ndarray | int,
                overhead_ms: float) -> np.ndarray | float:
    """Σ block entries − overhead × (blocks + 1).

    Each entry was timed by its own call and so carries one per-call overhead; the whole network
    pays one call too, which the calibration offset restores (fitted with the overhead removed).
    """
    return block_sum_ms - overhead_ms * (np.asarray(n_blocks) + 1)


AFFINE_GAIN = 0.8
"""``auto`` calibration adds an offset only if that cuts the leave-one-out error to this fraction or less."""


def _fit(raw: np.ndarray, meas: np.ndarray, affine: bool) -> tuple[float, float]:
    """Least squares of relative residuals: ``(scale * raw + offset - meas) / meas``."""
    if affine and raw.size >= 3 and np.ptp(raw) > 0:
        design = np.stack([raw / meas, 1.0 / meas], axis=1)  # rows scaled by 1/measured
        (s, b), *_ = np.linalg.lstsq(design, np.ones_like(meas), rcond=None)
        if s > 0:
            return float(s), float(b)
    ratio = raw / meas
    return float(ratio.sum() / (ratio ** 2).sum()), 0.0


def _loo_error(raw: np.ndarray, meas: np.ndarray, affine: bool) -> float:
    """Leave-one-out mean relative error of a fit (how well it predicts a subnet it has not seen)."""
    errors = []
    for i in range(raw.size):
        keep = np.arange(raw.size) != i
        s, b = _fit(raw[keep], meas[keep], affine)
        errors.append(abs(s * raw[i] + b - meas[i]) / meas[i])
    return float(np.mean(errors))


def fit_calibration(raw_ms: Sequence[float], measured_ms: Sequence[float], *,
                    model: Literal["auto", "scale", "affine"] = "auto") -> Calibration:
    """Fit ``measured ≈ scale · raw + offset`` minimising relative residuals.

    ``auto`` keeps the offset only when it lowers the leave-one-out error by at least a fifth
    (:data:`AFFINE_GAIN`): on a shared machine ten noisy subnets can make the two-parameter fit swing
    (a scale far from 1 against a large offset, for a marginal LOO gain) and miss most validation
    subnets, where the scale alone (or even the raw sum) generalises. Fewer than 4 subnets: scale only.
    """
    raw, meas = np.asarray(raw_ms, dtype=np.float64), np.asarray(measured_ms, dtype=np.float64)
    if raw.shape != meas.shape or raw.size == 0:
        raise ValueError(f"need matching, non-empty raw and measured latencies, got {raw.shape} and {meas.shape}")
    if np.any(meas <= 0) or np.any(raw <= 0):
        raise ValueError("latencies must be positive to fit a calibration")
    affine = model == "affine" or (model == "auto" and raw.size >= 4
                                   and _loo_error(raw, meas, True) < AFFINE_GAIN * _loo_error(raw, meas, False))
    scale, offset = _fit(raw, meas, affine)
    pred = scale * raw + offset
    return Calibration(scale, offset, int(raw.size), float(np.mean(np.abs(pred - meas) / meas) * 100))
