"""The transformer supernet: exact extraction, analytic parameters, importance sorting, training, bad data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from search_spaces import InputError, get_space
from search_spaces.testing import TINY_TRANSFORMER_LM, TINY_TRANSFORMER_VIT
from supernets.checkpoint import load_supernet, save_checkpoint
from supernets.config import SupernetConfig
from supernets.data.registry import TextSplits
from supernets.evaluate import SubnetEvaluator
from supernets.families import build_supernet, supernet_class
from supernets.training import SupernetTrainer
from supernets.transformer import StaticTransformer, TransformerSupernet

# 6-bit activations and the granularity genes added, so the supernet tests cover those quantizer choices too
LM = {**TINY_TRANSFORMER_LM, "a_bits": [6, 8], "search_granularity": True}


def _inputs(space, batch=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    if space.front == "lm":
        return torch.randint(0, space.vocab_size, (batch, space.seq_len), generator=gen)
    return torch.randn(batch, space.in_channels, space.image_size, space.image_size, generator=gen)


def _warm(space):
    net = TransformerSupernet(space, seed=0)
    x = _inputs(space)
    net.init_quantizers(x)
    rng = np.random.default_rng(0)
    with torch.no_grad():
        net.train()
        for genome in [space.sample(rng) for _ in range(4)]:
            net.run(x, genome)
    return net.eval(), x


@pytest.fixture(params=["lm", "vit", "vit-mean"])
def space(request):
    if request.param == "lm":
        return get_space("transformer", **LM)
    return get_space("transformer", **TINY_TRANSFORMER_VIT, pooling="mean" if request.param == "vit-mean" else "cls")


def test_the_family_registry_builds_the_transformer_supernet(space):
    assert supernet_class(space) is TransformerSupernet
    assert isinstance(build_supernet(space, seed=1), TransformerSupernet)
    assert supernet_class(get_space("mbv3")).__name__ == "QuantSupernet"


def test_output_shapes(space):
    net, x = _warm(space)
    with torch.no_grad():
        out = net.run(x, space.largest())
    expected = (6, space.vocab_size, space.seq_len) if space.front == "lm" else (6, space.num_classes)
    assert out.shape == expected


def test_extracted_subnets_compute_what_the_supernet_computes(space):
    net, x = _warm(space)
    rng = np.random.default_rng(1)
    for genome in [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(8)]:
        with torch.no_grad():
            fp, fp_static = net.run(x, genome, quantize=False), net.extract(genome, quantize=False)(x)
            q, q_static = net.run(x, genome), net.extract(genome)(x)
        assert torch.allclose(fp, fp_static, atol=1e-5, rtol=0), genome.key
        assert torch.allclose(q, q_static, atol=1e-4, rtol=0), genome.key
        static = net.extract(genome, quantize=False)
        assert isinstance(static, StaticTransformer)
        assert sum(p.numel() for p in static.parameters()) == space.costs(genome).params


def test_low_bits_change_the_output(space):
    net, x = _warm(space)
    genome = space.largest()
    low = genome.with_values({g.name: 4 for g in space.genes if g.name.endswith(".w_bits")})
    with torch.no_grad():
        assert not torch.allclose(net.run(x, genome), net.run(x, low))


def test_sorting_heads_and_hidden_units_keeps_the_largest_subnet_and_orders_by_importance(space):
    net, x = _warm(space)
    with torch.no_grad():
        before = net.run(x, space.largest(), quantize=False)
        net.sort_channels()
        after = net.run(x, space.largest(), quantize=False)
    assert torch.allclose(before, after, atol=1e-5)
    fc2 = net.mlp[0].fc2.weight[0].abs().sum(dim=0)
    assert torch.all(fc2[:-1] >= fc2[1:])
    e = space.head_dim
    heads = net.attn[0].proj.weight[0].abs().sum(dim=0).reshape(-1, e).sum(dim=1)
    assert torch.all(heads[:-1] >= heads[1:])


def test_lm_attention_is_causal():
    space = get_space("transformer", **LM)
    net, x = _warm(space)
    changed = x.clone()
    changed[:, -1] = (changed[:, -1] + 1) % space.vocab_size
    with torch.no_grad():
        a, b = net.run(x, space.largest(), quantize=False), net.run(changed, space.largest(), quantize=False)
    assert torch.allclose(a[..., :-1], b[..., :-1], atol=1e-6)  # earlier positions never see the last token
    assert not torch.allclose(a[..., -1], b[..., -1])


def _text(space, n=48, seed=0):
    gen = torch.Generator().manual_seed(seed)
    # A learnable sequence: each token is the previous one plus one (mod V).
    start = torch.randint(0, space.vocab_size, (n, 1), generator=gen)
    seq = (start + torch.arange(space.seq_len + 1)) % space.vocab_size
    x, y = seq[:, :-1].contiguous(), seq[:, 1:].contiguous()
    return TextSplits("synthetic", x, y, x[:16], y[:16], x[:16], y[:16], space.vocab_size, space.seq_len,
                      "".join(chr(97 + i) for i in range(space.vocab_size)), "synthetic")


def test_sandwich_training_learns_the_next_token_with_per_token_distillation():
    space = get_space("transformer", **LM)
    data = _text(space)
    config = SupernetConfig(warmup_epochs=2, epochs=4, batch_size=16, lr=0.05, random_subnets=1, qat_start=2,
                            bn_calib_samples=16, eval_batch_size=16)
    net = build_supernet(space, seed=0)
    trainer = SupernetTrainer(net, data.train_x, data.train_y, data.val_x, data.val_y, config)
    first = trainer.train_epoch()
    while not trainer.done:
        last = trainer.train_epoch()
    assert last.phase == "qat" and last.loss < first.loss
    evaluator = SubnetEvaluator(net.eval(), data.train_x[:16], data.val_x, data.val_y, batch_size=16)
    measured = evaluator.measure(space.largest())
    assert measured["accuracy"] > 0.5 and measured["val_loss"] < np.log(space.vocab_size)
    with torch.no_grad():
        logits = net.run(data.val_x, space.largest())
    assert measured["val_loss"] == pytest.approx(float(F.cross_entropy(logits, data.val_y)), rel=1e-5)


def test_student_loss_is_the_mean_kl_per_token():
    space = get_space("transformer", **LM)
    data = _text(space)
    trainer = SupernetTrainer(build_supernet(space), data.train_x, data.train_y, data.val_x, data.val_y,
                              SupernetConfig(warmup_epochs=0, epochs=1, batch_size=16))
    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(4, 11, 12, generator=gen), torch.randn(4, 11, 12, generator=gen)
    soft = F.softmax(teacher, dim=1)
    per_token = F.kl_div(F.log_softmax(student, dim=1).transpose(1, 2).reshape(-1, 11),
                         soft.transpose(1, 2).reshape(-1, 11), reduction="batchmean")
    assert float(trainer._student_loss(student, soft, None)) == pytest.approx(float(per_token), rel=1e-5)
    flat_s, flat_t = student[..., 0], soft[..., 0]  # (B, classes): the image case is unchanged
    assert float(trainer._student_loss(flat_s, flat_t, None)) == pytest.approx(
        float(F.kl_div(F.log_softmax(flat_s, dim=1), flat_t, reduction="batchmean")), rel=1e-5)


def test_checkpoint_round_trip(tmp_path):
    space = get_space("transformer", **LM)
    data = _text(space)
    config = SupernetConfig(warmup_epochs=1, epochs=1, batch_size=16, bn_calib_samples=16)
    trainer = SupernetTrainer(build_supernet(space), data.train_x, data.train_y, data.val_x, data.val_y, config)
    trainer.train_epoch()
    trainer.train_epoch()
    save_checkpoint(trainer, tmp_path / "supernet.pt")
    loaded, _ = load_supernet(tmp_path / "supernet.pt", space=space)
    assert isinstance(loaded, TransformerSupernet)
    with torch.no_grad():
        a = trainer.net.eval().run(data.val_x, space.smallest())
        b = loaded.eval().run(data.val_x, space.smallest())
    assert torch.equal(a, b)


def test_data_the_space_cannot_read_is_refused_by_name():
    space = get_space("transformer", **LM)
    net = TransformerSupernet(space)
    data = _text(space)
    with pytest.raises(InputError, match="vocab_size: 12") as err:
        net.check_splits(dataclasses.replace(data, vocab_size=12), source="dataset 'x'")
    assert err.value.field == "vocab_size"
    with pytest.raises(InputError, match="seq_len") as err:
        net.check_splits(dataclasses.replace(data, seq_len=13), source="dataset 'x'")
    assert err.value.field == "seq_len"
    net.check_splits(dataclasses.replace(data, seq_len=8), source="dataset 'x'")  # shorter windows are fine
    with pytest.raises(InputError, match="reads text"):
        net.check_splits(object(), source="dataset 'x'")
    vit = TransformerSupernet(get_space("transformer", **TINY_TRANSFORMER_VIT))
    with pytest.raises(InputError, match="reads images"):
        vit.check_splits(data, source="dataset 'x'")


def test_two_gloo_processes_train_the_transformer_of_one(tmp_path):
    from supernets.fit import fit_supernet
    from supernets.launch import LaunchPlan

    torch.set_num_threads(1)
    space = get_space("transformer", **LM)
    data = _text(space, n=64)
    # SGD: AdamW divides by the root of its second moment, which turns the float noise of gradients that are
    # zero in exact arithmetic (the key bias: softmax ignores it) into whole steps that differ between runs.
    config = SupernetConfig(warmup_epochs=1, epochs=1, qat_start=1, batch_size=32, random_subnets=1,
                            bn_calib_samples=16)
    one = fit_supernet(space, data, config, checkpoint=tmp_path / "one.pt", progress=False, log=None)
    two = fit_supernet(space, data, config, checkpoint=tmp_path / "two.pt", progress=False, log=None,
                       launch=LaunchPlan(processes=2, backend="gloo", timeout_s=120))
    assert two.done and isinstance(two.net, TransformerSupernet)
    reference = one.net.state_dict()
    for key, value in two.net.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, reference[key], rtol=1e-4, atol=2e-5), key
    assert [h.loss for h in two.history] == pytest.approx([h.loss for h in one.history], rel=1e-4)
