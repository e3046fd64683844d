"""Sandwich training, evaluation, checkpoints and the bad-input story of the supernet."""

import copy

import numpy as np
import pytest
import torch

from search_spaces import InputError, get_space
from search_spaces.testing import TINY_MBV3
from supernets.checkpoint import load_supernet, restore_trainer, save_checkpoint
from supernets.data import load_dataset
from supernets.device import CPU, Placement, resolve_placement
from supernets.evaluate import SubnetEvaluator, bn_recalibrated
from supernets.fit import fit_supernet
from supernets.supernet import QuantSupernet
from supernets.training import SupernetConfig, SupernetTrainer, _add_projected

TINY = TINY_MBV3
CFG = SupernetConfig(warmup_epochs=1, epochs=2, batch_size=64, lr=0.1, bn_calib_samples=128, random_subnets=1)


@pytest.fixture(scope="module")
def digits():
    torch.set_num_threads(1)
    return load_dataset("digits", max_train=512)


def make_trainer(digits, cfg=CFG, **space_options):
    space = get_space("mbv3", **(TINY | space_options))
    net = QuantSupernet(space, image_size=8)
    return SupernetTrainer(net, digits.train_x, digits.train_y, digits.val_x, digits.val_y, cfg)


def test_training_learns_and_logs_extremes(digits):
    trainer = make_trainer(digits, CFG.model_copy(update={"epochs": 5, "qat_start": 1}))
    logs = [trainer.train_epoch() for _ in range(trainer.total_epochs)]
    assert [log.phase for log in logs] == ["warmup", "fp"] + ["qat"] * 4
    assert logs[-1].max_acc > 0.5 and logs[-1].min_acc > 0.2  # 10 classes: chance is 0.1
    assert logs[-1].loss < logs[1].loss


def test_resume_from_checkpoint_equals_uninterrupted(digits, tmp_path):
    straight = make_trainer(digits)
    for _ in range(straight.total_epochs):
        straight.train_epoch()
    first = make_trainer(digits)
    first.train_epoch()
    first.train_epoch()
    save_checkpoint(first, tmp_path / "ck.pt")
    resumed = make_trainer(digits)
    restore_trainer(resumed, tmp_path / "ck.pt")
    resumed.train_epoch()
    for (name, a), b in zip(straight.net.state_dict().items(), resumed.net.state_dict().values()):
        assert torch.equal(a, b), name


def test_fit_supernet_writes_checkpoint_and_load_rebuilds(digits, tmp_path):
    cfg = CFG.model_copy(update={"epochs": 1, "warmup_epochs": 0})
    space = get_space("mbv3", **TINY)
    trainer = fit_supernet(space, digits, cfg, checkpoint=tmp_path / "s.pt", progress=False, log=None)
    net, state = load_supernet(tmp_path / "s.pt", space=space)
    x = digits.val_x[:32]
    with torch.no_grad():
        assert torch.equal(net.eval().run(x, space.largest()), trainer.net.eval().run(x, space.largest()))
    assert state["epoch"] == 1
    lines: list[str] = []
    again = fit_supernet(space, digits, cfg, checkpoint=tmp_path / "s.pt", progress=False, log=lines.append)
    assert again.done and not again.history[1:] and lines == [f"supernet already trained (1/1 epochs): loaded "
                                                              f"{tmp_path / 's.pt'}"]


def test_evaluator_matches_extracted_model(digits):
    trainer = make_trainer(digits, CFG.model_copy(update={"epochs": 1}))
    for _ in range(trainer.total_epochs):
        trainer.train_epoch()
    ev = trainer.evaluator()
    rng = np.random.default_rng(0)
    for genome in [trainer.net.space.sample(rng) for _ in range(3)]:
        assert abs(ev.accuracy(genome) - ev.extracted_accuracy(genome)) <= 1 / len(digits.val_x)


def test_bn_recalibration_restores_shared_statistics(digits):
    trainer = make_trainer(digits)
    net, space = trainer.net, trainer.net.space
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    with net.subnet(space.smallest()), bn_recalibrated(net, [digits.train_x[:64]]):
        changed = any(not torch.equal(before[k], v) for k, v in net.state_dict().items() if "running" in k)
    assert changed
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items() if "running" in k)


