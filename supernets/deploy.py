"""Deploy float static modules to real inference backends, and time them the way latency tables need.

Backends (``BACKENDS``): ``torch-fp32`` (eager, inference mode), ``torch-int8`` (torch.ao FX graph
mode, x86 backend), ``onnxruntime-fp32`` and ``onnxruntime-int8`` (``quantize_static``, QDQ format,
per-channel int8 weights, **uint8 activations**: with int8 activations ORT leaves many convs float).

A block is timed the way it runs *inside* a whole network (ops interact through fusion and caches,
which is why nn-Meter, Zhang et al., MobiSys 2021, predicts fused kernels, not ops): torch INT8
blocks take and return quantized tensors, ORT INT8 block graphs read and write uint8 (edge Q/DQ
stripped); only the stem reads the float image and only the head returns float logits.

ONNX export uses the legacy exporter (``dynamo=False``) at opset 17: in torch 2.14 both work, but
the dynamo exporter is far slower per model, and a table exports every distinct block.
:func:`measure_blocks` and :func:`measure_nets` are pure, picklable functions (specs in, timings out)
so profiling can be shipped to Ray workers.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from search_spaces import BlockSpec, InputError
from search_spaces.errors import nearest

from .blocks import build_block
from .static_net import StaticNet

__all__ = ["BACKENDS", "ONNX_OPSET", "Protocol", "Timing", "backend_dtype", "block_io", "calibration_batches",
           "check_backend", "default_clock", "device_name", "fake_quant_model", "make_runner", "measure_blocks",
           "measure_nets", "measure_overhead", "onnx_model", "ort_session", "pinned", "quiet", "strip_edge_qdq",
           "time_interleaved", "to_onnx", "to_onnx_int8", "to_torch_int8"]

BACKENDS = ("torch-fp32", "torch-int8", "onnxruntime-fp32", "onnxruntime-int8")
ONNX_OPSET = 17
Runner = Callable[[], object]


@dataclass(frozen=True)
class Timing:
    """Mean of the per-pass medians, robust spread of single runs, runs timed, each pass's median."""

    mean_ms: float
    std_ms: float  # 1.4826 * MAD of all single runs (robust to scheduler hiccups)
    count: int
    pass_ms: tuple[float, ...]


def check_backend(backend: str, *, source: str | None = None) -> None:
    """Raise :class:`InputError` for an unknown backend name, with the nearest valid one."""
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}{nearest(backend, BACKENDS)} (known: {list(BACKENDS)})",
                         source=source, field="backend")


def backend_dtype(backend: str) -> str:
    """``"int8"`` or ``"fp32"``."""
    check_backend(backend)
    return backend.rsplit("-", 1)[1]


def block_io(spec: BlockSpec) -> tuple[bool, bool]:
    """(quantized input, quantized output) of a block inside an INT8 network: only the stem reads the float
    image, only the head returns float logits."""
    return spec.op != "conv", spec.op != "head"


def device_name() -> str:
    """CPU model and the ISA extensions that decide INT8 speed, for table headers."""
    info = {}
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        info = dict(line.split(":", 1) for line in fh.read().split("\n\n")[0].splitlines() if ":" in line)
    model, flags = info.get("model name\t", "unknown CPU").strip(), info.get("flags\t\t", "").split()
    isa = [f for f in ("avx512_vnni", "avx_vnni", "avx512f", "avx2") if f in flags][:2]
    return f"{model} ({', '.join(isa)})" if isa else model


@dataclass(frozen=True)
class Protocol:
    """How to time (picklable): ``runs`` timed runs in all over ``passes`` interleaved passes, ``warmup``
    untimed runs per pass, ``threads``, ``cpus`` to pin to, ``clock`` (None: :func:`default_clock`),
    ``realtime``: SCHED_FIFO while timing, so other processes cannot evict our caches mid-run."""

    threads: int = 1
    runs: int = 50
    passes: int = 10
    warmup: int = 2
    cpus: tuple[int, ...] | None = None
    clock: str | None = None
    realtime: bool = False

    @property
    def clock_name(self) -> str:
        return self.clock or default_clock(self.threads)


