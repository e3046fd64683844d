"""Hessian-trace sensitivity of each quantization gene (HAWQ-V2/V3), measured on a trained supernet.

Why beside ZeroQ's output KL (:mod:`.sensitivity`): the bit allocators users pick instead of a joint search
(HAWQ-V3, MCT, AIMET) rank layers by second-order sensitivity, so the baseline qnas measures itself
against must use it too. For a block's weights ``W`` (or the activations ``a`` its quantizers see), the
loss increase of quantizing them to ``b`` bits is about ``½ · Tr(H)/n · ‖Q_b(W) − W‖²``; HAWQ-V3 takes
``Ω(b) = Tr(H)/n · ‖Q_b(W) − W‖²`` as the ILP's cost.

``Tr(H)`` is Hutchinson's estimate ``mean_k zₖᵀ H zₖ`` over Rademacher ``zₖ``; ``H z`` is a second backward
pass through ``∇L · z`` (Pearlmutter). One Hessian-vector product per sample serves every gene at once:
each gene's tensors take their own slice of ``z``, and the cross terms vanish in expectation. Measured on
the reference subnet (the largest) in float, BN recalibrated as for every evaluation; ``Q_b`` is the
supernet's own LSQ quantizer of that layer at ``b`` bits (its learned step), so ``‖Q_b(W) − W‖²`` is the
perturbation the subnet really gets. Like HAWQ, ``H`` is taken as positive semi-definite: a negative
trace estimate (a layer off its minimum, or sampling noise) costs nothing in ``Ω`` and is kept as measured.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from search_spaces import Gene, Genome, SearchSpace

from .device import placement_of
from .evaluate import batches, bn_recalibrated
from .quant import LsqActQuantizer, LsqWeightQuantizer, QuantMode

__all__ = ["HessianTraces", "measure_hessian_sensitivity"]

_WEIGHT_GENES = {"w_bits": "bits", "w_granularity": "granularity", "w_symmetry": "symmetric"}


@dataclass(frozen=True)
class HessianTraces:
    """Per quantization gene: the average Hessian trace ``Tr(H)/n`` of what it quantizes, and ``Ω`` per choice."""

    traces: dict[str, float]
    omega: dict[str, dict]
    samples: int
    images: int


class _Capture:
    """Forward pre-hooks recording what each quantizer of interest is given (tensor and mode), in order."""

    def __init__(self, modules: dict[nn.Module, str]) -> None:
        self.seen: list[tuple[str, nn.Module, Tensor, QuantMode]] = []
        self.handles = [m.register_forward_pre_hook(self._hook(gene)) for m, gene in modules.items()]

    def _hook(self, gene: str) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:
            self.seen.append((gene, module, args[0], args[1]))
        return hook

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


_PIECEWISE = {"hardsigmoid": lambda x: torch.clamp(x + 3, 0, 6) / 6,
              "hardswish": lambda x: x * torch.clamp(x + 3, 0, 6) / 6}


@contextmanager
def _twice_differentiable(net: nn.Module) -> Iterator[None]:
    """Hard-sigmoid/swish modules computed with ``clamp`` meanwhile (same values): torch's fused kernels
    have no second derivative, which the Hessian-vector product needs."""
    patched = []
    for module in net.modules():
        fn = _PIECEWISE.get(type(module).__name__.lower().replace("_", ""))
        if fn is not None:
            module.forward = fn
            patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward


def _tensors_by_gene(space: SearchSpace, supernet: nn.Module, ref: Genome) -> dict[nn.Module, str]:
    """Quantizer module → the gene that sets its precision (weight genes: weight quantizers, a_bits: activations)."""
    out: dict[nn.Module, str] = {}
    for gene in space.genes:
        if gene.kind != "quant" or not space.is_active(ref, gene):
            continue
        suffix = gene.name.rpartition(".")[2]
        if suffix != "a_bits" and suffix not in _WEIGHT_GENES:
            raise ValueError(f"no Hessian sensitivity rule for quantization gene {gene.name!r}")
        if suffix in ("a_bits", "w_bits"):  # granularity/symmetry genes share the w_bits tensors
            for module in supernet.gene_quantizers(gene.name):
                out[module] = gene.name
    return out


def _hutchinson(loss: Tensor, tensors: list[Tensor], samples: int, generator: torch.Generator) -> list[float]:
    """``Tr(H_ii)`` of each tensor: mean over ``samples`` Rademacher vectors of ``zᵢᵀ (H z)ᵢ``."""
    grads = torch.autograd.grad(loss, tensors, create_graph=True)
    totals = [0.0] * len(tensors)
    for _ in range(samples):
        zs = [torch.randint(0, 2, t.shape, generator=generator).to(t.device, t.dtype) * 2 - 1 for t in tensors]
        hz = torch.autograd.grad(grads, tensors, grad_outputs=zs, retain_graph=True)
        for i, (z, h) in enumerate(zip(zs, hz)):
            totals[i] += float((z * h).sum()) / samples
    return totals


def _mode_for(spec_mode: QuantMode, gene: Gene, choice: object) -> QuantMode:
    field = _WEIGHT_GENES.get(gene.name.rpartition(".")[2], "bits")
    value = choice == "symmetric" if field == "symmetric" else choice
    return dataclasses.replace(spec_mode, **{field: value})


def measure_hessian_sensitivity(supernet, calib_x: Tensor, x: Tensor, y: Tensor, *, samples: int = 16,
                                batch_size: int = 128, seed: int = 0, reference: Genome | None = None,
                                progress: Callable[[int, int], None] | None = None) -> HessianTraces:
    """Average Hessian traces and HAWQ-V3 costs ``Ω(choice)`` of every quantization gene of ``reference``.

    Args:
        supernet: a trained supernet that maps genes to quantizers (``gene_quantizers``, ``reference_modes``):
            the CNN :class:`~supernets.supernet.QuantSupernet` or the transformer's.
        calib_x: images whose batch statistics recalibrate BN.
        x, y: labelled inputs (images, or token windows and their next tokens) the loss (cross-entropy) and its
            Hessian are averaged over.
        samples: Rademacher vectors per batch (HAWQ uses 20–50; the trace ranks layers with fewer).
        seed: seeds the Rademacher vectors (a torch generator; global state untouched).
        reference: the subnet measured (default the largest, which uses every quantization gene).
    """
    space: SearchSpace = supernet.space
    ref = reference if reference is not None else space.largest()
    put = placement_of(supernet).put
    calib = [put(xb) for xb, _ in batches(calib_x, None, batch_size)]
    supernet.init_quantizers(calib[0])
    owners = _tensors_by_gene(space, supernet, ref)
    modes = supernet.reference_modes(ref)
    generator = torch.Generator().manual_seed(seed)
    trace: dict[str, list[float]] = {}
    omega: dict[str, dict] = {g.name: {c: 0.0 for c in g.choices} for g in space.genes
                              if g.kind == "quant" and space.is_active(ref, g)}
    todo = list(batches(x, y, batch_size))
    was_training = supernet.training
    supernet.eval()
    try:
        with (supernet.subnet(ref, quantize=False), bn_recalibrated(supernet, calib), _twice_differentiable(supernet),
              sdpa_kernel(SDPBackend.MATH)):  # the fused attention kernels have no second derivative either
            for done, (xb, yb) in enumerate(todo, 1):
                _one_batch(space, supernet, owners, modes, put(xb), put(yb), samples, generator, trace, omega,
                           len(todo))
                if progress is not None:
                    progress(done, len(todo))
    finally:
        supernet.train(was_training)
    traces = {g: sum(v) / len(todo) for g, v in trace.items()}
    return HessianTraces(traces, _with_modes(omega, space), samples, len(x))


def _one_batch(space, supernet, owners, modes, xb, yb, samples, generator, trace, omega, n_batches) -> None:
    """Add one batch's share of every gene's trace and Ω (averaged over ``n_batches``)."""
    capture = _Capture(owners)
    try:
        with torch.enable_grad():
            # float forward: the quantizers see full-precision inputs; an LM's logits are (B, V, T), a class per token
            loss = F.cross_entropy(supernet(xb), yb)
            seen = [item for item in capture.seen if item[2].requires_grad]
            totals = _hutchinson(loss, [t for _, _, t, _ in seen], samples, generator)
    finally:
        capture.close()
    per_gene: dict[str, list[float]] = {}
    for (gene, _, tensor, _), tr in zip(seen, totals):
        acc = per_gene.setdefault(gene, [0.0, 0.0])
        acc[0], acc[1] = acc[0] + tr, acc[1] + tensor.numel()
    for gene, (tr, n) in per_gene.items():
        trace.setdefault(gene, []).append(tr / n)
    with torch.no_grad():
        for gene_name, module, tensor, _ in seen:
            block = gene_name.rpartition(".")[0]
            w_mode, a_mode = modes[block]  # the reference's modes; each variant changes one field
            genes = [g for g in omega if g.rpartition(".")[0] == block
                     and (g.endswith("a_bits") == isinstance(module, LsqActQuantizer))]
            for name in genes:
                gene = space.gene(name)
                base = a_mode if isinstance(module, LsqActQuantizer) else w_mode
                for choice in gene.choices:
                    mode = _mode_for(base, gene, choice)
                    err = float((module(tensor.detach(), mode) - tensor.detach()).pow(2).sum())
                    omega[name][choice] += max(0.0, trace[gene_name][-1]) * err / n_batches  # H taken as PSD


def _with_modes(omega: dict[str, dict], space: SearchSpace) -> dict[str, dict]:
    """Granularity/symmetry genes keep only what they add over their reference choice (≥ 0): the w_bits row
    already holds the perturbation at the reference's mode, and the ILP sums the rows."""
    out = {}
    for name, row in omega.items():
        if name.endswith(("w_granularity", "w_symmetry")):
            ref = row[space.gene(name).choices[-1]]
            row = {c: max(0.0, v - ref) for c, v in row.items()}
        out[name] = dict(row)
    return out
