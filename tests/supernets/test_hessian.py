"""Hessian-trace sensitivity (HAWQ-V2/V3) of a supernet's quantization genes."""

import pytest
import torch

from search_spaces.testing import TINY_MBV3
from supernets.hessian import _hutchinson, measure_hessian_sensitivity

TINY = TINY_MBV3 | dict(w_bits=[2, 4, 8], a_bits=[4, 8])


def test_hutchinson_is_exact_for_a_diagonal_hessian_and_unbiased_otherwise():
    w = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    a = torch.tensor([3.0, 1.0, 0.25])
    loss = (a * w.pow(2)).sum()  # H = diag(2a): z^T H z = trace for every Rademacher z
    generator = torch.Generator().manual_seed(0)
    assert _hutchinson(loss, [w], 3, generator) == pytest.approx([2 * float(a.sum())])
    m = torch.tensor([[2.0, 1.0], [1.0, 3.0]])
    v = torch.tensor([0.3, -0.7], requires_grad=True)
    u = torch.tensor([1.5], requires_grad=True)
    loss = v @ m @ v + 4 * u.pow(2).sum() + (v.sum() * u).sum()  # cross terms vanish in expectation
    traces = _hutchinson(loss, [v, u], 4000, torch.Generator().manual_seed(1))
    assert traces[0] == pytest.approx(2 * 5.0, rel=0.05) and traces[1] == pytest.approx(8.0, rel=0.05)


@pytest.fixture(scope="module")
def setup(tiny_quant_supernet):
    return tiny_quant_supernet


def test_every_quant_gene_gets_a_trace_and_costs_that_grow_as_bits_fall(setup):
    space, net, data = setup
    net.train()
    net.init_quantizers(data.train_x[:32])  # as the measurement does first (LSQ steps of every mode)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    args = (net, data.train_x[:64], data.val_x[:64], data.val_y[:64])
    got = measure_hessian_sensitivity(*args, samples=4, batch_size=32)
    assert net.training  # the caller's mode is restored, and nothing was trained or recalibrated for good
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    quant = sorted(g.name for g in space.genes if g.kind == "quant")
    assert sorted(got.omega) == quant and sorted(got.traces) == quant
    assert got.samples == 4 and got.images == 64
    for name, row in got.omega.items():
        assert all(v >= 0 for v in row.values()), name
        choices = space.gene(name).choices  # coarser bits perturb more: Ω never falls as bits fall
        assert all(row[lo] >= row[hi] for lo, hi in zip(choices, choices[1:])), name
        if got.traces[name] > 0:
            assert row[choices[0]] > row[choices[-1]], name
    assert sum(t > 0 for t in got.traces.values()) >= len(quant) // 2
    assert measure_hessian_sensitivity(*args, samples=4, batch_size=32) == got  # seeded


def test_the_seed_changes_only_the_noise(setup):
    space, net, data = setup
    args = (net, data.train_x[:64], data.val_x[:64], data.val_y[:64])
    a = measure_hessian_sensitivity(*args, samples=2, batch_size=64, seed=0)
    b = measure_hessian_sensitivity(*args, samples=2, batch_size=64, seed=1)
    assert a.traces != b.traces


@pytest.mark.parametrize("front", ["lm", "vit"])
def test_a_transformer_gets_a_trace_and_costs_per_linear_group(front):
    """Every linear group's weight and activation genes, granularity included, on a transformer supernet (a
    next-token loss per position for the LM), with the fused attention kernel swapped for one with a second
    derivative."""
    from search_spaces import get_space
    from search_spaces.testing import TINY_TRANSFORMER_LM, TINY_TRANSFORMER_VIT
    from supernets.transformer import TransformerSupernet

    options = TINY_TRANSFORMER_LM if front == "lm" else TINY_TRANSFORMER_VIT
    space = get_space("transformer", **options | {"a_bits": [6, 8], "search_granularity": True})
    net = TransformerSupernet(space, seed=0)
    gen = torch.Generator().manual_seed(0)
    if front == "lm":
        x = torch.randint(0, space.vocab_size, (16, space.seq_len), generator=gen)
        y = torch.randint(0, space.vocab_size, (16, space.seq_len), generator=gen)
    else:
        x = torch.randn(16, 1, 8, 8, generator=gen)
        y = torch.randint(0, 10, (16,), generator=gen)
    net.init_quantizers(x)
    got = measure_hessian_sensitivity(net, x, x, y, samples=3, batch_size=8)
    quant = sorted(g.name for g in space.genes if g.kind == "quant")
    assert sorted(got.omega) == quant  # granularity genes share the w_bits tensors and their trace
    assert sorted(got.traces) == [n for n in quant if n.endswith("bits")]
    for name in quant:
        row, choices = got.omega[name], space.gene(name).choices
        assert all(v >= 0 for v in row.values()), name
        if name.endswith("bits") and got.traces[name] > 0:
            assert row[choices[0]] > row[choices[-1]], name
    assert sum(t > 0 for n, t in got.traces.items() if n.endswith("w_bits")) >= 4
