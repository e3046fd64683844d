"""LPGNAS training: the alternating architecture/quantization search, and QAT retraining of a design.

Search (:func:`search`), one round, full batch (the graph is small and transductive):

1. ``warmup_epochs`` epochs update only the supernet weights (and quantizer steps) under uniform
   α/β, so the first architecture gradients do not just reflect random weights (with row-normalised
   features GCN/GAT learn slowly: at the retraining lr the uniform mixture stays near chance through a
   whole warm-up, hence the search's higher weight lr);
2. every later epoch alternates two first-order steps (DARTS' first-order schedule): weights on the
   *training* nodes' cross-entropy, then α/β on the *validation* nodes' cross-entropy plus
   ``λ · penalty(E[size], E[BitOps])``;
3. the temperature ``τ`` of ``softmax(logits / τ)`` (and of the Gumbel-softmax, if enabled) anneals
   geometrically from ``tau_start`` to ``tau_end``, sharpening the relaxation towards one-hot;
4. the argmax of every gene's logits is the derived design.

``weight_sampling="mixture"`` (default, LPGNAS/DARTS) trains the weights on the relaxed mixture.
``"path"`` trains them on one design sampled from the current probabilities per step (single-path,
cheaper) and takes the α/β step through a straight-through sample; on Cora it learns far more slowly
(its training loss stays near chance for much of the search, while most sampled paths carry 1-2-bit
tensors), so it is an option, not the default.

Penalty (``penalty="log"``, the default): ``log E[size_kb] + bitops_weight · log E[BitOps]``, or,
with ``target_size_kb``, ``relu(log(E[size_kb] / target))`` for the size part (no pressure once
the expected size is under the target). The log makes λ scale-free: a 1% smaller model is worth
``λ/100`` of cross-entropy whether the model is 1 KB or 1 MB, on any dataset. ``penalty="linear"``
is the literal ``E[size] / size_ref`` (+ the same for BitOps), with the space's largest design as
the reference. The expectation uses the plain softmax probabilities, never the Gumbel samples.

Retraining (:func:`retrain`): the derived genome becomes a :class:`~supernets.gnn.layers.StaticGnn`
trained from scratch with quantization-aware training (LSQ fake quantization at its bits, steps
learned at ``step_lr_scale`` × the weights' lr, no weight decay on steps), Adam, full batch on the training nodes; the reported test
accuracy is the one at the epoch of best validation accuracy (the standard Planetoid protocol).

Everything is seeded: ``torch.random.fork_rng`` scopes the global generator (weight init, dropout)
and Gumbel noise comes from a local generator, so no global random state is left modified.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from search_spaces.errors import QnasError
from search_spaces.genome import Genome
from search_spaces.gnn import GnnSpace
from supernets.gnn.graph import GraphTensors
from supernets.gnn.layers import StaticGnn
from supernets.gnn.supernet import GnnSupernet, check_graph

__all__ = ["NonFiniteLossError", "SearchSettings", "RetrainSettings", "EpochLog", "SearchOutcome", "retrain_seeds",
           "RetrainOutcome", "search", "retrain", "cost_penalty", "temperature", "search_objective",
           "design_penalty"]


class NonFiniteLossError(QnasError):
    """A loss term became NaN or infinite: training stops with the epoch and the term named."""

    def __init__(self, term: str, epoch: int, value: float, phase: str) -> None:
        self.term, self.epoch, self.value, self.phase = term, epoch, value, phase
        super().__init__(f"{phase}: the {term} is {value} at epoch {epoch}; stopping (lower the learning "
                         "rates, check the input features for NaN/inf, or use fewer low bit-widths)")

    def __reduce__(self) -> tuple[type, tuple[str, int, float, str]]:  # re-raised from worker processes
        return type(self), (self.term, self.epoch, self.value, self.phase)


@dataclass(frozen=True)
class SearchSettings:
    """Hyperparameters of one LPGNAS search round (see the module doc)."""

    epochs: int = 200
    warmup_epochs: int = 50
    lr: float = 0.05  # 5× the retraining lr: the mixture must be trained within the warm-up (see module doc)
    weight_decay: float = 5e-4
    arch_lr: float = 0.03
    arch_weight_decay: float = 0.0
    dropout: float = 0.5
    gumbel: bool = False
    tau_start: float = 1.0
    tau_end: float = 0.1
    penalty: Literal["log", "linear"] = "log"
    bitops_weight: float = 0.1
    target_size_kb: float | None = None
    weight_sampling: Literal["mixture", "path"] = "mixture"


@dataclass(frozen=True)
class RetrainSettings:
    """Hyperparameters of the QAT retraining of a derived design."""

    epochs: int = 200
    lr: float = 0.01
    weight_decay: float = 5e-4
    dropout: float = 0.5
    patience: int = 100
    step_lr_scale: float = 3.0
    """Learning rate of the quantizer log-steps relative to ``lr``. With Adam a log-step moves ~``lr`` per
    update, so at 1× the weight steps lag the weights as they grow and clipped weights stop learning; 10×
    helps 8/4 bits as much as 3× but costs 2-bit weights accuracy (figures: BENCHMARKS.md, design choices)."""


@dataclass(frozen=True)
class EpochLog:
    """One epoch of a search (arch-step values are NaN during the warm-up)."""

    epoch: int
    tau: float
    train_loss: float
    val_loss: float
    val_accuracy: float
    expected_size_kb: float
    expected_bitops: float


@dataclass(frozen=True)
class SearchOutcome:
    """The derived design of one search and how the search went."""

    genome: Genome
    lam: float
    history: tuple[EpochLog, ...]
    supernet_val_accuracy: float  # the derived design inside the supernet (one-hot, eval mode)
    supernet_val_loss: float = math.nan  # its validation cross-entropy there (restarts compare objectives)
    probabilities: dict[str, list[float]] = field(default_factory=dict)  # final softmax per gene
    seconds: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class RetrainOutcome:
    """One QAT retraining of a design from scratch."""

    seed: int
    test_accuracy: float
    val_accuracy: float
    best_epoch: int
    seconds: float
    val_loss: float = math.nan  # validation cross-entropy at the best epoch (what restarts are compared by)


def temperature(epoch: int, settings: SearchSettings) -> float:
    """Geometric annealing from ``tau_start`` (epoch 0) to ``tau_end`` (last epoch)."""
    frac = epoch / max(settings.epochs - 1, 1)
    return settings.tau_start * (settings.tau_end / settings.tau_start) ** frac


def cost_penalty(size_bytes: Tensor, bitops: Tensor, settings: SearchSettings,
                 reference: tuple[float, float]) -> Tensor:
    """The λ-weighted cost term (see the module doc); ``reference`` = (size_bytes, bitops) scales."""
    size_kb = size_bytes / 1024
    if settings.penalty == "log":
        size_term = torch.log(size_kb) if settings.target_size_kb is None else torch.relu(
            torch.log(size_kb / settings.target_size_kb))
        return size_term + settings.bitops_weight * torch.log(bitops)
    size_term = size_kb / (reference[0] / 1024) if settings.target_size_kb is None else torch.relu(
        size_kb / settings.target_size_kb - 1)
    return size_term + settings.bitops_weight * bitops / reference[1]


def _reference(space: GnnSpace) -> tuple[float, float]:
    """(size_bytes, BitOps) of the space's largest design: the scales of the linear penalty."""
    largest = space.costs(space.largest())
    return float(largest.size_bytes), float(largest.bitops)