@contextlib.contextmanager
def pinned(protocol: Protocol) -> Iterator[None]:
    """Apply the protocol's threads, CPU pinning and priority to the calling thread; restore them afterwards."""
    old_threads, old_cpus = torch.get_num_threads(), os.sched_getaffinity(0)
    old_policy = (os.sched_getscheduler(0), os.sched_getparam(0))
    torch.set_num_threads(protocol.threads)
    try:
        if protocol.cpus is not None:
            os.sched_setaffinity(0, set(protocol.cpus))
        if protocol.realtime:
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            except OSError as err:
                warnings.warn(f"realtime priority refused ({err}); timing at normal priority", stacklevel=3)
        yield
    finally:
        torch.set_num_threads(old_threads)
        os.sched_setaffinity(0, old_cpus)
        if protocol.realtime:
            os.sched_setscheduler(0, *old_policy)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the deprecation warnings and root-logger chatter of torch.ao and the ORT quantizer."""
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            root.setLevel(level)


# ---- conversions --------------------------------------------------------------------------------
def to_torch_int8(model: nn.Module, calib: Sequence[torch.Tensor], *, quantized_input: bool = False,
                  quantized_output: bool = False) -> nn.Module:
    """torch.ao FX INT8 (x86): prepare, calibrate on ``calib``, convert. With ``quantized_input`` /
    ``quantized_output`` the module takes / returns quantized tensors (a block inside an INT8 net)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    custom = PrepareCustomConfig()
    if quantized_input:
        custom.set_input_quantized_indexes([0])
    if quantized_output:
        custom.set_output_quantized_indexes([0])
    with quiet(), torch.no_grad():
        prepared = prepare_fx(model.eval(), get_default_qconfig_mapping("x86"), (calib[0],),
                              prepare_custom_config=custom)
        for x in calib:
            prepared(x)
        return convert_fx(prepared)


