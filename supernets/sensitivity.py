"""Per-layer quantization sensitivity of a supernet (ZeroQ's KL metric), measured once.

Why: an accuracy predictor trained on a few dozen measured subnets cannot learn two dozen per-layer
bit-width effects from them. ZeroQ (Cai et al., 2020) ranks a layer's sensitivity to ``k`` bits by
``Ω_i(k) = KL(M(θ) ‖ M(θ̃_i(k)))``: the output divergence when only that layer is quantized more
coarsely; the sum over layers is its proxy of a whole assignment's damage. Measured here on the
largest subnet at its highest bit-widths (the reference), one quantization gene lowered at a time,
with BN recalibrated per variant as every subnet evaluation does. The sum is a prior the predictors
take as one more feature (``predictors.accuracy.QuantSensitivity``); it costs one evaluation of a
small batch per (gene, choice), not a measured subnet.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from search_spaces import Genome, SearchSpace

from .evaluate import batches, bn_recalibrated

__all__ = ["measure_quant_sensitivity"]


@torch.no_grad()
def measure_quant_sensitivity(supernet, calib_x: Tensor, x: Tensor, *, batch_size: int = 256,
                              reference: Genome | None = None,
                              progress: Callable[[int, int], None] | None = None) -> dict[str, dict]:
    """``{quant gene: {choice: mean KL(reference ‖ reference with that gene at choice)}}``.

    Args:
        supernet: a trained :class:`~supernets.supernet.QuantSupernet` (its ``space`` gives the genes).
        calib_x: images whose batch statistics recalibrate BN for each variant.
        x: images the output divergence is averaged over (a few hundred suffice: it ranks layers).
        reference: the subnet the genes are lowered in (default ``space.largest()``: ZeroQ's full model).
        progress: called with ``(done, total)`` after each variant.
    """
    space: SearchSpace = supernet.space
    ref = reference if reference is not None else space.largest()
    idle = [g.name for g in space.genes if g.kind == "quant" and not space.is_active(ref, g)]
    if idle:
        raise ValueError(f"the reference subnet must use every quantization gene; inactive: {idle}")
    calib = [xb for xb, _ in batches(calib_x, None, batch_size)]
    if not calib or len(x) == 0:
        raise ValueError("quantization sensitivity needs calibration and evaluation images")
    supernet.init_quantizers(calib[0])

    def log_probs(genome: Genome) -> Tensor:
        with supernet.subnet(genome, quantize=True), bn_recalibrated(supernet, calib):
            return torch.cat([F.log_softmax(supernet(xb), dim=1) for xb, _ in batches(x, None, batch_size)])

    was_training = supernet.training
    supernet.eval()
    try:
        base = log_probs(ref)
        genes = [g for g in space.genes if g.kind == "quant"]
        total = sum(len(g.choices) - 1 for g in genes)
        out: dict[str, dict] = {}
        done = 0
        for gene in genes:
            out[gene.name] = {}
            for choice in gene.choices:
                if choice == ref[gene.name]:
                    out[gene.name][choice] = 0.0
                    continue
                variant = space.make({**ref.as_dict(), gene.name: choice})
                lp = log_probs(variant)
                out[gene.name][choice] = max(0.0, float((base.exp() * (base - lp)).sum(dim=1).mean()))
                done += 1
                if progress is not None:
                    progress(done, total)
        return out
    finally:
        supernet.train(was_training)
