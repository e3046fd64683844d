"""Exporting extracted subnets as deployable files, and checking them.

Formats (each written atomically beside the subnet's ``arch.json``):

- ``torch``: ``model.pt2`` — the standalone subnet, fake-quantized at its bit-widths, saved with
  ``torch.export`` (``torch.export.load(path).module()``; plain PyTorch, any batch size).
- ``onnx``: ``model.onnx`` — the same fake-quantized model as an ONNX graph (quantization as
  Mul/Round/Clip ops, so any bit-width is represented exactly; runs in float).
- ``int8``: real integer models, W8A8 subnets only (this CPU has no integer kernels below 8 bits):
  ``model_int8.onnx`` (ONNX Runtime QDQ: per-channel int8 weights, uint8 activations) and
  ``model_int8.pt`` (torch.ao x86, TorchScript). The ONNX Runtime model quantizes every conv/linear input with
  the step and zero point its LSQ quantizer learned (:func:`supernets.deploy.cnn_lsq_overrides`); its other
  activation ranges, and all of torch.ao's, are calibrated on training images; the weights are the supernet's,
  already on the 8-bit grid. Their accuracy is measured and compared
  with the fake-quantized W8A8 accuracy in ``export.json``. Transformer subnets get the ONNX Runtime model
  only (linears and attention matmuls in INT8, :mod:`supernets.transformer.export`), checked by accuracy and
  mean cross-entropy (``loss_*``).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search_spaces import BlockSpec, Genome, InputError
from search_spaces.atomic import atomic_write_with

__all__ = ["FORMATS", "save_exported", "export_subnet", "int8_blockers"]

FORMATS = ("torch", "onnx", "int8")


def save_exported(model: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """``torch.export`` the model with a dynamic batch dimension and save it atomically."""
    example = example[:1].expand(2, *example.shape[1:]).contiguous()  # batch 2: batch 1 would be specialised
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    with torch.no_grad():
        program = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},))
    return atomic_write_with(Path(path), lambda tmp: torch.export.save(program, tmp))


def _save_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    from supernets.deploy import to_onnx

    proto = to_onnx(model, example[:1], dynamic_batch=True)
    return atomic_write_with(path, lambda tmp: Path(tmp).write_bytes(proto.SerializeToString()))


def int8_blockers(specs: Sequence[Any]) -> list[str]:
    """Why a subnet cannot become a real INT8 model (empty when it is W8A8 throughout)."""
    if specs and not isinstance(specs[0], BlockSpec):  # transformer blocks: one entry per linear
        from supernets.transformer.export import w8a8_blockers

        return w8a8_blockers(specs)
    return [f"{s.slot} is W{s.w_bits}A{s.a_bits}" for s in specs if (s.w_bits, s.a_bits) != (8, 8)]


def _transformer_int8_models(model: nn.Module, calib: Sequence[torch.Tensor], folder: Path) -> dict[str, Any]:
    """The ONNX Runtime INT8 model of a transformer subnet (torch.ao's FX quantizer does not cover attention)."""
    from supernets.deploy import ort_session
    from supernets.transformer.export import transformer_ort_int8

    proto = transformer_ort_int8(model, calib)
    atomic_write_with(folder / "model_int8.onnx", lambda tmp: Path(tmp).write_bytes(proto.SerializeToString()))
    session = ort_session(proto, threads=torch.get_num_threads())
    return {"onnxruntime-int8": lambda x: torch.from_numpy(session.run(None, {"x": x.numpy()})[0])}


def _int8_models(model: nn.Module, calib: Sequence[torch.Tensor], folder: Path,
                 info: dict[str, Any]) -> dict[str, Any]:
    """Write ONNX Runtime and torch.ao INT8 models; return runners for checking them. ``info`` gets
    ``onnxruntime_learned_steps``: how many activation tensors of the ORT model use a learned LSQ step (0 when the
    graph did not match the layers and every range was calibrated instead; then a warning says so)."""
    import copy

    from supernets.deploy import cnn_lsq_overrides, ort_session, quiet, to_onnx, to_onnx_int8, to_torch_int8
    from supernets.static import strip_fake_quant

    float_model = strip_fake_quant(copy.deepcopy(model)).eval()
    graph = to_onnx(float_model, calib[0][:1], dynamic_batch=True)
    overrides = cnn_lsq_overrides(model, graph, calib[0])
    info["onnxruntime_learned_steps"] = len(overrides)
    if not overrides:
        warnings.warn("the ONNX graph did not match the subnet's quantized layers: the ONNX Runtime INT8 model "
                      "calibrates every activation range instead of using the learned LSQ steps", stacklevel=2)
    proto = to_onnx_int8(graph, [c.numpy() for c in calib], overrides=overrides)
    atomic_write_with(folder / "model_int8.onnx", lambda tmp: Path(tmp).write_bytes(proto.SerializeToString()))
    session = ort_session(proto, threads=torch.get_num_threads())
    qmodel = to_torch_int8(float_model, calib)
    with quiet(), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        scripted = torch.jit.trace(qmodel, calib[0][:2], check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
    atomic_write_with(folder / "model_int8.pt", lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))
    return {"onnxruntime-int8": lambda x: torch.from_numpy(session.run(None, {"x": x.numpy()})[0]),
            "torch-int8": lambda x: qmodel(x)}


def _accuracy_and_loss(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                       batch: int) -> tuple[float, float]:
    from supernets.evaluate import accuracy_and_loss

    return accuracy_and_loss(run, x, y, batch)


def export_subnet(subnets: Any, genome: Genome, folder: str | Path, formats: Sequence[str], *, calib: torch.Tensor,
                  eval_x: torch.Tensor, eval_y: torch.Tensor, batch_size: int = 256) -> dict[str, Any]:
    """Export ``genome`` from a :class:`~supernets.evaluate.SubnetEvaluator` in ``formats``.

    Returns what was written and, for ``int8``, the accuracy of each INT8 model next to the
    fake-quantized accuracy on ``eval_x``/``eval_y`` (``calib`` calibrates activation ranges).
    """
    folder = Path(folder)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise InputError(f"unknown format {unknown[0]!r}; expected one of {FORMATS}", field="--format")
    model = subnets.extract(genome).eval()
    specs = subnets.supernet.specs(genome)
    if "int8" in formats and int8_blockers(specs):
        raise InputError(f"subnet {genome.key} is not W8A8 ({', '.join(int8_blockers(specs)[:4])}); this CPU has no "
                         "integer kernels below 8 bits, so it can only be exported fake-quantized "
                         "(--format torch or onnx)", field="--format")
    out: dict[str, Any] = {"key": genome.key, "files": []}
    if "torch" in formats:
        out["files"].append(save_exported(model, calib[:2], folder / "model.pt2").name)
    if "onnx" in formats:
        out["files"].append(_save_onnx(model, calib[:2], folder / "model.onnx").name)
    if "int8" in formats:
        batches = [calib[i:i + 64] for i in range(0, min(len(calib), 512), 64)]
        transformer = not isinstance(specs[0], BlockSpec)
        runners = (_transformer_int8_models(model, batches, folder) if transformer else
                   _int8_models(model, batches, folder, out))
        out["files"] += ["model_int8.onnx"] + ([] if transformer else ["model_int8.pt"])
        reference, reference_loss = _accuracy_and_loss(model, eval_x, eval_y, batch_size)
        out["accuracy_fake_quant"] = reference
        if transformer:
            out["loss_fake_quant"] = reference_loss
        for name, run in runners.items():
            acc, loss = _accuracy_and_loss(run, eval_x, eval_y, batch_size)
            out[f"accuracy_{name}"] = acc
            out[f"gap_pp_{name}"] = 100 * (acc - reference)
            if transformer:
                out[f"loss_{name}"] = loss
    return out
