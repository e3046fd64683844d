"""Conformance suite every registered search space must pass (shipped, like optuna's sampler tests).

Use it from a test module by subclassing and providing a ``space`` fixture::

    @pytest.fixture(params=list_spaces())
    def space(request):
        return get_space(request.param)

    class TestMySpaces(SearchSpaceConformance):
        pass
"""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest

from .errors import InputError
from .genome import Genome
from .registry import get_space
from .space import SearchSpace

__all__ = ["SMALL_MBV3", "SearchSpaceConformance", "TINY_GNN", "TINY_MBV3", "TINY_MBV3_DEFAULT_CHOICES",
           "TINY_TRANSFORMER_LATENCY", "TINY_TRANSFORMER_LM", "TINY_TRANSFORMER_VIT", "small_mbv3", "tiny_gnn",
           "tiny_mbv3"]

TINY_MBV3: dict[str, Any] = dict(in_channels=1, image_size=8, stem_channels=8, stage_channels=[16, 24],
                                 stage_strides=[1, 2], stage_se=[False, True], stage_act=["relu", "hswish"],
                                 depths=[1, 2], kernels=[3, 5], expands=[2, 4], head_channels=32, w_bits=[4, 8],
                                 a_bits=[4, 8])
"""Options of the ``mbv3`` space the tests train on 8x8 digits: a supernet of it trains in seconds."""

SMALL_MBV3: dict[str, Any] = dict(in_channels=1, image_size=8, stage_channels=[16, 24, 32], stage_strides=[1, 2, 2],
                                  stage_se=[False, True, True], stage_act=["relu", "hswish", "hswish"],
                                  head_channels=32)
"""Three stages with the space's default choices: enough genes for predictor tests (analytic costs only)."""

TINY_MBV3_DEFAULT_CHOICES: dict[str, Any] = {k: v for k, v in TINY_MBV3.items()
                                             if k not in ("kernels", "expands", "w_bits", "a_bits")}
"""The :data:`TINY_MBV3` network with the space's default kernel, expand and bit-width choices (three each, 6 bits
included): a larger space of the same 8x8 network, for searches on analytic costs (the golden front's space)."""

TINY_GNN: dict[str, Any] = dict(ops=["linear", "gcn"], hidden=[8, 16], aggregations=["add"], activations=["relu"],
                                w_bits=[2, 8], a_bits=[8, 32], c_bits=[8])
"""Options of the ``gnn`` space the LPGNAS tests search on Cora (the space's default sizes): two ops, two widths."""

_TINY_TRANSFORMER_BODY: dict[str, Any] = dict(depths=[1, 2], widths=[16, 32], heads=[2, 4], mlp_ratios=[1, 2],
                                              w_bits=[4, 8], a_bits=[8])

TINY_TRANSFORMER_LM: dict[str, Any] = dict(front="lm", vocab_size=11, seq_len=12,
                                           **copy.deepcopy(_TINY_TRANSFORMER_BODY))
"""Options of the ``transformer`` space with a language-model front (11 tokens, 12-token windows): two choices of
depth, width, heads, MLP ratio and weight bits."""

TINY_TRANSFORMER_VIT: dict[str, Any] = dict(front="vit", image_size=8, in_channels=1, patch_size=4, num_classes=10,
                                            **copy.deepcopy(_TINY_TRANSFORMER_BODY))
"""The blocks of :data:`TINY_TRANSFORMER_LM` behind a vision front for 8x8 one-channel images (four 4x4 patches)."""

TINY_TRANSFORMER_LATENCY: dict[str, Any] = dict(front="lm", vocab_size=11, seq_len=8, depths=[1, 2], widths=[8, 16],
                                                heads=[1, 2], mlp_ratios=[2], w_bits=[4, 8], a_bits=[8])
"""A language-model space small enough to profile every block in a test (8-token windows, 8-bit activations)."""


def tiny_mbv3(**overrides: Any) -> SearchSpace:
    """The :data:`TINY_MBV3` space, with some options changed."""
    return get_space("mbv3", **copy.deepcopy(TINY_MBV3 | overrides))


def small_mbv3(**overrides: Any) -> SearchSpace:
    """The :data:`SMALL_MBV3` space, with some options changed."""
    return get_space("mbv3", **copy.deepcopy(SMALL_MBV3 | overrides))


def tiny_gnn(**overrides: Any) -> SearchSpace:
    """The :data:`TINY_GNN` space, with some options changed."""
    return get_space("gnn", **copy.deepcopy(TINY_GNN | overrides))


N_SAMPLES = 50


def _samples(space: SearchSpace, seed: int = 0, n: int = N_SAMPLES) -> list[Genome]:
    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(n)]


