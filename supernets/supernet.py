"""The quantized weight-sharing supernet of a search space.

One elastic block per block slot of the space's largest subnet. A subnet is chosen with the
:meth:`QuantSupernet.subnet` context manager (restored in ``finally``) or by passing the genome to
:meth:`QuantSupernet.run`; the block layout always comes from ``space.blocks(genome)``, the single
source of truth shared with costs, latency tables and extraction.
"""

from __future__ import annotations

import dataclasses
import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_spaces import BlockSpec, Genome, InputError, SearchSpace

from .elastic import act_modes
from .blocks import build_elastic_block, spec_modes
from .quant import LsqActQuantizer, LsqWeightQuantizer, QuantMode
from .selection import SubnetSelection
from .static_net import StaticNet

__all__ = ["QuantSupernet"]


def _module_key(slot: str) -> str:
    return slot.replace(".", "_")


def _gene_values(space: SearchSpace, suffix: str) -> set:
    return {c for g in space.genes if g.name.endswith(suffix) for c in g.choices}


class QuantSupernet(SubnetSelection):
    """Elastic depth/width/kernel/resolution with per-block weight and activation bit-widths."""

    def __init__(self, space: SearchSpace, *, image_size: int | None = None, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
            torch.manual_seed(seed)
            self._build(space, image_size)

    def _build(self, space: SearchSpace, image_size: int | None) -> None:
        self.space = space
        largest = space.blocks(space.largest())
        self.image_size = image_size
        self.slots = tuple(b.slot for b in largest)
        w_bits, a_bits = _gene_values(space, ".w_bits"), _gene_values(space, ".a_bits")
        grans = _gene_values(space, ".w_granularity") or {"channel"}
        syms = {v == "symmetric" for v in _gene_values(space, ".w_symmetry")} or {True}
        searched = [QuantMode(b, g, s) for b in sorted(w_bits) for g in sorted(grans) for s in sorted(syms)]
        self.blocks = nn.ModuleDict()
        for big in largest:
            fixed = not any(g.name.startswith(big.slot + ".") and g.kind == "quant" for g in space.genes)
            # Blocks without quantization genes (stem, head) only ever run at their fixed bit-widths.
            w_modes = [QuantMode(big.w_bits, "channel" if big.w_per_channel else "tensor", big.w_symmetric)] \
                if fixed else searched
            a_modes = act_modes([big.a_bits] if fixed else a_bits)
            self.blocks[_module_key(big.slot)] = build_elastic_block(big, w_modes, a_modes)

    # ---- choosing a subnet ----------------------------------------------------------------------
    def specs(self, genome: Genome, *, quantize: bool = True) -> tuple[BlockSpec, ...]:
        """The blocks of ``genome``; with ``quantize=False`` every bit-width becomes 32 (float)."""
        self.space.validate(genome)
        specs = self.space.blocks(genome)
        if not quantize:
            specs = [dataclasses.replace(s, w_bits=32, a_bits=32) for s in specs]
        return tuple(specs)

    def gene_quantizers(self, gene: str) -> list[nn.Module]:
        """The LSQ quantizers whose precision quantization gene ``gene`` sets: its block's activation quantizers
        (``a_bits``) or weight quantizers (the weight genes)."""
        block, _, suffix = gene.rpartition(".")
        kind = LsqActQuantizer if suffix == "a_bits" else LsqWeightQuantizer
        return [m for m in self.blocks[_module_key(block)].modules() if isinstance(m, kind)]

    def reference_modes(self, genome: Genome) -> dict[str, tuple[QuantMode, QuantMode]]:
        """(weight, activation) mode of each block of ``genome``, by the genes' prefix (the block's slot)."""
        return {spec.slot: spec_modes(spec) for spec in self.specs(genome)}

    def _forward(self, x: Tensor, specs: tuple[BlockSpec, ...]) -> Tensor:
        size = specs[0].in_size
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        for spec in specs:
            x = self.blocks[_module_key(spec.slot)](x, spec)
        return x

    # ---- extraction and maintenance -----------------------------------------------------------
    def extract(self, genome: Genome, *, quantize: bool = True) -> StaticNet:
        """A standalone module with the subnet's sliced weights and frozen quantizers (eval mode).

        It lives on the supernet's device (``.cpu()`` it for export or CPU latency measurements).
        """
        specs = self.specs(genome, quantize=quantize)
        blocks = [self.blocks[_module_key(s.slot)].extract(s) for s in specs]
        return StaticNet(specs, blocks, image_size=self.image_size).to(self.device).eval()

    @torch.no_grad()
    def init_quantizers(self, x: Tensor) -> None:
        """LSQ-initialise every quantization mode of every block from ``x``, at full width.

        Modes a block never draws during training would otherwise be initialised by whichever
        subnet is evaluated first, so accuracies would depend on evaluation order. Runs the largest
        architecture once per (weight bits, granularity, symmetry) combination (activation bits
        cycled alongside) with batch statistics, and leaves BN running statistics untouched.
        """
        if self.quantizers_ready():
            return
        largest = self.space.largest()
        quant = [g for g in self.space.genes if g.kind == "quant"]
        by_suffix: dict[str, list] = {}
        for gene in quant:
            values = by_suffix.setdefault(gene.name.rsplit(".", 1)[1], [])
            values += [c for c in gene.choices if c not in values]
        weight_keys = [k for k in by_suffix if k.startswith("w_")]
        combos = list(itertools.product(*(by_suffix[k] for k in weight_keys)))
        bns = [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in bns]
        was_training = self.training
        self.train()
        try:
            for i, combo in enumerate(combos):
                setting = dict(zip(weight_keys, combo))
                setting.update({k: v[i % len(v)] for k, v in by_suffix.items() if k not in setting})
                values = {g.name: setting[g.name.rsplit(".", 1)[1]] for g in quant if self.space.is_active(largest, g)}
                self.run(x, largest.with_values(values))
        finally:
            for m, (mean, var, count) in zip(bns, saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
            self.train(was_training)

    def sort_channels(self) -> None:
        """Re-organise hidden channels by importance in every block (before elastic-width training)."""
        for block in self.blocks.values():
            block.sort_channels()

    def check_splits(self, data, *, source: str) -> None:
        """Refuse splits the stem and head cannot read (the contract every supernet family offers)."""
        missing = [a for a in ("in_channels", "num_classes", "image_size") if not hasattr(data, a)]
        if missing:
            raise InputError(f"search space {self.space.name!r} reads images; this dataset has no {missing[0]}",
                             source=source, field="dataset.name")
        self.check_data(data.in_channels, data.num_classes, data.image_size, source=source)

    def check_data(self, in_channels: int, num_classes: int, image_size: int, *, source: str) -> None:
        """Refuse data whose shape or class count does not fit the space's stem and head."""
        stem, head = self.space.blocks(self.space.largest())[0], self.space.blocks(self.space.largest())[-1]
        for field, want, got in (("in_channels", stem.in_ch, in_channels), ("num_classes", head.out_ch, num_classes)):
            if want != got:
                raise InputError(f"the dataset has {got} {field.replace('_', ' ')} but the search space expects "
                                 f"{want}; set search_space.options.{field}: {got}", source=source, field=field)
        if self.image_size is not None and self.image_size != image_size:
            raise InputError(f"the dataset has {image_size}x{image_size} images but the supernet was built for "
                             f"{self.image_size}x{self.image_size}", source=source, field="image_size")
