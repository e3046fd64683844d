"""The chain blocks (mbconv, fused_mbconv, bottleneck, dsconv_dual) keep the layer names of the hand-written
blocks they replaced (the state-dict keys of checkpoints), and a chain declaration is checked when made."""

import pytest
import torch

from search_spaces import BlockSpec
from supernets.blocks import Chain, Step, build_block, build_elastic_block
from supernets.elastic import act_modes
from supernets.quant import QuantMode

W = [QuantMode(8, "channel", True)]

# (op, shortcut, stride): static children, elastic children (se present)
LAYOUTS = [
    ("mbconv", "identity", 1, ["expand", "dw", "se", "project"], ["expand", "dw", "se", "project"]),
    ("fused_mbconv", "none", 2, ["fused", "se", "project"], ["fused", "se", "project"]),
    ("bottleneck", "proj", 2, ["conv1", "conv2", "se", "conv3", "shortcut", "act"],
     ["conv1", "conv2", "se", "conv3", "pool", "proj", "act"]),
    ("bottleneck", "identity", 1, ["conv1", "conv2", "se", "conv3", "shortcut", "act"],
     ["conv1", "conv2", "se", "conv3", "pool", "act"]),
    ("dsconv_dual", "proj", 2, ["dw1", "pw1", "dw2", "pw2", "shortcut"], ["dw1", "pw1", "dw2", "pw2", "pool", "proj"]),
    ("dsconv_dual", "none", 1, ["dw1", "pw1", "dw2", "pw2"], ["dw1", "pw1", "dw2", "pw2", "pool"]),
]


@pytest.mark.parametrize(("op", "shortcut", "stride", "static", "elastic"), LAYOUTS)
def test_layer_names_are_those_of_the_hand_written_blocks(op, shortcut, stride, static, elastic):
    same = shortcut == "identity"
    spec = BlockSpec(op, 8, 16, 16 if same else 24, kernel=3, stride=stride, mid_ch=0 if op == "dsconv_dual" else 32,
                     se=True, act="hswish", shortcut=shortcut)
    assert [n for n, _ in build_block(spec).named_children()] == static
    block = build_elastic_block(spec, W, act_modes([8]))
    assert [n for n, _ in block.named_children()] == elastic
    block(torch.randn(2, 16, 8, 8), spec)  # initialises the quantizers extraction freezes
    assert [n for n, _ in block.extract(spec).named_children()] == static
    if shortcut == "proj":
        assert [k for k in build_block(spec).state_dict() if k.startswith("shortcut.")][0] == "shortcut.1.conv.weight"


@pytest.mark.parametrize("bad", [
    lambda: Step("x", "in", "wide"),
    lambda: Step("x", "in", "out", kernel=3),
    lambda: Step("x", "in", "mid", depthwise=True),
    lambda: Chain((Step("a", "in", "mid"), Step("a", "mid", "out")), hidden=("a", "a")),
    lambda: Chain((Step("a", "in", "mid"), Step("b", "mid", "out")), hidden=("b", "a")),
    lambda: Chain((Step("a", "in", "mid"), Step("b", "mid", "out")), hidden=("a", "b"), se_after="b"),
    lambda: Chain((Step("se", "in", "mid"), Step("b", "mid", "out")), hidden=("se", "b")),
    lambda: Chain((Step("a", "in", "mid"), Step("b", "mid", "out")), hidden=("a", "b"), shortcuts=("concat",)),
])
def test_a_wrong_declaration_raises(bad):
    with pytest.raises(ValueError):
        bad()
