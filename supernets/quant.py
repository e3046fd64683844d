"""LSQ / LSQ+ fake quantization with elastic bit-width (EQ-Net style).

In a quantized weight-sharing supernet one set of weights serves every bit-width, but a step
learned for 8 bits is useless at 2 bits. So (EQ-Net) each layer keeps a *separate* learnable step
(and zero point) per declared ``QuantMode`` (bits x granularity x symmetry), in ``ParameterDict``s
keyed by the mode: everything is plain ``state_dict`` content.

Math (shared by the learnable quantizers and :class:`FrozenFakeQuant`, see :func:`fake_quant`)::

    q  = clamp(round(x * (1/s)) + z, qmin, qmax)
    x^ = (q - z) * s

* ``round`` uses the straight-through estimator and the clamp passes gradient on its boundary
  (LSQ): x gets gradient 1 inside [qmin, qmax] and 0 outside; s gets ``round(x/s) - x/s`` inside,
  ``qmin - z`` / ``qmax - z`` when clipped.
* We multiply by ``1/s`` (not divide) exactly like ``torch.fake_quantize_per_*_affine`` and the
  x86/FBGEMM quantize kernels, so real INT8 export is bit-exact.
* LSQ gradient scaling ``g = 1/sqrt(N*Qp)`` (per tensor) or ``1/sqrt((N/C)*Qp)`` (per channel) is
  a tiny autograd function (identity forward, ``grad*g`` backward): the same gradient as the usual
  ``(s - s*g).detach() + s*g`` trick, but the forward value is *exactly* ``s`` (the trick can be
  off by one ulp), so training-mode, eval-mode and frozen outputs are bit-identical.
* Steps are kept positive as ``max(|s|, 1e-8)`` (reflected through zero, never stuck).
* Under bf16/fp16 autocast the quantize/round/clamp arithmetic still runs in fp32 and only the result
  is cast back to the input's dtype: bf16 keeps 8 significant bits, so ``x * (1/s)`` rounded to
  8-bit levels in bf16 lands on the wrong level, and the LSQ step gradient would drift with it.

Our LSQ+ variant (asymmetric modes): instead of LSQ+'s real-valued offset beta we learn a float
zero point used as ``clamp(round_ste(z), qmin, qmax)``: the effective zero point is always an
in-range integer, so 0.0 is exactly representable and INT8 export with integer zero points is exact.

Init is lazy (first forward of each mode) and recorded in persistent bool buffers (one flag per
channel for per-channel modes): it survives ``state_dict`` save/load and is never redone. A
per-channel mode initialises only the channels present in that forward (a narrower subnet may run
first); the others get the mean new step as a placeholder and are initialised on first use.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal, Sequence

import torch
from torch import Tensor, nn

from .distributed import global_numel

BITS_ALLOWED: tuple[int, ...] = (2, 3, 4, 5, 6, 8, 32)
GRANULARITIES: tuple[str, ...] = ("channel", "tensor")
EPS = 1e-8  # smallest allowed step; also guards all-zero tensors at init
_LOW_PRECISION = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class QuantMode:
    """One quantization setting. ``bits == 32`` means "not quantized" (identity).

    ``qmin``/``qmax`` give the *weight* integer range; activations depend on whether their
    quantizer is unsigned, so they use :meth:`act_range` (``LsqActQuantizer.qrange`` wraps it).
    """

    bits: int
    granularity: Literal["channel", "tensor"] = "channel"
    symmetric: bool = True

    def __post_init__(self) -> None:
        if type(self.bits) is not int or self.bits not in BITS_ALLOWED:  # rejects 8.0 and True
            raise ValueError(f"bits={self.bits!r} is not allowed; allowed bits are {BITS_ALLOWED}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity={self.granularity!r} is not allowed; allowed are {GRANULARITIES}")
        if not isinstance(self.symmetric, bool):
            raise ValueError(f"symmetric must be a bool, got {self.symmetric!r}")

    @property
    def is_float(self) -> bool:
        return self.bits == 32

    @property
    def qmin(self) -> int:
        return self.weight_range()[0]

    @property
    def qmax(self) -> int:
        return self.weight_range()[1]

    def weight_range(self) -> tuple[int, int]:
        """Symmetric: narrow signed range (no -2^(b-1), so +/- clip is balanced); else [0, 2^b-1]."""
        if self.symmetric:
            return -(2 ** (self.bits - 1) - 1), 2 ** (self.bits - 1) - 1
        return 0, 2**self.bits - 1

    def act_range(self, unsigned: bool) -> tuple[int, int]:
        """Unsigned (post-ReLU) or asymmetric: [0, 2^b-1]; signed symmetric: full signed range."""
        if unsigned or not self.symmetric:
            return 0, 2**self.bits - 1
        return -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1

    @property
    def key(self) -> str:
        """ParameterDict key, e.g. ``"w8_channel_sym"``."""
        return f"w{self.bits}_{self.granularity}_{'sym' if self.symmetric else 'asym'}"


def _round_ste(x: Tensor) -> Tensor:
    """round() with identity gradient (STE). Exact value: ``round(x) - x`` is representable."""
    return x + (torch.round(x) - x).detach()


class _GradScale(torch.autograd.Function):
    """Identity forward (exact value), gradient multiplied by ``scale`` (LSQ gradient scaling)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


