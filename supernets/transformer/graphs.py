"""ONNX graphs of static transformers: float and fake-quantized ONNX, ONNX Runtime INT8 (QDQ).

The same conventions as the CNN path (:mod:`supernets.deploy`, :mod:`nas.export`): the legacy ONNX exporter at
opset 17, input ``x`` and output ``y`` with a dynamic batch axis, float export of a
:class:`~supernets.transformer.model.StaticTransformer` with its fake quantizers stripped (on a copy),
and real INT8 only for W8A8 subnets (:func:`check_w8a8`); other bit-widths export fake-quantized
(``transformer_onnx(..., fake_quant=True)``: Mul/Round/Clip ops, any bit-width exact, runs in float).

``lm`` models read int64 token ids ``(B, T)`` and return ``(B, V, T)``; ``vit`` models read ``(B, C, H, W)``
and return ``(B, classes)``. ``F.scaled_dot_product_attention`` exports as MatMul/Softmax (causal: a
Trilu/Where ``-inf`` mask added to the scores), so no attention fallback is needed.

ONNX Runtime INT8 quantizes only ``MatMul``, ``Gemm`` and ``Gather`` (:data:`ORT_INT8_OPS`): every linear
(``Gemm`` where it reads a 2-D input: the ``vit`` classifier on the pooled token) and both attention matmuls
run on uint8 activations and per-channel int8 weights (a linear's output is requantized to uint8 before its
bias is added in float: the exporter writes 3-D linears as MatMul + Add), and the ``lm`` token table is stored
8-bit (uint8 with one scale: ORT quantizes a Gather's table like an activation, not per row). LayerNorm,
softmax, GELU and the residual adds stay float. ORT's default operator list would also put Q/DQ pairs on
those float ops, and on the causal mask: the scores plus a ``-inf`` mask calibrate to an infinite range,
which wrecks a causal model (``tests/supernets/test_transformer_export.py`` checks the argmax agreement).

This module imports no timing code: the latency backends (:mod:`supernets.backends`) build these graphs, and
:mod:`supernets.timing` reads the backends; :mod:`supernets.transformer.export` re-exports every name here
beside the ONNX Runtime checks (accuracy, latency).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from torch import Tensor, nn

from search_spaces import InputError
from search_spaces.transformer import TransformerBlock

__all__ = ["ORT_INT8_OPS", "check_w8a8", "lsq_activation_overrides", "quantized_nodes", "transformer_onnx",
           "transformer_ort_int8", "w8a8_blockers"]

ORT_INT8_OPS: tuple[str, ...] = ("MatMul", "Gemm", "Gather")
"""Operators ONNX Runtime's static quantizer may quantize in a transformer (see the module docstring)."""

_LINEARS = {"embed": ("embed",), "attention": ("qkv", "proj"), "mlp": ("fc1", "fc2"), "head": ("classifier",)}


def _cpu_copy(model: nn.Module, *, fake_quant: bool) -> nn.Module:
    """A CPU copy in eval mode; without ``fake_quant`` its activation fake-quantizers are removed."""
    from ..static import strip_fake_quant

    net = copy.deepcopy(model).cpu().eval()
    return net if fake_quant else strip_fake_quant(net)


def transformer_onnx(model: nn.Module, example: Tensor, *, dynamic_batch: bool = True,
                     fake_quant: bool = False):  # -> onnx.ModelProto
    """ONNX graph of a static transformer (``model`` itself is not changed).

    Float by default (fake quantizers stripped; the weights stay on their quantization grid, as extracted).
    With ``fake_quant`` the activation quantizers stay in as Mul/Round/Clip ops: the graph of a subnet
    at any bit-width, for runtimes without integer kernels at its bits. ``example``: an input batch (token
    ids ``(B, T)`` int64 or images ``(B, C, H, W)``); with ``dynamic_batch`` the graph takes any batch size.
    """
    from ..deploy import to_onnx

    return to_onnx(_cpu_copy(model, fake_quant=fake_quant), example.cpu(), dynamic_batch=dynamic_batch)


