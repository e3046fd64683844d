"""The ``gnn`` space: shipped conformance suite, option errors, conditional genes, costs by hand."""

import itertools

import pytest

from search_spaces import InputError, get_space
from search_spaces.testing import SearchSpaceConformance

TINY = dict(num_layers=2, in_features=10, num_classes=3, num_nodes=5, num_edges=8, hidden=[4, 8], heads=[1, 2],
            ops=["linear", "gcn", "gat", "sage"], aggregations=["add", "max"], activations=["relu", "tanh"],
            w_bits=[1, 4, 8], a_bits=[4, 8], c_bits=[2, 4])


@pytest.fixture(params=["default", "citeseer-3-layers", "no-coefficient-ops", "tiny"])
def space(request):
    return {
        "default": lambda: get_space("gnn"),
        "citeseer-3-layers": lambda: get_space("gnn", num_layers=3, in_features=3703, num_classes=6, num_nodes=3327,
                                               num_edges=9104, hidden=[16, 32], heads=[1, 2, 4, 8, 16]),
        "no-coefficient-ops": lambda: get_space("gnn", ops=["linear", "gin", "sage"], skips=["none"]),
        "tiny": lambda: get_space("gnn", **TINY),
    }[request.param]()


class TestGnnConformance(SearchSpaceConformance):
    pass


@pytest.mark.parametrize("key, value", [
    ("w_bits", [3]), ("a_bits", [1, 64]), ("c_bits", []), ("ops", ["gcnn"]), ("aggregations", ["sum"]),
    ("activations", ["swish"]), ("hidden", [0, 8]), ("heads", [3]), ("num_layers", 0), ("num_classes", 1),
    ("skips", ["identity"]), ("in_features", "1433"), ("hidden", [8, 8]),
])
def test_bad_options_name_the_option(key, value):
    with pytest.raises(InputError, match=rf"search_space\.options\.{key}"):
        get_space("gnn", **{key: value})


def test_unknown_option_gets_a_hint():
    with pytest.raises(InputError, match="did you mean 'hidden'"):
        get_space("gnn", hiden=[8])


def test_conditional_genes_follow_the_op():
    space = get_space("gnn", **TINY)
    genome = space.make({**space.smallest().as_dict(), "l1.op": "sage"})
    active = {g.name for g in space.genes if space.is_active(genome, g)}
    assert "l1.aggr" in active and "l1.heads" not in active and "l1.c_bits" not in active
    gat = space.make({**genome.as_dict(), "l1.op": "gat"})
    assert {"l1.heads", "l1.c_bits"} <= {g.name for g in space.genes if space.is_active(gat, g)}
    assert "l2.hidden" not in genome and "l2.heads" not in genome  # the classifier layer has neither


def test_cardinality_counts_canonical_genomes():
    space = get_space("gnn", num_layers=2, in_features=4, num_classes=2, ops=["linear", "gcn", "gat"], hidden=[2, 4],
                      heads=[1, 2], aggregations=["add", "mean"], activations=["relu"], skips=["none", "linear"],
                      w_bits=[4, 8], a_bits=[8], c_bits=[2, 4])
    seen = {space.from_indices(ix).key for ix in itertools.product(*[range(len(g.choices)) for g in space.genes])}
    assert space.cardinality() == len(seen)


def test_costs_by_hand():
    space = get_space("gnn", **TINY)
    genome = space.make({"l1.op": "gat", "l1.aggr": "max", "l1.heads": 2, "l1.hidden": 4, "l1.act": "relu",
                         "l1.skip": "linear", "l1.w_bits": 4, "l1.a_bits": 8, "l1.c_bits": 2,
                         "l2.op": "gcn", "l2.aggr": "add", "l2.skip": "none", "l2.w_bits": 8, "l2.a_bits": 4,
                         "l2.c_bits": 4})
    n, e_loops = 5, 8 + 5
    # l1: GAT 10 -> 4 (W 40, att 2*4, bias 4) + linear skip 10 -> 4 (40); l2: GCN 4 -> 3 (W 12, bias 3)
    assert space.costs(genome).params == (40 + 8 + 4 + 40) + (12 + 3)
    assert space.costs(genome).size_bytes == (40 + 8 + 40) * 4 / 8 + 4 * 4 + 12 * 8 / 8 + 4 * 3
    l1_w, l1_att, l1_prop, l1_skip = n * 10 * 4, 2 * n * 4, e_loops * 4, n * 10 * 4
    l2_w, l2_prop = n * 4 * 3, e_loops * 3
    costs = space.costs(genome)
    assert costs.macs == l1_w + l1_att + l1_prop + l1_skip + l2_w + l2_prop
    assert costs.bitops == ((l1_w + l1_att + l1_skip) * 4 * 8 + l1_prop * 2 * 8
                            + l2_w * 8 * 4 + l2_prop * 4 * 4)


def test_sage_and_gin_costs_by_hand():
    space = get_space("gnn", num_layers=2, in_features=10, num_classes=3, num_nodes=5, num_edges=8, hidden=[4],
                      ops=["sage", "gin"], w_bits=[2], a_bits=[8], skips=["none"])
    genome = space.make({"l1.op": "gin", "l1.aggr": "add", "l1.hidden": 4, "l1.act": "relu", "l1.skip": "none",
                         "l1.w_bits": 2, "l1.a_bits": 8, "l2.op": "sage", "l2.aggr": "mean", "l2.skip": "none",
                         "l2.w_bits": 2, "l2.a_bits": 8})
    costs = space.costs(genome)
    assert costs.params == (10 * 4 + 4 + 4 * 4 + 4) + (2 * 4 * 3 + 3)  # GIN MLP 10->4->4; SAGE lin_l + lin_r
    assert costs.size_bytes == (40 + 16 + 24) * 2 / 8 + 4 * (8 + 3)
    assert costs.macs == 5 * (40 + 16) + 5 * 24  # unweighted aggregation is free
    assert costs.bitops == costs.macs * 2 * 8


def test_lower_bits_only_change_size_and_bitops():
    space = get_space("gnn")
    genome = space.largest()
    low = genome.with_values({g.name: 4 for g in space.genes if g.kind == "quant"})
    high_c, low_c = space.costs(genome), space.costs(low)
    assert (high_c.macs, high_c.params) == (low_c.macs, low_c.params)
    assert low_c.size_bytes < high_c.size_bytes and low_c.bitops < high_c.bitops


def test_no_blocks_and_unknown_metric():
    space = get_space("gnn")
    assert not space.has_blocks
    with pytest.raises(NotImplementedError, match="gnn"):
        space.blocks(space.smallest())
    with pytest.raises(ValueError, match="unknown cost metric"):
        space.cost_terms("latency")
