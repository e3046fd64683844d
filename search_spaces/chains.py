"""Conv-chain op types, declared once: the layers of ``mbconv``, ``fused_mbconv``, ``bottleneck`` and ``dsconv_dual``.

Each of these op types is a main path of conv + BN + act layers (:class:`Step`), an optional squeeze-excite
after one of them and a shortcut around them, declared here as a :class:`Chain` (:data:`CHAINS`, by op type).
Everything else reads the declaration: :mod:`search_spaces.costs` derives each op's analytic layer list from it,
and ``supernets.blocks.chain`` builds, runs, extracts and channel-sorts the static module and its elastic twin
from it (the family modules in ``supernets.blocks`` pair each declaration with its two classes).
Pure Python: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from .blocks import BlockSpec

__all__ = ["BOTTLENECK", "CHAINS", "Chain", "DSCONV_DUAL", "FUSED_MBCONV", "MBCONV", "SPEC_ACT", "Step"]

_CHANNELS = {"in": "in_ch", "mid": "mid_ch", "out": "out_ch"}
SPEC_ACT = "spec"
"""``Step.act`` value meaning the block's own activation (``BlockSpec.act``)."""


@dataclass(frozen=True)
class Step:
    """One conv + BN + act layer of a block's main path.

    ``in_ch`` and ``out_ch`` name a channel field of the block (``"in"``, ``"mid"``, ``"out"``); ``kernel``
    is 1 or ``"k"`` (the block's kernel); ``strided`` layers take the block's stride (and the layers before the
    strided one run at the block's input size, the others at its output size); ``depthwise`` layers have one
    group per channel; ``act`` is an activation name, None, or :data:`SPEC_ACT` (the block's activation).
    """

    name: str
    in_ch: str
    out_ch: str
    kernel: int | str = 1
    strided: bool = False
    depthwise: bool = False
    act: str | None = None

    def __post_init__(self) -> None:
        if self.in_ch not in _CHANNELS or self.out_ch not in _CHANNELS:
            raise ValueError(f"step {self.name!r}: channels name one of {sorted(_CHANNELS)}")
        if self.kernel not in (1, "k"):
            raise ValueError(f"step {self.name!r}: kernel is 1 or 'k'")
        if self.depthwise and self.in_ch != self.out_ch:
            raise ValueError(f"depthwise step {self.name!r} keeps its channels")

    def channels(self, spec: BlockSpec) -> tuple[int, int]:
        """(input, output) channels of this layer in block ``spec``."""
        return getattr(spec, _CHANNELS[self.in_ch]), getattr(spec, _CHANNELS[self.out_ch])

    def kernel_of(self, spec: BlockSpec) -> int:
        return spec.kernel if self.kernel == "k" else 1

    def stride_of(self, spec: BlockSpec) -> int:
        return spec.stride if self.strided else 1

    def act_of(self, spec: BlockSpec) -> str | None:
        return spec.act if self.act == SPEC_ACT else self.act


@dataclass(frozen=True)
class Chain:
    """How one op family is built from steps.

    ``hidden`` = (producer, consumer): the channels between them are the elastic hidden channels that
    ``sort_channels`` reorders by the consumer's input importance. ``se_after`` names the step whose output
    the squeeze-excite gates when ``BlockSpec.se`` (None: the family has no SE). ``shortcuts`` are the shortcut
    kinds the family builds (``"identity"``, ``"proj"`` = average-pool for the stride, then 1×1 ``in -> out``
    conv + BN); any other ``BlockSpec.shortcut`` means ``otherwise``. ``post_act`` is the activation after the
    residual add (None: none).
    """

    steps: tuple[Step, ...]
    hidden: tuple[str, str]
    se_after: str | None = None
    shortcuts: tuple[str, ...] = ("identity",)
    otherwise: str = "none"
    post_act: str | None = None

    def __post_init__(self) -> None:
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names) or {"se", "shortcut", "identity", "pool", "proj", "act"} & set(names):
            raise ValueError(f"step names must be distinct and not name the block's other parts: {names}")
        lo, hi = (names.index(n) for n in self.hidden)
        if not lo < hi:
            raise ValueError(f"hidden channels run from an earlier step to a later one, got {self.hidden}")
        if self.se_after is not None and self.se_after not in names[lo:hi]:
            raise ValueError("the SE gates hidden channels (so it sorts with them)")
        if not set(self.shortcuts) <= {"identity", "proj"} or self.otherwise not in ("none", "identity"):
            raise ValueError(f"unknown shortcut kinds {self.shortcuts}, {self.otherwise!r}")

    def shortcut(self, spec: BlockSpec) -> str:
        """The shortcut kind the block runs: ``"none"``, ``"identity"`` or ``"proj"``."""
        return spec.shortcut if spec.shortcut in self.shortcuts else self.otherwise

    @property
    def has_proj(self) -> bool:
        return "proj" in self.shortcuts


MBCONV = Chain(
    steps=(Step("expand", "in", "mid", act=SPEC_ACT),
           Step("dw", "mid", "mid", "k", strided=True, depthwise=True, act=SPEC_ACT),
           Step("project", "mid", "out")),
    hidden=("expand", "project"), se_after="dw", shortcuts=("identity",))
"""MobileNetV2/V3 inverted residual: 1×1 expand, k×k depthwise, optional SE, 1×1 project, optional identity add."""

FUSED_MBCONV = Chain(
    steps=(Step("fused", "in", "mid", "k", strided=True, act=SPEC_ACT),
           Step("project", "mid", "out")),
    hidden=("fused", "project"), se_after="fused", shortcuts=("identity",))
"""EfficientNetV2's FusedMBConv: k×k expand conv (strided), optional SE, 1×1 project, optional identity add."""

BOTTLENECK = Chain(
    steps=(Step("conv1", "in", "mid", act="relu"),
           Step("conv2", "mid", "mid", "k", strided=True, act="relu"),
           Step("conv3", "mid", "out")),
    hidden=("conv1", "conv3"), se_after="conv2",
    shortcuts=("identity", "proj"), otherwise="identity",  # a bottleneck always adds its input back
    post_act="relu")
"""ResNet bottleneck; the projection shortcut average-pools for the stride (once-for-all style)."""

DSCONV_DUAL = Chain(
    steps=(Step("dw1", "in", "in", "k", strided=True, depthwise=True, act=SPEC_ACT),
           Step("pw1", "in", "out", act=SPEC_ACT),
           Step("dw2", "out", "out", "k", depthwise=True, act=SPEC_ACT),
           Step("pw2", "out", "out", act=SPEC_ACT)),
    hidden=("pw1", "pw2"),  # the channels between pw1 and pw2 move together, ordered by how much pw2 reads them
    shortcuts=("identity", "proj"))
"""SpaceEvo's MobileNetV1-dual: two depthwise-separable convs (the first strided) with a residual."""

CHAINS: dict[str, Chain] = {"mbconv": MBCONV, "fused_mbconv": FUSED_MBCONV, "bottleneck": BOTTLENECK,
                            "dsconv_dual": DSCONV_DUAL}
"""The declaration of every conv-chain op type, by ``BlockSpec.op``."""
