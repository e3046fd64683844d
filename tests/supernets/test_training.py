"""Sandwich training, evaluation, checkpoints and the bad-input story of the supernet."""

import numpy as np
import pytest
import torch

from search_spaces import InputError, get_space
from supernets.checkpoint import load_supernet, restore_trainer, save_checkpoint
from supernets.data import load_dataset
from supernets.evaluate import bn_recalibrated
from supernets.fit import fit_supernet
from supernets.supernet import QuantSupernet
from supernets.training import SupernetConfig, SupernetTrainer

TINY = dict(in_channels=1, image_size=8, stem_channels=8, stage_channels=[16, 24], stage_strides=[1, 2],
            stage_se=[False, True], stage_act=["relu", "hswish"], depths=[1, 2], kernels=[3, 5], expands=[2, 4],
            head_channels=32, w_bits=[4, 8], a_bits=[4, 8])
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