def _along_axis(t: Tensor, x: Tensor, axis: int | None) -> Tensor:
    """View a per-channel vector as (C, 1, ..., 1) so it broadcasts against x along dim 0."""
    if axis is None:
        return t
    return t.reshape(-1, *([1] * (x.ndim - 1)))


def fake_quant(
    x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, axis: int | None = None
) -> Tensor:
    """The one fake-quant formula of learnable and frozen quantizers (so they are bit-identical).

    ``scale``/``zero_point`` are scalars (``axis=None``) or 1-D per-channel vectors (``axis=0``);
    the zero point must already be integer-valued.
    """
    low = x.dtype in _LOW_PRECISION  # autocast output: compute in fp32, hand back the input's dtype
    xf, scale, zero_point = (x.float(), scale.float(), zero_point.float()) if low else (x, scale, zero_point)
    if not (torch.is_grad_enabled() and (x.requires_grad or scale.requires_grad or zero_point.requires_grad)):
        out = _fake_quant_fused(xf, scale, zero_point, qmin, qmax, axis)
    else:
        s = _along_axis(scale, xf, axis)
        z = _along_axis(zero_point, xf, axis)
        q = _clamp_ste(_round_ste(xf * s.reciprocal()) + z, qmin, qmax)
        out = (q - z) * s
    return out.to(x.dtype) if low else out


def _weight_kernel(x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, axis: int | None) -> Tensor:
    """:func:`fake_quant` for weights; its own code object, so a compiled copy keeps its own compile cache."""
    return fake_quant(x, scale, zero_point, qmin, qmax, axis)


def _act_kernel(x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, axis: int | None) -> Tensor:
    """:func:`fake_quant` for activations (see :func:`_weight_kernel`)."""
    return fake_quant(x, scale, zero_point, qmin, qmax, axis)


def compile_fake_quant(module: nn.Module, compile_fn: Callable[[Callable], Callable] | None) -> nn.Module:
    """Route the fake-quant arithmetic of every LSQ quantizer in ``module`` through ``compile_fn(kernel)``.

    Why this unit: a supernet runs a different architecture at every step, so compiling a whole
    forward recompiles endlessly, while the fake-quant chain (a dozen elementwise ops forward and
    backward, in every layer) has a handful of shapes and fuses into one kernel. ``compile_fn`` is
    e.g. ``lambda f: torch.compile(f, dynamic=True)``; None goes back to eager.
    """
    kernels = {LsqWeightQuantizer: _weight_kernel, LsqActQuantizer: _act_kernel}
    compiled = {cls: None if compile_fn is None else compile_fn(fn) for cls, fn in kernels.items()}
    for m in module.modules():
        if isinstance(m, _LsqBase):
            m._kernel = compiled[type(m)] if type(m) in compiled else None
    return module


def _fake_quant_fused(x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int,
                      axis: int | None) -> Tensor:
    """Inference fast path: torch's fused kernels compute the same values (x · (1/s), half-even rounding)."""
    zp = zero_point.round().to(torch.int32)
    if axis is None:
        return torch.fake_quantize_per_tensor_affine(x, scale.reshape(()).float(), zp.reshape(()), qmin, qmax)
    return torch.fake_quantize_per_channel_affine(x, scale.float(), zp, axis, qmin, qmax)


def _clamp_ste(x: Tensor, lo: int, hi: int) -> Tensor:
    """clamp() whose gradient passes for lo <= x <= hi *inclusive*.

    torch.clamp's backward drops the gradient of values exactly on the boundary, which after
    rounding is every value that rounds to qmin/qmax (and a zero point sitting at 0); LSQ treats
    those as inside the range.
    """
    inside = (x >= lo) & (x <= hi)
    return torch.where(inside, x, x.detach().clamp(lo, hi))


