"""The quantized weight-sharing supernet of the ``transformer`` space.

The same contract as the CNN :class:`~supernets.supernet.QuantSupernet` (``run``, ``subnet``, ``extract``,
``init_quantizers``, ``sort_channels``, ``check_splits``), so the trainer, the evaluator and the search drive
either. The layout of a subnet always comes from ``space.transformer_blocks(genome)``, the description its
costs are computed from.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import torch
from torch import Tensor, nn

from search_spaces import Genome, InputError
from search_spaces.transformer import TransformerBlock, TransformerSpace

from ..elastic import act_modes
from ..quant import QuantMode
from ..selection import SubnetSelection
from .attention import ElasticAttention
from .embedding import ElasticPatchEmbedding, ElasticTokenEmbedding
from .head import ElasticClassifierHead
from .layers import Modes
from .mlp import ElasticMlp
from .model import StaticTransformer

__all__ = ["TransformerSupernet"]


def _modes(block: TransformerBlock) -> list[Modes]:
    """(weight mode, activation mode) of each linear of ``block``."""
    per_channel = block.w_per_channel or (True,) * len(block.bits)
    return [(QuantMode(w, "channel" if pc else "tensor", True), QuantMode(a, "tensor", symmetric=False))
            for (w, a), pc in zip(block.bits, per_channel)]


class TransformerSupernet(SubnetSelection):
    """Elastic depth, width, heads and MLP hidden units with per-linear-group weight and activation bits."""

    def __init__(self, space: TransformerSpace, *, image_size: int | None = None, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(space, TransformerSpace):
            raise TypeError(f"TransformerSupernet needs a transformer space, got {space.name!r}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self._build(space)
        self.image_size = image_size

    def _build(self, space: TransformerSpace) -> None:
        self.space = space
        grans = ("tensor", "channel") if space.search_granularity else ("channel",)
        w_modes = [QuantMode(b, g, True) for b in space.w_bits for g in grans]
        a_modes = act_modes(space.a_bits)
        flb = space.first_last_bits
        fl_w, fl_a = [QuantMode(flb, "channel", True)], act_modes([flb])
        d, heads, e = space.widths[-1], space.heads[-1], space.head_dim
        hidden = max(space.hidden_units(d, r) for r in space.mlp_ratios)
        causal = space.front == "lm"
        if space.front == "lm":
            self.embed: nn.Module = ElasticTokenEmbedding(space.vocab_size, d, space.seq_len, w_modes=fl_w)
        else:
            self.embed = ElasticPatchEmbedding(space.embed_inputs, d, space.patch_size, space.tokens,
                                               space.pooling == "cls", w_modes=fl_w, a_modes=fl_a)
        self.attn = nn.ModuleList(ElasticAttention(d, heads, e, causal=causal, w_modes=w_modes, a_modes=a_modes)
                                  for _ in range(space.max_depth))
        self.mlp = nn.ModuleList(ElasticMlp(d, hidden, w_modes=w_modes, a_modes=a_modes)
                                 for _ in range(space.max_depth))
        self.head = ElasticClassifierHead(d, space.classes, front=space.front, pooling=space.pooling,
                                          w_modes=fl_w, a_modes=fl_a)

    # ---- choosing a subnet ----------------------------------------------------------------------
    def specs(self, genome: Genome, *, quantize: bool = True) -> tuple[TransformerBlock, ...]:
        """The blocks of ``genome``; with ``quantize=False`` every bit-width becomes 32 (float)."""
        specs = self.space.transformer_blocks(genome)
        if not quantize:
            specs = [dataclasses.replace(s, bits=tuple((32, 32) for _ in s.bits)) for s in specs]
        return tuple(specs)

    def _module(self, spec: TransformerBlock) -> tuple[nn.Module, tuple[Any, ...]]:
        """The elastic module of a block and the configuration it runs (``forward(x, *args)``,
        ``extract(*args)``): width, then heads or hidden units, then the modes of its linears."""
        if spec.op in ("embed", "head"):
            return getattr(self, spec.op), (spec.width, *_modes(spec))
        layer, part = spec.slot.split(".")
        module = (self.attn if part == "attn" else self.mlp)[int(layer[1:]) - 1]
        return module, (spec.width, spec.heads if spec.op == "attention" else spec.inner, *_modes(spec))

    def gene_quantizers(self, gene: str) -> list[nn.Module]:
        """The LSQ quantizers whose precision quantization gene ``gene`` (``l<i>.<group>.<kind>``) sets: the
        linear group's input quantizer (``a_bits``) or its weight quantizers (one per stacked part)."""
        layer, group, suffix = gene.split(".")
        linear = getattr((self.attn if group in ("qkv", "proj") else self.mlp)[int(layer[1:]) - 1], group)
        return [linear.a_quant] if suffix == "a_bits" else list(linear.w_quant)

    def reference_modes(self, genome: Genome) -> dict[str, Modes]:
        """(weight, activation) mode of each linear group of ``genome``, by the genes' prefix ``l<i>.<group>``."""
        out: dict[str, Modes] = {}
        for spec in self.specs(genome):
            if spec.op in ("attention", "mlp"):
                layer = spec.slot.split(".")[0]
                groups = ("qkv", "proj") if spec.op == "attention" else ("fc1", "fc2")
                out.update({f"{layer}.{g}": modes for g, modes in zip(groups, _modes(spec))})
        return out

    def _forward(self, x: Tensor, specs: tuple[TransformerBlock, ...]) -> Tensor:
        for spec in specs:
            module, args = self._module(spec)
            x = module(x, *args)
        return x

    # ---- extraction and maintenance -----------------------------------------------------------
    def extract(self, genome: Genome, *, quantize: bool = True) -> StaticTransformer:
        """A standalone module with the subnet's sliced weights and frozen quantizers (eval mode)."""
        specs = self.specs(genome, quantize=quantize)
        blocks = []
        for spec in specs:
            module, args = self._module(spec)
            blocks.append(module.extract(*args))
        return StaticTransformer(specs, blocks).to(self.device).eval()

    @torch.no_grad()
    def init_quantizers(self, x: Tensor) -> None:
        """LSQ-initialise every declared mode of every linear from ``x`` with the largest architecture.

        One forward per (weight bits, granularity) with activation bits cycled alongside, so no subnet's
        accuracy depends on which subnet happened to be evaluated first.
        """
        if self.quantizers_ready():
            return
        largest, quant = self.space.largest(), [g for g in self.space.genes if g.kind == "quant"]
        grans = ("tensor", "channel") if self.space.search_granularity else ("channel",)
        was_training = self.training
        self.train()
        try:
            for i, (w, g) in enumerate(itertools.product(self.space.w_bits, grans)):
                a = self.space.a_bits[i % len(self.space.a_bits)]
                values = {gene.name: {"w_bits": w, "a_bits": a, "w_granularity": g}[gene.name.rsplit(".", 1)[1]]
                          for gene in quant if self.space.is_active(largest, gene)}
                self.run(x, largest.with_values(values))
            for a in self.space.a_bits:  # every activation mode, whatever the cycle above reached
                values = {gene.name: a for gene in quant if gene.name.endswith(".a_bits")}
                self.run(x, largest.with_values(values))
        finally:
            self.train(was_training)

    def sort_channels(self) -> None:
        """Heads and MLP hidden units by importance in every layer (before elastic training)."""
        for attn, mlp in zip(self.attn, self.mlp):
            attn.sort_heads()
            mlp.sort_hidden()

    def check_splits(self, data: Any, *, source: str) -> None:
        """Refuse data the space's embedding and head cannot read: vocabulary, sequence length, images."""
        space = self.space
        if space.front == "lm":
            vocab, seq = getattr(data, "vocab_size", None), getattr(data, "seq_len", None)
            if vocab is None:
                raise InputError("a transformer with front 'lm' reads text; this dataset has no vocabulary",
                                 source=source, field="dataset.name")
            if vocab != space.vocab_size:
                raise InputError(f"the dataset has a vocabulary of {vocab} tokens but the search space expects "
                                 f"{space.vocab_size}; set search_space.options.vocab_size: {vocab}", source=source,
                                 field="vocab_size")
            if seq > space.seq_len:
                raise InputError(f"the dataset's sequences are {seq} tokens, longer than the space's seq_len "
                                 f"{space.seq_len}; set search_space.options.seq_len: {seq} or the dataset's "
                                 f"seq_len option", source=source, field="seq_len")
            return
        for field, want, got in (("in_channels", space.in_channels, getattr(data, "in_channels", None)),
                                 ("num_classes", space.num_classes, getattr(data, "num_classes", None)),
                                 ("image_size", space.image_size, getattr(data, "image_size", None))):
            if got is None:
                raise InputError("a transformer with front 'vit' reads images; this dataset has none",
                                 source=source, field="dataset.name")
            if want != got:
                raise InputError(f"the dataset has {field.replace('_', ' ')} {got} but the search space expects "
                                 f"{want}; set search_space.options.{field}: {got}", source=source, field=field)
