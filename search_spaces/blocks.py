"""Block signatures: the deployable description of one block of a subnet.

A search space turns a genome into a list of :class:`BlockSpec` (stem, each active block, head).
Everything downstream reads these: analytic costs, latency-table keys, the supernet's subnet
extraction. A block is the unit of latency tables because per-op sums miss the effects between ops
inside a block (fusion and caches; nn-Meter, Zhang et al., MobiSys 2021, predicts at fused-kernel level
for the same reason).

Op types (the structure each one stands for; ``in``/``mid``/``out`` are channel counts):

- ``conv``: k×k conv (stride s) ``in -> out`` + BN + act. Used as the stem.
- ``mbconv``: 1×1 ``in -> mid`` + BN + act, k×k depthwise (stride s) + BN + act, optional
  squeeze-excite on ``mid``, 1×1 ``mid -> out`` + BN; identity shortcut when ``shortcut == "identity"``.
- ``bottleneck``: 1×1 ``in -> mid`` + BN + relu, k×k ``mid -> mid`` (stride s) + BN + relu, optional SE,
  1×1 ``mid -> out`` + BN, shortcut (identity, or ``proj`` = avg-pool(s) + 1×1 ``in -> out`` + BN),
  add, relu.
- ``head``: optional 1×1 ``in -> mid`` + BN + act (when ``mid > 0``), global average pool,
  linear ``(mid or in) -> out`` classes (with bias).
- ``dsconv_dual`` (MobileNetV1-dual, SpaceEvo): k×k depthwise (stride s) + BN + act, 1×1 ``in -> out``
  + BN + act, k×k depthwise + BN + act, 1×1 ``out -> out`` + BN + act, add the shortcut (identity, or
  ``proj`` as in ``bottleneck``). ``mid`` unused (0).
- ``fused_mbconv`` (EfficientNetV2): k×k ``in -> mid`` (stride s) + BN + act, optional SE on ``mid``,
  1×1 ``mid -> out`` + BN; identity shortcut when ``shortcut == "identity"``.

The four conv-chain op types (``mbconv``, ``bottleneck``, ``dsconv_dual``, ``fused_mbconv``) are declared once,
layer by layer, in ``search_spaces.chains``: their analytic costs (``search_spaces.costs``) and their static
modules and elastic blocks (``supernets.blocks``, one module per op family) are all derived from that declaration.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .errors import InputError, shown

__all__ = ["BlockSpec", "OP_TYPES", "ACTIVATIONS", "SHORTCUTS", "make_divisible", "se_channels"]

OP_TYPES = ("conv", "mbconv", "bottleneck", "head", "dsconv_dual", "fused_mbconv")
ACTIVATIONS = ("relu", "hswish")
SHORTCUTS = ("none", "identity", "proj")
MAX_BLOCK_SIZE = 4096
"""Largest input resolution of a block (the spaces' ``image_size`` bound)."""
MAX_BLOCK_CHANNELS = 2**20
"""Largest channel count of a block: a table row beyond it is damaged, not measured."""


def make_divisible(value: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """Round ``value`` to a multiple of ``divisor`` without going 10% below it (timm's rule)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < round_limit * value:
        new += divisor
    return new


def se_channels(channels: int) -> int:
    """Squeeze-excite bottleneck width: a quarter of the channels, divisible by 8 (MobileNetV3)."""
    return make_divisible(channels / 4, 8)


@dataclass(frozen=True)
class BlockSpec:
    """Signature of one block; its :meth:`key` is the latency-table key.

    ``slot`` says where the block sits in the network (``"stem"``, ``"s2.b1"``, ``"head"``); it is not
    part of the signature, so equal blocks in different places share one table entry.
    ``w_per_channel`` and ``w_symmetric`` describe the weight quantizer; latency tables ignore them
    (integer kernels run per-channel symmetric weights at the same speed).
    """

    op: str
    in_size: int
    in_ch: int
    out_ch: int
    kernel: int = 1
    stride: int = 1
    mid_ch: int = 0
    se: bool = False
    act: str = "relu"
    shortcut: str = "none"
    w_bits: int = 32
    a_bits: int = 32
    w_per_channel: bool = field(default=True, compare=False)
    w_symmetric: bool = field(default=True, compare=False)
    slot: str = field(default="", compare=False)

    @property
    def out_size(self) -> int:
        """Output height (= width) for 'same' padding of odd kernels."""
        if self.op == "head":
            return 1
        return math.ceil(self.in_size / self.stride)

    def signature(self) -> dict[str, Any]:
        """The fields that make up the key, in key order."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.compare}

    def key(self) -> str:
        """Canonical text key, e.g. ``mbconv-i16x16x24-o24-k5-s1-m96-se1-hswish-identity-w8a8``."""
        s = self
        return (f"{s.op}-i{s.in_size}x{s.in_size}x{s.in_ch}-o{s.out_ch}-k{s.kernel}-s{s.stride}"
                f"-m{s.mid_ch}-se{int(s.se)}-{s.act}-{s.shortcut}-w{s.w_bits}a{s.a_bits}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self, source: str | None = None) -> None:
        """Raise :class:`InputError` naming the first field that cannot describe a real block."""
        checks: list[tuple[str, bool, str]] = [
            ("op", self.op in OP_TYPES, f"one of {OP_TYPES}"),
            ("act", self.act in ACTIVATIONS, f"one of {ACTIVATIONS}"),
            ("shortcut", self.shortcut in SHORTCUTS, f"one of {SHORTCUTS}"),
            ("in_size", 1 <= self.in_size <= MAX_BLOCK_SIZE, f"an integer in 1..{MAX_BLOCK_SIZE}"),
            ("in_ch", 1 <= self.in_ch <= MAX_BLOCK_CHANNELS, f"an integer in 1..{MAX_BLOCK_CHANNELS}"),
            ("out_ch", 1 <= self.out_ch <= MAX_BLOCK_CHANNELS, f"an integer in 1..{MAX_BLOCK_CHANNELS}"),
            ("kernel", 1 <= self.kernel <= 63 and self.kernel % 2 == 1, "an odd integer in 1..63"),
            ("stride", 1 <= self.stride <= 64, "an integer in 1..64"),
            ("mid_ch", 0 <= self.mid_ch <= MAX_BLOCK_CHANNELS, f"an integer in 0..{MAX_BLOCK_CHANNELS}"),
            ("w_bits", 1 <= self.w_bits <= 32, "an integer in 1..32"),
            ("a_bits", 1 <= self.a_bits <= 32, "an integer in 1..32"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise InputError(f"got {shown(getattr(self, name))}, expected {expected}", source=source, field=name)
        if self.op in ("mbconv", "bottleneck", "fused_mbconv") and self.mid_ch < 1:
            raise InputError(f"a {self.op} block needs mid_ch >= 1, got {self.mid_ch}", source=source, field="mid_ch")
        if self.shortcut == "identity" and (self.stride != 1 or self.in_ch != self.out_ch):
            raise InputError("an identity shortcut needs stride 1 and in_ch == out_ch", source=source, field="shortcut")