# ---- INT8 ------------------------------------------------------------------------------------------
def w8a8_blockers(specs: Sequence[TransformerBlock]) -> list[str]:
    """Why a subnet cannot become a real INT8 model, one entry per linear (empty when W8A8 throughout).

    The ``lm`` token table reads no activations (its spec says ``a_bits`` 32), so only its weights count.
    """
    out = []
    for spec in specs:
        for name, (w, a) in zip(_LINEARS.get(spec.op, ()), spec.bits):
            lookup = spec.op == "embed" and spec.front == "lm"
            if w != 8 or (a != 8 and not lookup):
                where = spec.slot if name in (spec.slot, "classifier") else f"{spec.slot}.{name}"
                out.append(f"{where} is W{w}" if lookup else f"{where} is W{w}A{a}")
    return out


def check_w8a8(specs: Sequence[TransformerBlock], *, name: str = "the subnet") -> None:
    """Refuse (:class:`InputError`) a subnet that ONNX Runtime INT8 cannot run at its own bit-widths.

    ORT INT8 runs 8-bit kernels only: a W4 weight would silently run at 8 bits, and the activations run at
    ranges ORT calibrates itself, so a subnet below (or above) A8 would silently become A8. As in
    :func:`nas.export.int8_blockers`, such subnets export fake-quantized instead."""
    blockers = w8a8_blockers(specs)
    if blockers:
        more = f" and {len(blockers) - 4} more" if len(blockers) > 4 else ""
        raise InputError(f"{name} is not W8A8 ({', '.join(blockers[:4])}{more}): ONNX Runtime INT8 runs 8-bit "
                         "kernels only, so it would run a bit-width the kernels cannot run as 8 bits; export it "
                         "fake-quantized instead (--format onnx)", field="--format")


def transformer_ort_int8(model: nn.Module, calib: Sequence[Tensor], *, op_types: Sequence[str] | None = ORT_INT8_OPS,
                         strict: bool = True):  # -> onnx.ModelProto
    """ONNX Runtime static QDQ INT8 model of a static transformer, calibrated on the real batches ``calib``.

    The settings of :func:`supernets.deploy.to_onnx_int8` (per-channel int8 weights, uint8 activations)
    restricted to ``op_types`` (``None``: ORT's default list, which breaks causal models; see the module
    docstring); every linear's input takes its learned LSQ step and zero point
    (:func:`lsq_activation_overrides`), the other quantized tensors (attention matmul operands, the token
    table) a MinMax range over ``calib``. The graph reads the float (or int64 token) input ``x`` and returns
    float ``y``, batch axis dynamic. ``strict``: refuse a subnet that is not W8A8 (:func:`check_w8a8`); without it any
    subnet is quantized post-training, e.g. a float one extracted with ``quantize=False``.
    """
    from ..deploy import to_onnx_int8

    if not calib:
        raise ValueError("calibration needs at least one batch")
    if strict and hasattr(model, "specs"):
        check_w8a8(model.specs)
    proto = transformer_onnx(model, calib[0], dynamic_batch=True)
    return to_onnx_int8(proto, [c.detach().cpu().numpy() for c in calib], op_types=op_types,
                        overrides=lsq_activation_overrides(model, proto, calib[0]))


def lsq_activation_overrides(model: nn.Module, proto, example: Tensor) -> dict[str, list[dict]]:
    """ORT ``TensorQuantOverrides`` that give each linear's input the step and zero point its LSQ quantizer
    learned, so the INT8 graph rounds and clips activations as the fake-quantized model does (calibrating
    ranges instead loses the clipping the model learned to rely on).

    Linears are matched by order: the ``QuantLinear`` modules in the order one forward pass calls them, and the
    graph's MatMul/Gemm nodes that read a weight initializer, in graph order. A linear whose quantizer is
    float or not 8-bit, or a graph whose count differs, keeps ORT's calibration (an empty entry). The matching is
    :func:`supernets.deploy.lsq_input_overrides`, shared with the CNN export."""
    from ..deploy import lsq_input_overrides
    from ..static import QuantLinear

    return lsq_input_overrides(model, proto, example, modules=(QuantLinear,), op_types=("MatMul", "Gemm"))


def quantized_nodes(proto) -> list[tuple[str, str]]:
    """(op type, name) of every node of a QDQ graph that reads a dequantized tensor (its quantized ops)."""
    dequantized = {n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    return [(n.op_type, n.name) for n in proto.graph.node
            if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and any(i in dequantized for i in n.input)]
