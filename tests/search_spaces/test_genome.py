import itertools
import json

import numpy as np
import pytest

from search_spaces import Genome, InputError, get_space, list_spaces, register_space
from search_spaces.mbv3 import MobileNetV3Space


def tiny_space():
    return get_space("mbv3", stage_channels=[16], stage_strides=[1], stage_se=[False], stage_act=["relu"],
                     depths=[1, 2], kernels=[3, 5], expands=[3], w_bits=[8], a_bits=[8], head_channels=0)


def test_cardinality_matches_brute_force_enumeration():
    space = tiny_space()
    combos = itertools.product(*(range(len(g.choices)) for g in space.genes))
    distinct = {space.from_indices(list(c)) for c in combos}
    assert space.cardinality() == len(distinct) == 2 + 4


def test_hash_is_stable_across_processes():
    # A snapshot: the hash is part of the run-directory format (journal keys), so it must not drift.
    genome = Genome("toy", (("a", 1), ("b", "x")))
    assert genome.key == "66ae8e77458cb338"
    assert Genome("toy", (("b", "x"), ("a", 1))).key == genome.key


def test_genome_from_dict_rejects_bad_structure():
    with pytest.raises(InputError, match="'space' and 'genes'"):
        Genome.from_dict({"genes": {}}, source="g.json")
    with pytest.raises(InputError, match=r"g\.json: genome\.genes\.a: expected an int"):
        Genome.from_dict({"space": "mbv3", "genes": {"a": [1]}}, source="g.json")


def test_genome_from_another_space_is_refused():
    mbv3, resnet = get_space("mbv3"), get_space("resnet")
    with pytest.raises(InputError, match="belongs to space 'resnet'"):
        mbv3.from_dict(resnet.largest().to_dict(), source="arch.json")


def test_out_of_range_value_names_gene_and_allowed_values():
    space = tiny_space()
    values = space.largest().as_dict() | {"s1.b1.kernel": 9}
    with pytest.raises(InputError, match=r"s1\.b1\.kernel: value 9 is not allowed; allowed: \[3, 5\]"):
        space.make(values)


def test_unknown_gene_gets_nearest_name():
    space = tiny_space()
    with pytest.raises(InputError, match="did you mean 's1.b1.kernel'"):
        space.make(space.largest().as_dict() | {"s1.b1.kernal": 3})


def test_depth_mutation_draws_new_blocks_instead_of_defaults():
    space = get_space("mbv3")
    rng = np.random.default_rng(0)
    kernels = []
    for _ in range(200):
        child = space.mutate(space.smallest(), rng, prob=0.0)  # exactly one gene changes
        if child["s1.depth"] > 2:
            kernels.append(child["s1.b3.kernel"])
    assert len(set(kernels)) > 1


@pytest.mark.parametrize("name", ["mbv3", "resnet"])
def test_space_options_json_round_trip(name):
    space = get_space(name)
    assert json.loads(json.dumps(space.options())) == space.options()


@pytest.mark.parametrize("options, field, expected", [
    ({"stage_channels": []}, "stage_channels", "non-empty list"),
    ({"stage_strides": [1, 2]}, "stage_strides", "5 strides"),
    ({"w_bits": [8, 7]}, "w_bits", "values from"),
    ({"kernels": [3, 4]}, "kernels", "values from"),
    ({"stage_act": ["relu"] * 4 + ["gelu"]}, "stage_act", "activations from"),
    ({"num_classes": 1}, "num_classes", "at least 2"),
    ({"head_channels": -1}, "head_channels", "non-negative"),
])
def test_bad_space_options_are_named(options, field, expected):
    with pytest.raises(InputError, match=f"exp.yaml: search_space.options.{field}: .*{expected}"):
        get_space("mbv3", source="exp.yaml", **options)


def test_unknown_space_and_option_get_nearest_names():
    with pytest.raises(InputError, match="did you mean 'mbv3'"):
        get_space("mbv4")
    with pytest.raises(InputError, match="did you mean 'kernels'"):
        get_space("mbv3", kernals=[3])


def test_registering_a_name_twice_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_space("mbv3")(MobileNetV3Space)
    assert "mbv3" in list_spaces()
