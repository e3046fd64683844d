"""`qnas run` with `distributed: {processes: 2}`: the supernet trains in two gloo processes, the search runs in
the main one, the manifest records the processes, a resume may change them; a section this machine cannot
honour is one error before any run folder."""

from __future__ import annotations

import json
import os

import pytest
import torch
import yaml

from nas.runner import resume_run, start_run
from search_spaces.testing import TINY_MBV3

CONFIG = {
    "name": "tiny_ddp", "seed": 0,
    "dataset": {"name": "digits", "options": {"max_train": 256}},
    "search_space": {"name": "mbv3", "options": TINY_MBV3},
    "supernet": {"warmup_epochs": 1, "epochs": 1, "batch_size": 64, "bn_calib_samples": 128, "random_subnets": 1},
    "search": {"algorithm": "random", "options": {"batch_size": 4}, "budget": 8,
               "objectives": [{"metric": "accuracy", "direction": "max"}, {"metric": "size_kb", "direction": "min"}]},
}
CPUS = len(os.sched_getaffinity(0))


def _write(tmp_path, **sections) -> object:
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(CONFIG | {"output": {"root": str(tmp_path / "runs"), "export_top": 1}} | sections))
    return path


two_cpus = pytest.mark.skipif(CPUS < 2, reason="two training processes need two CPUs")


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """A run whose supernet two local gloo processes trained."""
    torch.set_num_threads(1)
    return start_run(_write(tmp_path_factory.mktemp("ddp"), distributed={"processes": 2}))


@two_cpus
def test_two_processes_train_then_search_and_a_resume_may_change_them(two_processes):
    outcome = two_processes
    manifest = json.loads((outcome.run_dir / "manifest.json").read_text())
    assert manifest["processes"] == 2 and manifest["status"] == "finished"
    assert (outcome.run_dir / "supernet.pt").is_file() and outcome.result.evaluated == 8
    assert "2 local processes (gloo)" in (outcome.run_dir / "report.md").read_text()
    again = resume_run(outcome.run_dir, overrides=["distributed.processes=1"])
    assert again.result.reused == 8
    assert json.loads((outcome.run_dir / "manifest.json").read_text())["resumes"][-1]["processes"] == 1


def test_a_resume_still_refuses_other_changes(tmp_path):
    from search_spaces import InputError

    outcome = start_run(_write(tmp_path, supernet=None, search=CONFIG["search"] | {
        "objectives": [{"metric": "macs"}, {"metric": "size_kb"}]}))
    with pytest.raises(InputError, match="differs from the run's config.yaml .*seed"):
        resume_run(outcome.run_dir, overrides=["distributed.processes=1", "seed=5"])


@pytest.mark.parametrize("distributed, field, words", [
    ({"processes": CPUS + 1}, "distributed.processes", f"this machine lets qnas use {CPUS} CPU"),
    ({"processes": 0}, "distributed.processes", "greater than or equal to 1"),
    ({"processes": 2, "backend": "nccl"}, "distributed.backend", "nccl needs CUDA devices"),
    ({"proceses": 2}, "distributed.proceses", "did you mean 'processes'"),
    ({"launcher": "slurm"}, "distributed.launcher", "'local' or 'ray'"),
    ({"backend": "mpi"}, "distributed.backend", "'auto', 'gloo' or 'nccl'"),
    ({"processes": 2, "extra": 1}, "distributed.extra", "unknown key"),
])
def test_a_section_this_machine_cannot_honour_is_one_error_before_any_run_folder(tmp_path, capsys, distributed,
                                                                                 field, words):
    from nas.cli import main

    if distributed.get("backend") == "nccl" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    path = _write(tmp_path, distributed=distributed)
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}:") and f"{field}:" in err and words in err and "\n" not in err, err
    assert not (tmp_path / "runs").exists()


def test_several_processes_need_a_supernet_to_train(tmp_path, capsys):
    from nas.cli import main

    path = _write(tmp_path, supernet=None, distributed={"processes": 2},
                  search=CONFIG["search"] | {"objectives": [{"metric": "macs"}, {"metric": "size_kb"}]})
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "distributed.processes:" in err and "this config trains none" in err, err
    assert not (tmp_path / "runs").exists()


@two_cpus
def test_torchrun_trains_the_same_supernet(tmp_path, two_processes):
    """``torchrun --nproc-per-node 2 -m nas.cli run CONFIG``: rank 0 owns the run, rank 1 trains its shards."""
    import subprocess
    import sys
    from pathlib import Path

    import socket

    from supernets.checkpoint import read_checkpoint

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # a port free now, for torchrun's own store
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(port),
               "-m", "nas.cli", "run", str(_write(tmp_path)), "--out", str(out), "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == str(out)  # only rank 0 reports
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["processes"] == 2 and manifest["status"] == "finished"
    mine, local = (read_checkpoint(p / "supernet.pt")["model"] for p in (out, two_processes.run_dir))
    for key, want in local.items():
        assert torch.allclose(mine[key].float(), want.float(), atol=1e-6), key  # the same training as spawned


def test_under_torchrun_the_processes_are_torchruns(tmp_path, capsys, monkeypatch):
    from nas.cli import main

    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    path = _write(tmp_path, distributed={"processes": 3})
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "distributed.processes:" in err and "torchrun started 2 processes" in err, err
    assert not (tmp_path / "runs").exists()
