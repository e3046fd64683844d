"""Executors: local and Ray give identical results, a killed worker's work is retried and journaled once,
and bad input (unreachable address, missing resources, no Ray) fails before any run folder exists.

The Ray tests share ONE local cluster (a head and a second node with its own resource, both on
127.0.0.1 with their own ports, token auth with a random token), started with the settings of
/work/shared/RAY.md and shut down at the end; no Ray process may listen on a wildcard address. They
run only inside a loopback-only network namespace (``make test`` makes one with ``unshare -n`` where
it can) unless ``QNAS_RAY_TESTS=host`` says the host network may be used.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from nas.evaluators import AnalyticEvaluator, CompositeEvaluator
from nas.executors import LocalExecutor, check_executor, split_even
from nas.executors.ray_executor import check_fits, workers_that_fit
from nas.journal import Journal, read_journal
from nas.objectives import Objective
from nas.runner import start_run
from nas.search import run_search
from search_spaces import InputError, get_space
from search_spaces.testing import TINY_MBV3
from supernets.data import load_dataset
from supernets.evaluate import SubnetEvaluator

ROOT = Path(__file__).resolve().parents[2]
SPACE = TINY_MBV3
TRAIN = {"warmup_epochs": 1, "epochs": 1, "batch_size": 64, "bn_calib_samples": 128, "random_subnets": 1}
OBJECTIVES = [{"metric": "accuracy", "direction": "max"}, {"metric": "size_kb", "direction": "min"}]


# ---- no Ray needed ------------------------------------------------------------------------------
def test_split_even_keeps_order_and_balance():
    assert split_even(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert split_even([1], 4) == [[1]] and split_even([], 2) == []


def test_capacity_check_names_the_missing_resource_or_the_shortfall():
    nodes = [{"CPU": 1.0, "second": 1.0}, {"CPU": 1.0}]
    assert workers_that_fit(nodes, {"CPU": 0.5}) == 4 and workers_that_fit(nodes, {"CPU": 0.5, "second": 1}) == 1
    with pytest.raises(InputError, match="no 'GPU' resource") as info:
        check_fits(nodes, {"CPU": 0.5, "GPU": 1.0}, 1)
    assert info.value.field == "executor.resources"
    with pytest.raises(InputError, match="can hold 4 of the 5 workers") as info:
        check_fits(nodes, {"CPU": 0.5}, 5)
    assert info.value.field == "executor.num_workers"


def test_local_executor_imports_no_ray():
    code = ("import sys, nas.executors, nas.stages, nas.runner, nas.config; "
            "print('ray' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "False"


# ---- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny trained supernet (4 s): one float epoch and one sandwich epoch on 256 digits."""
    from nas.config_sections import SupernetSection
    from supernets.fit import fit_supernet

    torch.set_num_threads(1)  # 10x faster than 2 threads on this shared 2-core machine; workers use 1 too
    path = tmp_path_factory.mktemp("supernet") / "supernet.pt"
    data = load_dataset("digits", seed=0, max_train=256)
    fit_supernet(get_space("mbv3", **SPACE), data, SupernetSection(**TRAIN).train_config(), checkpoint=path,
                 progress=False, log=None)
    return path


def write_config(folder: Path, checkpoint: Path, executor: dict[str, Any], *, budget: int = 12) -> Path:
    config = {"name": "exec", "seed": 0, "dataset": {"name": "digits", "options": {"max_train": 256}},
              "search_space": {"name": "mbv3", "options": SPACE},
              "supernet": {"checkpoint": str(checkpoint), "bn_calib_samples": 128},
              "search": {"algorithm": "random", "options": {"batch_size": 6}, "budget": budget,
                         "objectives": OBJECTIVES},
              "executor": executor, "output": {"root": str(folder / "runs"), "export_top": 0}}
    path = folder / f"{executor['kind']}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def no_run_folder(folder: Path) -> bool:
    runs = folder / "runs"
    return not runs.exists() or not any(runs.iterdir())


@pytest.fixture(scope="module")
def ray_cluster(two_node_ray):
    """ONE two-node Ray cluster on 127.0.0.1 for every Ray test here (conftest.py's ``two_node_ray``: token auth
    with the token in this process's environment, as a user would export it, so the tests join it with the
    user's own settings); shut down (only its own processes) after the module."""
    return two_node_ray


def _ray_is_closed() -> bool:
    import ray

    return not ray.is_initialized()