def test_subnet_context_restores_after_error(digits):
    net = make_trainer(digits).net
    with pytest.raises(ZeroDivisionError):
        with net.subnet(net.space.largest()):
            1 / 0
    with pytest.raises(RuntimeError, match="no subnet is active"):
        net(digits.val_x[:2])


def test_checkpoint_for_another_space_is_refused(digits, tmp_path):
    trainer = make_trainer(digits)
    save_checkpoint(trainer, tmp_path / "ck.pt")
    other = get_space("mbv3", **(TINY | {"head_channels": 48}))
    with pytest.raises(InputError, match=r"ck\.pt: space\.options: .*head_channels: checkpoint 32 vs config 48"):
        load_supernet(tmp_path / "ck.pt", space=other)


def test_checkpoint_with_another_config_is_refused(digits, tmp_path):
    save_checkpoint(make_trainer(digits), tmp_path / "ck.pt")
    changed = make_trainer(digits, CFG.model_copy(update={"lr": 0.2}))
    with pytest.raises(InputError, match=r"config: .*lr: checkpoint 0.1 vs config 0.2"):
        restore_trainer(changed, tmp_path / "ck.pt")


def test_corrupt_and_foreign_checkpoints_name_the_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(InputError, match=r"bad\.pt: cannot be read as a qnas supernet checkpoint"):
        load_supernet(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(InputError, match=r"foreign\.pt: format: not a qnas supernet checkpoint"):
        load_supernet(foreign)
    with pytest.raises(InputError, match="not found"):
        load_supernet(tmp_path / "missing.pt")


def test_dataset_that_does_not_fit_the_space_is_refused(digits, tmp_path):
    space = get_space("mbv3", **(TINY | {"in_channels": 3}))
    with pytest.raises(InputError, match="dataset has 1 in channels but the search space expects 3"):
        fit_supernet(space, digits, CFG, checkpoint=tmp_path / "x.pt", progress=False, log=None)


def test_genome_outside_the_space_is_refused(digits):
    net = make_trainer(digits).net
    bad = net.space.largest().with_values({"s1.b1.kernel": 7})
    with pytest.raises(InputError, match=r"s1\.b1\.kernel: value 7 is not allowed; allowed: \[3, 5\]"):
        net.run(digits.val_x[:2], bad)


# ------------------------------------------------------------------------------ devices and precision

BF16 = resolve_placement(type="cpu", precision="bf16")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def make_placed_trainer(digits, placement, cfg=CFG):
    net = QuantSupernet(get_space("mbv3", **TINY), image_size=8)
    return SupernetTrainer(net, digits.train_x, digits.train_y, digits.val_x, digits.val_y, cfg, placement=placement)


def test_explicit_cpu_placement_is_the_default(digits):
    a, b = make_trainer(digits, CFG.model_copy(update={"epochs": 1})), make_placed_trainer(
        digits, CPU, CFG.model_copy(update={"epochs": 1}))
    assert [a.train_epoch() for _ in range(2)][-1].loss == [b.train_epoch() for _ in range(2)][-1].loss
    assert all(torch.equal(x, y) for x, y in zip(a.net.state_dict().values(), b.net.state_dict().values()))


def test_trains_under_cpu_bf16_autocast(digits):
    cfg = CFG.model_copy(update={"epochs": 2, "qat_start": 0, "wdr_weight": 0.01})
    trainer = make_placed_trainer(digits, BF16, cfg)
    seen = []
    logs = [trainer.train_epoch(on_step=lambda step, loss: seen.append(loss)) for _ in range(trainer.total_epochs)]
    assert [log.phase for log in logs] == ["warmup", "qat", "qat"]
    assert all(np.isfinite(log.loss) for log in logs) and all(np.isfinite(seen)) and len(seen) == 3 * 8
    assert logs[-1].loss < logs[0].loss + 1.0 and logs[-1].max_acc > 0.2  # learning; chance is 0.1
    fp32 = SubnetEvaluator(trainer.net, digits.train_x[:128], digits.val_x, digits.val_y)
    bf16 = trainer.evaluator()
    assert bf16.placement is BF16
    largest = trainer.net.space.largest()
    assert abs(fp32.accuracy(largest) - bf16.accuracy(largest)) < 0.1
    with torch.no_grad(), BF16.autocast():
        assert trainer.net.eval().run(digits.val_x[:4], largest).dtype == torch.bfloat16


def test_checkpoint_moves_between_placements(digits, tmp_path):
    first = make_placed_trainer(digits, BF16)
    first.train_epoch()
    save_checkpoint(first, tmp_path / "ck.pt")
    resumed = make_trainer(digits)  # fp32
    restore_trainer(resumed, tmp_path / "ck.pt")
    assert all(torch.equal(a, b) for a, b in zip(first.net.state_dict().values(), resumed.net.state_dict().values()))
    assert np.isfinite(resumed.train_epoch().loss) and resumed.epoch == 2


def test_evaluator_refuses_a_placement_elsewhere(digits):
    net = QuantSupernet(get_space("mbv3", **TINY), image_size=8)
    with pytest.raises(ValueError, match="the supernet is on cpu but the placement is cuda:0"):
        SubnetEvaluator(net, digits.train_x[:64], digits.val_x, digits.val_y,
                        placement=Placement(torch.device("cuda", 0)))


def test_fit_supernet_with_a_placement(digits, tmp_path):
    cfg = CFG.model_copy(update={"epochs": 1, "warmup_epochs": 0})
    trainer = fit_supernet(get_space("mbv3", **TINY), digits, cfg, checkpoint=tmp_path / "s.pt", progress=False,
                           log=None, placement=BF16)
    assert trainer.placement is BF16 and trainer.done and np.isfinite(trainer.history[-1].loss)


@needs_cuda
def test_cuda_training_samples_like_the_cpu_and_checkpoints_cross_devices(digits, tmp_path):
    from supernets.augment import augment_batch

    x = digits.train_x[:64].repeat(1, 3, 1, 1)
    assert torch.equal(augment_batch(x, torch.Generator().manual_seed(1)),
                       augment_batch(x.cuda(), torch.Generator().manual_seed(1)).cpu())
    gpu = make_placed_trainer(digits, resolve_placement(type="cuda"))
    assert gpu.net.device.type == "cuda" and gpu.train_x.is_cuda
    assert np.isfinite(gpu.train_epoch().loss)
    save_checkpoint(gpu, tmp_path / "gpu.pt")
    cpu = make_trainer(digits)
    restore_trainer(cpu, tmp_path / "gpu.pt")  # GPU -> CPU
    assert all(torch.equal(a.cpu(), b) for a, b in zip(gpu.net.state_dict().values(), cpu.net.state_dict().values()))
    assert np.isfinite(cpu.train_epoch().loss)
    save_checkpoint(cpu, tmp_path / "cpu.pt")
    again = make_placed_trainer(digits, resolve_placement(type="cuda", precision="fp16"))
    restore_trainer(again, tmp_path / "cpu.pt")  # CPU -> GPU, then fp16 with loss scaling
    assert again.scaler is not None and np.isfinite(again.train_epoch().loss) and again.epoch == 3
    net, _ = load_supernet(tmp_path / "gpu.pt")
    assert net.device.type == "cpu"


def test_augmentation_flip_equals_masked_assignment():
    """The flip is a select now (no host sync on CUDA); it must pick exactly what masked assignment picked."""
    import torch.nn.functional as F

    from supernets.augment import augment_batch

    x = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    got = augment_batch(x, torch.Generator().manual_seed(4))
    gen = torch.Generator().manual_seed(4)  # the previous implementation, drawing in the same order
    dy, dx = torch.randint(0, 3, (16,), generator=gen), torch.randint(0, 3, (16,), generator=gen)
    padded = F.pad(x, (1, 1, 1, 1))
    ref = torch.stack([padded[i, :, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8] for i in range(16)])
    mirror = torch.rand(16, generator=gen) < 0.5
    ref[mirror] = ref[mirror].flip(-1)
    assert mirror.any() and (~mirror).any() and torch.equal(got, ref)


def test_quantizer_learning_rate_scale(digits):
    assert len(make_trainer(digits).optimizer.param_groups) == 2  # default: the optimizer layout of old checkpoints
    trainer = make_trainer(digits, CFG.model_copy(update={"quant_lr_scale": 0.1, "epochs": 1}))
    groups = trainer.optimizer.param_groups
    names = {id(p): n for n, p in trainer.net.named_parameters()}
    assert len(groups) == 3 and groups[2]["params"] and all("quant" in names[id(p)] for p in groups[2]["params"])
    assert not any("quant" in names[id(p)] for g in groups[:2] for p in g["params"])
    trainer.train_epoch()
    trainer.train_epoch()  # the cosine schedule scales every group alike
    assert groups[2]["lr"] == pytest.approx(0.1 * groups[0]["lr"]) and groups[2]["weight_decay"] == 0.0


def test_projection_removes_only_a_conflicting_component():
    largest = [torch.tensor([1.0, 0.0]), torch.tensor([1.0]), None]
    params = [torch.nn.Parameter(torch.zeros(n)) for n in (2, 1, 2)]
    for students in ([-4.0, 3.0], None, [7.0, 1.0]), ([2.0, 3.0], None, [7.0, 1.0]):
        for p, grad in zip(params, students):
            p.grad = None if grad is None else torch.tensor(grad)
        _add_projected([t if t is None else t.clone() for t in largest], params)
        got = [p.grad.tolist() for p in params]
        if students[0][0] < 0:  # (-4, 3 | 0 | 7, 1) against (1, 0 | 1 | 0): dot -4, so 2 × the largest's is added
            assert got == [[-1.0, 3.0], [3.0], [7.0, 1.0]]
        else:  # agreeing gradients are summed unchanged
            assert got == [[3.0, 3.0], [1.0], [7.0, 1.0]]


def _flat_grad(net) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in net.parameters()])