def _asym_init(lo: Tensor, hi: Tensor, qmin: int, qmax: int) -> tuple[Tensor, Tensor]:
    """Min/max init with 0 forced into [lo, hi] so the integer zero point is inside [qmin, qmax]."""
    lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    s = ((hi - lo) / (qmax - qmin)).clamp(min=EPS)
    z = torch.round(qmin - lo / s).clamp(qmin, qmax)
    return s, z


def _check_modes(modes: Sequence[QuantMode]) -> tuple[QuantMode, ...]:
    bad = [m for m in modes if not isinstance(m, QuantMode)]
    if bad or not modes:
        raise ValueError(f"modes must be a non-empty sequence of QuantMode, got {list(modes)!r}")
    return tuple(dict.fromkeys(modes))


class _LsqBase(nn.Module):
    """Per-mode parameter storage, init flags and the effective (s, z) computation."""

    def __init__(self) -> None:
        super().__init__()
        self.step, self.zero_point = nn.ParameterDict(), nn.ParameterDict()
        self.modes: tuple[QuantMode, ...] = ()
        # Keys whose every flag is known to be set: checked on the host, so a training step on a GPU
        # never waits for the device to answer "initialised yet?". Forgotten whenever flags can drop.
        self._ready: set[str] = set()
        self._kernel: Callable | None = None  # fake_quant itself, unless compile_fake_quant set one

    def _register(self, key: str, shape: tuple[int, ...], symmetric: bool) -> None:
        self.step[key] = nn.Parameter(torch.ones(shape))
        if not symmetric:
            self.zero_point[key] = nn.Parameter(torch.zeros(shape))
        self.register_buffer(f"initialized_{key}", torch.zeros(shape, dtype=torch.bool))

    def _flags(self, key: str) -> Tensor:
        return getattr(self, f"initialized_{key}")

    def _key(self, mode: QuantMode) -> str:
        return mode.key

    def _resolve(self, mode: QuantMode) -> str | None:
        """Parameter key of ``mode``; None for 32 bits (identity, accepted even if undeclared)."""
        if not isinstance(mode, QuantMode):
            raise ValueError(f"expected a QuantMode, got {mode!r}")
        if mode.is_float:
            return None
        key = self._key(mode)
        if key not in self.step:
            declared = [m for m in self.modes if not m.is_float]
            raise ValueError(f"{mode} was not declared for this quantizer; declared modes: {declared}")
        return key

    def _effective(
        self, key: str, qmin: int, qmax: int, c: int | None, g: float | None
    ) -> tuple[Tensor, Tensor]:
        """Effective positive step and integer zero point (first c channels if c; LSQ grad scale g)."""
        s = self.step[key]
        z = self.zero_point[key] if key in self.zero_point else None
        if c is not None:
            s = s[:c]
            z = None if z is None else z[:c]
        if g is not None:
            s = _GradScale.apply(s, g)
            z = None if z is None else _GradScale.apply(z, g)
        s = s.abs().clamp(min=EPS)
        z = torch.zeros_like(s) if z is None else _clamp_ste(_round_ste(z), qmin, qmax)
        return s, z

    @torch.no_grad()
    def _write_init(self, key: str, s0: Tensor, z0: Tensor | None) -> None:
        """Store data-derived init for the not-yet-initialised leading channels; placeholder the rest."""
        flags, s0 = self._flags(key).view(-1), s0.reshape(-1)  # views: scalars become (1,)
        targets = [(self.step[key].view(-1), s0, s0.mean())]
        if z0 is not None:
            z0 = z0.reshape(-1).float()
            targets.append((self.zero_point[key].view(-1), z0, z0.mean().round()))
        need = torch.nonzero(~flags[: s0.numel()]).squeeze(1)
        for param, value, _ in targets:
            param[need] = value[need]
        flags[need] = True
        if bool(flags.all()):  # known on the host from now on (a traced forward then has no data-dependent branch)
            self._ready.add(key)
        rest = torch.nonzero(~flags).squeeze(1)
        for param, _, placeholder in targets:
            param[rest] = placeholder

    def _needs_init(self, key: str, c: int | None) -> bool:
        if key in self._ready:
            return False
        flags = self._flags(key)
        if bool(flags.all()):
            self._ready.add(key)
            return False
        return c is None or not bool(flags[:c].all())

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # loaded flags may be False
        self._ready.clear()
        super()._load_from_state_dict(*args, **kwargs)

    def _freeze(self, key: str, qmin: int, qmax: int, c: int | None, bits: int) -> FrozenFakeQuant:
        if self._needs_init(key, c):
            raise RuntimeError(f"mode {key!r} is not initialised (for these channels); run a forward first")
        with torch.no_grad():
            s, z = self._effective(key, qmin, qmax, c, None)
        return FrozenFakeQuant(s, z, qmin, qmax, bits, None if c is None else 0)

    def reset_init(self, mode: QuantMode | None = None) -> None:
        """Forget initialisation (all modes, or one) so the next forward re-initialises from data."""
        keys = list(self.step.keys()) if mode is None else [self._resolve(mode)]
        for key in keys:
            if key is not None:
                self._flags(key).fill_(False)
                self._ready.discard(key)


