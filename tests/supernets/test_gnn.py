"""LPGNAS supernet, quantizer, static model and trainer (supernets.gnn)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from search_spaces import InputError, get_space
from supernets.data import load_dataset
from supernets.gnn import (GNN_BITS, GnnQuantizer, GnnSupernet, NonFiniteLossError, RetrainSettings, SearchSettings,
                           StaticGnn, check_bits, fake_quant, mixed_fake_quant, prepare_graph, retrain, search,
                           weight_count)

torch.set_num_threads(1)

SMALL = dict(ops=["linear", "gcn", "gat"], hidden=[8, 16], heads=[1, 2], aggregations=["add", "mean"],
             activations=["relu", "elu"], w_bits=[1, 4, 32], a_bits=[2, 8, 32], c_bits=[4, 32])
FAST = SearchSettings(epochs=6, warmup_epochs=2)


@pytest.fixture(scope="module")
def cora(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QNAS_CACHE", str(tmp_path_factory.mktemp("cache")))
        return prepare_graph(load_dataset("cora"))


def _design(space, **genes):
    values = {g.name: g.choices[-1] if g.kind == "quant" else g.choices[0] for g in space.genes}
    return space.make({**values, **genes})


# ---- quantizer ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", GNN_BITS)
@pytest.mark.parametrize("signed", [True, False])
def test_quantizer_levels_and_error_per_width(bits, signed):
    x = torch.randn(4000, generator=torch.Generator().manual_seed(0))
    x = x if signed else x.abs()
    q = GnnQuantizer([bits], signed=signed)
    y = q(x, bits)
    if bits == 32:
        assert torch.equal(y, x)
        return
    levels = torch.unique(y.detach() / q.log_step.detach()[0].exp()).round()
    assert len(levels) <= (2 if bits == 1 else 2**bits - (1 if signed else 0))
    if bits == 1 and signed:
        assert set(levels.tolist()) == {-1.0, 1.0}
    error = float(((y.detach() - x) ** 2).mean() / (x**2).mean())
    assert error < {1: 0.6, 2: 0.25, 4: 0.02, 8: 1e-4, 16: 1e-8}[bits]
    y.sum().backward()
    assert q.log_step.grad is not None and torch.isfinite(q.log_step.grad).all()


def test_binary_features_are_exact_at_every_width():
    x = (torch.rand(300, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    for bits in GNN_BITS:  # exact up to the float rounding of exp(log(step))
        assert torch.allclose(GnnQuantizer([bits], signed=False)(x, bits), x, rtol=1e-6, atol=0)


def test_mixture_of_one_hot_is_the_single_width_and_grads_reach_probabilities():
    x = torch.randn(50, 7)
    steps = torch.tensor([[0.5], [0.1], [1.0]])
    one = mixed_fake_quant(x, steps, torch.tensor([0.0, 1.0, 0.0]), (2, 4, 32), True)
    assert torch.equal(one, fake_quant(x, torch.tensor(0.1), 4, True))
    probs = torch.softmax(torch.zeros(3), 0).requires_grad_()
    mixed_fake_quant(x, steps, probs, (2, 4, 32), True).pow(2).sum().backward()
    assert probs.grad is not None and probs.grad.abs().sum() > 0


@pytest.mark.parametrize("bad", [0, 3, 64, 8.0, True, "8"])
def test_bits_outside_the_allowed_set_are_refused(bad):
    with pytest.raises(InputError, match="allowed bit-widths are"):
        check_bits(bad)
    with pytest.raises(InputError):
        GnnQuantizer([bad], signed=True)


# ---- supernet ------------------------------------------------------------------------------------------
def test_expected_cost_is_differentiable_and_exact_at_one_hot(cora):
    space = get_space("gnn", **SMALL)
    torch.manual_seed(0)
    net = GnnSupernet(space, cora)
    probs = net.gene_probs(0.5)
    net.expected_cost(probs, "size_bytes").backward()
    grads = {name: net.logits[name.replace(".", "__")].grad for name in ("l1.w_bits", "l1.hidden", "l1.op")}
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())
    for genome in (space.smallest(), space.largest(), space.sample(np.random.default_rng(0))):
        one_hot = net.one_hot(genome)
        assert float(net.expected_cost(one_hot, "size_bytes")) == pytest.approx(space.costs(genome).size_bytes)
        assert float(net.expected_cost(one_hot, "bitops")) == pytest.approx(space.costs(genome).bitops, rel=1e-5)


def test_lambda_pushes_expected_size_down_and_derives_valid_genomes(cora):
    space = get_space("gnn", **SMALL)
    free = search(space, cora, FAST, lam=0.0, seed=0)
    pushed = search(space, cora, FAST, lam=1.0, seed=0)
    assert pushed.history[-1].expected_size_kb < free.history[-1].expected_size_kb
    assert pushed.history[-1].expected_size_kb < pushed.history[FAST.warmup_epochs].expected_size_kb
    for outcome in (free, pushed):
        space.validate(outcome.genome)
        assert space.canonical(outcome.genome) == outcome.genome
    assert space.costs(pushed.genome).size_bytes <= space.costs(free.genome).size_bytes


def test_search_is_seeded_and_leaves_global_rng_alone(cora):
    space = get_space("gnn", **SMALL)
    settings = SearchSettings(epochs=4, warmup_epochs=1, gumbel=True, weight_sampling="path")
    state = torch.get_rng_state()
    first = search(space, cora, settings, lam=0.01, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    second = search(space, cora, settings, lam=0.01, seed=3)
    assert first.genome == second.genome
    assert [e.val_loss for e in first.history] == pytest.approx([e.val_loss for e in second.history], nan_ok=True)


# ---- static model and retraining -------------------------------------------------------------------------
def test_static_model_parameters_match_the_analytic_count(cora):
    space = get_space("gnn")  # every op, SAGE/GIN on the sparse first-layer path included
    rng = np.random.default_rng(0)
    for genome in [space.sample(rng) for _ in range(6)] + [space.largest()]:
        model = StaticGnn(space, genome, cora)
        assert weight_count(model) == space.costs(genome).params
        with torch.no_grad():
            assert torch.isfinite(model()).all()


def test_qat_retrain_of_a_small_design_beats_chance(cora):
    space = get_space("gnn", **SMALL)
    genome = _design(space, **{"l1.op": "gcn", "l1.hidden": 16, "l1.act": "relu", "l1.w_bits": 4, "l1.a_bits": 8,
                               "l1.c_bits": 4, "l2.op": "gcn", "l2.w_bits": 4, "l2.a_bits": 8, "l2.c_bits": 4})
    out = retrain(space, genome, cora, RetrainSettings(epochs=30), seed=0)
    assert out.test_accuracy > 0.5 and out.val_accuracy > 0.5  # chance is 1/7


def test_quantizer_steps_learn_at_their_own_rate(cora):
    """One Adam update moves each parameter by ~its group's lr: the log-steps by lr × step_lr_scale."""
    from supernets.gnn.train import _param_groups

    space = get_space("gnn", **SMALL)
    genome = _design(space, **{"l1.op": "gcn", "l1.hidden": 16, "l1.act": "relu", "l1.w_bits": 4, "l1.a_bits": 8,
                               "l1.c_bits": 4, "l2.op": "gcn", "l2.w_bits": 4, "l2.a_bits": 8, "l2.c_bits": 4})
    torch.manual_seed(0)
    model = StaticGnn(space, genome, cora)
    model()  # quantizer steps are initialised at the first forward
    groups = _param_groups(model, 5e-4, 0.01, 3.0)
    assert [g["lr"] for g in groups] == [0.01, pytest.approx(0.03)] and groups[1]["weight_decay"] == 0.0
    steps = [p for n, p in model.named_parameters() if n.endswith(".log_step")]
    assert steps and set(map(id, steps)) == set(map(id, groups[1]["params"]))
    before = [p.detach().clone() for p in steps]
    opt = torch.optim.Adam(groups)
    F.cross_entropy(model()[cora.train_mask], cora.y[cora.train_mask]).backward()
    opt.step()
    moved = torch.cat([(p.detach() - b).abs().flatten() for p, b in zip(steps, before)])
    assert moved.max() == pytest.approx(0.03, rel=0.05)


