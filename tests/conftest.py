"""Shared test set-up: data folder, headless matplotlib, one torch thread, a simple seeded searcher.

``QNAS_DATA`` defaults to ``../shared/data`` next to the repository (as in the Makefile) and
``MPLBACKEND`` to Agg, both only when unset, so a developer's own settings win.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

os.environ.setdefault("QNAS_DATA", str((ROOT / ".." / "shared" / "data").resolve()))
os.environ.setdefault("MPLBACKEND", "Agg")


class StandInSearcher:
    """Seeded random sampling with the searcher interface: a test double whose every call is counted."""

    expensive = False

    def __init__(self, space, objectives, *, constraints=(), seed=0, storage_dir=None, population_size=10):
        if population_size < 1:
            raise ValueError("population_size must be >= 1")
        self.space, self.objectives, self.constraints = space, list(objectives), list(constraints)
        self.batch_size = population_size
        self.rng = np.random.default_rng(seed)
        self.asked = self.told = 0

    def ask(self):
        self.asked += self.batch_size
        return [self.space.sample(self.rng) for _ in range(self.batch_size)]

    def tell(self, genomes, results):
        assert len(genomes) == len(results)
        self.told += len(genomes)

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state["rng"]


def qnas_command(*args: str) -> list[str]:
    """Command line of a ``qnas`` subprocess run with this interpreter."""
    return [sys.executable, "-m", "nas.cli", *args]


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests run single-threaded: oversubscribed multi-threaded torch on a 2-core machine is many times slower."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_quant_supernet(request):
    """(space, untrained supernet, 256 digits): the TINY_MBV3 space with the test module's ``TINY`` options."""
    import torch

    from search_spaces import get_space
    from search_spaces.testing import TINY_MBV3
    from supernets.data import load_dataset
    from supernets.supernet import QuantSupernet

    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = load_dataset("digits", max_train=256)
    space = get_space("mbv3", **getattr(request.module, "TINY", TINY_MBV3))
    return space, QuantSupernet(space, image_size=8), data


def loopback_only() -> bool:
    """Whether this process's network namespace has no interface but loopback (asks the kernel, not /sys)."""
    import socket

    try:
        return [name for _, name in socket.if_nameindex()] == ["lo"]
    except OSError:
        return False


@pytest.fixture(scope="module")
def two_node_ray():
    """A two-node Ray cluster on 127.0.0.1 (1 CPU each; the second has the resource ``second``) for one test
    module, shut down (only its own processes) after; the module's tests join it at the address this yields.

    It stands for a user's cluster: token auth, with the token in this process's environment as a user would
    export it, started with the settings of /work/shared/RAY.md. Runs only inside a loopback-only network
    namespace (``make test`` makes one with ``unshare -n`` where it can) unless ``QNAS_RAY_TESTS=host``.
    """
    import shutil
    import tempfile
    from contextlib import ExitStack

    if not loopback_only() and os.environ.get("QNAS_RAY_TESTS") != "host":
        pytest.skip("the Ray tests start a local cluster and run only in a loopback-only network namespace "
                    "(`make test` wraps pytest in `unshare -n` where it can; QNAS_RAY_TESTS=host overrides)")
    pytest.importorskip("ray", reason="ray is not installed")
    from ray.cluster_utils import Cluster

    from nas.executors.ray_env import SINGLE_MACHINE_ENV, pinned_node_ip, ray_environment, token_auth

    tmp = Path(tempfile.mkdtemp(prefix="qt", dir="/tmp"))  # short: Unix socket paths
    cluster = None
    with ExitStack() as stack:
        stack.enter_context(token_auth())  # RAY_AUTH_MODE=token, a random RAY_AUTH_TOKEN, for the whole module
        stack.enter_context(pinned_node_ip("127.0.0.1"))  # joining 127.0.0.1:PORT must not become the outward IP
        env = stack.enter_context(pytest.MonkeyPatch.context())
        for key, value in SINGLE_MACHINE_ENV.items():
            env.setenv(key, value)
        try:
            with ray_environment(tmp / "home", tmp / "rt"):
                cluster = Cluster(initialize_head=True, head_node_args={
                    "num_cpus": 1, "include_dashboard": False, "node_ip_address": "127.0.0.1"})
                cluster.add_node(num_cpus=1, resources={"second": 1}, node_ip_address="127.0.0.1")
                cluster.wait_for_nodes()
        except Exception as err:  # noqa: BLE001 - any failure to start means "cannot test Ray here"
            if cluster is not None:
                cluster.shutdown()
            shutil.rmtree(tmp, ignore_errors=True)
            pytest.skip(f"Ray cannot start a local cluster here: {type(err).__name__}: {err}")
        yield cluster.address
        cluster.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)
