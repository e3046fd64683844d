"""ONNX models of blocks and subnets, exactly as qnas means them, for timing on another device's runtime.

A device qnas cannot run on (an NPU, a DSP, a phone) times graphs with its own toolchain. Each model is
the block (or subnet) a table profiled here would time, with its quantization:

- ``qdq-int8`` (W8A8): ONNX Runtime QDQ (per-channel int8 weights, uint8 activations). A block reads and
  writes uint8 NHWC tensors as it does inside a whole INT8 network (only the stem reads the float image,
  only the head returns float logits); a whole subnet reads and returns float.
- ``float`` (W32A32): the plain float graph.
- ``fake-quant-wXaY`` (any other widths, for runtimes with kernels below 8 bits): the fake-quantized
  graph (weights on their grid, activations through Mul/Round/Clip), as ``qnas export --format onnx``.

The graphs come from :func:`supernets.deploy.onnx_model`, the function ``qnas latency profile`` times
with, so a block timed elsewhere is the same graph as one profiled here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from search_spaces import BlockSpec
from supernets import deploy
from supernets.blocks import build_block
from supernets.static_net import StaticNet

__all__ = ["ExportedModel", "quantization_of", "block_model", "subnet_model", "empty_model", "io_info"]

CALIB_BATCHES = 4


@dataclass(frozen=True)
class ExportedModel:
    """A serialised ONNX model and what a runtime needs to feed it."""

    data: bytes
    quantization: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]


def quantization_of(w_bits: int, a_bits: int) -> str:
    """The model kind of a block or subnet at these bit-widths."""
    if (w_bits, a_bits) == (8, 8):
        return "qdq-int8"
    if (w_bits, a_bits) == (32, 32):
        return "float"
    return f"fake-quant-w{w_bits}a{a_bits}"


def _common(specs: Sequence[BlockSpec]) -> str:
    """The kind of a subnet: its blocks' kind when they agree, else the fake-quantized graph of mixed widths."""
    kinds = {quantization_of(s.w_bits, s.a_bits) for s in specs}
    return next(iter(kinds)) if len(kinds) == 1 else "fake-quant-mixed"


Builder = Callable[[nn.Module, Sequence[tuple[nn.Module, BlockSpec]], tuple[int, ...], tuple[bool, bool], int], Any]


def _qdq(model: nn.Module, parts: Sequence[tuple[nn.Module, BlockSpec]], shape: tuple[int, ...],
         edges: tuple[bool, bool], seed: int) -> Any:
    return deploy.onnx_model(model, "onnxruntime-int8", shape, quantized_input=edges[0], quantized_output=edges[1],
                             calib_batches=CALIB_BATCHES, seed=seed)[0]


def _float(model: nn.Module, parts: Sequence[tuple[nn.Module, BlockSpec]], shape: tuple[int, ...],
           edges: tuple[bool, bool], seed: int) -> Any:
    return deploy.onnx_model(model, "onnxruntime-fp32", shape, calib_batches=1, seed=seed)[0]


def _fake_quant(model: nn.Module, parts: Sequence[tuple[nn.Module, BlockSpec]], shape: tuple[int, ...],
                edges: tuple[bool, bool], seed: int) -> Any:
    calib = deploy.calibration_batches(shape, CALIB_BATCHES, seed)
    with deploy.quiet():
        model = deploy.fake_quant_model(model, [(m, s.w_bits, s.a_bits) for m, s in parts], calib)
    return deploy.to_onnx(model, calib[0])


BUILDERS: dict[str, Builder] = {"qdq-int8": _qdq, "float": _float, "fake-quant": _fake_quant}
"""Model kind (``fake-quant-wXaY`` under ``fake-quant``) -> builder of its ONNX graph."""


def _export(model: nn.Module, parts: Sequence[tuple[nn.Module, BlockSpec]], kind: str, shape: tuple[int, ...],
            edges: tuple[bool, bool], seed: int) -> ExportedModel:
    builder = BUILDERS["fake-quant" if kind.startswith("fake-quant") else kind]
    proto = builder(model.eval(), parts, shape, edges, seed)
    return ExportedModel(proto.SerializeToString(), kind, io_info(proto.graph.input), io_info(proto.graph.output))


def block_model(spec: BlockSpec, *, batch: int = 1, seed: int = 0) -> ExportedModel:
    """One block (seeded random weights; weights do not change a block's latency) as an ONNX model."""
    torch.manual_seed(seed)
    module = build_block(spec)
    kind = quantization_of(spec.w_bits, spec.a_bits)
    shape = (batch, spec.in_ch, spec.in_size, spec.in_size)  # (B, C, H, W)
    return _export(module, [(module, spec)], kind, shape, deploy.block_io(spec), seed)


def subnet_model(specs: Sequence[BlockSpec], *, batch: int = 1, seed: int = 0) -> ExportedModel:
    """A whole subnet (float image in, logits out) as an ONNX model, as ``qnas latency profile`` times it."""
    torch.manual_seed(seed)
    net = StaticNet(specs)
    shape = (batch, specs[0].in_ch, specs[0].in_size, specs[0].in_size)
    return _export(net, list(zip(net.blocks, specs)), _common(specs), shape, (False, False), seed)


def empty_model() -> ExportedModel:
    """The empty model (input to output): its time is one call's cost on the runtime, the per-call overhead."""
    return _export(nn.Identity(), [], "float", (1, 1, 1, 1), (False, False), 0)


def io_info(values: Any) -> list[dict[str, Any]]:
    """Name, shape, element type and layout of graph inputs or outputs (what a runtime must feed or expect)."""
    from onnx import helper

    out = []
    for value in values:
        tensor = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in tensor.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        layout = {4: "NHWC" if dtype == "uint8" else "NCHW", 2: "NC"}.get(len(shape), "")
        out.append({"name": value.name, "shape": shape, "dtype": dtype, "layout": layout})
    return out