class SearchSpaceConformance:
    """Behaviour shared by all spaces: validity, round trips, determinism, encodings, costs."""

    def test_rebuilds_from_options(self, space: SearchSpace) -> None:
        again = get_space(space.name, **json.loads(json.dumps(space.options())))
        assert again.fingerprint() == space.fingerprint()
        assert again.genes == space.genes

    def test_samples_are_valid_canonical_and_seeded(self, space: SearchSpace) -> None:
        first, second = _samples(space, 3), _samples(space, 3)
        assert first == second
        assert len({g.key for g in first}) > 1
        for genome in first:
            space.validate(genome)
            assert space.canonical(genome) == genome

    def test_json_round_trip_and_stable_hash(self, space: SearchSpace) -> None:
        for genome in _samples(space):
            back = space.from_dict(json.loads(json.dumps(genome.to_dict())))
            assert back == genome and back.key == genome.key and hash(back) == hash(genome)

    def test_inactive_genes_do_not_change_identity(self, space: SearchSpace) -> None:
        genome = space.smallest()
        inactive = [g for g in space.genes if not space.is_active(genome, g) and len(g.choices) > 1]
        if not inactive:
            pytest.skip("space has no conditional genes")
        changed = genome.with_values({inactive[0].name: inactive[0].choices[-1]})
        assert space.canonical(changed) == genome
        assert space.canonical(changed).key == genome.key

    def test_mutate_changes_something_valid(self, space: SearchSpace) -> None:
        rng = np.random.default_rng(1)
        for genome in _samples(space):
            child = space.mutate(genome, rng)
            space.validate(child)
            assert child == space.canonical(child)
            assert child != genome

    def test_crossover_takes_genes_from_parents(self, space: SearchSpace) -> None:
        rng = np.random.default_rng(2)
        parents = _samples(space, 4)
        for a, b in zip(parents[::2], parents[1::2]):
            child = space.crossover(a, b, rng)
            space.validate(child)
            for gene in space.genes:
                if all(space.is_active(g, gene) for g in (a, b, child)):
                    assert child[gene.name] in (a[gene.name], b[gene.name])

    def test_encoding_is_one_hot_and_injective(self, space: SearchSpace) -> None:
        genomes = list({g.key: g for g in _samples(space, 5)}.values())
        codes = np.stack([space.encode(g) for g in genomes])
        assert codes.shape == (len(genomes), len(space.feature_names()))
        for genome, code in zip(genomes, codes):
            assert code.sum() == sum(space.is_active(genome, g) for g in space.genes)
        assert len({c.tobytes() for c in codes}) == len(genomes)

    def test_feature_interactions_name_distinct_genes(self, space: SearchSpace) -> None:
        pairs = space.feature_interactions()
        names = {g.name for g in space.genes}
        assert len(set(pairs)) == len(pairs)
        for context, gene in pairs:
            assert context in names and gene in names and context != gene, (context, gene)

    def test_index_round_trip(self, space: SearchSpace) -> None:
        for genome in _samples(space):
            assert space.from_indices(space.to_indices(genome)) == genome

    def test_blocks_chain_and_validate(self, space: SearchSpace) -> None:
        if not space.has_blocks:
            pytest.skip(f"space {space.name!r} has no block list")
        for genome in _samples(space) + [space.largest(), space.smallest()]:
            blocks = space.blocks(genome)
            assert blocks[0].slot == "stem" and blocks[-1].slot == "head"
            assert len({b.slot for b in blocks}) == len(blocks)
            for prev, block in zip(blocks, blocks[1:]):
                block.validate()
                assert block.in_ch == prev.out_ch and block.in_size == prev.out_size

    def test_costs_are_bounded_by_extremes(self, space: SearchSpace) -> None:
        low, high = space.costs(space.smallest()), space.costs(space.largest())
        assert 0 < low.macs <= high.macs and 0 < low.size_bytes <= high.size_bytes
        for genome in _samples(space):
            costs = space.costs(genome)
            assert low.macs <= costs.macs <= high.macs
            assert low.params <= costs.params <= high.params
            assert low.bitops <= costs.bitops <= high.bitops

    def test_cardinality_is_positive_and_counts_networks(self, space: SearchSpace) -> None:
        assert space.cardinality() >= len({g.key for g in _samples(space)}) > 1

    def test_bad_values_are_refused_by_name(self, space: SearchSpace) -> None:
        genome = space.largest()
        gene = space.genes[-1]
        bad = genome.with_values({gene.name: "not-a-choice"})
        with pytest.raises(InputError, match=gene.name.replace(".", r"\.")) as err:
            space.validate(bad)
        assert "allowed" in str(err.value)
        with pytest.raises(InputError, match="unknown gene"):
            space.make({**genome.as_dict(), "no.such.gene": 1})
        with pytest.raises(InputError, match="missing genes"):
            space.make({g.name: genome[g.name] for g in space.genes[1:]})
