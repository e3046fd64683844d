"""Token and patch embeddings, static and elastic side by side, so the extracted form sits beside the one it
comes from (``lm`` reads token ids ``(B, T)``, ``vit`` images ``(B, C, H, W)``; both return ``(B, T, d)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..quant import LsqWeightQuantizer, QuantMode
from ..static import QuantLinear
from .layers import ElasticQuantLinear, Modes

__all__ = ["patchify", "TokenEmbedding", "PatchEmbedding", "ElasticTokenEmbedding", "ElasticPatchEmbedding"]


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


class ElasticTokenEmbedding(nn.Module):
    """Token lookup (fake-quantized per token row) and positions, elastic width."""

    def __init__(self, vocab_size: int, max_width: int, seq_len: int, *, w_modes: Sequence[QuantMode]) -> None:
        super().__init__()
        self.tokens = nn.Parameter(torch.randn(vocab_size, max_width) * 0.02)
        self.pos = nn.Parameter(torch.randn(seq_len, max_width) * 0.02)
        self.w_quant = LsqWeightQuantizer(out_channels=vocab_size, modes=w_modes)

    def _table(self, d: int, w_mode: QuantMode) -> Tensor:
        return self.w_quant(self.tokens[:, :d].contiguous(), w_mode)

    def forward(self, ids: Tensor, d: int, modes: Modes) -> Tensor:  # (B, T) -> (B, T, d); reads no activations
        return F.embedding(ids, self._table(d, modes[0])) + self.pos[: ids.shape[1], :d]

    @torch.no_grad()
    def extract(self, d: int, modes: Modes) -> TokenEmbedding:
        static = TokenEmbedding(self.tokens.shape[0], d, self.pos.shape[0])
        static.tokens.weight.copy_(self._table(d, modes[0]))
        static.pos.copy_(self.pos[:, :d])
        return static


class ElasticPatchEmbedding(nn.Module):
    """Patch projection, class token and positions with elastic width."""

    def __init__(self, patch_features: int, max_width: int, patch: int, tokens: int, cls_token: bool, *,
                 w_modes: Sequence[QuantMode], a_modes: Sequence[QuantMode]) -> None:
        super().__init__()
        self.patch = patch
        self.proj = ElasticQuantLinear(patch_features, max_width, w_modes=w_modes, a_modes=a_modes)
        self.cls = nn.Parameter(torch.randn(1, 1, max_width) * 0.02) if cls_token else None
        self.pos = nn.Parameter(torch.randn(tokens, max_width) * 0.02)

    def forward(self, x: Tensor, d: int, modes: Modes) -> Tensor:  # (B, C, H, W) -> (B, tokens, d)
        t = self.proj(patchify(x, self.patch), d, modes)
        if self.cls is not None:
            t = torch.cat([self.cls[:, :, :d].expand(t.shape[0], -1, -1), t], dim=1)
        return t + self.pos[:, :d]

    @torch.no_grad()
    def extract(self, d: int, modes: Modes) -> PatchEmbedding:
        static = PatchEmbedding(self.proj.weight.shape[-1], d, self.patch, self.pos.shape[0], self.cls is not None)
        static.proj = self.proj.extract(self.proj.weight.shape[-1], d, modes)
        if self.cls is not None:
            static.cls.copy_(self.cls[:, :, :d])
        static.pos.copy_(self.pos[:, :d])
        return static
