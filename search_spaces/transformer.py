"""``transformer``: an elastic pre-LayerNorm transformer with per-linear-group bit-widths (SimQ-NAS style).

Two front ends share the layers: ``lm`` (token + learned position embedding, causal attention, a
next-token classifier on every position) and ``vit`` (patch embedding, class token or mean pooling,
one classifier on the pooled token).

Genes (``i`` = 1 … max depth; layers beyond the shallowest depth are active while ``depth >= i``):

- ``depth``: the leading layers that run; ``width``: the embedding (residual stream) width, shared
  by every layer, as in SimQ-NAS's super-transformer.
- ``l<i>.heads``: attention heads; every head is ``head_dim`` wide (the largest subnet's width over its
  heads, unless ``head_dim`` is given), so the attention's inner width is ``heads · head_dim``.
- ``l<i>.mlp_ratio``: MLP hidden units = ``round(mlp_ratio · width)``.
- per linear group ``g`` of layer ``i`` (``qkv``, ``proj`` the attention output, ``fc1`` MLP up,
  ``fc2`` MLP down): ``l<i>.<g>.w_bits`` and ``l<i>.<g>.a_bits`` (the group's input), and with
  ``search_granularity`` ``l<i>.<g>.w_granularity`` (``tensor`` or ``channel``).

The embedding and the classifier run at ``first_last_bits``. Softmax and LayerNorm stay float.

Cost conventions (:meth:`TransformerSpace.costs`; ``T`` tokens, ``d`` width, ``i`` attention inner
width, ``m`` MLP hidden units, ``V`` vocabulary or classes):

- MACs: every linear ``T·in·out``; attention ``2·T²·i`` (scores and the weighted sum, the whole square
  also for causal attention, which is what the deployed graph multiplies); the ViT patch embedding
  ``patches · C·P² · d``; the LM head ``T·d·V`` (every position is classified), the ViT head ``d·V``.
  The token lookup, LayerNorm, softmax, GELU and adds are free, as BN and activations are for CNNs.
- ``params`` equals the parameter count of the module ``supernets.transformer`` extracts.
- ``size_bytes``: linear and embedding weights at their weight bits / 8 (the embeddings and the head
  at ``first_last_bits``), biases, LayerNorm parameters, position embeddings and the class token as
  float32.
- ``bitops`` = Σ MACs · operand bits: linears ``w_bits · a_bits``, attention ``attn_bits²`` (the
  attention matmuls are not searched; 8 is what ONNX Runtime INT8 runs), embedding/head
  ``first_last_bits²``.

The subnet as blocks (:meth:`TransformerSpace.transformer_blocks`: embed, attention and MLP per layer,
head) is the single description the supernet, the costs and latency keys read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from .cnn import BITS_ALLOWED, check_list, check_option, int_tuple
from .costs import Costs
from .errors import InputError, shown
from .genome import Gene, Genome
from .registry import register_space
from .space import SearchSpace

__all__ = ["TransformerSpace", "TransformerBlock", "FRONTS", "LINEAR_GROUPS", "POOLINGS", "TRANSFORMER_OPS"]

FRONTS = ("lm", "vit")
POOLINGS = ("cls", "mean")
LINEAR_GROUPS = ("qkv", "proj", "fc1", "fc2")
TRANSFORMER_OPS = ("embed", "attention", "mlp", "head")
ATTN_BITS = (8, 16, 32)
_BOUNDS = {"vocab_size": 1_000_000, "seq_len": 65_536, "image_size": 4096, "in_channels": 64, "patch_size": 64,
           "num_classes": 100_000, "depths": 256, "widths": 16_384, "heads": 256, "head_dim": 1024}


@dataclass(frozen=True)
class TransformerBlock:
    """Signature of one transformer block; :meth:`key` is its latency-table key.

    ``inner`` is the block's hidden width: attention ``heads · head_dim``, MLP hidden units, the
    embedding's input (vocabulary for ``lm``, ``C·P²`` patch features for ``vit``), the head's classes.
    ``bits`` holds ``(w_bits, a_bits)`` of each linear of the block in forward order (attention: qkv,
    proj; MLP: fc1, fc2; embed and head: one, the ``lm`` token table's as ``(first_last_bits, 32)``: it reads
    no activations).
    """

    op: str
    front: str
    seq_len: int  # tokens in the block's input (patches + class token for vit)
    width: int
    inner: int
    heads: int = 0
    bits: tuple[tuple[int, int], ...] = ()
    w_per_channel: tuple[bool, ...] = field(default=(), compare=False)
    slot: str = field(default="", compare=False)

    @property
    def causal(self) -> bool:
        return self.front == "lm"

    def key(self) -> str:
        """e.g. ``attention-lm-t64-d128-i128-h4-w8a8.w4a8``."""
        bits = ".".join(f"w{w}a{a}" for w, a in self.bits) or "float"
        return f"{self.op}-{self.front}-t{self.seq_len}-d{self.width}-i{self.inner}-h{self.heads}-{bits}"

    def validate(self, source: str | None = None) -> None:
        """Raise :class:`InputError` naming the first field that cannot describe a real block."""
        n_linears = {"embed": 1, "attention": 2, "mlp": 2, "head": 1}
        checks = [("op", self.op in TRANSFORMER_OPS, f"one of {TRANSFORMER_OPS}"),
                  ("front", self.front in FRONTS, f"one of {FRONTS}"),
                  ("seq_len", 1 <= self.seq_len <= _BOUNDS["seq_len"], f"an integer in 1..{_BOUNDS['seq_len']}"),
                  ("width", 1 <= self.width <= _BOUNDS["widths"], f"an integer in 1..{_BOUNDS['widths']}"),
                  ("inner", self.inner >= 1, "a positive integer"),
                  ("heads", (self.heads >= 1) == (self.op == "attention"), "heads >= 1 exactly for attention"),
                  ("bits", len(self.bits) == n_linears.get(self.op, -1)
                   and all(1 <= b <= 32 for pair in self.bits for b in pair),
                   f"{n_linears.get(self.op, '?')} (w_bits, a_bits) pairs in 1..32")]
        for name, ok, expected in checks:
            if not ok:
                raise InputError(f"got {shown(getattr(self, name))}, expected {expected}", source=source, field=name)
        if self.op == "attention" and self.inner % self.heads:
            raise InputError(f"{self.heads} heads do not divide the attention width {self.inner}", source=source,
                             field="heads")

    def costs(self, *, first_last_bits: int, attn_bits: int, cls_token: bool = False,
              patches: int = 0) -> Costs:
        """Analytic costs of this block (conventions in the module docstring)."""
        t, d, i = self.seq_len, self.width, self.inner
        ln = 2 * d  # one LayerNorm (weight and bias)
        if self.op == "attention":
            (wq, aq), (wp, ap) = self.bits
            macs_qkv, macs_attn, macs_proj = t * d * 3 * i, 2 * t * t * i, t * i * d
            params = 3 * i * d + 3 * i + i * d + d + ln
            size = 3 * i * d * wq / 8 + i * d * wp / 8 + 4 * (3 * i + d + ln)
            bitops = macs_qkv * wq * aq + macs_attn * attn_bits ** 2 + macs_proj * wp * ap
            return Costs(macs_qkv + macs_attn + macs_proj, params, size, bitops)
        if self.op == "mlp":
            (w1, a1), (w2, a2) = self.bits
            macs = t * d * i
            return Costs(2 * macs, 2 * i * d + i + d + ln, i * d * (w1 + w2) / 8 + 4 * (i + d + ln),
                         macs * (w1 * a1 + w2 * a2))
        flb = first_last_bits
        if self.op == "embed":
            if self.front == "lm":  # token lookup (i = vocabulary) and position embedding
                return Costs(0, i * d + t * d, i * d * flb / 8 + 4 * t * d, 0)
            macs = patches * i * d  # patch projection (i = C·P²), bias, class token, positions
            floats = d + d * int(cls_token) + t * d
            return Costs(macs, i * d + floats, i * d * flb / 8 + 4 * floats, macs * flb * flb)
        tokens = t if self.front == "lm" else 1  # head: final LayerNorm, classifier (i = classes)
        macs = tokens * d * i
        return Costs(macs, d * i + i + ln, d * i * flb / 8 + 4 * (i + ln), macs * flb * flb)


def _numbers(name: str, values: Any) -> tuple[int | float, ...]:
    """Positive ratios, integral ones as ints (so genomes written by hand match), sorted."""
    check_list(name, values)
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 16 for v in values)
    check_option(name, ok, values, "a non-empty list of numbers in (0, 16]")
    check_option(name, len(set(values)) == len(values), values, "no repeated values")
    return tuple(sorted(int(v) if float(v).is_integer() else float(v) for v in values))


def _bounded(name: str, value: Any, minimum: int = 1) -> int:
    top = _BOUNDS[name]
    ok = isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= top
    check_option(name, ok, value, f"an integer in {minimum}..{top}")
    return int(value)


def _bounded_list(name: str, values: Any) -> tuple[int, ...]:
    vals = tuple(sorted(int_tuple(name, values)))
    check_option(name, vals[-1] <= _BOUNDS[name], list(vals), f"integers in 1..{_BOUNDS[name]}")
    return vals


@register_space("transformer")
class TransformerSpace(SearchSpace):
    """Elastic depth, width, heads and MLP ratio with per-linear-group W/A bits (see the module docstring)."""

    has_blocks: ClassVar[bool] = False  # its blocks are TransformerBlock, not CNN BlockSpec

    def __init__(self, *, front: str = "lm", vocab_size: int = 65, seq_len: int = 64, image_size: int = 32,
                 in_channels: int = 3, patch_size: int = 4, num_classes: int = 10, pooling: str = "cls",
                 depths: Sequence[int] = (2, 3, 4), widths: Sequence[int] = (64, 96, 128),
                 heads: Sequence[int] = (2, 4), head_dim: int | None = None,
                 mlp_ratios: Sequence[float] = (2, 3, 4), w_bits: Sequence[int] = (4, 8),
                 a_bits: Sequence[int] = (8,), first_last_bits: int = 8, attn_bits: int = 8,
                 search_granularity: bool = False) -> None:
        check_option("front", front in FRONTS, front, f"one of {FRONTS}")
        check_option("pooling", pooling in POOLINGS, pooling, f"one of {POOLINGS}")
        self.front, self.pooling = front, pooling
        self.vocab_size = _bounded("vocab_size", vocab_size, 2)
        self.seq_len = _bounded("seq_len", seq_len)
        self.image_size, self.in_channels = _bounded("image_size", image_size), _bounded("in_channels", in_channels)
        self.patch_size = _bounded("patch_size", patch_size)
        self.num_classes = _bounded("num_classes", num_classes, 2)
        if front == "vit":
            check_option("patch_size", image_size % patch_size == 0, patch_size,
                         f"a patch size dividing image_size {image_size}")
        self.depths, self.widths = _bounded_list("depths", depths), _bounded_list("widths", widths)
        self.heads = _bounded_list("heads", heads)
        if head_dim is None:
            if self.widths[-1] % self.heads[-1]:
                raise InputError(f"the largest head count {self.heads[-1]} does not divide the largest width "
                                 f"{self.widths[-1]}; choose heads that divide it or set head_dim",
                                 field="search_space.options.heads")
            head_dim = self.widths[-1] // self.heads[-1]
        self.head_dim = _bounded("head_dim", head_dim)
        self.mlp_ratios = _numbers("mlp_ratios", mlp_ratios)
        self.w_bits = tuple(sorted(int_tuple("w_bits", w_bits, allowed=BITS_ALLOWED)))
        self.a_bits = tuple(sorted(int_tuple("a_bits", a_bits, allowed=BITS_ALLOWED)))
        check_option("first_last_bits", first_last_bits in BITS_ALLOWED, first_last_bits, f"one of {BITS_ALLOWED}")
        check_option("attn_bits", attn_bits in ATTN_BITS, attn_bits, f"one of {ATTN_BITS}")
        self.first_last_bits, self.attn_bits = first_last_bits, attn_bits
        self.search_granularity = bool(search_granularity)
        super().__init__()

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"front": self.front}
        if self.front == "lm":
            opts |= {"vocab_size": self.vocab_size, "seq_len": self.seq_len}
        else:
            opts |= {"image_size": self.image_size, "in_channels": self.in_channels, "patch_size": self.patch_size,
                     "num_classes": self.num_classes, "pooling": self.pooling}
        return opts | {"depths": list(self.depths), "widths": list(self.widths), "heads": list(self.heads),
                       "head_dim": self.head_dim, "mlp_ratios": list(self.mlp_ratios), "w_bits": list(self.w_bits),
                       "a_bits": list(self.a_bits), "first_last_bits": self.first_last_bits,
                       "attn_bits": self.attn_bits, "search_granularity": self.search_granularity}

    # ---- shape of the subnets ----------------------------------------------------------------------
    @property
    def max_depth(self) -> int:
        return self.depths[-1]

    @property
    def patches(self) -> int:
        """Image patches of the ``vit`` front end (0 for ``lm``)."""
        return (self.image_size // self.patch_size) ** 2 if self.front == "vit" else 0

    @property
    def tokens(self) -> int:
        """Tokens every layer processes: the sequence length, or the patches plus the class token."""
        if self.front == "lm":
            return self.seq_len
        return self.patches + int(self.pooling == "cls")

    @property
    def classes(self) -> int:
        """Outputs of the classifier: the vocabulary for ``lm``, the classes for ``vit``."""
        return self.vocab_size if self.front == "lm" else self.num_classes

    @property
    def embed_inputs(self) -> int:
        """Inputs of the embedding: the vocabulary, or the ``C·P²`` features of one patch."""
        return self.vocab_size if self.front == "lm" else self.in_channels * self.patch_size ** 2

    def hidden_units(self, width: int, ratio: float) -> int:
        """MLP hidden units of a layer of ``width`` at ``ratio``."""
        return max(1, int(round(ratio * width)))

    # ---- genes -----------------------------------------------------------------------------------
    def _declare_genes(self) -> list[Gene]:
        genes = [Gene("depth", self.depths), Gene("width", self.widths)]
        for i in range(1, self.max_depth + 1):
            active = None if i <= self.depths[0] else ("depth", i)
            genes += [Gene(f"l{i}.heads", self.heads, "arch", active),
                      Gene(f"l{i}.mlp_ratio", self.mlp_ratios, "arch", active)]
            for group in LINEAR_GROUPS:
                genes += [Gene(f"l{i}.{group}.w_bits", self.w_bits, "quant", active),
                          Gene(f"l{i}.{group}.a_bits", self.a_bits, "quant", active)]
                if self.search_granularity:
                    genes.append(Gene(f"l{i}.{group}.w_granularity", ("tensor", "channel"), "quant", active))
        return genes

    def blocks(self, genome: Genome) -> list[Any]:
        raise NotImplementedError("space 'transformer' has no CNN block list; use transformer_blocks(genome)")

    def transformer_blocks(self, genome: Genome) -> list[TransformerBlock]:
        """The subnet of ``genome``: embed, (attention, MLP) per active layer, head — in forward order."""
        self.validate(genome)
        d, t, flb, front = int(genome["width"]), self.tokens, self.first_last_bits, self.front
        embed_bits = (flb, flb) if front == "vit" else (flb, 32)  # a token lookup reads no activations
        out = [TransformerBlock("embed", front, t, d, self.embed_inputs, bits=(embed_bits,), w_per_channel=(True,),
                                slot="embed")]
        for i in range(1, int(genome["depth"]) + 1):
            p = f"l{i}"
            bits = {g: (int(genome[f"{p}.{g}.w_bits"]), int(genome[f"{p}.{g}.a_bits"])) for g in LINEAR_GROUPS}
            per_channel = {g: (genome[f"{p}.{g}.w_granularity"] == "channel") if self.search_granularity else True
                           for g in LINEAR_GROUPS}
            heads = int(genome[f"{p}.heads"])
            out.append(TransformerBlock("attention", front, t, d, heads * self.head_dim, heads,
                                        (bits["qkv"], bits["proj"]), (per_channel["qkv"], per_channel["proj"]),
                                        slot=f"{p}.attn"))
            out.append(TransformerBlock("mlp", front, t, d, self.hidden_units(d, float(genome[f"{p}.mlp_ratio"])), 0,
                                        (bits["fc1"], bits["fc2"]), (per_channel["fc1"], per_channel["fc2"]),
                                        slot=f"{p}.mlp"))
        out.append(TransformerBlock("head", front, t, d, self.classes, bits=((flb, flb),), w_per_channel=(True,),
                                    slot="head"))
        return out

    def block_records(self, genome: Genome) -> list[dict[str, Any]]:
        return [{**asdict(b), "key": b.key()} for b in self.transformer_blocks(genome)]

    # ---- costs -----------------------------------------------------------------------------------
    def costs(self, genome: Genome) -> Costs:
        """Analytic MACs, parameters, size and BitOps (conventions in the module docstring)."""
        total = Costs(0, 0, 0.0, 0)
        for block in self.transformer_blocks(genome):
            total = total + block.costs(first_last_bits=self.first_last_bits, attn_bits=self.attn_bits,
                                        cls_token=self.pooling == "cls", patches=self.patches)
        return total