# ---- the Ray executor ---------------------------------------------------------------------------
def test_ray_run_equals_local_run(tmp_path, checkpoint, ray_cluster):
    local = start_run(write_config(tmp_path, checkpoint, {"kind": "local"}))
    remote = start_run(write_config(tmp_path, checkpoint, {"kind": "ray", "address": ray_cluster, "num_workers": 2}))
    assert _ray_is_closed()  # the run disconnected when its search ended
    rows = [sorted((r["key"], r["metrics"], r["sources"]) for r in read_journal(run.run_dir / "trials.jsonl").records)
            for run in (local, remote)]  # by key: a streaming executor journals in the order results arrive
    assert len(rows[0]) == 12 and rows[0] == rows[1]
    fronts = [json.loads((run.run_dir / "pareto.json").read_text()) for run in (local, remote)]
    assert [t["key"] for t in fronts[0]["front"]] == [t["key"] for t in fronts[1]["front"]]
    assert "ray at" in (remote.run_dir / "report.md").read_text()


class WrappedFactory:
    """A factory around another (``inner``): its metrics, bounds and concurrency; subclasses wrap what it builds."""

    inner: Any

    @property
    def metrics(self):
        return self.inner.metrics

    @property
    def bounds(self):
        return self.inner.bounds

    @property
    def at_once(self):
        return getattr(self.inner, "at_once", 1)


@dataclass(frozen=True)
class KillOnceFactory(WrappedFactory):
    """Wraps a factory; the first worker to get a second call SIGKILLs itself in it (after one genome if several).

    The second call, not the first: the worker has done work before it dies, whether the executor
    sends one call per batch or one per genome.
    """

    inner: Any
    marker: str

    def build(self):
        return _KillOnce(self.inner.build(), self.marker)


class _KillOnce:
    def __init__(self, inner, marker):
        self.inner, self.marker, self.calls = inner, marker, 0

    @property
    def metrics(self):
        return self.inner.metrics

    def evaluate(self, genomes):
        self.calls += 1  # per worker process: a restarted worker starts again at 0
        if self.calls == 2:
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # exactly one worker dies
            except FileExistsError:
                return self.inner.evaluate(genomes)
            if len(genomes) > 1:
                self.inner.evaluate(genomes[:1])
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner.evaluate(genomes)


def _subnets(checkpoint: Path) -> tuple[Any, SubnetEvaluator]:
    from supernets.checkpoint import load_supernet

    space = get_space("mbv3", **SPACE)
    net, _ = load_supernet(checkpoint, space=space)
    data = load_dataset("digits", seed=0, max_train=256)
    return space, SubnetEvaluator(net.eval(), data.train_x[:128], data.val_x, data.val_y, batch_size=256)


def test_killed_worker_is_retried_and_journal_has_each_candidate_once(tmp_path, checkpoint, ray_cluster):
    import ray.cloudpickle

    from nas.executors.ray_env import RaySession
    from nas.executors.ray_executor import RayEvaluator
    from nas.executors.supernet import SupernetAccuracyFactory
    from nas.searchers.random_search import RandomSearcher

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    space, subnets = _subnets(checkpoint)
    factory = SupernetAccuracyFactory.from_subnets(subnets)
    marker = tmp_path / "killed.pid"
    session = RaySession(ray_cluster)
    try:
        remote = RayEvaluator(KillOnceFactory(factory, str(marker)), session=session, num_workers=1, max_retries=2)
        objectives = [Objective(o["metric"], o["direction"]) for o in OBJECTIVES]
        with Journal(tmp_path / "trials.jsonl") as journal:
            result = run_search(space, CompositeEvaluator([AnalyticEvaluator(space), remote]),
                                RandomSearcher(space, objectives, seed=0, batch_size=6), objectives=objectives,
                                budget=12, journal=journal)
        killed = int(marker.read_text())
        assert killed not in remote.pids()  # the worker was restarted...
        remote.close()
    finally:
        session.close()
    records = read_journal(tmp_path / "trials.jsonl").records
    keys = [r["key"] for r in records]
    assert len(keys) == 12 and len(set(keys)) == 12 == len(result.trials)  # ...and every candidate is there once
    local = LocalExecutor().evaluator(factory).evaluate([t.genome for t in result.trials])
    expected = {t.key: m["accuracy"] for t, m in zip(result.trials, local)}
    assert {r["key"]: r["metrics"]["accuracy"] for r in records} == expected  # journaled as they finished


@dataclass(frozen=True)
class CallLogFactory(WrappedFactory):
    """Wraps a factory; every call a worker gets appends its number of genomes to ``log`` (one line each)."""

    inner: Any
    log: str

    def build(self):
        inner, log = self.inner.build(), self.log

        class Logged:
            metrics = inner.metrics

            def evaluate(self, genomes):
                with open(log, "a") as f:
                    f.write(f"{len(genomes)}\n")
                return inner.evaluate(genomes)

        return Logged()


