"""PinnedSpace: a space with some genes held at one value, whose genomes are the base space's genomes."""

import numpy as np
import pytest

from search_spaces import InputError
from search_spaces.pinned import PinnedSpace, pin_quant
from search_spaces.testing import tiny_mbv3

BASE = tiny_mbv3(w_bits=[2, 4, 8], a_bits=[4, 6], depths=[1, 2])


def test_pinned_genes_have_one_choice_and_samples_are_base_genomes():
    pins = pin_quant(BASE, 8)
    assert set(pins) == {g.name for g in BASE.genes if g.kind == "quant"}
    assert {v for k, v in pins.items() if k.endswith("w_bits")} == {8}
    assert {v for k, v in pins.items() if k.endswith("a_bits")} == {6}  # 8 is not a choice: the largest
    space = PinnedSpace(BASE, pins)
    assert space.name == BASE.name and space.fingerprint() != BASE.fingerprint()
    assert space.cardinality() < BASE.cardinality()
    rng = np.random.default_rng(0)
    for _ in range(20):
        genome = space.sample(rng)
        BASE.validate(genome)
        assert all(genome[name] == value for name, value in pins.items())
        assert space.blocks(genome) == BASE.blocks(BASE.canonical(genome))
        assert space.costs(genome) == BASE.costs(genome)
    mutated = space.mutate(space.largest(), rng, prob=1.0)
    assert all(mutated[name] == value for name, value in pins.items())


def test_a_value_that_is_not_a_choice_cannot_be_pinned():
    with pytest.raises(InputError, match="cannot pin 3") as err:
        PinnedSpace(BASE, {"s1.b1.w_bits": 3})
    assert err.value.field == "s1.b1.w_bits"
    with pytest.raises(InputError, match="unknown gene"):
        PinnedSpace(BASE, {"s9.b1.w_bits": 8})
