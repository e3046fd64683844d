"""Supernet training in several processes (gloo on the CPU) equals one process training the global batch."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from search_spaces.testing import tiny_mbv3
from supernets.checkpoint import read_checkpoint, save_checkpoint
from supernets.config import SupernetConfig
from supernets.data import load_dataset
from supernets.distributed import World
from supernets.fit import fit_supernet
from supernets.launch import LaunchPlan
from supernets.supernet import QuantSupernet
from supernets.training import SupernetTrainer

# 2 steps per epoch (64 images, batch 32). CONFIG: a float warm-up epoch and a float sandwich epoch, so the
# synchronised BN, the loss weights and the gradient all-reduce are exercised on the largest, the smallest and a
# random subnet. QAT: one sandwich epoch fake-quantized from the start (quantizers initialised from the seeded
# weights, identical everywhere): LSQ steps and zero points too. Later QAT epochs are not compared: a rounding
# that a float difference of 1e-7 flips moves an activation by a whole step, so QAT amplifies the different
# summation orders of 1 and 2 processes into differences far above float tolerance (in one process as well).
CONFIG = SupernetConfig(warmup_epochs=1, epochs=1, qat_start=1, batch_size=32, random_subnets=1, bn_calib_samples=64,
                        seed=0)
QAT = CONFIG.model_copy(update={"warmup_epochs": 0, "qat_start": 0})
TWO = LaunchPlan(processes=2, backend="gloo", timeout_s=120)  # a lost peer fails the test within 2 minutes


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    return tiny_mbv3(), load_dataset("digits", max_train=64)


@pytest.fixture(scope="module")
def single(setup, tmp_path_factory):
    """The references: one process, the whole batch of 32 per step (one per config, trained on first use)."""
    space, data = setup
    done: dict[SupernetConfig, SupernetTrainer] = {}

    def train(config: SupernetConfig) -> SupernetTrainer:
        if config not in done:
            done[config] = fit_supernet(space, data, config, checkpoint=tmp_path_factory.mktemp("one") / "s.pt",
                                        progress=False, log=None)
        return done[config]
    return train


def _assert_same_weights(state: dict, reference: dict) -> None:
    """Equal to float tolerance (2e-5: the largest difference measured here was 5e-6, on weights of ~0.3)."""
    assert state.keys() == reference.keys()
    for key, want in reference.items():
        if want.is_floating_point():
            worst = float((state[key] - want).abs().max())
            assert torch.allclose(state[key], want, rtol=1e-4, atol=2e-5), (key, worst)
        else:
            assert torch.equal(state[key], want), key


PROJECT = CONFIG.model_copy(update={"student_gradients": "project", "student_weight": 0.5})


@pytest.mark.parametrize("config", [CONFIG, QAT, PROJECT], ids=["float", "qat", "project"])
def test_two_gloo_processes_train_the_weights_of_one(setup, single, tmp_path, config):
    space, data = setup
    events = []
    trainer = fit_supernet(space, data, config, checkpoint=tmp_path / "s.pt", progress=False, log=events.append,
                           launch=TWO)
    reference = single(config)
    assert trainer.done and trainer.epoch == reference.epoch
    _assert_same_weights(trainer.net.state_dict(), reference.net.state_dict())
    for mine, ref in zip(trainer.history, reference.history, strict=True):  # rank 0's log: global-batch losses
        assert mine.phase == ref.phase and math.isclose(mine.loss, ref.loss, rel_tol=1e-4)
        assert math.isclose(mine.max_acc, ref.max_acc, abs_tol=2 / len(data.val_y))
    assert events[0] == "training the supernet in 2 processes (gloo)"
    assert len(events) == 1 + reference.epoch  # and one line per epoch from rank 0


def test_a_run_started_on_one_process_resumes_on_two(setup, single, tmp_path):
    space, data = setup
    first = SupernetTrainer(QuantSupernet(space, image_size=data.image_size, seed=CONFIG.seed), data.train_x,
                            data.train_y, data.val_x, data.val_y, CONFIG)
    first.train_epoch()
    save_checkpoint(first, tmp_path / "s.pt")  # as a run killed after its first epoch leaves it
    trainer = fit_supernet(space, data, CONFIG, checkpoint=tmp_path / "s.pt", progress=False, log=None, launch=TWO)
    _assert_same_weights(trainer.net.state_dict(), single(CONFIG).net.state_dict())
    assert read_checkpoint(tmp_path / "s.pt")["epoch"] == 2


def test_local_batch_norm_trains_but_is_not_one_process(setup, single, tmp_path):
    space, data = setup
    plain = LaunchPlan(processes=2, backend="gloo", sync_bn=False, timeout_s=120)
    trainer = fit_supernet(space, data, CONFIG, checkpoint=tmp_path / "s.pt", progress=False, log=None, launch=plain)
    assert trainer.done
    with pytest.raises(AssertionError):  # BN of 16 images per shard instead of 32: other weights
        _assert_same_weights(trainer.net.state_dict(), single(CONFIG).net.state_dict())


def test_launch_plans_on_the_cpu():
    from supernets.device import CPU
    from supernets.launch import resolve_launch

    plan = resolve_launch(processes=2, backend="auto", launcher="local", placement=CPU, threads=1, sync_bn=False)
    assert plan == LaunchPlan(processes=2, backend="gloo", threads=1, sync_bn=False)


@pytest.mark.parametrize(("options", "field", "words"), [
    ({"processes": 10_000}, "distributed.processes", "this machine lets qnas use"),
    ({"processes": 2, "backend": "nccl"}, "distributed.backend", "nccl needs CUDA devices"),
    ({"processes": 2, "launcher": "ray", "torchrun": True}, "distributed.launcher", "torchrun started these processes"),
    ({"processes": 2, "batch_size": 1}, "distributed.processes", "cannot share a batch of 1 images"),
])
def test_bad_launches_name_the_key_and_the_machine(options, field, words):
    from search_spaces import InputError
    from supernets.device import CPU
    from supernets.launch import resolve_launch

    with pytest.raises(InputError) as err:
        resolve_launch(**({"backend": "auto", "launcher": "local", "placement": CPU} | options))
    assert err.value.field == field and words in str(err.value)


def test_cuda_launches_take_one_device_per_process(monkeypatch):
    from search_spaces import InputError
    from supernets.device import resolve_placement
    from supernets.launch import resolve_launch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: True)
    assert resolve_launch(processes=2, backend="auto", launcher="local", placement=resolve_placement()).backend == "nccl"
    with pytest.raises(InputError) as err:
        resolve_launch(processes=2, backend="auto", launcher="local", placement=resolve_placement(index=1))
    assert err.value.field == "distributed.processes"
    assert "from cuda:1 on, but this machine has 2 CUDA devices (cuda:0 Fake GPU, cuda:1 Fake GPU)" in str(err.value)


@pytest.mark.parametrize(("rank", "size", "n", "want"), [
    (0, 1, 32, slice(0, 32)), (0, 2, 32, slice(0, 16)), (1, 2, 32, slice(16, 32)),
    (0, 3, 32, slice(0, 11)), (1, 3, 32, slice(11, 22)), (2, 3, 32, slice(22, 32)),
])
def test_shards_cover_the_batch_once(rank, size, n, want):
    world = World(rank, size)
    assert world.shard(n) == want
    assert math.isclose(world.weight(want.stop - want.start, n), (want.stop - want.start) / n if size > 1 else 1.0)


def test_a_failing_worker_is_an_error_here(setup, tmp_path):
    space, data = setup
    broken = data.__class__(**{**data.__dict__, "num_classes": 3})  # the head has 10 outputs: workers fail
    bad_labels = broken.train_y.clone()
    bad_labels[0] = 99  # cross-entropy refuses a label beyond the classes
    broken = broken.__class__(**{**broken.__dict__, "train_y": bad_labels, "num_classes": 10})
    with pytest.raises(RuntimeError, match="a training process failed: .*"):
        fit_supernet(space, broken, CONFIG, checkpoint=tmp_path / "s.pt", progress=False, log=None, launch=TWO)
    assert not (tmp_path / "s.pt").exists()


KILLED_RUN = """
import sys, torch
from search_spaces.testing import tiny_mbv3
from supernets.config import SupernetConfig
from supernets.data import load_dataset
from supernets.fit import fit_supernet
from supernets.launch import LaunchPlan
torch.set_num_threads(1)
config = SupernetConfig(warmup_epochs=1, epochs=1000, batch_size=32, random_subnets=1, bn_calib_samples=64)
fit_supernet(tiny_mbv3(), load_dataset("digits", max_train=64), config, checkpoint=sys.argv[1], progress=False,
             log=None, launch=LaunchPlan(processes=2, timeout_s=120))
"""


def test_workers_listen_on_loopback_only_and_die_with_a_killed_run(tmp_path):
    """The run (which serves the rendezvous store) and its training processes listen on 127.0.0.1 only; a run
    killed by SIGKILL leaves none of them behind."""
    import signal
    import subprocess
    import sys
    import time

    import psutil

    checkpoint = tmp_path / "s.pt"
    run = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(checkpoint)], cwd=Path(__file__).parents[2])
    try:
        deadline = time.monotonic() + 120
        while not checkpoint.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # rank 0 has written its first epoch: both workers are training
        assert checkpoint.exists(), "the workers never finished an epoch"
        workers = psutil.Process(run.pid).children(recursive=True)
        assert len(workers) >= 2

        def listening(processes):
            return [c.laddr for p in processes for c in p.net_connections("tcp") if c.status == psutil.CONN_LISTEN]

        store = listening([psutil.Process(run.pid)])
        assert store, "the run serves no rendezvous store"
        everything = store + listening(workers)
        assert all(addr.ip == "127.0.0.1" for addr in everything), everything  # loopback only
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
        gone, alive = psutil.wait_procs(workers, timeout=20)
        assert not alive, [p.pid for p in alive]
    finally:
        if run.poll() is None:
            run.kill()
