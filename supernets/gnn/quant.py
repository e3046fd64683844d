"""LSQ fake quantization at 1, 2, 4, 8, 16 or 32 bits for GNN tensors (weights, features, coefficients).

``supernets.quant`` covers the CNN bit-widths (2..8) with zero points and per-channel steps; GNNs
need 1 and 16 bits too, and LPGNAS mixes several bit-widths of one tensor. So this module keeps
the same LSQ idea in a smaller form: one learnable step per allowed bit-width, per tensor
(activations, coefficients, attention vectors) or per output channel (weight matrices, the standard
hardware-friendly scheme). Symmetric ranges only: signed tensors get a zero-centred grid, and
non-negative ones (ReLU outputs, coefficients, raw bag-of-words features) an unsigned one.

Math (``s`` = step, ``v = x / s``)::

    signed, b >= 2:   q = clamp(round(v), -(2^(b-1) - 1), 2^(b-1) - 1)   (narrow range: 2 bits is ternary)
    signed, b == 1:   q = sign(v) in {-1, +1}                            (binary, BinaryConnect style)
    unsigned:         q = clamp(round(v), 0, 2^b - 1)                    (1 bit is {0, s})
    x^ = q * s;       b == 32 is the identity

``round``/``sign`` pass gradients straight through inside the clip range (the clamp passes them on its
boundary, as LSQ); the step gets LSQ's gradient. Steps are learned as ``log(step)``: Adam moves every
parameter by about ``lr`` per update whatever its scale, so a plain 8-bit step of 1e-3 could jump 10×
(or change sign) in one update at lr 0.01 (on Cora, plain steps left the W8A8 GCN less accurate and
far more seed-dependent than log steps); in log space an update changes a step by about ``lr``, and LSQ's
gradient scaling, meant for SGD, is not needed. Init (lazy, at the first forward of each bit-width,
recorded in a buffer): the MSE-optimal step on a grid (see ``_init_step``; ``mean|x|`` for signed
1 bit, XNOR's optimum).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from search_spaces.errors import InputError
from search_spaces.gnn import GNN_BITS

__all__ = ["GNN_BITS", "check_bits", "qrange", "fake_quant", "mixed_fake_quant", "GnnQuantizer"]

EPS = 1e-8
_INIT_SAMPLE = 1 << 16  # the step search reads at most this many elements


def check_bits(bits: int, *, field: str = "bits") -> int:
    """``bits`` itself, or an InputError naming the allowed widths."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in GNN_BITS:
        raise InputError(f"got {bits!r}; allowed bit-widths are {list(GNN_BITS)}", field=field)
    return bits


def qrange(bits: int, signed: bool) -> tuple[int, int]:
    """Integer range of a ``bits``-wide quantizer (signed 1 bit is {-1, +1}, handled apart)."""
    if not signed:
        return 0, 2**bits - 1
    if bits == 1:
        return -1, 1
    return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1


def _levels(x: Tensor, s: Tensor, bits: int, signed: bool) -> tuple[Tensor, Tensor]:
    """``(q, inside)``: integer levels of ``x / s`` and the unclipped mask (boundary included)."""
    lo, hi = qrange(bits, signed)
    v = x / s
    inside = (v >= lo) & (v <= hi)
    if bits == 1 and signed:
        q = torch.sign(v).add_((v == 0).to(v.dtype))  # sign with sign(0) = +1
    else:
        q = torch.round(v).clamp_(lo, hi)
    return q, inside


def _per_channel(t: Tensor, axis: int | None) -> Tensor:
    """Sum ``t`` over every dimension but ``axis`` (all of them for per-tensor steps): shape (C,)."""
    if axis is None:
        return t.sum().reshape(1)
    return t.sum(dim=[d for d in range(t.dim()) if d != axis])


