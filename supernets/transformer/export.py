"""Deploying transformer subnets: float and fake-quantized ONNX, ONNX Runtime INT8 (QDQ), and checking them.

The graphs are built in :mod:`supernets.transformer.graphs` (conventions, and which operators ORT INT8
quantizes, in its docstring) and re-exported here; this module adds the checks on ONNX Runtime: accuracy and
loss as the supernet measures them (:func:`evaluate_onnx`) and interleaved latency (:func:`ort_latencies_ms`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .graphs import (ORT_INT8_OPS, check_w8a8, lsq_activation_overrides, quantized_nodes, transformer_onnx,
                     transformer_ort_int8, w8a8_blockers)

__all__ = ["ORT_INT8_OPS", "check_w8a8", "evaluate_onnx", "lsq_activation_overrides", "ort_latencies_ms",
           "ort_latency_ms", "quantized_nodes", "transformer_onnx", "transformer_ort_int8", "w8a8_blockers"]


# ---- checking and timing -------------------------------------------------------------------------
def evaluate_onnx(proto, x: Tensor, y: Tensor, *, batch_size: int, threads: int = 1) -> dict[str, Any]:
    """Accuracy and mean cross-entropy of an ONNX model on ONNX Runtime (CPU), as the supernet measures them.

    ``accuracy``: argmax over dim 1 against ``y`` over all ``y.numel()`` targets (every position of an
    ``lm``); ``loss``: nats per target (:func:`supernets.evaluate.accuracy_and_loss` on the ORT outputs, so
    it compares with the supernet's ``val_loss``); ``targets``: ``y.numel()``."""
    from ..deploy import ort_session
    from ..evaluate import accuracy_and_loss

    session = ort_session(proto, threads)

    def run(xb: Tensor) -> Tensor:
        return torch.from_numpy(session.run(None, {"x": xb.numpy()})[0])

    acc, loss = accuracy_and_loss(run, x.detach().cpu(), y.detach().cpu(), batch_size)
    return {"accuracy": acc, "loss": loss, "targets": int(y.numel())}


def ort_latencies_ms(protos: Sequence[Any], example: Tensor, *, threads: int = 1, runs: int = 50, passes: int = 10,
                     warmup: int = 2) -> list[float]:
    """Batch-1 latency (ms) of each ONNX model on ONNX Runtime, timed interleaved
    (:func:`supernets.timing.time_interleaved`: mean of per-pass medians; thread CPU time for one thread,
    wall time for more), so models compared in one call share the machine's drift."""
    from ..deploy import ort_session
    from ..timing import Protocol, pinned, time_interleaved

    protocol = Protocol(threads=threads, runs=runs, passes=passes, warmup=warmup)
    feed = {"x": np.ascontiguousarray(example[:1].detach().cpu().numpy())}
    with pinned(protocol):
        sessions = [ort_session(p, threads) for p in protos]
        runners = [lambda s=s: s.run(None, feed) for s in sessions]
        timings = time_interleaved(runners, runs=runs, passes=passes, warmup=warmup, clock=protocol.clock_name)
    return [t.mean_ms for t in timings]


def ort_latency_ms(proto, example: Tensor, *, threads: int = 1, runs: int = 50, passes: int = 10,
                   warmup: int = 2) -> float:
    """Batch-1 latency (ms) of one ONNX model on ONNX Runtime (see :func:`ort_latencies_ms`)."""
    return ort_latencies_ms([proto], example, threads=threads, runs=runs, passes=passes, warmup=warmup)[0]
