"""Shared by the inherited-vs-standalone benchmarks (``supernet_benchmark.py`` part 1, ``gpu_benchmark.py`` part 3).

Needs only numpy, torch and this repository's search_spaces/ and supernets/ (no pydantic, no scipy): the
GPU benchmark imports it on machines that have nothing else.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from search_spaces import Genome, SearchSpace
from supernets.device import Placement
from supernets.evaluate import SubnetEvaluator
from supernets.supernet import QuantSupernet
from supernets.training import SupernetTrainer


def at_bits(space: SearchSpace, genome: Genome, bits: int) -> Genome:
    """The same architecture with every searchable weight and activation bit-width set to ``bits``."""
    values = {g.name: bits for g in space.genes if g.name.endswith(("w_bits", "a_bits"))}
    return space.canonical(genome.with_values(values))


def spread_subnets(space: SearchSpace, n: int, seed: int) -> list[Genome]:
    """``n`` architectures at evenly spaced MAC quantiles of 2000 random samples (ascending MACs)."""
    rng = np.random.default_rng(seed)
    pool = {g.key: g for g in (space.sample(rng) for _ in range(2000))}.values()
    ranked = sorted(pool, key=lambda g: space.costs(g).macs)
    return [ranked[int(i)] for i in np.linspace(0, len(ranked) - 1, n)]


def standalone_trainer(space: SearchSpace, genome: Genome, data, cfg, *, placement: Placement | None = None,
                       max_images: int | None = None) -> SupernetTrainer:
    """A trainer of only ``genome``, from scratch, with the supernet's recipe and schedule (``cfg``): QAT at the
    genome's bit-widths after the float warm-up, cross-entropy, no other subnet sampled."""
    net = QuantSupernet(space, image_size=data.image_size, seed=cfg.seed)
    n = max_images or len(data.train_x)
    return SupernetTrainer(net, data.train_x[:n], data.train_y[:n], data.val_x, data.val_y, cfg, standalone=genome,
                           placement=placement)


def standalone_accuracy(space: SearchSpace, genome: Genome, data, cfg, threads: int | None = None, *,
                        placement: Placement | None = None) -> tuple[float, float]:
    """Train only ``genome`` from scratch with the supernet's schedule; (test accuracy, seconds)."""
    if threads is not None:  # in a worker process
        torch.set_num_threads(threads)
    trainer = standalone_trainer(space, genome, data, cfg, placement=placement)
    start = time.perf_counter()
    while not trainer.done:
        trainer.train_epoch()
    return standalone_test_accuracy(trainer, genome, data, placement=placement), time.perf_counter() - start


def standalone_test_accuracy(trainer: SupernetTrainer, genome: Genome, data, *, placement: Placement | None = None,
                             batch_size: int = 256) -> float:
    """Test accuracy of a standalone-trained ``genome``, BN recalibrated like an inherited subnet's."""
    ev = SubnetEvaluator(trainer.net, data.train_x[: trainer.cfg.bn_calib_samples], data.test_x, data.test_y,
                         batch_size=batch_size, placement=placement)
    return ev.accuracy(genome)


def kendall_tau(a, b) -> float:
    """Kendall's tau-b of two equally long sequences (ties counted as scipy.stats.kendalltau does); nan when
    either is constant."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    i, j = np.triu_indices(len(a), k=1)
    da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    denom = np.sqrt(float(np.count_nonzero(da)) * float(np.count_nonzero(db)))
    return float(np.sum(da * db) / denom) if denom > 0 else float("nan")
