"""Evaluating subnets of a trained supernet without retraining.

Shared BatchNorm statistics do not fit any particular subnet, so each evaluation first
recalibrates them on a fixed set of training batches (OFA/SpaceEvo) inside a context manager that
restores the shared statistics afterwards.

Evaluation runs wherever the supernet is: the calibration and evaluation images are moved to its
device once, and correct predictions are counted there (one transfer per accuracy, not per batch).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_spaces import Genome

from .device import Placement, module_device, placement_of
from .supernet import QuantSupernet

__all__ = ["bn_recalibrated", "accuracy", "accuracy_and_loss", "mean_loss", "SubnetEvaluator", "batches"]


def batches(x: Tensor, y: Tensor | None, batch_size: int) -> Iterator[tuple[Tensor, Tensor | None]]:
    """Consecutive mini-batches (no shuffling: evaluation must be deterministic)."""
    for i in range(0, len(x), batch_size):
        yield x[i:i + batch_size], None if y is None else y[i:i + batch_size]


@contextmanager
def bn_recalibrated(net: nn.Module, calib: Sequence[Tensor], run=None) -> Iterator[nn.Module]:
    """Recompute every BN layer's running statistics as the exact mean over ``calib`` batches.

    ``run(x)`` performs the forward pass (default ``net(x)``). On exit the previous statistics,
    momenta and train/eval mode are restored, so shared supernet statistics never drift.
    """
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in bns]
    was_training = net.training
    try:
        for m in bns:
            m.momentum = None  # cumulative moving average = exact mean over the calibration batches
            m.reset_running_stats()
        net.train()
        with torch.no_grad():
            for x in calib:
                (run or net)(x)
        net.eval()
        yield net
    finally:
        for m, (momentum, mean, var, count) in zip(bns, saved):
            m.momentum = momentum
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)
        net.train(was_training)


@torch.no_grad()
def accuracy(model, x: Tensor, y: Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model(x)`` against labels ``y`` (model must be in eval mode; same device).

    Logits ``(B, classes, positions...)`` with labels ``(B, positions...)`` (a language model's next tokens)
    count every position."""
    correct = torch.zeros((), dtype=torch.long, device=y.device)
    for xb, yb in batches(x, y, batch_size):
        correct += (model(xb).argmax(dim=1) == yb).sum()
    return int(correct) / max(1, y.numel())


@torch.no_grad()
def mean_loss(model, x: Tensor, y: Tensor, batch_size: int = 256) -> float:
    """Mean cross-entropy (nats per prediction: per image, or per token) of ``model(x)`` against ``y``."""
    return accuracy_and_loss(model, x, y, batch_size)[1]


@torch.no_grad()
def accuracy_and_loss(model, x: Tensor, y: Tensor, batch_size: int = 256) -> tuple[float, float]:
    """:func:`accuracy` and :func:`mean_loss` from one pass over the data."""
    correct = torch.zeros((), dtype=torch.long, device=y.device)
    total = torch.zeros((), dtype=torch.float64, device=y.device)
    for xb, yb in batches(x, y, batch_size):
        logits = model(xb).float()
        correct += (logits.argmax(dim=1) == yb).sum()
        total += F.cross_entropy(logits, yb, reduction="sum").double()
    n = max(1, y.numel())
    return int(correct) / n, float(total) / n


class SubnetEvaluator:
    """Measures subnet accuracy on a fixed split, with BN recalibrated per subnet."""

    def __init__(self, supernet: QuantSupernet, calib_x: Tensor, eval_x: Tensor, eval_y: Tensor, *,
                 batch_size: int = 256, quantize: bool = True, placement: Placement | None = None) -> None:
        """``placement``: precision (autocast) and layout to evaluate in; default fp32 on the supernet's device.

        The supernet is not moved: the images are moved to wherever it is.
        """
        device = module_device(supernet)
        if placement is not None and placement.device != device:
            raise ValueError(f"the supernet is on {device} but the placement is {placement.device}")
        self.supernet, self.placement = supernet, placement or placement_of(supernet)
        put = self.placement.put
        self.calib = [put(xb) for xb, _ in batches(calib_x, None, batch_size)]
        self.eval_x, self.eval_y, self.batch_size, self.quantize = put(eval_x), put(eval_y), batch_size, quantize
        if quantize and self.calib:
            # Quantizer modes training never reached are initialised now, from fixed data, so no
            # subnet's accuracy depends on which subnet happened to be evaluated first.
            supernet.init_quantizers(self.calib[0])

    def accuracy(self, genome: Genome) -> float:
        """Accuracy of the subnet inside the supernet (fake-quantized unless ``quantize=False``)."""
        net = self.supernet
        with net.subnet(genome, quantize=self.quantize), self.placement.autocast(), bn_recalibrated(net, self.calib):
            return accuracy(net, self.eval_x, self.eval_y, self.batch_size)

    def measure(self, genome: Genome) -> dict[str, float]:
        """``accuracy`` and ``val_loss`` (mean cross-entropy, nats per prediction) of the subnet inside the
        supernet, from one pass over the validation split."""
        net = self.supernet
        with net.subnet(genome, quantize=self.quantize), self.placement.autocast(), bn_recalibrated(net, self.calib):
            acc, loss = accuracy_and_loss(net, self.eval_x, self.eval_y, self.batch_size)
        return {"accuracy": acc, "val_loss": loss}

    def extract(self, genome: Genome) -> nn.Module:
        """The standalone subnet with its recalibrated BN statistics (eval mode, on the supernet's device)."""
        net = self.supernet
        with net.subnet(genome, quantize=self.quantize), self.placement.autocast(), bn_recalibrated(net, self.calib):
            return net.extract(genome, quantize=self.quantize)

    def extracted_accuracy(self, genome: Genome) -> float:
        """Accuracy of the extracted standalone module (must match :meth:`accuracy`)."""
        model = self.extract(genome)
        with self.placement.autocast():
            return accuracy(model, self.eval_x, self.eval_y, self.batch_size)
