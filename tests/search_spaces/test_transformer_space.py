"""The ``transformer`` space: conformance, options refused by name, block signatures, analytic costs."""

from __future__ import annotations

import math

import pytest

from search_spaces import InputError, get_space
from search_spaces.testing import TINY_TRANSFORMER_LM, TINY_TRANSFORMER_VIT, SearchSpaceConformance
from search_spaces.transformer import TransformerBlock

LM = {**TINY_TRANSFORMER_LM, "mlp_ratios": [1, 2.5], "a_bits": [6, 8]}  # a fractional MLP ratio, activation bit genes
VIT = {**TINY_TRANSFORMER_VIT, "search_granularity": True}  # the granularity genes


@pytest.fixture(params=["lm", "vit", "vit-mean"])
def space(request):
    if request.param == "lm":
        return get_space("transformer", **LM)
    return get_space("transformer", **VIT, pooling="mean" if request.param == "vit-mean" else "cls")


class TestTransformerConformance(SearchSpaceConformance):
    pass


def test_genes_per_layer_and_linear_group():
    space = get_space("transformer", **LM)
    names = {g.name for g in space.genes}
    assert {"depth", "width", "l1.heads", "l2.mlp_ratio", "l1.qkv.w_bits", "l2.fc2.a_bits"} <= names
    assert space.gene("l2.heads").active_if == ("depth", 2) and space.gene("l1.heads").active_if is None
    vit = get_space("transformer", **VIT)
    assert vit.gene("l1.proj.w_granularity").choices == ("tensor", "channel")


def test_blocks_follow_the_genome():
    space = get_space("transformer", **LM)
    genome = space.largest().with_values({"depth": 1, "width": 16, "l1.heads": 2, "l1.mlp_ratio": 2.5,
                                           "l1.qkv.w_bits": 4, "l1.fc1.a_bits": 6})
    blocks = space.transformer_blocks(space.canonical(genome))
    assert [b.op for b in blocks] == ["embed", "attention", "mlp", "head"]
    embed, attn, mlp, head = blocks
    assert attn.heads == 2 and attn.inner == 2 * space.head_dim == 16 and attn.width == 16
    assert attn.bits == ((4, 8), (8, 8)) and mlp.bits == ((8, 6), (8, 8)) and mlp.inner == 40
    assert embed.inner == 11 and head.inner == 11 and all(b.seq_len == 12 for b in blocks)
    assert attn.key() == "attention-lm-t12-d16-i16-h2-w4a8.w8a8"
    for block in blocks:
        block.validate()
    records = space.block_records(space.canonical(genome))
    assert records[1]["key"] == attn.key() and records[1]["heads"] == 2


def test_head_dim_is_the_largest_width_over_the_largest_head_count():
    assert get_space("transformer", **LM).head_dim == 8
    assert get_space("transformer", **{**LM, "head_dim": 5}).head_dim == 5


@pytest.mark.parametrize("options, field", [
    ({"heads": [3]}, "heads"),  # 3 heads do not divide the largest width 32
    ({"front": "vit", "patch_size": 3}, "patch_size"),
    ({"w_bits": [7]}, "w_bits"),
    ({"a_bits": []}, "a_bits"),
    ({"front": "gpt"}, "front"),
    ({"pooling": "max"}, "pooling"),
    ({"mlp_ratios": [0]}, "mlp_ratios"),
    ({"seq_len": 10**6}, "seq_len"),
    ({"attn_bits": 4}, "attn_bits"),
])
def test_bad_options_are_refused_by_name(options, field):
    with pytest.raises(InputError, match=field) as err:
        get_space("transformer", **{**LM, **options})
    assert err.value.field == f"search_space.options.{field}"


def test_block_validation_names_the_field():
    good = TransformerBlock("attention", "lm", 8, 16, 16, 4, ((8, 8), (8, 8)))
    good.validate()
    with pytest.raises(InputError, match="heads do not divide"):
        TransformerBlock("attention", "lm", 8, 16, 16, 3, ((8, 8), (8, 8))).validate()
    with pytest.raises(InputError) as err:
        TransformerBlock("mlp", "lm", 8, 16, 32, 0, ((8, 8),)).validate()
    assert err.value.field == "bits"


def _one_layer(space, **changes):
    genome = space.smallest().with_values({"depth": 1, **changes})
    return space.canonical(genome)


def test_costs_by_hand_for_one_layer_lm():
    space = get_space("transformer", **LM)
    genome = _one_layer(space, width=16, **{"l1.heads": 2, "l1.mlp_ratio": 1})
    t, d, i, m, v, e = 12, 16, 16, 16, 11, 8
    # embed: table + positions; attention: qkv, 2·T²·i, proj; mlp: fc1, fc2; head: T·d·V
    macs = (t * d * 3 * i + 2 * t * t * i + t * i * d) + 2 * t * d * m + t * d * v
    params = (v * d + t * d) + (4 * i * d + 3 * i + d + 2 * d) + (2 * m * d + m + d + 2 * d) + (d * v + v + 2 * d)
    costs = space.costs(genome)
    assert costs.macs == macs and costs.params == params
    w, a = 4, 6  # the smallest genome: 4-bit weights, 6-bit activations in every group
    bitops = (t * d * 3 * i * w * a + 2 * t * t * i * 64 + t * i * d * w * a) + 2 * t * d * m * w * a + t * d * v * 64
    assert costs.bitops == bitops
    size = v * d * 8 / 8 + 4 * t * d  # token table at first_last_bits (8), positions as float32
    size += 4 * i * d * w / 8 + 4 * (3 * i + d + 2 * d)  # qkv + proj weights; biases and LayerNorm as float32
    size += 2 * m * d * w / 8 + 4 * (m + d + 2 * d)
    size += d * v * 8 / 8 + 4 * (v + 2 * d)
    assert math.isclose(costs.size_bytes, size)


def test_attention_costs_grow_with_the_square_of_the_sequence():
    short, long = (get_space("transformer", **{**LM, "seq_len": n}) for n in (12, 24))
    genome = {"depth": 1, "width": 16, "l1.heads": 2, "l1.mlp_ratio": 1}
    a, b = (s.costs(_one_layer(s, **genome)).macs for s in (short, long))
    i, d, m, v = 16, 16, 16, 11
    linear = lambda t: t * d * 4 * i + 2 * t * d * m + t * d * v  # noqa: E731
    assert b - a == (linear(24) - linear(12)) + 2 * (24 ** 2 - 12 ** 2) * i


def test_vit_tokens_and_head():
    space = get_space("transformer", **VIT)
    assert space.patches == 4 and space.tokens == 5 and space.embed_inputs == 16
    assert get_space("transformer", **{**VIT, "pooling": "mean"}).tokens == 4
    head = space.transformer_blocks(space.largest())[-1]
    assert head.costs(first_last_bits=8, attn_bits=8).macs == 32 * 10  # one pooled token


def test_the_blocks_list_of_cnn_spaces_is_refused():
    space = get_space("transformer", **LM)
    assert not space.has_blocks
    with pytest.raises(NotImplementedError, match="transformer_blocks"):
        space.blocks(space.largest())
