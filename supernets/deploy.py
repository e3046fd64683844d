"""Deploy float static modules to real inference runtimes: torch.ao INT8, ONNX, ONNX Runtime INT8 (QDQ).

``torch-int8`` is torch.ao FX graph mode (x86 backend); ``onnxruntime-int8`` is ``quantize_static``, QDQ
format, per-channel int8 weights, **uint8 activations** (with int8 activations ORT leaves many convs float).
A block is converted the way it runs *inside* a whole network (ops interact through fusion and caches,
which is why nn-Meter, Zhang et al., MobiSys 2021, predicts fused kernels, not ops): torch INT8 blocks take
and return quantized tensors, ORT INT8 block graphs read and write uint8 (edge Q/DQ stripped); only the
stem reads the float image and only the head returns float logits. How these are timed:
:mod:`supernets.timing`; which runtimes exist: :mod:`supernets.backends`.

ONNX export uses the legacy exporter (``dynamo=False``) at opset 17: in torch 2.14 both work, but the
dynamo exporter is far slower per model, and a table exports every distinct block.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from search_spaces import BlockSpec

__all__ = ["ONNX_OPSET", "block_io", "calibration_batches", "cnn_lsq_overrides", "fake_quant_model",
           "lsq_input_overrides", "onnx_model", "ort_session", "quiet", "strip_edge_qdq", "to_onnx", "to_onnx_int8",
           "to_torch_int8"]

ONNX_OPSET = 17


def block_io(spec: BlockSpec) -> tuple[bool, bool]:
    """(quantized input, quantized output) of a block inside an INT8 network: only the stem reads the float
    image, only the head returns float logits."""
    return spec.op != "conv", spec.op != "head"


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


def to_onnx_int8(proto, calib: Sequence[np.ndarray], *, op_types: Sequence[str] | None = None,
                 overrides: dict[str, list[dict]] | None = None):  # -> onnx.ModelProto
    """Static QDQ quantization: per-channel int8 weights, uint8 activations, MinMax calibration.

    ``op_types``: the operators to quantize (None: ONNX Runtime's default list). ``overrides``: fixed scale and
    zero point of some tensors (ORT's ``TensorQuantOverrides``, by tensor name) instead of their calibrated
    range. ``proto`` is not changed (``quantize_static`` rewrites the model it is given, so it gets a copy)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    with tempfile.TemporaryDirectory() as tmp, quiet():
        out = os.path.join(tmp, "q.onnx")
        quantize_static(model, out, _Reader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=list(op_types) if op_types else None,
                        extra_options={"TensorQuantOverrides": overrides} if overrides else None)
        return onnx.load(out)


def lsq_input_overrides(model: nn.Module, proto, example: torch.Tensor, *, modules: tuple[type, ...],
                        op_types: Sequence[str], through: Sequence[str] = ()) -> dict[str, list[dict]]:
    """ORT ``TensorQuantOverrides`` that give each quantized layer's input the step and zero point its LSQ
    quantizer learned, so the INT8 graph rounds and clips activations as the fake-quantized model does
    (calibrating ranges instead loses the clipping the model learned to rely on).

    ``model``: the fake-quantized static network (not changed: a CPU copy runs), whose layers are the
    ``modules`` instances, each with its activation quantizer in a ``quant`` slot (a ``FrozenFakeQuant``);
    ``proto``: its float ONNX graph (quantizers stripped). Layers are matched by order: the ``modules`` in the
    order one forward pass calls them, and the graph's ``op_types`` nodes that read a weight initializer, in
    graph order. A graph whose count differs, or whose weights' shapes do not follow the layers' (up to a
    transpose), gets no overrides at all (ORT calibrates every range); a layer whose quantizer is float or not
    8-bit per-tensor keeps ORT's calibration, and so does a tensor that two layers would quantize differently.

    ``through``: value-preserving ops (``Flatten``) whose output ORT quantizes with its input's parameters
    whenever it quantizes them: an override of their output is given to their input too (where the op is that
    tensor's only reader), or ORT would replace it by the input's calibrated range."""
    import copy

    net, called = copy.deepcopy(model).cpu().eval(), []
    for module in net.modules():
        if isinstance(module, modules):
            module.register_forward_pre_hook(lambda mod, _: called.append(mod))
    with torch.no_grad():
        net(example.cpu())
    weights = {init.name: tuple(init.dims) for init in proto.graph.initializer}
    nodes = [n for n in proto.graph.node if n.op_type in op_types and len(n.input) > 1 and n.input[1] in weights]
    if len(nodes) != len(called):
        return {}
    for node, layer in zip(nodes, called):
        shape = tuple(_layer_weight(layer).shape)
        if weights[node.input[1]] not in (shape, shape[::-1]):
            return {}
    out: dict[str, list[dict]] = {}
    clash: set[str] = set()
    for node, layer in zip(nodes, called):
        q = layer.quant
        if getattr(q, "bits", 32) != 8 or q.axis is not None or q.qmax - q.qmin != 255:
            continue
        zero = int(round(float(q.zero_point))) - q.qmin  # uint8 code of real 0
        if not 0 <= zero <= 255:
            continue
        entry = {"scale": np.array(float(q.scale), dtype=np.float32), "zero_point": np.array(zero, dtype=np.uint8)}
        name = node.input[0]
        if name in out and (out[name][0]["scale"] != entry["scale"] or out[name][0]["zero_point"] != zero):
            clash.add(name)
        out[name] = [entry]
    out = {name: entry for name, entry in out.items() if name not in clash}
    producers = {o: n for n in proto.graph.node for o in n.output}
    readers: dict[str, int] = {}
    for node in proto.graph.node:
        for name in set(node.input):
            readers[name] = readers.get(name, 0) + 1
    for name in list(out):
        node = producers.get(name)
        while node is not None and node.op_type in through and readers.get(node.input[0]) == 1:
            if node.input[0] in out:
                break
            out[node.input[0]] = out[name]
            node = producers.get(node.input[0])
    return out


def cnn_lsq_overrides(model: nn.Module, proto, example: torch.Tensor) -> dict[str, list[dict]]:
    """:func:`lsq_input_overrides` of a static CNN: its conv layers (``ConvBNAct``, SE blocks' included) and
    classifier (``QuantLinear``) against the graph's Conv/Gemm/MatMul nodes. The float export folds BN into the
    convs and leaves activations (HardSwish, the SE gate) as nodes of their own, so every layer is one node whose
    input is the tensor its quantizer read: in a W8A8 subnet every layer's input gets its learned step. The
    classifier reads a Flatten of the pooled features, which ORT quantizes as the pool's output: that takes the
    classifier's step too."""
    from .static import ConvBNAct, QuantLinear

    return lsq_input_overrides(model, proto, example, modules=(ConvBNAct, QuantLinear),
                               op_types=("Conv", "Gemm", "MatMul"), through=("Flatten", "Reshape", "Squeeze"))


def _layer_weight(layer: nn.Module) -> torch.Tensor:
    """The weight of a quantized layer module (``ConvBNAct.conv``, ``QuantLinear.linear``, or its own)."""
    for attr in ("conv", "linear"):
        if isinstance(getattr(layer, attr, None), nn.Module):
            return getattr(layer, attr).weight
    return layer.weight


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


def calibration_batches(input_shape: Sequence[int], n: int, seed: int) -> list[torch.Tensor]:
    """``n`` seeded standard-normal batches of ``input_shape`` (B, C, H, W): quantizer calibration data."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*input_shape, generator=gen) for _ in range(n)]


def onnx_model(model: nn.Module, backend: str, input_shape: Sequence[int], *, quantized_input: bool = False,
               quantized_output: bool = False, calib_batches: int = 4, seed: int = 0
               ) -> tuple[Any, dict[str, np.ndarray]]:  # (onnx.ModelProto, feed)
    """The exact ONNX graph an ``onnxruntime-*`` backend runs for a float module, and an input for it.

    One function for timing here (:func:`supernets.timing.make_runner`) and for the model files ``qnas latency template``
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
