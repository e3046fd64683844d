"""``distributed: {launcher: ray}``: the supernet trains as a Ray Train ``TorchTrainer`` on the cluster of
``executor.address`` and the weights equal one process training the global batch; a worker's failure is an
error here; bad input is one error before any run folder.

The Ray tests share one two-node cluster (1 CPU each, ``two_node_ray`` in conftest.py), so the two training
workers land on different nodes; they run only inside a loopback-only network namespace.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from search_spaces import InputError
from search_spaces.testing import TINY_MBV3
from supernets.checkpoint import read_checkpoint
from supernets.device import CPU
from supernets.launch import LaunchPlan, resolve_launch

# Two float epochs (a warm-up and a sandwich epoch) of 2 steps: QAT epochs would amplify the different summation
# orders of 1 and 2 processes beyond float tolerance (see tests/supernets/test_distributed.py).
SUPERNET = {"warmup_epochs": 1, "epochs": 1, "qat_start": 1, "batch_size": 32, "bn_calib_samples": 64,
            "random_subnets": 1}


def _config(tmp_path: Path, address: str | None, **distributed) -> Path:
    """A tiny search whose supernet (2 epochs of 2 steps on 64 digits) trains in Ray Train workers."""
    config = {"name": "ray_ddp", "seed": 0, "dataset": {"name": "digits", "options": {"max_train": 64}},
              "search_space": {"name": "mbv3", "options": TINY_MBV3}, "supernet": SUPERNET,
              "search": {"algorithm": "random", "options": {"batch_size": 4}, "budget": 4,
                         "objectives": [{"metric": "accuracy", "direction": "max"}, {"metric": "size_kb"}]},
              "executor": {"kind": "ray", "address": address, "num_workers": 2},
              "distributed": {"processes": 2, "launcher": "ray"} | distributed,
              "output": {"root": str(tmp_path / "runs"), "export_top": 0}}
    path = tmp_path / "ray_ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# ---- no Ray needed ------------------------------------------------------------------------------------------
def test_a_ray_plan_is_not_counted_against_this_machine():
    plan = resolve_launch(processes=64, backend="auto", launcher="ray", placement=CPU)
    assert plan == LaunchPlan(processes=64, backend="gloo", launcher="ray")  # the cluster's resources decide


def test_a_ray_launch_refuses_a_cuda_index_it_would_ignore():
    from supernets.device import Placement

    with pytest.raises(InputError, match=r"with launcher: ray every worker trains on the GPU Ray gives it") as err:
        resolve_launch(processes=2, backend="gloo", launcher="ray", placement=Placement(torch.device("cuda", 1)))
    assert err.value.field == "device.index"
    assert resolve_launch(processes=1, backend="gloo", launcher="ray",  # one process trains here, on that device
                          placement=Placement(torch.device("cuda", 1))).processes == 1


@pytest.mark.parametrize(("options", "words"), [
    ({"torchrun": True}, "torchrun started these processes, and launcher: ray starts its own"),
    ({"launcher": "slurm"}, "unknown launcher 'slurm'"),
])
def test_bad_ray_launches_name_the_launcher(options, words):
    with pytest.raises(InputError) as err:
        resolve_launch(**({"processes": 2, "backend": "auto", "launcher": "ray", "placement": CPU} | options))
    assert err.value.field == "distributed.launcher" and words in str(err.value)


def test_the_capacity_check_counts_workers_per_node():
    from supernets.launch_ray import check_capacity, worker_resources

    two = [{"CPU": 1.0}, {"CPU": 1.5, "GPU": 1.0}]
    check_capacity(two, LaunchPlan(processes=2, launcher="ray"), CPU)
    with pytest.raises(InputError, match=r"3 processes need \{CPU: 1\} each, .* holds 2; lower") as err:
        check_capacity(two, LaunchPlan(processes=3, launcher="ray"), CPU)
    assert err.value.field == "distributed.processes"
    with pytest.raises(InputError, match=r"need \{CPU: 2\} each"):
        check_capacity(two, LaunchPlan(processes=1, threads=2, launcher="ray"), CPU)
    cuda = dataclasses.replace(CPU, device=torch.device("cuda", 0))  # a CUDA run asks a GPU per worker
    assert worker_resources(cuda) == {"CPU": 1.0, "GPU": 1.0}
    check_capacity(two, LaunchPlan(processes=1, launcher="ray"), cuda)
    with pytest.raises(InputError, match=r"2 processes need \{CPU: 1, GPU: 1\} each, .*\{CPU: 2.5, GPU: 1\}"):
        check_capacity(two, LaunchPlan(processes=2, launcher="ray"), cuda)


# ---- on the two-node cluster ----------------------------------------------------------------------------------
def test_two_ray_train_workers_train_the_weights_of_one_process(two_node_ray, tmp_path):
    """``qnas run`` with launcher: ray: the workers (one per node) train the supernet of one process, listening
    on loopback only; rank 0's checkpoint is the run's, and Ray Train leaves nothing in the run folder."""
    from nas.executors.ray_env import listening_sockets, session_pids, wildcard_listeners
    from nas.experiment import SilentReporter, build_space, check_dataset
    from nas.kinds import load_experiment
    from nas.runner import start_run
    from supernets.fit import fit_supernet

    torch.set_num_threads(1)
    path = _config(tmp_path, two_node_ray)
    exposed: list = []
    lines: list[str] = []

    class Reporter(SilentReporter):
        def info(self, line: str) -> None:
            lines.append(line)
            if line.startswith("supernet epoch"):  # rank 0 is training: its store and gloo sockets are open
                exposed.extend(wildcard_listeners(listening_sockets(session_pids())))

    outcome = start_run(path, reporter=Reporter())
    assert "training the supernet in 2 Ray Train workers (gloo)" in lines
    assert sum(line.startswith("supernet epoch") for line in lines) == 2  # one line per epoch, from rank 0
    assert not exposed, exposed
    assert sorted(p.name for p in outcome.run_dir.iterdir() if p.name.startswith(".")) == []  # no marker, no Ray
    manifest = json.loads((outcome.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["processes"] == 2 and outcome.result.evaluated == 4
    assert "2 Ray Train workers on the Ray cluster (gloo)" in (outcome.run_dir / "report.md").read_text()

    loaded = load_experiment(path)  # the reference: one process, the whole batch of 32 per step
    space = build_space(loaded)
    _, data = check_dataset(loaded, space)
    one = fit_supernet(space, data, loaded.config.supernet.train_config(), checkpoint=tmp_path / "one.pt",
                       progress=False, log=None)
    ray_state = read_checkpoint(outcome.run_dir / "supernet.pt")
    for key, want in one.net.state_dict().items():
        got = ray_state["model"][key]
        if want.is_floating_point():
            worst = float((got - want).abs().max())
            assert torch.allclose(got, want, rtol=1e-4, atol=2e-5), (key, worst)
        else:
            assert torch.equal(got, want), key
    for mine, ref in zip(ray_state["history"], one.history, strict=True):
        assert mine["phase"] == ref.phase and math.isclose(mine["loss"], ref.loss, rel_tol=1e-4)


def test_a_failing_ray_worker_is_an_error_here(two_node_ray, tmp_path):
    from nas.executors.ray_env import RaySession
    from search_spaces.testing import tiny_mbv3
    from supernets.config import SupernetConfig
    from supernets.data import load_dataset
    from supernets.fit import fit_supernet

    data = load_dataset("digits", max_train=64)
    labels = data.train_y.clone()
    labels[0] = 99  # cross-entropy refuses a label beyond the 10 classes: every worker whose shard holds it fails
    broken = data.__class__(**{**data.__dict__, "train_y": labels})
    session = RaySession(two_node_ray)
    try:
        with pytest.raises(RuntimeError, match="a training process failed: IndexError: Target 99 is out of bounds"):
            fit_supernet(tiny_mbv3(), broken, SupernetConfig(**SUPERNET), checkpoint=tmp_path / "s.pt", progress=False,
                         log=None, launch=LaunchPlan(processes=2, launcher="ray", timeout_s=120))
    finally:
        session.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no checkpoint, marker or Ray Train folder


@pytest.mark.parametrize(("distributed", "field", "words"), [
    ({"processes": 3}, "distributed.processes", "3 processes need {CPU: 1} each, but the Ray cluster (2 node(s), "
                                                "{CPU: 2} in all) holds 2"),
])
def test_a_cluster_too_small_is_one_error_before_any_run_folder(two_node_ray, tmp_path, capsys, distributed, field,
                                                                words):
    from nas.cli import main

    path = _config(tmp_path, two_node_ray, **distributed)
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}:") and f"{field}:" in err and words in err and "\n" not in err, err
    assert not (tmp_path / "runs").exists()


def test_validate_leaves_no_ray_connection_behind(two_node_ray, tmp_path, capsys):
    """``qnas validate`` connects to check the cluster of a Ray launcher, and lets go of it when done."""
    from nas.cli import main
    from nas.executors import ray_env

    assert main(["validate", str(_config(tmp_path, two_node_ray))]) == 0
    assert "Ray Train workers" in capsys.readouterr().out
    assert ray_env._CURRENT is None