class _MixedLsq(torch.autograd.Function):
    """``Σ_b p_b · s_b · q_b(x / s_b)`` with LSQ's straight-through gradients, in one autograd node.

    One node instead of ~15 per width keeps the supernet's six-width mixtures affordable on a CPU.
    ``steps`` is (n_bits, C): one step per width and channel (C = 1 per tensor). Gradients: ``x``:
    ``Σ_b p_b·inside_b``; ``s_b``: ``p_b · Σ g·(q_b - v_b·inside_b)`` per channel (LSQ);
    ``p_b``: ``Σ g·x^_b``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, steps: Tensor, probs: Tensor, bits: tuple[int, ...],  # type: ignore[override]
                signed: bool, axis: int | None) -> Tensor:
        view = [1] * x.dim()
        if axis is not None:
            view[axis] = -1
        out, saved, used = torch.zeros_like(x), [], []
        for i, b in enumerate(bits):
            p = float(probs[i])
            if b == 32 or (p == 0.0 and not ctx.needs_input_grad[2]):
                if b == 32 and p != 0.0:
                    out.add_(x, alpha=p)
                continue
            s = steps[i].reshape(view)
            q, inside = _levels(x, s, b, signed)
            out.addcmul_(q, s, value=p)
            saved += [q, inside]
            used.append(i)
        ctx.save_for_backward(x, steps, probs, *saved)
        ctx.bits, ctx.used, ctx.view, ctx.axis = bits, used, view, axis
        return out

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, steps, probs, *saved = ctx.saved_tensors
        gx = torch.zeros_like(x) if ctx.needs_input_grad[0] else None
        gs, gp = torch.zeros_like(steps), torch.zeros_like(probs)
        for i, b in enumerate(ctx.bits):
            if b == 32:
                gp[i] = _dot(g, x)
                if gx is not None:
                    gx.add_(g, alpha=float(probs[i]))
        for k, i in enumerate(ctx.used):
            q, inside = saved[2 * k], saved[2 * k + 1]
            p = float(probs[i])
            gq, gin = _per_channel(g * q, ctx.axis), g * inside  # (C,), like x
            gp[i] = (gq * steps[i]).sum()
            gs[i] = p * (gq - _per_channel(gin * x, ctx.axis) / steps[i])
            if gx is not None:
                gx.add_(gin, alpha=p)
        return gx, gs, gp, None, None, None


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return torch.dot(a.reshape(-1), b.reshape(-1))


def mixed_fake_quant(x: Tensor, steps: Tensor, probs: Tensor, bits: Sequence[int], signed: bool,
                     axis: int | None = None) -> Tensor:
    """Probability-weighted sum of LSQ fake quantizations of ``x`` at each of ``bits``.

    ``steps`` (positive): (n_bits,) per tensor, or (n_bits, C), one per slice of ``x`` along ``axis``.
    """
    return _MixedLsq.apply(x, steps.reshape(len(bits), -1), probs, tuple(bits), signed, axis)


def fake_quant(x: Tensor, step: Tensor, bits: int, signed: bool, axis: int | None = None) -> Tensor:
    """Quantize-dequantize ``x`` with the learnable step (scalar, or one per slice along ``axis``)."""
    if bits == 32:
        return x
    return mixed_fake_quant(x, step.reshape(1, -1), torch.ones(1), (bits,), signed, axis)


@torch.no_grad()
def _init_step(x: Tensor, bits: int, signed: bool, axis: int | None) -> Tensor:
    """Per channel, the step minimising ``||Q(x) - x||²`` over a geometric grid below ``max|x| / qmax``.

    An MSE (L2-optimal clip) search rather than LSQ's ``2·mean/sqrt(qmax)``: binary features keep
    ``max / qmax`` (exact), while 1-2-bit coefficients and weights get a clip that keeps most of their
    mass (the max-based step would round nearly all GCN coefficients to 0). Signed 1 bit: ``mean|x|``.
    """
    x = x.detach().float()
    x = x.reshape(1, -1) if axis is None else x.movedim(axis, 0).reshape(x.size(axis), -1)  # (C, K)
    if x.size(1) > _INIT_SAMPLE:  # a fixed stride subsample: deterministic, no RNG
        x = x[:, :: x.size(1) // _INIT_SAMPLE + 1]
    if bits == 1 and signed:
        return x.abs().mean(1).clamp(min=EPS)
    lo, hi = qrange(bits, signed)
    candidates = x.abs().amax(1, keepdim=True).clamp(min=EPS) / hi * torch.logspace(0, -2, 25)  # (C, 25)
    errors = torch.stack([((torch.round(x / c).clamp(lo, hi) * c - x) ** 2).mean(1)
                          for c in candidates.split(1, dim=1)], dim=1)  # (C, 25)
    return candidates.gather(1, errors.argmin(1, keepdim=True)).squeeze(1).clamp(min=EPS)


class GnnQuantizer(nn.Module):
    """LSQ quantizer of one tensor with a learnable step for each of its allowed bit-widths.

    ``forward(x, bits)`` quantizes at one width (static models); ``mixed(x, probs)`` returns the
    probability-weighted sum over all widths (the LPGNAS relaxation of the bit-width choice).
    ``channels``/``axis``: one step per slice along ``axis`` (per-channel weights), else per tensor.
    """

    def __init__(self, bits: Sequence[int], *, signed: bool, channels: int | None = None, axis: int = 0) -> None:
        super().__init__()
        self.bits = tuple(check_bits(b) for b in bits)
        if not self.bits or len(set(self.bits)) != len(self.bits):
            raise ValueError(f"bits must be distinct and non-empty, got {bits!r}")
        self.signed, self.axis = bool(signed), (None if channels is None else axis)
        self.log_step = nn.Parameter(torch.zeros(len(self.bits), channels or 1))  # learned as log(step)
        self.register_buffer("initialized", torch.zeros(len(self.bits), dtype=torch.bool))

    def _init(self, x: Tensor, only: int | None = None) -> None:
        for i, bits in enumerate(self.bits):
            if bits != 32 and not bool(self.initialized[i]) and only in (None, i):
                with torch.no_grad():
                    self.log_step[i] = _init_step(x, bits, self.signed, self.axis).log()
                    self.initialized[i] = True

    def forward(self, x: Tensor, bits: int) -> Tensor:
        if bits not in self.bits:
            raise ValueError(f"{bits}-bit quantization was not declared for this quantizer ({list(self.bits)})")
        i = self.bits.index(bits)
        self._init(x, i)
        return fake_quant(x, self.log_step[i].exp(), bits, self.signed, self.axis)

    def mixed(self, x: Tensor, probs: Tensor) -> Tensor:
        """``Σ_b probs[b] · Q_b(x)``; widths with probability exactly 0 (one-hot) are skipped."""
        if probs.shape != (len(self.bits),):
            raise ValueError(f"expected {len(self.bits)} probabilities, got shape {tuple(probs.shape)}")
        self._init(x)
        return mixed_fake_quant(x, self.log_step.exp(), probs, self.bits, self.signed, self.axis)

    def extra_repr(self) -> str:
        return f"bits={list(self.bits)}, signed={self.signed}, per_channel={self.axis is not None}"
