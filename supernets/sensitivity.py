"""Per-layer quantization sensitivity of a supernet (ZeroQ's KL metric), measured once.

Why: an accuracy predictor trained on a few dozen measured subnets cannot learn two dozen per-layer
bit-width effects from them. ZeroQ (Cai et al., 2020) ranks a layer's sensitivity to ``k`` bits by
``Ω_i(k) = KL(M(θ) ‖ M(θ̃_i(k)))``: the output divergence when only that layer is quantized more
coarsely; the sum over layers is its proxy of a whole assignment's damage. Measured here on the
largest subnet at its highest bit-widths (the reference), one quantization gene lowered at a time,
with BN recalibrated per variant as every subnet evaluation does. The sum is a prior the predictors
take as one more feature (``predictors.accuracy.QuantSensitivity``); it costs one evaluation of a
small batch per (gene, choice), not a measured subnet. Genes the space declares in
``feature_interactions`` are measured again in each context (``measure_context_sensitivity``).

A ``memo`` (``get``/``put`` of a variant's divergence by key) lets a caller keep each variant as it is
measured and skip those already known: a run killed mid-measurement re-measures only the variant in flight.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from search_spaces import Gene, Genome, SearchSpace

from .device import placement_of
from .evaluate import batches, bn_recalibrated

__all__ = ["Memo", "measure_context_sensitivity", "measure_quant_sensitivity"]


class Memo(Protocol):
    """Known divergences by variant key (``"<context>|<gene>=<choice>"``; the context is empty for the largest)."""

    def get(self, key: str) -> float | None: ...

    def put(self, key: str, value: float) -> None: ...


@contextmanager
def _probe(supernet, calib_x: Tensor, x: Tensor, batch_size: int) -> Iterator[Callable[[Genome], Tensor]]:
    """``log_probs(genome)``: the subnet's log-softmax outputs on ``x``, BN recalibrated on ``calib_x``
    (the supernet in eval mode meanwhile, its mode restored after). Runs in fp32 on the supernet's
    device, the images moved there once."""
    put = placement_of(supernet).put
    x = put(x)
    calib = [put(xb) for xb, _ in batches(calib_x, None, batch_size)]
    if not calib or len(x) == 0:
        raise ValueError("quantization sensitivity needs calibration and evaluation images")
    supernet.init_quantizers(calib[0])

    def log_probs(genome: Genome) -> Tensor:
        with supernet.subnet(genome, quantize=True), bn_recalibrated(supernet, calib):
            return torch.cat([F.log_softmax(supernet(xb), dim=1) for xb, _ in batches(x, None, batch_size)])

    was_training = supernet.training
    supernet.eval()
    try:
        yield log_probs
    finally:
        supernet.train(was_training)


def _lowered_one_at_a_time(space: SearchSpace, log_probs: Callable[[Genome], Tensor], ref: Genome,
                           genes: list[Gene], tick: Callable[[], None], memo: Memo | None = None,
                           context: str = "") -> dict[str, dict]:
    """``{gene: {choice: KL(ref ‖ ref with that gene at choice)}}`` (0 at the reference's own choice)."""
    base: Tensor | None = None  # measured only when some variant is not in the memo
    out: dict[str, dict] = {}
    for gene in genes:
        out[gene.name] = {}
        for choice in gene.choices:
            if choice == ref[gene.name]:
                out[gene.name][choice] = 0.0
                continue
            key = f"{context}|{gene.name}={choice}"
            value = None if memo is None else memo.get(key)
            if value is None:
                base = log_probs(ref) if base is None else base
                lp = log_probs(space.make({**ref.as_dict(), gene.name: choice}))
                value = max(0.0, float((base.exp() * (base - lp)).sum(dim=1).mean()))
                if memo is not None:
                    memo.put(key, value)
            out[gene.name][choice] = value
            tick()
    return out


def _ticker(total: int, progress: Callable[[int, int], None] | None) -> Callable[[], None]:
    """A callback reporting ``(done, total)`` to ``progress`` (if any) each time it is called."""
    done = itertools.count(1)

    def tick() -> None:
        count = next(done)
        if progress is not None:
            progress(count, total)

    return tick


@torch.no_grad()
def measure_quant_sensitivity(supernet, calib_x: Tensor, x: Tensor, *, batch_size: int = 256,
                              reference: Genome | None = None, progress: Callable[[int, int], None] | None = None,
                              memo: Memo | None = None) -> dict[str, dict]:
    """``{quant gene: {choice: mean KL(reference ‖ reference with that gene at choice)}}``.

    Args:
        supernet: a trained :class:`~supernets.supernet.QuantSupernet` (its ``space`` gives the genes).
        calib_x: images whose batch statistics recalibrate BN for each variant.
        x: images the output divergence is averaged over (a few hundred suffice: it ranks layers).
        reference: the subnet the genes are lowered in (default ``space.largest()``: ZeroQ's full model).
        progress: called with ``(done, total)`` after each variant.
        memo: divergences already measured (skipped) and the place each new one is put.
    """
    space: SearchSpace = supernet.space
    ref = reference if reference is not None else space.largest()
    idle = [g.name for g in space.genes if g.kind == "quant" and not space.is_active(ref, g)]
    if idle:
        raise ValueError(f"the reference subnet must use every quantization gene; inactive: {idle}")
    genes = [g for g in space.genes if g.kind == "quant"]
    tick = _ticker(sum(len(g.choices) - 1 for g in genes), progress)
    with _probe(supernet, calib_x, x, batch_size) as log_probs:
        return _lowered_one_at_a_time(space, log_probs, ref, genes, tick, memo)


@torch.no_grad()
def measure_context_sensitivity(supernet, calib_x: Tensor, x: Tensor, *, batch_size: int = 256,
                                progress: Callable[[int, int], None] | None = None,
                                memo: Memo | None = None) -> dict[str, dict]:
    """The same divergence for the quantization genes of the space's declared interactions, in the context
    of every *other* value of their context gene: ``{"ctx=value": {gene: {choice: KL}}}``.

    Why: in the largest subnet a stage's first block sees the previous stage's deepest block; after a
    shallower stage its activation quantizer sees another block's output through the same learned scale
    (on the CIFAR-10 supernet low-bit activations there diverge several times more). Each context's
    reference is the largest subnet with the context gene at that value.
    """
    space: SearchSpace = supernet.space
    big = space.largest()
    jobs: dict[str, tuple[Genome, list[Gene]]] = {}  # one reference per context, however many genes share it
    for context, name in space.feature_interactions():
        gene = space.gene(name)
        if gene.kind != "quant":
            continue
        for value in space.gene(context).choices:
            ref = space.make({**big.as_dict(), context: value})
            if value != big[context] and space.is_active(ref, gene):
                jobs.setdefault(f"{context}={value}", (ref, []))[1].append(gene)
    if not jobs:
        return {}
    tick = _ticker(sum(len(g.choices) - 1 for _, genes in jobs.values() for g in genes), progress)
    with _probe(supernet, calib_x, x, batch_size) as log_probs:
        return {key: _lowered_one_at_a_time(space, log_probs, ref, genes, tick, memo, key)
                for key, (ref, genes) in jobs.items()}
