"""EQ-Net's weight distribution regularisation (WDR): push weights towards a quantization-friendly shape.

L = 0.015 · mean_l (Kurt(W_l) − 1.8)² + 1.0 · mean_l Skew(W_l)², over conv/linear layers but the first.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["wdr_loss"]


def _moments(w: Tensor) -> tuple[Tensor, Tensor]:
    z = (w.flatten() - w.mean()) / (w.std(unbiased=False) + 1e-8)
    return (z**3).mean(), (z**4).mean()  # skewness, kurtosis


def wdr_loss(net: nn.Module, *, kurt_weight: float = 0.015, skew_weight: float = 1.0,
             target_kurtosis: float = 1.8) -> Tensor:
    """The WDR penalty over every conv/linear weight of ``net`` except the first layer's."""
    weights = [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))][1:]
    if not weights:
        return torch.zeros(())
    skews, kurts = zip(*(_moments(w) for w in weights))
    kurt_term = torch.stack([(k - target_kurtosis) ** 2 for k in kurts]).mean()
    skew_term = torch.stack([s**2 for s in skews]).mean()
    return kurt_weight * kurt_term + skew_weight * skew_term
