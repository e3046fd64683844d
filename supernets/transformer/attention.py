"""Pre-LN self-attention, static and elastic side by side, so the extracted form sits beside the one it comes from.

Attention is ``F.scaled_dot_product_attention`` (the ONNX exporter writes it as MatMul/Softmax, which ONNX
Runtime's quantizer turns into integer matmuls). Heads can be reordered by importance
(:meth:`ElasticAttention.sort_heads`), as CNN channels are, so narrow subnets keep the important ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..quant import QuantMode
from ..static import QuantLinear
from .layers import ElasticLayerNorm, ElasticQuantLinear, Modes

__all__ = ["Attention", "ElasticAttention"]


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


class ElasticAttention(nn.Module):
    """Pre-LN self-attention with elastic width and heads (each ``head_dim`` wide)."""

    def __init__(self, max_width: int, max_heads: int, head_dim: int, *, causal: bool,
                 w_modes: Sequence[QuantMode], a_modes: Sequence[QuantMode]) -> None:
        super().__init__()
        self.head_dim, self.causal = head_dim, causal
        self.norm = ElasticLayerNorm(max_width)
        self.qkv = ElasticQuantLinear(max_width, max_heads * head_dim, w_modes=w_modes, a_modes=a_modes, parts=3)
        self.proj = ElasticQuantLinear(max_heads * head_dim, max_width, w_modes=w_modes, a_modes=a_modes)

    def forward(self, x: Tensor, d: int, heads: int, qkv: Modes, proj: Modes) -> Tensor:  # (B, T, d)
        b, t, _ = x.shape
        inner = heads * self.head_dim
        q, k, v = self.qkv(self.norm(x), inner, qkv).reshape(b, t, 3, heads, self.head_dim).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal).transpose(1, 2).reshape(b, t, inner)
        return x + self.proj(y, d, proj)

    def extract(self, d: int, heads: int, qkv: Modes, proj: Modes) -> Attention:
        static = Attention(d, heads, self.head_dim, causal=self.causal)
        inner = heads * self.head_dim
        static.norm = self.norm.extract(d)
        static.qkv, static.proj = self.qkv.extract(d, inner, qkv), self.proj.extract(inner, d, proj)
        return static

    @torch.no_grad()
    def sort_heads(self) -> None:
        """Most important heads first: L1 norm of each head's columns of the output projection."""
        e = self.head_dim
        score = self.proj.weight[0].abs().sum(dim=0).reshape(-1, e).sum(dim=1)  # (heads,)
        order = torch.argsort(score, descending=True)
        rows = (order[:, None] * e + torch.arange(e, device=order.device)).reshape(-1)
        self.qkv.permute_out(rows)
        self.proj.permute_in(rows)