def design_penalty(space: GnnSpace, genome: Genome, settings: SearchSettings) -> float:
    """:func:`cost_penalty` of one design's analytic costs (what λ multiplies, at a one-hot choice)."""
    costs = space.costs(genome)
    return float(cost_penalty(torch.tensor(float(costs.size_bytes)), torch.tensor(float(costs.bitops)), settings,
                              _reference(space)))


def search_objective(space: GnnSpace, outcome: SearchOutcome, settings: SearchSettings) -> float:
    """What the α/β steps minimise, at the derived design: its validation cross-entropy inside the supernet
    plus ``λ · penalty`` of its analytic costs. Lower is better; restarts of one λ can be compared by it."""
    return outcome.supernet_val_loss + outcome.lam * design_penalty(space, outcome.genome, settings)


def _check(value: Tensor, term: str, epoch: int, phase: str) -> None:
    if not bool(torch.isfinite(value)):
        raise NonFiniteLossError(term, epoch, float(value.detach()), phase)


def _accuracy(logits: Tensor, y: Tensor, mask: Tensor) -> float:
    return float((logits[mask].argmax(1) == y[mask]).float().mean())


def _loss(logits: Tensor, y: Tensor, mask: Tensor) -> float:
    return float(F.cross_entropy(logits[mask], y[mask]))


def search(space: GnnSpace, graph: GraphTensors, settings: SearchSettings, *, lam: float, seed: int,
           log: Callable[[EpochLog], None] | None = None) -> SearchOutcome:
    """One LPGNAS round at cost weight ``lam``: alternate weight and α/β steps, derive the argmax design."""
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = GnnSupernet(space, graph)
        gen = torch.Generator().manual_seed(seed + 1)
        opt_w = torch.optim.Adam(_param_groups(net.layers, settings.weight_decay, settings.lr))
        opt_a = torch.optim.Adam(net.arch_parameters(), lr=settings.arch_lr, betas=(0.5, 0.999),
                                 weight_decay=settings.arch_weight_decay)
        reference = _reference(space)
        history = []
        for epoch in range(settings.epochs):
            tau = temperature(epoch, settings)
            train_loss = _weight_step(net, graph, opt_w, settings, tau, gen, epoch)
            arch = (_arch_step(net, graph, opt_a, settings, tau, gen, epoch, lam, reference)
                    if epoch >= settings.warmup_epochs else (math.nan, math.nan))
            with torch.no_grad():
                probs = net.gene_probs(tau)
                entry = EpochLog(epoch, tau, train_loss, arch[0], arch[1],
                                 float(net.expected_cost(probs, "size_bytes")) / 1024,
                                 float(net.expected_cost(probs, "bitops")))
            history.append(entry)
            if log is not None:
                log(entry)
        genome = net.derive()
        net.eval()
        with torch.no_grad():
            derived_logits = net(net.one_hot(genome))
            supernet_acc = _accuracy(derived_logits, graph.y, graph.val_mask)
            supernet_loss = _loss(derived_logits, graph.y, graph.val_mask)
            final = {g: [round(float(p), 4) for p in v] for g, v in net.gene_probs(settings.tau_end).items()}
    return SearchOutcome(genome, lam, tuple(history), supernet_acc, supernet_loss, final,
                         time.perf_counter() - start, seed)


