"""Elastic transformer layers: leading slices of the largest layer, one LSQ step per bit-width and mode.

Each layer runs the configuration it is given and extracts the equivalent static module
(:mod:`supernets.transformer.static`) with the sliced, fake-quantized weights copied in and its
activation quantizer frozen, so an extracted subnet computes what the supernet computes. Heads and MLP
hidden units can be reordered by importance (:meth:`ElasticAttention.sort_heads`,
:meth:`ElasticMlp.sort_hidden`), as CNN channels are, so narrow subnets keep the important ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..quant import LsqActQuantizer, LsqWeightQuantizer, QuantMode
from ..static import QuantLinear
from .static import Attention, ClassifierHead, Mlp, PatchEmbedding, TokenEmbedding, patchify

__all__ = ["ElasticQuantLinear", "ElasticLayerNorm", "ElasticAttention", "ElasticMlp", "ElasticTokenEmbedding",
           "ElasticPatchEmbedding", "ElasticClassifierHead"]

Modes = tuple[QuantMode, QuantMode]  # (weight, activation)


class ElasticQuantLinear(nn.Module):
    """quant → linear with elastic input and output features (leading slices); ``parts`` stacked linears
    (QKV's three) share the input quantizer and keep a weight quantizer each, so each part's leading
    output rows are its own."""

    def __init__(self, max_in: int, max_out: int, *, w_modes: Sequence[QuantMode], a_modes: Sequence[QuantMode],
                 parts: int = 1) -> None:
        super().__init__()
        self.parts = parts
        self.weight = nn.Parameter(torch.empty(parts, max_out, max_in))
        self.bias = nn.Parameter(torch.zeros(parts, max_out))
        bound = max_in ** -0.5  # nn.Linear's default uniform init
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)
        self.w_quant = nn.ModuleList(LsqWeightQuantizer(out_channels=max_out, modes=w_modes) for _ in range(parts))
        self.a_quant = LsqActQuantizer(modes=a_modes, unsigned=False)

    def sliced(self, in_f: int, out_f: int, w_mode: QuantMode) -> tuple[Tensor, Tensor]:
        """(weight ``(parts·out_f, in_f)`` fake-quantized, bias ``(parts·out_f,)``)."""
        w = torch.cat([q(self.weight[j, :out_f, :in_f].contiguous(), w_mode) for j, q in enumerate(self.w_quant)])
        return w, self.bias[:, :out_f].reshape(-1)

    def forward(self, x: Tensor, out_f: int, modes: Modes) -> Tensor:  # (..., in_f) -> (..., parts·out_f)
        w, b = self.sliced(x.shape[-1], out_f, modes[0])
        return F.linear(self.a_quant(x, modes[1]), w, b)

    @torch.no_grad()
    def extract(self, in_f: int, out_f: int, modes: Modes) -> QuantLinear:
        static = QuantLinear(in_f, self.parts * out_f)
        w, b = self.sliced(in_f, out_f, modes[0])
        static.linear.weight.copy_(w)
        static.linear.bias.copy_(b)
        static.quant = self.a_quant.frozen(modes[1])
        return static

    @torch.no_grad()
    def permute_out(self, perm: Tensor) -> None:
        """Reorder every part's output rows (and their per-channel steps) by ``perm``."""
        self.weight.copy_(self.weight[:, perm])
        self.bias.copy_(self.bias[:, perm])
        for q in self.w_quant:
            q.permute_channels(perm)

    @torch.no_grad()
    def permute_in(self, perm: Tensor) -> None:
        self.weight.copy_(self.weight[:, :, perm])


class ElasticLayerNorm(nn.LayerNorm):
    """LayerNorm over the leading ``d`` features."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        d = x.shape[-1]
        return F.layer_norm(x, (d,), self.weight[:d], self.bias[:d], self.eps)

    @torch.no_grad()
    def extract(self, d: int) -> nn.LayerNorm:
        static = nn.LayerNorm(d, eps=self.eps)
        static.weight.copy_(self.weight[:d])
        static.bias.copy_(self.bias[:d])
        return static


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


class ElasticMlp(nn.Module):
    """Pre-LN MLP with elastic width and hidden units."""

    def __init__(self, max_width: int, max_hidden: int, *, w_modes: Sequence[QuantMode],
                 a_modes: Sequence[QuantMode]) -> None:
        super().__init__()
        self.norm = ElasticLayerNorm(max_width)
        self.fc1 = ElasticQuantLinear(max_width, max_hidden, w_modes=w_modes, a_modes=a_modes)
        self.fc2 = ElasticQuantLinear(max_hidden, max_width, w_modes=w_modes, a_modes=a_modes)

    def forward(self, x: Tensor, d: int, hidden: int, fc1: Modes, fc2: Modes) -> Tensor:  # (B, T, d)
        return x + self.fc2(F.gelu(self.fc1(self.norm(x), hidden, fc1)), d, fc2)

    def extract(self, d: int, hidden: int, fc1: Modes, fc2: Modes) -> Mlp:
        static = Mlp(d, hidden)
        static.norm = self.norm.extract(d)
        static.fc1, static.fc2 = self.fc1.extract(d, hidden, fc1), self.fc2.extract(hidden, d, fc2)
        return static

    @torch.no_grad()
    def sort_hidden(self) -> None:
        """Most important hidden units first: L1 norm of their column of the down projection."""
        order = torch.argsort(self.fc2.weight[0].abs().sum(dim=0), descending=True)
        self.fc1.permute_out(order)
        self.fc2.permute_in(order)


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
