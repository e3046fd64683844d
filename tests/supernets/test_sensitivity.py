"""ZeroQ-style per-layer quantization sensitivity measured on a supernet."""

import pytest

from predictors.accuracy import QuantSensitivity
from search_spaces.testing import TINY_MBV3
from supernets.sensitivity import measure_context_sensitivity, measure_quant_sensitivity

TINY = TINY_MBV3 | dict(w_bits=[2, 4, 8], a_bits=[2, 4, 8])


@pytest.fixture(scope="module")
def setup(tiny_quant_supernet):
    return tiny_quant_supernet


def test_every_quant_gene_is_measured_against_the_reference(setup):
    space, net, data = setup
    net.train()
    values = measure_quant_sensitivity(net, data.train_x[:128], data.val_x[:64], batch_size=64)
    assert net.training  # the caller's mode is restored
    assert sorted(values) == sorted(g.name for g in space.genes if g.kind == "quant")
    for name, row in values.items():
        assert row[8] == 0.0 and all(v >= 0 for v in row.values()), name
        assert row[2] > row[8], name  # 2 bits always perturb the output
    # coarser is worse for the bulk of the layers (a single layer may be flat between 4 and 8 bits)
    assert sum(row[2] > row[4] for row in values.values()) >= 0.75 * len(values)
    again = measure_quant_sensitivity(net, data.train_x[:128], data.val_x[:64], batch_size=64)
    assert again == values
    table = QuantSensitivity(space, values)
    assert table.score([space.smallest()])[0] > table.score([space.largest()])[0] == 0.0


def test_another_reference_is_zero_at_its_own_choices(setup):
    space, net, data = setup
    reference = space.make({**space.largest().as_dict(), "s1.b1.w_bits": 4})
    values = measure_quant_sensitivity(net, data.train_x[:64], data.val_x[:32], reference=reference)
    assert values["s1.b1.w_bits"][4] == 0.0 and values["s1.b1.w_bits"][8] > 0.0
    shallow = space.make({**space.largest().as_dict(), "s2.depth": 1})
    with pytest.raises(ValueError, match=r"every quantization gene; inactive: \['s2.b2.w_bits', 's2.b2.a_bits'\]"):
        measure_quant_sensitivity(net, data.train_x[:64], data.val_x[:32], reference=shallow)
    with pytest.raises(ValueError, match="calibration and evaluation images"):
        measure_quant_sensitivity(net, data.train_x[:0], data.val_x[:32])


def test_declared_interactions_are_measured_in_every_other_context(setup):
    space, net, data = setup
    assert space.feature_interactions() == [("s1.depth", "s2.b1.a_bits")]
    net.train()
    seen = []
    contexts = measure_context_sensitivity(net, data.train_x[:128], data.val_x[:64], batch_size=64,
                                           progress=lambda done, total: seen.append((done, total)))
    assert net.training and seen == [(1, 2), (2, 2)]  # 2 and 4 bits lowered in the one context
    assert list(contexts) == ["s1.depth=1"] and list(contexts["s1.depth=1"]) == ["s2.b1.a_bits"]
    row = contexts["s1.depth=1"]["s2.b1.a_bits"]
    assert row[8] == 0.0 and row[2] > 0.0 and row[2] >= row[4] >= 0.0
    plain = measure_quant_sensitivity(net, data.train_x[:128], data.val_x[:64], batch_size=64)
    assert row[2] != plain["s2.b1.a_bits"][2]  # another block feeds the quantizer in this context
    table = QuantSensitivity(space, plain, contexts=contexts)
    shallow = space.make({**space.largest().as_dict(), "s1.depth": 1, "s2.b1.a_bits": 2})
    assert table.score([shallow])[0] == pytest.approx(row[2])


class _Interrupting(dict):
    """A memo that dies after ``stop`` new variants (a kill mid-measurement)."""

    def __init__(self, stop=None):
        super().__init__()
        self.stop, self.measured = stop, 0

    def put(self, key, value):
        if self.measured == self.stop:
            raise KeyboardInterrupt
        self.measured += 1
        self[key] = value


def test_a_memo_keeps_each_variant_and_skips_known_ones(setup):
    space, net, data = setup
    images = (net, data.train_x[:128], data.val_x[:64])
    memo = _Interrupting(stop=5)
    with pytest.raises(KeyboardInterrupt):
        measure_quant_sensitivity(*images, batch_size=64, memo=memo)
    assert len(memo) == 5 and all(key.startswith("|") for key in memo)
    memo.stop = None
    values = measure_quant_sensitivity(*images, batch_size=64, memo=memo)
    contexts = measure_context_sensitivity(*images, batch_size=64, memo=memo)
    variants = sum(len(g.choices) - 1 for g in space.genes if g.kind == "quant")
    assert memo.measured == len(memo) == variants + sum(len(row) - 1 for c in contexts.values() for row in c.values())
    assert values == measure_quant_sensitivity(*images, batch_size=64)  # identical to one uninterrupted pass
    assert contexts == measure_context_sensitivity(*images, batch_size=64)
    memo.stop = 0  # everything is known now: nothing is measured again
    assert measure_quant_sensitivity(*images, batch_size=64, memo=memo) == values