class LsqWeightQuantizer(_LsqBase):
    """LSQ(+) weight quantizer with one step (and zero point) per declared mode.

    Per-channel parameters are vectors of length ``out_channels``; a sliced weight with
    ``c_out <= out_channels`` uses the leading ``c_out`` entries (elastic width keeps the most
    important channels first, see :meth:`permute_channels`).
    """

    def __init__(self, *, out_channels: int, modes: Sequence[QuantMode]) -> None:
        super().__init__()
        if not isinstance(out_channels, int) or out_channels < 1:
            raise ValueError(f"out_channels must be a positive int, got {out_channels!r}")
        self.out_channels = out_channels
        self.modes = _check_modes(modes)
        for m in self.modes:
            if not m.is_float:
                shape = (out_channels,) if m.granularity == "channel" else ()
                self._register(m.key, shape, m.symmetric)

    def forward(self, w: Tensor, mode: QuantMode) -> Tensor:
        """Fake-quantize ``w`` (shape ``(c_out, ...)``); 32-bit modes return ``w`` itself."""
        key = self._resolve(mode)
        if key is None:
            return w
        c = None if mode.granularity == "tensor" else w.shape[0]
        if c is not None and c > self.out_channels:
            raise ValueError(f"weight shape {tuple(w.shape)} exceeds out_channels={self.out_channels}")
        if self._needs_init(key, c):
            self._init_from(w.detach(), mode)
        g = 1.0 / math.sqrt(w.numel() / (c or 1) * mode.qmax)  # N/C elements share each step
        s, z = self._effective(key, mode.qmin, mode.qmax, c, g)
        return (self._kernel or fake_quant)(w, s, z, mode.qmin, mode.qmax, None if c is None else 0)

    def _init_from(self, w: Tensor, mode: QuantMode) -> None:
        flat = w.reshape(w.shape[0], -1) if mode.granularity == "channel" else w.reshape(1, -1)
        if mode.symmetric:
            s0, z0 = (2 * flat.abs().amax(dim=1) / (2**mode.bits - 1)).clamp(min=EPS), None
        else:
            s0, z0 = _asym_init(flat.amin(dim=1), flat.amax(dim=1), mode.qmin, mode.qmax)
        self._write_init(mode.key, s0, z0)

    @torch.no_grad()
    def permute_channels(self, perm: Tensor) -> None:
        """Reorder per-channel steps/zero points/flags like ``weight[perm]`` (new i = old perm[i])."""
        perm = torch.as_tensor(perm, dtype=torch.long)
        if perm.shape != (self.out_channels,):
            raise ValueError(f"perm must have shape ({self.out_channels},), got {tuple(perm.shape)}")
        for key in self.step:
            for t in (self.step[key], self._flags(key), self.zero_point.get(key)):
                if t is not None and t.ndim == 1:  # per-channel modes only
                    t.copy_(t[perm])

    def frozen(self, mode: QuantMode, out_channels: int) -> FrozenFakeQuant:
        """Static copy for the first ``out_channels`` channels (subnet extraction / INT8 export)."""
        key = self._resolve(mode)
        if key is None:
            return FrozenFakeQuant.identity()
        c = None if mode.granularity == "tensor" else out_channels
        if c is not None and not 1 <= c <= self.out_channels:
            raise ValueError(f"out_channels={out_channels} not in [1, {self.out_channels}]")
        return self._freeze(key, mode.qmin, mode.qmax, c, mode.bits)