def to_onnx(model: nn.Module, example: torch.Tensor, *, opset: int = ONNX_OPSET,
            dynamic_batch: bool = False):  # -> onnx.ModelProto
    """Export a float module (legacy exporter, fixed opset, input ``x``, output ``y``; batch axis
    dynamic when ``dynamic_batch``, as deployed files need)."""
    import onnx

    buf = io.BytesIO()
    axes = {"x": {0: "batch"}, "y": {0: "batch"}} if dynamic_batch else None
    with quiet(), torch.no_grad():
        torch.onnx.export(model.eval(), (example,), buf, dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"], dynamic_axes=axes)
    return _fold_identities(onnx.load_from_string(buf.getvalue()))


def _fold_identities(proto):  # -> onnx.ModelProto
    """Drop Identity nodes over initializers (the exporter emits them; ORT's quantizer then leaves biases float)."""
    graph, inits, outputs = proto.graph, {i.name for i in proto.graph.initializer}, {o.name for o in proto.graph.output}
    rename = {n.output[0]: n.input[0] for n in graph.node
              if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in outputs}
    keep = [n for n in graph.node if not n.output or n.output[0] not in rename]
    for node in keep:
        node.input[:] = [rename.get(i, i) for i in node.input]
    del graph.node[:]
    graph.node.extend(keep)
    return proto


class _Reader:
    """ORT calibration data reader over a list of float arrays."""

    def __init__(self, batches: Sequence[np.ndarray]) -> None:
        self._it = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        return None if x is None else {"x": x}


def to_onnx_int8(proto, calib: Sequence[np.ndarray]):  # -> onnx.ModelProto
    """Static QDQ quantization: per-channel int8 weights, uint8 activations, MinMax calibration."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory() as tmp, quiet():
        out = os.path.join(tmp, "q.onnx")
        quantize_static(proto, out, _Reader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return onnx.load(out)


def strip_edge_qdq(proto, *, strip_input: bool = True, strip_output: bool = True,
                   nhwc: bool = True):  # -> onnx.ModelProto
    """Make a QDQ graph read and/or write uint8 directly, as the block does inside a whole INT8 graph.

    The input QuantizeLinear is removed (float readers of the input get a DequantizeLinear); the output
    DequantizeLinear is removed, or, where the graph ends in a float op (HardSwish stays float in ORT),
    a QuantizeLinear is appended, which the next block's input pays inside a network. With ``nhwc`` the
    uint8 edges are NHWC: ORT runs QLinearConv in NHWC and wraps a lone block in layout Transposes that a
    whole network has only at its ends (a visible share of a small block's time); edge Transposes in the
    graph cancel them.
    """
    from onnx import TensorProto, helper

    graph = proto.graph
    quant = next((n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "x"), None)
    if strip_input and quant is not None:
        graph.node.remove(quant)
        _rename(graph, quant.output[0], "x_q", outputs=False)
        if any("x" in n.input for n in graph.node):  # float readers of the input
            _rename(graph, "x", "x_float", outputs=False)
            graph.node.insert(0, helper.make_node("DequantizeLinear", ["x_q", *quant.input[1:]], ["x_float"]))
        graph.node.insert(0, helper.make_node("Transpose", ["x"], ["x_q"], perm=[0, 3, 1, 2]) if nhwc else
                          helper.make_node("Identity", ["x"], ["x_q"]))
        _set_io(graph.input[0], TensorProto.UINT8, nhwc)
    if strip_output:
        last = next(n for n in graph.node if "y" in n.output)
        if last.op_type == "DequantizeLinear":
            graph.node.remove(last)
            _rename(graph, last.input[0], "y_q")
        else:
            last.output[:] = ["y_float"]
            graph.initializer.extend([helper.make_tensor("y_s", TensorProto.FLOAT, [], [0.05]),
                                      helper.make_tensor("y_z", TensorProto.UINT8, [], [128])])
            graph.node.append(helper.make_node("QuantizeLinear", ["y_float", "y_s", "y_z"], ["y_q"]))
        graph.node.append(helper.make_node("Transpose", ["y_q"], ["y"], perm=[0, 2, 3, 1]) if nhwc else
                          helper.make_node("Identity", ["y_q"], ["y"]))
        _set_io(graph.output[0], TensorProto.UINT8, nhwc)
    return proto


def _rename(graph, old: str, new: str, *, outputs: bool = True) -> None:
    for node in graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
        if outputs:
            node.output[:] = [new if o == old else o for o in node.output]


def _set_io(value_info, elem_type: int, nhwc: bool) -> None:
    """Set a graph input/output's dtype and, for NHWC, permute its (N, C, H, W) shape to (N, H, W, C)."""
    tensor = value_info.type.tensor_type
    tensor.elem_type = elem_type
    if nhwc and len(tensor.shape.dim) == 4:
        n, c, h, w = (d.dim_value for d in tensor.shape.dim)
        for dim, value in zip(tensor.shape.dim, (n, h, w, c)):
            dim.dim_value = value


def ort_session(proto, threads: int = 1):  # -> onnxruntime.InferenceSession
    """CPU session with ``threads`` intra-op threads, sequential execution, full graph optimisation."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


# ---- runners --------------------------------------------------------------------------------------
def make_runner(model: nn.Module, backend: str, input_shape: Sequence[int], *, threads: int = 1,
                quantized_input: bool = False, quantized_output: bool = False, calib_batches: int = 4,
                seed: int = 0) -> Runner:
    """A zero-argument callable running a *float* module once on ``backend`` (inputs prepared up front)."""
    check_backend(backend)
    model = model.eval()
    if backend.startswith("onnxruntime"):
        proto, feed = onnx_model(model, backend, input_shape, quantized_input=quantized_input,
                                 quantized_output=quantized_output, calib_batches=calib_batches, seed=seed)
        session = ort_session(proto, threads)
        return lambda: session.run(None, feed)
    calib = calibration_batches(input_shape, calib_batches, seed)
    x = calib[0]
    if backend == "torch-fp32":
        return lambda: model(x)
    qmodel = to_torch_int8(model, calib, quantized_input=quantized_input, quantized_output=quantized_output)
    xin = torch.quantize_per_tensor(x, 0.05, 128, torch.quint8) if quantized_input else x
    return lambda: qmodel(xin)


def calibration_batches(input_shape: Sequence[int], n: int, seed: int) -> list[torch.Tensor]:
    """``n`` seeded standard-normal batches of ``input_shape`` (B, C, H, W): quantizer calibration data."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*input_shape, generator=gen) for _ in range(n)]


def onnx_model(model: nn.Module, backend: str, input_shape: Sequence[int], *, quantized_input: bool = False,
               quantized_output: bool = False, calib_batches: int = 4, seed: int = 0
               ) -> tuple[Any, dict[str, np.ndarray]]:  # (onnx.ModelProto, feed)
    """The exact ONNX graph an ``onnxruntime-*`` backend runs for a float module, and an input for it.

    One function for timing here (:func:`make_runner`) and for the model files ``qnas latency template``
    writes for other devices, so a block timed elsewhere is the graph a table profiled here would time.
    INT8: QDQ, with ``quantized_input``/``quantized_output`` uint8 NHWC edges (see :func:`strip_edge_qdq`).
    """
    calib = calibration_batches(input_shape, calib_batches, seed)
    x = calib[0]
    proto = to_onnx(model.eval(), x)
    feed: dict[str, np.ndarray] = {"x": x.numpy()}
    if backend == "onnxruntime-int8":
        proto = to_onnx_int8(proto, [c.numpy() for c in calib])
        proto = strip_edge_qdq(proto, strip_input=quantized_input, strip_output=quantized_output)
        if quantized_input:
            b, c, h, w = input_shape
            feed = {"x": np.random.default_rng(seed).integers(0, 256, (b, h, w, c), dtype=np.uint8)}  # NHWC
    return proto, feed


def fake_quant_model(model: nn.Module, parts: Sequence[tuple[nn.Module, int, int]],
                     calib: Sequence[torch.Tensor]) -> nn.Module:
    """``model`` fake-quantized in place at any bit-widths, frozen for export (ONNX: Mul/Round/Clip ops).

    ``parts``: (submodule, w_bits, a_bits), e.g. each block of a subnet. Per-channel symmetric weights
    are put on their grid, and a per-tensor asymmetric activation quantizer (ranges from ``calib``)
    goes in front of every conv/linear layer: the graph a subnet extracted from a quantized supernet
    exports, for runtimes with kernels below 8 bits."""
    from torch.nn.utils import parametrize

    from .quant import QuantMode
    from .static import ConvBNAct, QuantLinear, attach_lsq

    for part, w_bits, a_bits in parts:
        attach_lsq(part, w_mode=QuantMode(w_bits, "channel", True), a_mode=QuantMode(a_bits, "tensor", False))
    model = model.eval()
    with torch.no_grad():
        for x in calib:
            model(x)
    for module in model.modules():
        if isinstance(module, (ConvBNAct, QuantLinear)) and hasattr(module.quant, "quantizer"):
            module.quant = module.quant.quantizer.frozen(module.quant.mode)
            layer = module.conv if isinstance(module, ConvBNAct) else module.linear
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    return model


# ---- timing ---------------------------------------------------------------------------------------
CLOCKS = {"thread": time.thread_time_ns, "wall": time.perf_counter_ns}


def default_clock(threads: int) -> str:
    """``"thread"`` (the calling thread's CPU time) for one thread, else ``"wall"``. On a shared machine
    wall-clock runs get preempted, the longer the likelier (under load, whole nets read far above their
    CPU time while short blocks stay true, which would bias a table against the nets it predicts); one
    thread does all its work in the caller, whose CPU time equals the latency on an idle machine."""
    return "thread" if threads == 1 else "wall"


def _samples(run: Runner, n: int, clock_name: str) -> np.ndarray:
    clock, out = CLOCKS[clock_name], np.empty(n)
    for i in range(n):
        start = clock()
        run()
        out[i] = clock() - start
    return out / 1e6  # ms


def time_interleaved(runners: Sequence[Runner], *, runs: int = 50, passes: int = 10, warmup: int = 2,
                     clock: str = "thread") -> list[Timing]:
    """Time each runner ``runs`` times in all, spread over ``passes`` interleaved passes (each pass: ``warmup``
    untimed runs, then ``ceil(runs / passes)`` timed ones), every other pass in reverse order.

    Many short passes, not two long ones: a shared machine's load drifts over minutes, and a candidate
    timed in one stretch inherits its state (on torch INT8 subnets, ten short passes brought the
    pass-to-pass difference well under two long passes'). ``clock``: see :func:`default_clock`."""
    if clock not in CLOCKS:
        raise ValueError(f"unknown clock {clock!r}; known: {sorted(CLOCKS)}")
    per_pass = max(1, math.ceil(runs / passes))
    samples: list[list[np.ndarray]] = [[] for _ in runners]
    with torch.inference_mode():
        for p in range(passes):
            order = range(len(runners)) if p % 2 == 0 else reversed(range(len(runners)))
            for i in order:
                _samples(runners[i], warmup, clock)
                samples[i].append(_samples(runners[i], per_pass, clock))
    out = []
    for per_pass in samples:
        allv = np.concatenate(per_pass)
        mad = float(np.median(np.abs(allv - np.median(allv))))
        medians = tuple(float(np.median(s)) for s in per_pass)
        out.append(Timing(float(np.mean(medians)), 1.4826 * mad, int(allv.size), medians))
    return out


def measure_overhead(backend: str, protocol: Protocol = Protocol()) -> float:
    """Per-call cost of the harness and the framework on an empty model (ms): one per ``session.run``
    in ORT, one module call in torch. Summing per-block entries counts it once per block."""
    with pinned(protocol):
        runner = make_runner(nn.Identity(), backend if backend.startswith("torch") else "onnxruntime-fp32",
                             (1, 1, 1, 1), threads=protocol.threads, calib_batches=1)
        return time_interleaved([runner], runs=8 * protocol.runs, passes=protocol.passes, warmup=10,
                                clock=protocol.clock_name)[0].mean_ms


def measure_blocks(specs: Sequence[BlockSpec], backend: str, *, batch: int = 1, seed: int = 0,
                   protocol: Protocol = Protocol()) -> list[Timing]:
    """Build every block (seeded random weights), deploy it with real boundary dtypes, time them interleaved.

    Pure: specs and settings in, timings out; safe to run in another process or on another machine.
    """
    with pinned(protocol):
        runners = []
        for i, spec in enumerate(specs):
            torch.manual_seed(seed + i)
            qin, qout = block_io(spec)
            runners.append(make_runner(build_block(spec), backend, (batch, spec.in_ch, spec.in_size, spec.in_size),
                                       threads=protocol.threads, quantized_input=qin, quantized_output=qout,
                                       seed=seed + i))
        return time_interleaved(runners, runs=protocol.runs, passes=protocol.passes, warmup=protocol.warmup,
                                clock=protocol.clock_name)


def measure_nets(nets: Sequence[Sequence[BlockSpec] | StaticNet], backend: str, *, batch: int = 1, seed: int = 0,
                 protocol: Protocol = Protocol()) -> list[Timing]:
    """Time whole subnets end to end (float in, float out), interleaved. Each item is a list of block specs
    (built with seeded random weights) or an already built float :class:`StaticNet` (e.g. extracted)."""
    with pinned(protocol):
        runners = []
        for i, net in enumerate(nets):
            torch.manual_seed(seed + i)
            model = net if isinstance(net, StaticNet) else StaticNet(net)
            spec0 = model.specs[0]
            shape = (batch, spec0.in_ch, spec0.in_size, spec0.in_size)  # (B, C, H, W)
            runners.append(make_runner(model, backend, shape, threads=protocol.threads, seed=seed + i))
        return time_interleaved(runners, runs=protocol.runs, passes=protocol.passes, warmup=protocol.warmup,
                                clock=protocol.clock_name)
