"""Conformance suite for supernets (shipped, run over every registered space by the tests).

Every subnet extracted from a supernet must compute what the supernet computes for that subnet:
float outputs equal within 1e-5, fake-quantized outputs giving the same argmax on >= 99.9% of
inputs, and a parameter count equal to the analytic one. Provide a ``space`` fixture (small input
sizes keep it fast) and subclass :class:`SupernetConformance`.
"""

from __future__ import annotations

import numpy as np
import torch

from search_spaces import SearchSpace

from .supernet import QuantSupernet

__all__ = ["SupernetConformance", "warm_supernet"]

N_GENOMES = 50


def warm_supernet(space: SearchSpace, *, seed: int = 0, batch: int = 16) -> tuple[QuantSupernet, torch.Tensor]:
    """A randomly initialised supernet whose BN statistics and quantizer steps have seen data."""
    torch.manual_seed(seed)
    stem = space.blocks(space.largest())[0]
    net = QuantSupernet(space, image_size=stem.in_size)
    x = torch.randn(batch, stem.in_ch, stem.in_size, stem.in_size)
    rng = np.random.default_rng(seed)
    net.train()
    with torch.no_grad():
        for genome in [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(8)]:
            net.run(x, genome)
    net.sort_channels()
    return net.eval(), x


class SupernetConformance:
    """Extraction matches the supernet for random subnets of ``space``."""

    def test_extracted_subnets_match_supernet(self, space: SearchSpace) -> None:
        net, x = warm_supernet(space)
        rng = np.random.default_rng(1)
        agree = total = 0
        for _ in range(N_GENOMES):
            genome = space.sample(rng)
            with torch.no_grad():
                net.train()
                net.run(x, genome)  # initialise quantizer steps of modes not seen yet
                net.eval()
                fp = net.run(x, genome, quantize=False)
                fp_static = net.extract(genome, quantize=False)(x)
                assert torch.allclose(fp, fp_static, atol=1e-5, rtol=0), genome.key
                q, q_static = net.run(x, genome), net.extract(genome)(x)
            agree += int((q.argmax(1) == q_static.argmax(1)).sum())
            total += len(x)
        assert agree / total >= 0.999

    def test_extracted_parameter_count_is_analytic(self, space: SearchSpace) -> None:
        net, _ = warm_supernet(space)
        rng = np.random.default_rng(2)
        for genome in [space.largest(), space.smallest(), space.sample(rng)]:
            static = net.extract(genome, quantize=False)
            assert sum(p.numel() for p in static.parameters()) == space.costs(genome).params

    def test_channel_sorting_keeps_the_largest_subnet(self, space: SearchSpace) -> None:
        net, x = warm_supernet(space)
        with torch.no_grad():
            before = net.run(x, space.largest(), quantize=False)
            net.sort_channels()
            after = net.run(x, space.largest(), quantize=False)
        assert torch.allclose(before, after, atol=1e-4, rtol=1e-4)