class LsqActQuantizer(_LsqBase):
    """LSQ(+) per-tensor activation quantizer with one step (and zero point) per declared mode.

    Activations are always per-tensor: a mode's ``granularity`` is ignored, so ``QuantMode(8)`` and
    ``QuantMode(8, "tensor")`` share one step. ``unsigned=True`` (after ReLU-like activations) makes
    symmetric modes use [0, 2^b-1] with zero point 0.
    """

    def __init__(self, *, modes: Sequence[QuantMode], unsigned: bool) -> None:
        super().__init__()
        self.unsigned = bool(unsigned)
        self.modes = _check_modes([replace(m, granularity="tensor") for m in _check_modes(modes)])
        for m in self.modes:
            if not m.is_float:
                self._register(self._key(m), (), m.symmetric)

    def _key(self, mode: QuantMode) -> str:
        return f"a{mode.bits}_{'sym' if mode.symmetric else 'asym'}"

    def qrange(self, mode: QuantMode) -> tuple[int, int]:
        """Integer range this quantizer uses for ``mode``."""
        return mode.act_range(self.unsigned)

    def forward(self, x: Tensor, mode: QuantMode) -> Tensor:
        """Fake-quantize activations ``x``; 32-bit modes return ``x`` itself."""
        key = self._resolve(mode)
        if key is None:
            return x
        qmin, qmax = self.qrange(mode)
        if self._needs_init(key, None):
            self._init_from(x.detach(), mode, key, qmin, qmax)
        g = 1.0 / math.sqrt(global_numel(x.numel()) * qmax)  # the global batch's count with several processes
        s, z = self._effective(key, qmin, qmax, None, g)
        return (self._kernel or fake_quant)(x, s, z, qmin, qmax, None)

    def _init_from(self, x: Tensor, mode: QuantMode, key: str, qmin: int, qmax: int) -> None:
        x = x.float()
        if mode.symmetric:
            peak = x.amax().clamp(min=0) if self.unsigned else x.abs().amax()
            s0, z0 = (peak / qmax).clamp(min=EPS), None
        else:
            s0, z0 = _asym_init(x.amin(), x.amax(), qmin, qmax)
        self._write_init(key, s0, z0)

    def frozen(self, mode: QuantMode) -> FrozenFakeQuant:
        """Static per-tensor copy for subnet extraction / INT8 export."""
        key = self._resolve(mode)
        if key is None:
            return FrozenFakeQuant.identity()
        return self._freeze(key, *self.qrange(mode), None, mode.bits)


class FrozenFakeQuant(nn.Module):
    """Static fake-quant with fixed ``scale``/``zero_point`` buffers; same math as the LSQ forward.

    Per-channel (``axis=0``) buffers are 1-D of length C and are broadcast along dim 0 at forward
    time (so one frozen module serves conv and linear weights); per-tensor buffers are scalars.
    ``bits == 32`` is the identity.
    """

    def __init__(self, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, bits: int, axis: int | None):
        super().__init__()
        if axis not in (0, None):
            raise ValueError(f"axis must be 0 or None, got {axis!r}")
        self.register_buffer("scale", scale.detach().clone().float())
        self.register_buffer("zero_point", zero_point.detach().clone().float())
        self.qmin, self.qmax, self.bits, self.axis = int(qmin), int(qmax), int(bits), axis

    @classmethod
    def identity(cls) -> FrozenFakeQuant:
        """The 32-bit (unquantized) frozen quantizer."""
        return cls(torch.ones(()), torch.zeros(()), 0, 0, 32, None)

    def forward(self, x: Tensor) -> Tensor:
        if self.bits == 32:
            return x
        if torch.is_grad_enabled() and x.requires_grad:
            return fake_quant(x, self.scale, self.zero_point, self.qmin, self.qmax, self.axis)
        # Plain ops, the same arithmetic as torch's fused kernel (x * (1/s), half-even rounding), so the
        # model exports with torch.export and to ONNX (Mul/Round/Clip) without custom operators.
        low = x.dtype in _LOW_PRECISION  # fp32 arithmetic under autocast, as in fake_quant
        xf = x.float() if low else x
        s = _along_axis(self.scale, xf, self.axis)
        z = _along_axis(self.zero_point, xf, self.axis)
        out = (torch.clamp(torch.round(xf * s.reciprocal()) + z, self.qmin, self.qmax) - z) * s
        return out.to(x.dtype) if low else out

    def quant_params(self) -> tuple[Tensor, Tensor, int, int, int | None]:
        """(scale, int32 zero_point, qmin, qmax, axis) as torch/ONNX quantize ops expect them."""
        if self.bits == 32:
            raise ValueError("a 32-bit (unquantized) FrozenFakeQuant has no quantization parameters")
        zp = self.zero_point.round().to(torch.int32)
        return self.scale.clone(), zp, self.qmin, self.qmax, self.axis

    def extra_repr(self) -> str:
        return f"bits={self.bits}, qmin={self.qmin}, qmax={self.qmax}, axis={self.axis}"
