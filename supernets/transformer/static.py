"""Static transformer modules: what a subnet of the ``transformer`` space is extracted to and exported from.

Every linear is a :class:`~supernets.static.QuantLinear` (a ``quant`` slot in front of ``nn.Linear``), so the
CNN tools apply unchanged: :func:`~supernets.static.strip_fake_quant` for float export,
:func:`~supernets.static.attach_lsq` for QAT, :func:`~supernets.deploy.fake_quant_model`. Attention is
``F.scaled_dot_product_attention`` (the ONNX exporter writes it as MatMul/Softmax, which ONNX Runtime's
quantizer turns into integer matmuls); LayerNorm, softmax and GELU stay float.

Shapes: ``lm`` reads token ids ``(B, T)`` and returns logits ``(B, V, T)`` (classes on dim 1, PyTorch's
convention for per-position losses, so cross-entropy, argmax and softmax treat every position like an
image); ``vit`` reads images ``(B, C, H, W)`` and returns ``(B, classes)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_spaces.transformer import TransformerBlock

from ..static import QuantLinear

__all__ = ["TokenEmbedding", "PatchEmbedding", "Attention", "Mlp", "ClassifierHead", "StaticTransformer",
           "patchify"]


def patchify(x: Tensor, patch: int) -> Tensor:
    """(B, C, H, W) images -> (B, patches, C·P·P) rows, patches in raster order (reshapes only: exports cleanly)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // patch) * (w // patch), c * patch * patch)


class TokenEmbedding(nn.Module):
    """Token lookup plus a learned position embedding (``lm``)."""

    def __init__(self, vocab_size: int, width: int, seq_len: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, width)
        self.pos = nn.Parameter(torch.zeros(seq_len, width))

    def forward(self, ids: Tensor) -> Tensor:  # (B, T) int64 -> (B, T, d)
        return self.tokens(ids) + self.pos[: ids.shape[1]]


class PatchEmbedding(nn.Module):
    """Patches → linear projection, optional class token, learned positions (``vit``)."""

    def __init__(self, patch_features: int, width: int, patch: int, tokens: int, cls_token: bool) -> None:
        super().__init__()
        self.patch = patch
        self.proj = QuantLinear(patch_features, width)
        self.cls = nn.Parameter(torch.zeros(1, 1, width)) if cls_token else None
        self.pos = nn.Parameter(torch.zeros(tokens, width))

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, tokens, d)
        t = self.proj(patchify(x, self.patch))
        if self.cls is not None:
            t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1)
        return t + self.pos


class Attention(nn.Module):
    """Pre-LN multi-head self-attention with a residual: ``x + proj(attn(qkv(norm(x))))``."""

    def __init__(self, width: int, heads: int, head_dim: int, *, causal: bool) -> None:
        super().__init__()
        self.heads, self.head_dim, self.causal = heads, head_dim, causal
        self.norm = nn.LayerNorm(width)
        self.qkv = QuantLinear(width, 3 * heads * head_dim)
        self.proj = QuantLinear(heads * head_dim, width)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, d)
        b, t, _ = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=self.causal)  # (B, h, T, e)
        return x + self.proj(y.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))


class Mlp(nn.Module):
    """Pre-LN MLP with a residual: ``x + fc2(gelu(fc1(norm(x))))``."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1, self.fc2 = QuantLinear(width, hidden), QuantLinear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, d)
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


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


class StaticTransformer(nn.Module):
    """A standalone transformer subnet: its blocks in order, with the signatures they were built from."""

    def __init__(self, specs: Sequence[TransformerBlock], blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.specs = tuple(specs)
        self.front = self.specs[0].front
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)