def _step_gradient(trainer, x, y) -> torch.Tensor:
    """The flat gradient the optimizer applies in one quantized sandwich step on (x, y)."""
    seen = []
    trainer.optimizer.register_step_pre_hook(lambda *_: seen.append(_flat_grad(trainer.net)))
    trainer._step_terms(x, y, "qat")
    return seen[0]


def _largest_gradient(trainer, x, y) -> torch.Tensor:
    net = copy.deepcopy(trainer.net)
    torch.nn.functional.cross_entropy(net.run(x, net.space.largest(), quantize=True), y,
                                      label_smoothing=trainer.cfg.label_smoothing).backward()
    return _flat_grad(net)


def test_student_weight_and_projection_shape_the_step(digits):
    x, y = digits.train_x[:64], digits.train_y[:64]
    steps = {}
    for mode in ("sum", "project"):
        for weight in (1.0, 0.25):
            cfg = CFG.model_copy(update={"student_gradients": mode, "student_weight": weight, "random_subnets": 2,
                                         "grad_clip": 1e9, "seed": 3})
            trainer = make_trainer(digits, cfg)
            trainer.net.init_quantizers(x)
            largest = _largest_gradient(trainer, x, y)
            steps[mode, weight] = _step_gradient(trainer, x, y)
    scale = float(largest.abs().max())
    students = steps["sum", 1.0] - largest
    assert torch.allclose(steps["sum", 0.25] - largest, 0.25 * students, atol=1e-5 * scale)
    dot = float(students @ largest)
    assert dot < 0  # this batch's students pull against the largest subnet: the case projection is for
    for weight in (1.0, 0.25):
        projected = steps["project", weight]
        assert float(projected @ largest) == pytest.approx(float(largest @ largest), rel=1e-3)
        want = largest + weight * students - weight * dot / float(largest @ largest) * largest
        assert torch.allclose(projected, want, atol=1e-5 * scale)


def test_a_shard_is_augmented_as_its_rows_of_the_whole_batch():
    """A training process augments only its shard, with the whole batch's random numbers: the same images as
    augmenting the whole batch and taking the shard, and the generator ends where it would have."""
    from supernets.augment import augment_batch

    x = torch.randn(11, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    whole_gen, shard_gen = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    whole = augment_batch(x, whole_gen)
    for rows in (slice(0, 4), slice(4, 8), slice(8, 11)):
        assert torch.equal(augment_batch(x[rows], shard_gen, rows=rows, batch=11), whole[rows])
        shard_gen.set_state(torch.Generator().manual_seed(4).get_state())
    augment_batch(x[4:8], shard_gen, rows=slice(4, 8), batch=11)
    assert torch.equal(shard_gen.get_state(), whole_gen.get_state())
    with pytest.raises(ValueError, match="cannot be the rows"):
        augment_batch(x[:3], shard_gen, rows=slice(0, 4), batch=11)