def test_a_worker_gets_as_many_subnets_per_call_as_it_measures_at_once(tmp_path, checkpoint, ray_cluster):
    import ray.cloudpickle

    from nas.executors.ray_env import RaySession
    from nas.executors.ray_executor import RayEvaluator
    from nas.executors.supernet import SupernetAccuracyFactory

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    space, subnets = _subnets(checkpoint)
    factory = SupernetAccuracyFactory.from_subnets(subnets, at_once=2)
    genomes = [space.sample(np.random.default_rng(i)) for i in range(5)]
    log = tmp_path / "calls.txt"
    session = RaySession(ray_cluster)
    try:
        remote = RayEvaluator(CallLogFactory(factory, str(log)), session=session, num_workers=1)
        got = remote.evaluate(genomes)
        remote.close()
    finally:
        session.close()
    assert sorted(int(n) for n in log.read_text().split()) == [1, 2, 2]  # 5 subnets in calls of 2
    assert [m["accuracy"] for m in got] == [subnets.measure(g)["accuracy"] for g in genomes]


def _worker_view() -> dict[str, Any]:
    """What a Ray worker sees of the settings qnas gave it (run remotely)."""
    keys = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    return {"pid": os.getpid(), **{key: os.environ.get(key) for key in keys}}


def _remote_worker_view(ray: Any) -> Any:
    """``_worker_view`` as a Ray remote function (workers cannot import this test module: sent by value)."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return ray.remote(_worker_view)


def _files_containing(folder: Path, text: str) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file() and text.encode() in path.read_bytes()]


def test_private_ray_is_loopback_only_with_a_fresh_token_and_is_removed_on_close(ray_cluster, tmp_path, monkeypatch,
                                                                                 caplog):
    """A private Ray whatever the user's environment says: stale auth settings, a stale ~/.ray/auth_token."""
    import ray._private.services as services
    import ray._private.worker as ray_worker

    from nas.executors.ray_env import RaySession, listening_sockets, session_pids, wildcard_listeners
    from nas.executors.ray_executor import RayExecutor

    stale = {"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": "stale" * 8, "RAY_AUTH_TOKEN_PATH": str(tmp_path / "t"),
             "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}
    (tmp_path / "t").write_text("path" * 8)
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("file" * 8)
    for key, value in {**stale, "HOME": str(tmp_path)}.items():
        monkeypatch.setenv(key, value)
    asked: list[Any] = []  # Ray's "my IP" before a node is up: on a machine with a network, the outward IP

    def my_ip(address: str | None = None) -> str:
        if ray_worker._global_node is not None:
            return ray_worker._global_node.node_ip_address
        asked.append(address)  # qnas must answer this itself
        return "127.0.0.1"

    monkeypatch.setattr(services, "get_node_ip_address", my_ip)  # (replaces the fixture's answer meanwhile)

    session = RaySession(None, num_cpus=1)  # address null: qnas starts (and stops) its own Ray
    tmp, executor = session._tmp, RayExecutor(session, num_workers=2)
    try:
        token = os.environ["RAY_AUTH_TOKEN"]
        worker = session.ray.get(_remote_worker_view(session.ray).options(num_cpus=0.5).remote())
        listeners = listening_sockets(session_pids())
        assert wildcard_listeners(listeners) == []  # "listening sockets of a private Ray: none on a wildcard address"
        names = {item.name for item in listeners}
        assert {"gcs_server", "raylet"} <= names and worker["pid"] in {item.pid for item in listeners}
        assert [n["NodeManagerAddress"] for n in session.ray.nodes()] == ["127.0.0.1"] and asked == []
        assert len(token) == 48 and token not in "".join(stale.values()) + "path" * 8 + "file" * 8
        assert worker == {"pid": worker["pid"], "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
                          "RAY_AUTH_TOKEN_PATH": None, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        executor.check()  # 2 workers x 0.5 CPU fit on its 1 CPU
        assert "private Ray" in executor.describe()
        assert _files_containing(tmp, token) == [] and token not in caplog.text + executor.describe()
    finally:
        executor.close()
    assert _ray_is_closed() and not tmp.exists()
    assert {key: os.environ.get(key) for key in stale} == stale  # the user's settings are back


def test_test_cluster_and_its_workers_listen_on_loopback_only(ray_cluster):
    from nas.executors.ray_env import RaySession, listening_sockets, session_pids, wildcard_listeners

    session = RaySession(ray_cluster)
    try:
        task = _remote_worker_view(session.ray)
        views = session.ray.get([task.options(num_cpus=0.5, resources=r).remote() for r in ({}, {"second": 0.5})])
        nodes = [n["NodeManagerAddress"] for n in session.ray.nodes()]
        listeners = listening_sockets(session_pids())  # this process is the driver; the cluster is its descendant
    finally:
        session.close()
    assert nodes == ["127.0.0.1", "127.0.0.1"] and all(view["RAY_AUTH_MODE"] == "token" for view in views)
    names = [item.name for item in listeners]
    assert names.count("raylet") >= 2 and "gcs_server" in names
    assert {view["pid"] for view in views} <= {item.pid for item in listeners}
    assert wildcard_listeners(listeners) == []


def test_joining_keeps_the_users_auth_settings(ray_cluster):
    from nas.executors.ray_env import AUTH_VARS, RaySession

    users = {key: os.environ.get(key) for key in AUTH_VARS}
    session = RaySession(ray_cluster)
    try:
        assert {key: os.environ.get(key) for key in AUTH_VARS} == users  # not replaced by a token of qnas
        assert session.ray.get(_remote_worker_view(session.ray).options(num_cpus=0.5).remote())["RAY_AUTH_MODE"] \
            == "token"
    finally:
        session.close()
    assert {key: os.environ.get(key) for key in AUTH_VARS} == users


@pytest.mark.parametrize("auth", [{"RAY_AUTH_MODE": "disabled"}, {"RAY_AUTH_TOKEN": "0" * 48}, {"RAY_AUTH_MODE": None}],
                         ids=["auth-disabled", "wrong-token", "mode-unset"])
def test_joining_without_the_clusters_token_is_one_clear_error(tmp_path, checkpoint, ray_cluster, monkeypatch, auth):
    for key, value in auth.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    path = write_config(tmp_path, checkpoint, {"kind": "ray", "address": ray_cluster})
    with pytest.raises(InputError) as info:
        start_run(path)
    message = str(info.value)
    assert "executor.address" in message and "presents no token it accepts" in message
    assert "RAY_AUTH_TOKEN" in message and "\n" not in message and "0" * 48 not in message
    assert no_run_folder(tmp_path) and _ray_is_closed()


def test_profiling_fans_out_over_nodes_in_order(ray_cluster):
    from nas.executors.ray_env import RaySession
    from nas.executors.ray_profiling import RayBlockMeasurer
    from nas.profiling import distinct_blocks
    from supernets.timing import Protocol

    specs = distinct_blocks(get_space("mbv3", **SPACE), "torch-fp32")[0][:4]
    session = RaySession(ray_cluster)
    try:
        measurer = RayBlockMeasurer(session)
        timings = measurer(specs, "torch-fp32", protocol=Protocol(threads=1, runs=2, passes=1, warmup=0))
    finally:
        session.close()
    assert len(timings) == 4 and all(t.count == 2 and t.mean_ms > 0 for t in timings)
    assert len(measurer.devices) == 1


# ---- bad input: one clear error, no run folder --------------------------------------------------
@pytest.mark.parametrize("address", ["127.0.0.2:1", "ray://127.0.0.2:1"])
def test_unreachable_address_fails_before_the_run_folder(tmp_path, checkpoint, address):
    pytest.importorskip("ray", reason="ray is not installed")
    path = write_config(tmp_path, checkpoint, {"kind": "ray", "address": address})
    with pytest.raises(InputError) as info:
        start_run(path)
    message = str(info.value)
    assert "executor.address" in message and f"cannot reach a Ray cluster at {address!r}" in message
    assert "\n" not in message and no_run_folder(tmp_path)


@pytest.mark.parametrize("executor, fragments", [
    ({"resources": {"TPU": 1}}, ["executor.resources", "no 'TPU' resource", "second: 1"]),
    ({"num_workers": 5}, ["executor.num_workers", "can hold 4 of the 5 workers", "CPU: 2"]),
    ({"num_workers": 2, "resources": {"second": 1}}, ["can hold 1 of the 2 workers"]),
])
def test_cluster_without_the_resources_fails_before_the_run_folder(tmp_path, checkpoint, ray_cluster, executor,
                                                                 fragments):
    path = write_config(tmp_path, checkpoint, {"kind": "ray", "address": ray_cluster, **executor})
    with pytest.raises(InputError) as info:
        start_run(path)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert no_run_folder(tmp_path) and _ray_is_closed()


def test_ray_not_installed_is_one_clear_error(tmp_path, checkpoint, monkeypatch):
    from nas.kinds import load_experiment

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    path = write_config(tmp_path, checkpoint, {"kind": "ray"})
    with pytest.raises(InputError) as info:
        check_executor(load_experiment(path))
    assert "executor.kind" in str(info.value) and "pip install 'ray" in str(info.value)
    with pytest.raises(InputError):
        start_run(path)
    assert no_run_folder(tmp_path)