# ---- errors ---------------------------------------------------------------------------------------------------
def _toy_graph(x):
    from torch_geometric.data import Data

    n = x.size(0)
    edges = torch.tensor([[i for i in range(n)] + [(i + 1) % n for i in range(n)],
                          [(i + 1) % n for i in range(n)] + [i for i in range(n)]])
    masks = [torch.zeros(n, dtype=torch.bool) for _ in range(3)]
    for k, mask in enumerate(masks):
        mask[k::3] = True
    data = Data(x=x, edge_index=edges, y=torch.arange(n) % 2, train_mask=masks[0], val_mask=masks[1],
                test_mask=masks[2])
    return prepare_graph(SimpleNamespace(data=data, num_classes=2))


def test_nan_loss_stops_with_epoch_and_term():
    x = torch.randn(12, 4)
    x[3, 1] = float("nan")
    graph = _toy_graph(x)
    space = get_space("gnn", in_features=4, num_classes=2, num_nodes=12, num_edges=24, **SMALL)
    with pytest.raises(NonFiniteLossError, match="training cross-entropy is nan at epoch 0"):
        search(space, graph, FAST, lam=0.1, seed=0)
    with pytest.raises(NonFiniteLossError, match="retraining"):
        retrain(space, space.smallest(), graph, RetrainSettings(epochs=3), seed=0)


def test_space_and_graph_must_agree(cora):
    with pytest.raises(InputError, match=r"search_space\.options\.in_features.*1433"):
        GnnSupernet(get_space("gnn", in_features=100), cora)
    with pytest.raises(InputError, match=r"search_space\.options\.num_classes"):
        retrain(get_space("gnn", num_classes=3), get_space("gnn", num_classes=3).smallest(), cora,
                RetrainSettings(epochs=1), seed=0)


def test_unknown_dataset_and_missing_raw_files(tmp_path, monkeypatch):
    monkeypatch.setenv("QNAS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(InputError, match="did you mean 'cora'"):
        load_dataset("coraa")
    (tmp_path / "Cora" / "raw").mkdir(parents=True)
    (tmp_path / "Cora" / "raw" / "ind.cora.x").write_bytes(b"")
    with pytest.raises(InputError, match="missing .*ind.cora.graph"):
        load_dataset("cora", root=tmp_path)
