"""Latency backends: the runtimes latency tables are profiled on, in one registry.

A backend is its name, its number format and a function that turns a *float* static module into a
zero-argument runner (inputs prepared up front). Profiling, the config check, ``qnas latency profile``,
the end-to-end timing of Pareto subnets and SpaceEvo's lookup table all read this registry, so a new
runtime is one :func:`register_latency_backend` call (see docs/extending.md). This module
imports no torch: configs are checked against it before anything heavy loads; the runners import
:mod:`supernets.deploy` when they are built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from search_spaces.registries import Registry

__all__ = ["LATENCY_BACKENDS", "LatencyBackend", "RunnerFactory", "get_latency_backend", "int8_backends",
           "register_latency_backend"]

Runner = Callable[[], object]
RunnerFactory = Callable[..., Runner]
"""``(model, input_shape, *, threads, quantized_input, quantized_output, calib_batches, seed) -> runner``."""


@dataclass(frozen=True)
class LatencyBackend:
    """A runtime to time blocks and subnets on.

    ``dtype``: ``"int8"`` backends time every block at 8 bits (no integer kernels below), ``"fp32"`` ones
    in float. ``edges``: how an INT8 block's boundary tensors look inside a network (for table notes).
    ``overhead_backend``: the backend whose empty-model call measures the per-call overhead (an INT8
    runtime cannot quantize an empty model; its float twin makes the same call).
    """

    name: str
    dtype: Literal["fp32", "int8"]
    make_runner: RunnerFactory
    edges: str = "float in and out"
    overhead_backend: str | None = None


LATENCY_BACKENDS: Registry[LatencyBackend] = Registry("backend", field="backend")


def register_latency_backend(backend: LatencyBackend) -> LatencyBackend:
    """Add a backend (its name must be new)."""
    return LATENCY_BACKENDS.register(backend.name, backend)


def get_latency_backend(name: str, *, source: Any = None, field: str | None = None) -> LatencyBackend:
    """The backend registered as ``name``; an unknown name is one InputError naming the nearest."""
    return LATENCY_BACKENDS.get(name, source=source, field=field)


def int8_backends() -> list[str]:
    """Names of the backends that run integer kernels."""
    return [name for name, b in LATENCY_BACKENDS.items() if b.dtype == "int8"]


# ---- built-in backends ----------------------------------------------------------------------------
def _torch_fp32(model: Any, input_shape: Sequence[int], *, calib_batches: int = 4, seed: int = 0,
                **_: Any) -> Runner:
    from .deploy import calibration_batches

    x = calibration_batches(input_shape, 1, seed)[0]  # (B, C, H, W)
    return lambda: model(x)


def _torch_int8(model: Any, input_shape: Sequence[int], *, quantized_input: bool = False,
                quantized_output: bool = False, calib_batches: int = 4, seed: int = 0, **_: Any) -> Runner:
    import torch

    from .deploy import calibration_batches, to_torch_int8

    calib = calibration_batches(input_shape, calib_batches, seed)
    qmodel = to_torch_int8(model, calib, quantized_input=quantized_input, quantized_output=quantized_output)
    x = torch.quantize_per_tensor(calib[0], 0.05, 128, torch.quint8) if quantized_input else calib[0]
    return lambda: qmodel(x)


def _onnxruntime(backend: str) -> RunnerFactory:
    def make(model: Any, input_shape: Sequence[int], *, threads: int = 1, quantized_input: bool = False,
             quantized_output: bool = False, calib_batches: int = 4, seed: int = 0) -> Runner:
        from .deploy import onnx_model, ort_session

        proto, feed = onnx_model(model, backend, input_shape, quantized_input=quantized_input,
                                 quantized_output=quantized_output, calib_batches=calib_batches, seed=seed)
        session = ort_session(proto, threads)
        return lambda: session.run(None, feed)

    return make


register_latency_backend(LatencyBackend("torch-fp32", "fp32", _torch_fp32))
register_latency_backend(LatencyBackend("torch-int8", "int8", _torch_int8, edges="quantized tensors in and out"))
register_latency_backend(LatencyBackend("onnxruntime-fp32", "fp32", _onnxruntime("onnxruntime-fp32")))
register_latency_backend(LatencyBackend("onnxruntime-int8", "int8", _onnxruntime("onnxruntime-int8"),
                                        edges="uint8 in and out, edge Q/DQ stripped",
                                        overhead_backend="onnxruntime-fp32"))
