"""Where tensors live and in which precision the supernet computes: one place for every device decision.

``resolve_placement`` turns the four settings of a config's ``device:`` section into a
:class:`Placement` after checking them against *this* machine, so a config asking for a GPU that is
not there fails before any data is loaded, with a message naming what the machine has. Everything
that trains or evaluates (trainer, evaluator, sensitivity, benchmarks) takes a ``Placement`` and asks
it to move tensors, open the autocast region, build the fp16 gradient scaler and describe itself for
the run manifest, so no other module decides about devices.

The default, :data:`CPU`, is fp32 without autocast: exactly what the code computed before devices
existed. ``precision: auto`` is bf16 autocast on CUDA (no loss scaling needed, same exponent range as
fp32) and fp32 on CPU. Fake quantization always computes in fp32 (see :mod:`supernets.quant`).
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from search_spaces.errors import InputError, nearest, shown

__all__ = ["Placement", "CPU", "resolve_placement", "placement_of", "module_device", "DEVICE_TYPES", "PRECISIONS"]

DeviceType = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
DEVICE_TYPES: tuple[str, ...] = ("auto", "cpu", "cuda")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Placement:
    """A device, the autocast dtype (None: plain fp32), the activation memory format and the compile wish."""

    device: torch.device
    _: KW_ONLY
    dtype: torch.dtype | None = None
    channels_last: bool = False
    compile: bool = False

    @property
    def precision(self) -> str:
        """``"fp32"``, ``"bf16"`` or ``"fp16"``."""
        return next(name for name, dtype in _DTYPES.items() if dtype == self.dtype)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager:
        """The region forward passes run in: autocast to ``dtype``, or nothing at all for fp32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def layout(self, t: Tensor) -> Tensor:
        """``t`` in the placement's memory format (4-D tensors channels-last on CUDA; otherwise ``t`` itself)."""
        if self.channels_last and t.ndim == 4:
            return t.contiguous(memory_format=torch.channels_last)
        return t

    def put(self, t: Tensor) -> Tensor:
        """``t`` on the device in the placement's layout; no copy when it is already there.

        Host-to-device copies are non-blocking (a blocking one waits for all queued GPU work); a copy
        back to the host is not (it would land in pinned memory that is read before it is written).
        """
        return self.layout(t.to(self.device, non_blocking=t.device.type == "cpu" and self.is_cuda))

    def put_module(self, module: nn.Module) -> nn.Module:
        """Move ``module`` (in place) to the device, 4-D parameters channels-last on CUDA."""
        module.to(self.device)
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        return module

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A loss scaler for fp16 (whose small exponent range underflows gradients); None otherwise."""
        if self.dtype != torch.float16:
            return None
        return torch.amp.GradScaler(self.device.type)

    def maybe_compile(self, fn: Callable, *, dynamic: bool | None = None) -> Callable:
        """``torch.compile(fn)`` when the placement asks for it, guarded: a failure falls back to ``fn``."""
        if not self.compile:
            return fn
        return _GuardedCompile(fn, dynamic=dynamic)

    def describe(self) -> dict[str, Any]:
        """What a run manifest should record about the hardware and software the numbers came from."""
        info: dict[str, Any] = {
            "device": str(self.device), "precision": self.precision, "channels_last": self.channels_last,
            "compile": self.compile, "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "cpu": _cpu_name(), "cpu_threads": torch.get_num_threads(),
        }
        if self.is_cuda:
            props = torch.cuda.get_device_properties(self.device)
            info.update(name=props.name, capability=f"{props.major}.{props.minor}",
                        memory_gib=round(props.total_memory / 2**30, 1))
        else:
            info["name"] = info["cpu"]
        return info


CPU = Placement(torch.device("cpu"))
"""fp32 on the CPU without autocast: the behaviour of every code path that is given no placement."""


class _GuardedCompile:
    """``torch.compile(fn)`` that, on any error while compiling, warns once and stays eager from then on.

    Compilation happens at the first call, so that is where errors surface; eager ``fn`` computes the
    same function, so falling back mid-run changes speed, not results.
    """

    def __init__(self, fn: Callable, *, dynamic: bool | None) -> None:
        self.fn, self.error = fn, None
        try:
            self.compiled: Callable | None = torch.compile(fn, dynamic=dynamic)
        except Exception as err:  # noqa: BLE001 - any failure means: run eagerly
            self._fail(err)

    def _fail(self, err: BaseException) -> None:
        import warnings

        first = (str(err).splitlines() or [""])[0][:300]
        self.compiled, self.error = None, f"{type(err).__name__}: {first}"
        warnings.warn(f"torch.compile failed, running eagerly: {self.error}", RuntimeWarning, stacklevel=3)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as err:  # noqa: BLE001
                self._fail(err)
        return self.fn(*args, **kwargs)


def _cpu_name() -> str:
    """The CPU model name (from /proc/cpuinfo on Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _cuda_inventory() -> str:
    """``"2 CUDA devices (cuda:0 NVIDIA H200, cuda:1 ...)"`` or why there are none."""
    if not torch.cuda.is_available():
        built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
        return f"no CUDA device (torch {torch.__version__} {built} finds none)"
    n = torch.cuda.device_count()
    names = ", ".join(f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(n))
    return f"{n} CUDA device{'s' if n != 1 else ''} ({names})"


def _check_choice(field: str, value: object, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        hint = nearest(value, allowed) if isinstance(value, str) else ""
        raise InputError(f"got {shown(value)}, expected one of {', '.join(allowed)}{hint}", field=field)
    return value


def _check_index(index: object, device_type: str) -> int:
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise InputError(f"got {shown(index)}, expected a non-negative integer", field="device.index")
    if device_type == "cpu" and index != 0:
        raise InputError(f"index {index} is out of range: the CPU device has only index 0; "
                         f"this machine has {_cuda_inventory()}", field="device.index")
    if device_type == "cuda" and index >= torch.cuda.device_count():
        raise InputError(f"index {index} is out of range: this machine has {_cuda_inventory()}",
                         field="device.index")
    return index


def _check_precision(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if precision == "fp16" and device.type != "cuda":
        raise InputError(f"fp16 needs a CUDA device, but the device is the CPU (this machine has "
                         f"{_cuda_inventory()}): use bf16 (CPU autocast) or fp32", field="device.precision")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise InputError(f"{torch.cuda.get_device_name(device)} does not support bf16; use fp16 or fp32",
                         field="device.precision")
    return _DTYPES[precision]


def resolve_placement(*, type: DeviceType = "auto", index: int = 0, precision: Precision = "auto",
                      compile: bool = False) -> Placement:
    """The placement a ``device: {type, index, precision, compile}`` section asks for, checked against this machine.

    ``type: auto`` is CUDA when a CUDA device is present, else the CPU; ``precision: auto`` is bf16
    autocast on CUDA and fp32 on the CPU. Channels-last activations are used on CUDA (what cuDNN's
    tensor-core kernels prefer). Raises :class:`InputError` naming the field (``device.type``,
    ``device.index``, ``device.precision``, ``device.compile``) and what this machine has.
    """
    kind = _check_choice("device.type", type, DEVICE_TYPES)
    precision = _check_choice("device.precision", precision, PRECISIONS)
    if not isinstance(compile, bool):
        raise InputError(f"got {shown(compile)}, expected true or false", field="device.compile")
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError(f"'cuda' was requested but this machine has {_cuda_inventory()}; use cpu or auto",
                         field="device.type")
    index = _check_index(index, kind)
    device = torch.device("cuda", index) if kind == "cuda" else torch.device("cpu")
    dtype = _check_precision(precision, device)
    return Placement(device, dtype=dtype, channels_last=kind == "cuda", compile=compile)


def module_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter (or buffer); the CPU for a module without tensors."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def placement_of(module: nn.Module) -> Placement:
    """fp32 placement on whatever device ``module`` is on (channels-last on CUDA): what evaluation defaults to."""
    device = module_device(module)
    return CPU if device.type == "cpu" else Placement(device, channels_last=device.type == "cuda")
