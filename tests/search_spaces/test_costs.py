import pytest

from search_spaces import BlockSpec, block_costs, get_space, model_costs


def test_mbconv_costs_by_hand():
    # 1x1 16->48 at 8x8, 3x3 depthwise 48 stride 2 -> 4x4, 1x1 48->24 at 4x4
    block = BlockSpec("mbconv", 8, 16, 24, kernel=3, stride=2, mid_ch=48, w_bits=4, a_bits=8)
    c = block_costs(block)
    macs = 16 * 48 * 64 + 48 * 9 * 16 + 48 * 24 * 16
    assert c.macs == macs
    weights = 16 * 48 + 48 * 9 + 48 * 24
    assert c.params == weights + 2 * (48 + 48 + 24)
    assert c.size_bytes == weights * 4 / 8 + 4 * (48 + 48 + 24)
    assert c.bitops == macs * 4 * 8


def test_se_and_head_costs_by_hand():
    se = block_costs(BlockSpec("mbconv", 4, 8, 8, kernel=3, mid_ch=32, se=True, shortcut="identity"))
    plain = block_costs(BlockSpec("mbconv", 4, 8, 8, kernel=3, mid_ch=32, shortcut="identity"))
    assert se.macs - plain.macs == 32 * 8 * 2 and se.params - plain.params == 32 * 8 * 2 + 8 + 32
    head = block_costs(BlockSpec("head", 2, 16, 10, mid_ch=0))
    assert head.macs == 160 and head.params == 170


def test_lower_bits_shrink_size_and_bitops_only():
    space = get_space("resnet")
    genome = space.largest()
    low = genome.with_values({g.name: 4 for g in space.genes if g.kind == "quant" and space.is_active(genome, g)})
    hi_c, lo_c = space.costs(genome), space.costs(low)
    assert hi_c.macs == lo_c.macs and hi_c.params == lo_c.params
    assert lo_c.size_bytes < hi_c.size_bytes and lo_c.bitops < hi_c.bitops


def test_model_costs_sum_blocks():
    space = get_space("mbv3")
    blocks = space.blocks(space.largest())
    assert model_costs(blocks).macs == sum(block_costs(b).macs for b in blocks)


def test_block_key_is_canonical_and_ignores_slot():
    a = BlockSpec("mbconv", 8, 16, 16, kernel=5, mid_ch=64, se=True, act="hswish", shortcut="identity",
                  w_bits=8, a_bits=6, slot="s1.b2")
    b = BlockSpec("mbconv", 8, 16, 16, kernel=5, mid_ch=64, se=True, act="hswish", shortcut="identity",
                  w_bits=8, a_bits=6, slot="s2.b1")
    assert a == b and a.key() == b.key() == "mbconv-i8x8x16-o16-k5-s1-m64-se1-hswish-identity-w8a6"


@pytest.mark.parametrize("field, kwargs", [
    ("op", {"op": "lstm"}), ("kernel", {"kernel": 4}), ("shortcut", {"shortcut": "identity", "stride": 2}),
])
def test_invalid_block_specs_name_the_field(field, kwargs):
    from search_spaces import InputError
    base = {"op": "mbconv", "in_size": 8, "in_ch": 8, "out_ch": 8, "kernel": 3, "mid_ch": 8}
    with pytest.raises(InputError, match=f"t.csv: {field}"):
        BlockSpec(**(base | kwargs)).validate(source="t.csv")
