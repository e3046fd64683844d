"""Latency backends: the runtimes latency tables are profiled on, in one registry.

A backend is its name, its number format and a function that turns a *float* static module into a
zero-argument runner (inputs prepared up front). Profiling, the config check, ``qnas latency profile``,
the end-to-end timing of Pareto subnets and SpaceEvo's lookup table all read this registry, so a new
runtime is one :func:`register_latency_backend` call (see docs/extending.md). A backend that also times
transformer blocks says so in the same registration (``make_transformer_runner``; :func:`transformer_backends`
lists them), and one that times ONNX graphs names their quantization (``onnx_quantization``), which is how
``qnas latency template`` picks the graphs it writes for other devices (:func:`onnx_backend`). This module
imports no torch: configs are checked against it before anything heavy loads; the runners import
:mod:`supernets.deploy` when they are built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from search_spaces.registries import Registry

__all__ = ["LATENCY_BACKENDS", "LatencyBackend", "RunnerFactory", "TransformerModel", "TransformerRunnerFactory",
           "get_latency_backend", "int8_backends", "onnx_backend", "register_latency_backend", "transformer_backends"]

Runner = Callable[[], object]
RunnerFactory = Callable[..., Runner]
"""``(model, input_shape, *, threads, quantized_input, quantized_output, calib_batches, seed) -> runner``."""
TransformerModel = Callable[[Any, Sequence[Any]], Any]
"""``(float static transformer module, calibration inputs) -> what the backend times`` (ONNX Runtime: the ONNX graph),
built before timing starts, outside the pinned timing section."""
TransformerRunnerFactory = Callable[..., Runner]
"""``(what transformer_model built, calibration inputs, *, threads) -> runner`` timing ``calib[0]`` (token ids
``(B, T)``, images ``(B, C, H, W)`` or ``(B, T, d)`` floats); called inside the pinned timing section."""


@dataclass(frozen=True)
class LatencyBackend:
    """A runtime to time blocks and subnets on.

    ``dtype``: ``"int8"`` backends time every block at 8 bits (no integer kernels below), ``"fp32"`` ones
    in float. ``edges``: how an INT8 block's boundary tensors look inside a network (for table notes).
    ``overhead_backend``: the backend whose empty-model call measures the per-call overhead (an INT8
    runtime cannot quantize an empty model; its float twin makes the same call).

    Transformer blocks (:mod:`nas.transformer_latency`) are timed only on backends that set
    ``make_transformer_runner``; ``transformer_model`` turns the float module into what that runner takes
    (None: the module itself). ``onnx_quantization``: set by a backend that times ONNX graphs, their kind as
    template manifests label it (``"qdq-int8"``, ``"float"``); its ``transformer_model`` returns the graph
    (an ``onnx.ModelProto``), the model file ``qnas latency template`` writes for other devices.
    """

    name: str
    dtype: Literal["fp32", "int8"]
    make_runner: RunnerFactory
    edges: str = "float in and out"
    overhead_backend: str | None = None
    make_transformer_runner: TransformerRunnerFactory | None = None
    transformer_model: TransformerModel | None = None
    onnx_quantization: str | None = None


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


def transformer_backends() -> list[str]:
    """Names of the backends that time transformer blocks (declare ``make_transformer_runner``), in
    registration order; read when asked, so a backend registered later is in it."""
    return [name for name, b in LATENCY_BACKENDS.items() if b.make_transformer_runner is not None]


def onnx_backend(dtype: str, *, transformer: bool = False) -> LatencyBackend:
    """The first registered backend of ``dtype`` that times ONNX graphs (with ``transformer``: transformer
    blocks too): whose graphs ``qnas latency template --backend-hint dtype`` writes for other devices."""
    for _, backend in LATENCY_BACKENDS.items():
        if backend.dtype == dtype and backend.onnx_quantization and (
                not transformer or backend.make_transformer_runner is not None):
            return backend
    raise LookupError(f"no registered {dtype} backend times ONNX graphs{' of transformers' if transformer else ''}")


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


def _transformer_onnx_fp32(model: Any, calib: Sequence[Any]) -> Any:
    """The float ONNX graph of a static transformer (batch axis dynamic)."""
    from .transformer.graphs import transformer_onnx

    return transformer_onnx(model, calib[0], dynamic_batch=True)


def _transformer_onnx_int8(model: Any, calib: Sequence[Any]) -> Any:
    """ORT static QDQ INT8 of a static transformer calibrated on ``calib`` (any bit-widths: post-training)."""
    from .transformer.graphs import transformer_ort_int8

    return transformer_ort_int8(model, list(calib), strict=False)


def _ort_transformer_runner(proto: Any, calib: Sequence[Any], *, threads: int = 1, **_: Any) -> Runner:
    import numpy as np

    from .deploy import ort_session

    session = ort_session(proto, threads)
    feed = {"x": np.ascontiguousarray(calib[0].detach().cpu().numpy())}
    return lambda: session.run(None, feed)


register_latency_backend(LatencyBackend("torch-fp32", "fp32", _torch_fp32))
# no transformer runner: torch.ao's INT8 quantizer does not cover attention
register_latency_backend(LatencyBackend("torch-int8", "int8", _torch_int8, edges="quantized tensors in and out"))
register_latency_backend(LatencyBackend("onnxruntime-fp32", "fp32", _onnxruntime("onnxruntime-fp32"),
                                        make_transformer_runner=_ort_transformer_runner,
                                        transformer_model=_transformer_onnx_fp32, onnx_quantization="float"))
register_latency_backend(LatencyBackend("onnxruntime-int8", "int8", _onnxruntime("onnxruntime-int8"),
                                        edges="uint8 in and out, edge Q/DQ stripped",
                                        overhead_backend="onnxruntime-fp32",
                                        make_transformer_runner=_ort_transformer_runner,
                                        transformer_model=_transformer_onnx_int8, onnx_quantization="qdq-int8"))
