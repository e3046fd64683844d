"""Final LayerNorm and classifier, static and elastic side by side, so the extracted form sits beside the one it
comes from (``lm``: logits ``(B, V, T)``, classes on dim 1 as PyTorch's per-position losses expect; ``vit``:
``(B, classes)`` from the class token or the mean token).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..quant import QuantMode
from ..static import QuantLinear
from .layers import ElasticLayerNorm, ElasticQuantLinear, Modes

__all__ = ["ClassifierHead", "ElasticClassifierHead"]


class ClassifierHead(nn.Module):
    """Final LayerNorm and classifier: every position (``lm``, logits ``(B, V, T)``) or the pooled token."""

    def __init__(self, width: int, classes: int, *, front: str, pooling: str = "cls") -> None:
        super().__init__()
        self.front, self.pooling = front, pooling
        self.norm = nn.LayerNorm(width)
        self.classifier = QuantLinear(width, classes)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, d)
        x = self.norm(x)
        if self.front == "lm":
            return self.classifier(x).transpose(1, 2)  # (B, V, T)
        return self.classifier(x[:, 0] if self.pooling == "cls" else x.mean(dim=1))  # (B, classes)


class ElasticClassifierHead(nn.Module):
    """Final LayerNorm and classifier over an elastic width."""

    def __init__(self, max_width: int, classes: int, *, front: str, pooling: str, w_modes: Sequence[QuantMode],
                 a_modes: Sequence[QuantMode]) -> None:
        super().__init__()
        self.front, self.pooling = front, pooling
        self.norm = ElasticLayerNorm(max_width)
        self.classifier = ElasticQuantLinear(max_width, classes, w_modes=w_modes, a_modes=a_modes)

    def forward(self, x: Tensor, d: int, modes: Modes) -> Tensor:
        x, classes = self.norm(x), self.classifier.weight.shape[1]
        if self.front == "lm":
            return self.classifier(x, classes, modes).transpose(1, 2)  # (B, V, T)
        return self.classifier(x[:, 0] if self.pooling == "cls" else x.mean(dim=1), classes, modes)

    def extract(self, d: int, modes: Modes) -> ClassifierHead:
        static = ClassifierHead(d, self.classifier.weight.shape[1], front=self.front, pooling=self.pooling)
        static.norm = self.norm.extract(d)
        static.classifier = self.classifier.extract(d, self.classifier.weight.shape[1], modes)
        return static
