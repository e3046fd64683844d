"""Training a quantized supernet: FP warm-up, channel sorting, then the sandwich rule.

Schedule (all epochs share one cosine learning-rate curve):

1. ``warmup_epochs``: the largest subnet alone, in float. Then hidden channels are sorted by
   importance so narrow subnets inherit the most important ones (once-for-all).
2. ``epochs``: sandwich rule with in-place distillation — the largest subnet with cross-entropy
   (label smoothing), the smallest and ``random_subnets`` random ones distilled from its detached
   logits (KL), each student's loss weighted by ``student_weight``, gradients summed (or, with
   ``student_gradients: project``, the students' part first stripped of its component against the
   largest subnet's gradient), clipped, one optimizer step. From epoch ``qat_start`` on the
   subnets are fake-quantized at their genomes' bit-widths (the largest at its largest bits), i.e.
   ``qat_start: 0`` trains architecture and bit-width elasticity jointly.

Device and precision come from a :class:`~supernets.device.Placement` (default: fp32 on the CPU).
The model and the data are moved there once; batches are indexed and augmented there (random
numbers still come from the trainer's CPU generator, so CPU and GPU runs draw the same batches);
forward passes run under the placement's autocast and losses in fp32; fp16 scales the loss. Per-step
losses stay on the device until the epoch ends, so a GPU step never waits for the host.

Several processes (a :class:`~supernets.distributed.World` of ``size > 1``): every rank draws the same
global batch, augmentation and subnets from the same seeded generators and trains on its shard of
the batch (the only images it reads, decodes when streamed, and augments); BN statistics, loss weights
and gradients are synchronised so the weights stay equal on every rank and equal to one process
training the global batch (see :mod:`supernets.distributed`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_spaces import Genome

from .augment import augment_batch
from .device import CPU, Placement
from .distributed import SINGLE, World, synced_step
from .evaluate import SubnetEvaluator
from .quant import compile_fake_quant
from .supernet import QuantSupernet
from .wdr import wdr_loss

if TYPE_CHECKING:
    from .config import SupernetConfig

__all__ = ["SupernetConfig", "SupernetTrainer", "EpochLog"]


def __getattr__(name: str) -> Any:
    """``SupernetConfig`` on first use: training itself needs only the config's attributes, not pydantic."""
    if name == "SupernetConfig":
        from .config import SupernetConfig

        return SupernetConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class EpochLog:
    """What one epoch did, for logs, checkpoints and reports.

    ``seconds`` is the whole epoch, ``train_seconds`` its optimizer steps alone (without the evaluation of
    the largest and smallest subnet): the figure training throughput is computed from (NaN in old checkpoints).
    """

    epoch: int
    phase: str
    loss: float
    max_acc: float
    min_acc: float
    seconds: float
    train_seconds: float = math.nan