def _weight_step(net: GnnSupernet, graph: GraphTensors, opt: torch.optim.Optimizer, settings: SearchSettings,
                 tau: float, gen: torch.Generator, epoch: int) -> float:
    net.train()
    opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        probs = net.gene_probs(tau, gumbel=settings.gumbel, generator=gen)
        if settings.weight_sampling == "path":
            probs = net.sample(probs, gen)
    logits = net(probs, dropout=settings.dropout)
    loss = F.cross_entropy(logits[graph.train_mask], graph.y[graph.train_mask])
    _check(loss, "training cross-entropy", epoch, "search, weight step")
    loss.backward()
    opt.step()
    return float(loss.detach())


def _arch_step(net: GnnSupernet, graph: GraphTensors, opt: torch.optim.Optimizer, settings: SearchSettings,
               tau: float, gen: torch.Generator, epoch: int, lam: float,
               reference: tuple[float, float]) -> tuple[float, float]:
    net.train()
    opt.zero_grad(set_to_none=True)
    probs = net.gene_probs(tau, gumbel=settings.gumbel, generator=gen)
    if settings.weight_sampling == "path":  # straight-through: forward one sampled design, soft gradient
        hard = net.sample(probs, gen)
        probs = {k: hard[k] - p.detach() + p for k, p in probs.items()}
    logits = net(probs, dropout=settings.dropout)
    ce = F.cross_entropy(logits[graph.val_mask], graph.y[graph.val_mask])
    _check(ce, "validation cross-entropy", epoch, "search, architecture step")
    soft = net.gene_probs(tau)
    penalty = cost_penalty(net.expected_cost(soft, "size_bytes"), net.expected_cost(soft, "bitops"), settings,
                           reference)
    _check(penalty, "cost penalty", epoch, "search, architecture step")
    params = net.arch_parameters()
    for p, grad in zip(params, torch.autograd.grad(ce + lam * penalty, params)):  # weights untouched
        p.grad = grad
    opt.step()
    return float(ce.detach()), _accuracy(logits.detach(), graph.y, graph.val_mask)


def _param_groups(module: torch.nn.Module, weight_decay: float, lr: float,
                  step_lr_scale: float = 1.0) -> list[dict[str, object]]:
    """Weight decay on the network's weights, none on quantizer log-steps (it would pull steps to 1);
    the log-steps learn at ``lr * step_lr_scale`` (see :attr:`RetrainSettings.step_lr_scale`)."""
    named = list(module.named_parameters())
    return [{"params": [p for n, p in named if not n.endswith(".log_step")], "weight_decay": weight_decay, "lr": lr},
            {"params": [p for n, p in named if n.endswith(".log_step")], "weight_decay": 0.0,
             "lr": lr * step_lr_scale}]


def retrain(space: GnnSpace, genome: Genome, graph: GraphTensors, settings: RetrainSettings, *,
            seed: int) -> RetrainOutcome:
    """Train ``genome`` from scratch with QAT; test accuracy at the best validation epoch."""
    check_graph(space, graph)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = StaticGnn(space, genome, graph, dropout=settings.dropout)
        opt = torch.optim.Adam(_param_groups(model, settings.weight_decay, settings.lr, settings.step_lr_scale))
        best = (-1.0, 0.0, -1, math.nan)  # (val, test, epoch, val cross-entropy)
        for epoch in range(settings.epochs):
            model.train()
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model()[graph.train_mask], graph.y[graph.train_mask])
            _check(loss, "training cross-entropy", epoch, "retraining")
            loss.backward()
            opt.step()
            model.eval()
            with torch.no_grad():
                logits = model()
            val = _accuracy(logits, graph.y, graph.val_mask)
            if val > best[0]:
                best = (val, _accuracy(logits, graph.y, graph.test_mask), epoch, _loss(logits, graph.y, graph.val_mask))
            if epoch - best[2] >= settings.patience:
                break
    return RetrainOutcome(seed, best[1], best[0], best[2], time.perf_counter() - start, best[3])


def retrain_seeds(space: GnnSpace, genome: Genome, graph: GraphTensors, settings: RetrainSettings,
                  seeds: Sequence[int]) -> list[RetrainOutcome]:
    """:func:`retrain` once per seed (the mean ± std over seeds is what gets reported)."""
    return [retrain(space, genome, graph, settings, seed=s) for s in seeds]