class SupernetTrainer:
    """Owns the optimizer, schedule and sampling RNG so training can stop and resume exactly."""

    def __init__(self, supernet: QuantSupernet, train_x: Tensor, train_y: Tensor, val_x: Tensor, val_y: Tensor,
                 config: SupernetConfig, *, standalone: Genome | None = None,
                 placement: Placement | None = None, world: World = SINGLE) -> None:
        """``standalone``: train only this subnet (cross-entropy, same schedule) — the from-scratch baseline.

        ``placement``: device and precision (default :data:`~supernets.device.CPU`, fp32); ``supernet``
        is moved there in place, the tensors are copied there once. ``world``: this process's rank among
        the training processes (default: one process). ``train_x`` may also be
        :class:`~supernets.data.stream.StreamedImages`: images read from their files, decoded by DataLoader
        workers a few batches ahead of the step that trains on them.
        """
        self.placement, self.world = placement or CPU, world
        self.net, self.cfg, self.standalone = self.placement.put_module(supernet), config, standalone
        put = self.placement.put
        self.train_x, self.train_y, self.val_x, self.val_y = (put(t) for t in (train_x, train_y, val_x, val_y))
        self.scaler = self.placement.grad_scaler()
        if self.placement.compile:  # the fake-quant kernels: the only part of a sampled subnet that stays put
            compile_fake_quant(self.net, lambda kernel: self.placement.maybe_compile(kernel, dynamic=True))
        self.steps_per_epoch = max(1, len(train_x) // config.batch_size)
        total = (config.warmup_epochs + config.epochs) * self.steps_per_epoch
        groups = _param_groups(supernet, config.weight_decay, config.lr, config.quant_lr_scale)
        if config.optimizer == "adamw":
            self.optimizer: torch.optim.Optimizer = torch.optim.AdamW(groups, lr=config.lr,
                                                                      betas=(config.momentum, 0.99))
        else:
            self.optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                                             nesterov=config.momentum > 0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
        self.rng = np.random.default_rng(config.seed)
        self.torch_gen = torch.Generator().manual_seed(config.seed)
        self.epoch = 0  # epochs completed (warm-up included)
        self._weight = 1.0  # this rank's share of the current global batch (set by each step)
        self.history: list[EpochLog] = []

    @property
    def total_epochs(self) -> int:
        return self.cfg.warmup_epochs + self.cfg.epochs

    @property
    def done(self) -> bool:
        return self.epoch >= self.total_epochs

    def phase(self, epoch: int) -> str:
        if epoch < self.cfg.warmup_epochs:
            return "warmup"
        return "qat" if epoch - self.cfg.warmup_epochs >= self.cfg.qat_start else "fp"

    def train_epoch(self, on_step: Callable[[int, float], None] | None = None) -> EpochLog:
        """Run the next epoch and log the largest/smallest subnet's validation accuracy."""
        start, phase = time.perf_counter(), self.phase(self.epoch)
        if phase != "warmup" and self.epoch == self.cfg.warmup_epochs and self.standalone is None:
            self.net.sort_channels()  # once, when elastic training starts
            self.optimizer.state.clear()  # momentum buffers no longer match the permuted channels
        if phase == "qat" and self.epoch == self.cfg.warmup_epochs + self.cfg.qat_start:
            self.net.init_quantizers(self.train_x[: self.cfg.batch_size])  # every bit-width, from data
        self.net.train()
        order = self.placement.put(torch.randperm(len(self.train_x), generator=self.torch_gen))  # drawn on the CPU
        streamed = (self.train_x.batches(order, self.cfg.batch_size, self.steps_per_epoch, shard=self.world.shard)
                    if hasattr(self.train_x, "batches") else None)  # images read from files, decoded ahead by workers
        parts: list[list[Tensor]] = []
        for step in range(self.steps_per_epoch):
            idx = order[step * self.cfg.batch_size:(step + 1) * self.cfg.batch_size]
            mine = self.world.shard(len(idx))  # this rank's part of the global batch: only it is read
            x = self.train_x[idx[mine]] if streamed is None else next(streamed)  # (b, C, H, W) images, or (b, T) ids
            if self.cfg.augment and x.ndim == 4:  # the whole batch's random numbers: every rank draws the same
                x = augment_batch(x, self.torch_gen, rows=mine, batch=len(idx))
            parts.append(self._step(self.placement.layout(x), self.train_y[idx[mine]], phase, len(idx)))
            if on_step is not None:  # the host needs this step's loss now: one sync per step
                on_step(step, _step_loss([float(t) for t in parts[-1]]))
        losses = _step_losses(parts, self.world)  # waits for the last step, wherever it runs
        trained = time.perf_counter() - start
        # Evaluation is rank 0's: the others would only repeat it (their logs are not kept).
        max_acc, min_acc = self.extreme_accuracies(quantize=phase == "qat") if self.world.is_main else (math.nan,) * 2
        log = EpochLog(self.epoch, phase, float(np.mean(losses)), max_acc, min_acc, time.perf_counter() - start,
                       trained)
        self.history.append(log)
        self.epoch += 1
        return log

    def _step(self, x: Tensor, y: Tensor, phase: str, batch: int) -> list[Tensor]:
        """One optimizer step on this rank's part ``x`` of a global batch of ``batch`` images.

        Returns the loss terms as detached device scalars (summed on the host later), already weighted
        by this rank's share of the batch.
        """
        self._weight = self.world.weight(len(x), batch)
        with synced_step(self.world, self._weight):
            terms = self._step_terms(x, y, phase)
        return [t * self._weight for t in terms] if self.world.distributed else terms

    def _step_terms(self, x: Tensor, y: Tensor, phase: str) -> list[Tensor]:
        net, cfg, space = self.net, self.cfg, self.net.space
        quantize = phase == "qat"
        self.optimizer.zero_grad(set_to_none=True)
        teacher = self.standalone or space.largest()
        logits = self._logits(x, teacher, quantize)
        loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        self._backward(loss)
        terms, largest_grads = [loss.detach()], None
        if phase != "warmup" and self.standalone is None:
            soft = F.softmax(logits.detach(), dim=1)
            students = [space.smallest()] + [space.sample(self.rng) for _ in range(cfg.random_subnets)]
            largest_grads = self._take_grads() if cfg.student_gradients == "project" else None
            for genome in students:
                loss = cfg.student_weight * self._student_loss(self._logits(x, genome, quantize), soft, y)
                self._backward(loss)
                terms.append(loss.detach())
        if cfg.wdr_weight > 0 and phase == "qat":
            reg = cfg.wdr_weight * wdr_loss(net)
            self._backward(reg)
            terms.append(reg.detach())
        self.world.all_reduce_grads(net.parameters())  # the global batch's gradient on every rank
        if largest_grads is not None:
            _add_projected(largest_grads, net.parameters())
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        return terms

    def _take_grads(self) -> list[Tensor | None]:
        """The largest subnet's gradient of the global batch, taken out of the parameters (left empty)."""
        self.world.all_reduce_grads(self.net.parameters())
        grads = [p.grad for p in self.net.parameters()]
        for p in self.net.parameters():
            p.grad = None
        return grads

    def _logits(self, x: Tensor, genome: Genome, quantize: bool) -> Tensor:
        """Subnet logits in fp32: the forward under the placement's autocast, the losses after it in fp32."""
        with self.placement.autocast():
            logits = self.net.run(x, genome, quantize=quantize)  # (B, classes)
        return logits.float()

    def _backward(self, loss: Tensor) -> None:
        if self.world.distributed:
            loss = loss * self._weight  # summed over ranks: the mean over the global batch
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def _student_loss(self, logits: Tensor, soft: Tensor, y: Tensor) -> Tensor:
        if self.cfg.distillation == "none":
            return F.cross_entropy(logits, y, label_smoothing=self.cfg.label_smoothing)
        # Mean KL per prediction: per image, or per token when logits are (B, classes, positions).
        predictions = logits.numel() // logits.shape[1]
        return F.kl_div(F.log_softmax(logits, dim=1), soft, reduction="sum") / predictions

    def evaluator(self, *, quantize: bool = True) -> SubnetEvaluator:
        """Evaluator on the validation split with BN recalibrated on fixed training images."""
        calib = self.train_x[: self.cfg.bn_calib_samples]
        return SubnetEvaluator(self.net, calib, self.val_x, self.val_y, batch_size=self.cfg.eval_batch_size,
                               quantize=quantize, placement=self.placement)

    def extreme_accuracies(self, *, quantize: bool) -> tuple[float, float]:
        """Validation accuracy of the largest and the smallest subnet (or twice the standalone one)."""
        ev = self.evaluator(quantize=quantize)
        if self.standalone is not None:
            acc = ev.accuracy(self.standalone)
            return acc, acc
        return ev.accuracy(self.net.space.largest()), ev.accuracy(self.net.space.smallest())


def _add_projected(primary: list[Tensor | None], params) -> None:
    """Gradients := ``primary`` + the parameters' current gradients (missing ones are zero), the latter
    without their component along ``primary`` when the two point against each other (PCGrad's
    projection, in one direction only: ``primary`` is kept whole)."""
    params = list(params)
    dot = sum((g.double() * p.grad.double()).sum() for g, p in zip(primary, params)
              if g is not None and p.grad is not None)
    norm = sum(g.double().square().sum() for g in primary if g is not None)
    coef = float(dot / norm) if dot < 0 and norm > 0 else 0.0
    for g, p in zip(primary, params):
        if g is not None:
            p.grad = g.mul_(1 - coef) if p.grad is None else p.grad.add_(g, alpha=1 - coef)


def _step_loss(terms: list[float]) -> float:
    """A step's loss: its terms summed in order on the host, in double precision."""
    total = terms[0]
    for t in terms[1:]:
        total += t
    return total


def _step_losses(parts: list[list[Tensor]], world: World = SINGLE) -> list[float]:
    """Every step's loss with one device-to-host transfer (and, with several ranks, one all-reduce) per epoch."""
    flat = world.all_reduce_sum(torch.stack([t for terms in parts for t in terms])).tolist()
    out, i = [], 0
    for terms in parts:
        out.append(_step_loss(flat[i:i + len(terms)]))
        i += len(terms)
    return out


def _param_groups(net: nn.Module, weight_decay: float, lr: float, quant_lr_scale: float) -> list[dict]:
    """No weight decay on BN parameters, biases and quantizer steps/zero points.

    With ``quant_lr_scale != 1`` the quantizer parameters get their own group at ``lr * quant_lr_scale``
    (otherwise the two groups of old checkpoints' optimizer states).
    """
    decay, no_decay, quant = [], [], []
    for name, p in net.named_parameters():
        if "quant" in name and quant_lr_scale != 1.0:
            quant.append(p)
        else:
            (no_decay if p.ndim <= 1 or "quant" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if quant:
        groups.append({"params": quant, "weight_decay": 0.0, "lr": lr * quant_lr_scale})
    return groups
