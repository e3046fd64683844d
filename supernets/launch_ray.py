"""Train the supernet as a Ray Train ``TorchTrainer`` on a Ray cluster: ``distributed.launcher: ray``.

The same training as :func:`supernets.launch.train_processes` (every rank samples the same seeded subnets,
trains its shard of every batch, gradients are all-reduced; rank 0 writes the qnas checkpoint after every
epoch), but the processes are Ray Train workers placed by Ray on the cluster this process is connected to
(``qnas run`` connects to ``executor.address``, or starts a private Ray there, through
:class:`nas.executors.ray_env.RaySession`; this module never calls ``ray.init``). Ray Train starts, places
and stops the workers and sets up their process group; qnas keeps its own checkpoint, so Ray Train stores
nothing for the model and never retries (a failed or killed run resumes from ``supernet.pt``, on any
number of processes).

What differs from Ray Train's defaults, and why:

- **The rendezvous store binds the node's IP, not every interface.** ``TorchConfig`` hands torch a
  ``tcp://`` or ``env://`` address, and torch's store then listens on all interfaces. Here rank 0 binds the
  store's socket to the address Ray Train chose for it (its node's IP: ``127.0.0.1`` on a private Ray, whose
  gloo and NCCL then stay on ``lo`` too), the way the local launcher does on loopback.
- **No retries, no Ray Train checkpoints**: ``FailureConfig(max_failures=0, controller_failure_limit=0)``;
  Ray Train's own files (a near-empty experiment folder) go to a temporary folder next to the checkpoint,
  removed afterwards.
- **Ctrl-C is this process's KeyboardInterrupt**: ``TorchTrainer.fit`` installs a SIGINT handler that aborts
  the run and then *exits with status 0*; here it is not installed, and an interrupt aborts the workers and
  is raised as usual (the run is marked interrupted).
- **One storage for the run folder, checked**: rank 0 writes the checkpoint at the path it is given and
  every rank reads it to resume, so on a cluster of several machines the run folder must be on a file system
  every node mounts at the same path. Each rank checks, before training, that it sees the folder this
  process wrote (a random token in a file there); one that does not fails the launch with that explanation.

Progress: rank 0 puts its events on a Ray queue (an actor without CPUs); a thread here hands them to
``on_event`` while ``fit`` runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import ipaddress
import math
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from search_spaces import SearchSpace
from search_spaces.errors import InputError

from .device import Placement
from .distributed import World
from .launch import LaunchPlan, last_line, leave_group, serve_store, train_rank

__all__ = ["train_ray", "check_capacity", "import_ray_train", "worker_resources", "bound_store_torch_config",
           "SAME_STORAGE"]

SAME_STORAGE = ".qnas-ray-launch"
"""The file in the checkpoint's folder by which every rank checks that it sees this process's run folder."""


def import_ray_train() -> Any:
    """``ray.train.torch`` (Ray Train V2), or one InputError naming ``distributed.launcher`` and what is missing."""
    try:
        import ray.train.torch as train_torch
        from ray.train.v2._internal.constants import V2_ENABLED_ENV_VAR, is_v2_enabled
    except ImportError as err:
        raise InputError(f"launcher 'ray' needs Ray Train, which cannot be imported ({err}); pip install "
                         "'ray[train]' (or use launcher: local)", field="distributed.launcher") from None
    if not is_v2_enabled():
        value = os.environ.get(V2_ENABLED_ENV_VAR)
        raise InputError(f"launcher 'ray' needs Ray Train V2, and {V2_ENABLED_ENV_VAR}={value} is set in this "
                         "environment; unset it", field="distributed.launcher")
    return train_torch


def worker_resources(placement: Placement, threads: int = 1) -> dict[str, float]:
    """What one training worker asks Ray for: a CPU per torch thread, and a GPU when the supernet trains on CUDA."""
    demand = {"CPU": float(max(1, threads))}
    if placement.is_cuda:
        demand["GPU"] = 1.0
    return demand


def check_capacity(nodes: Sequence[Mapping[str, float]], plan: LaunchPlan, placement: Placement) -> None:
    """InputError naming ``distributed.processes`` unless the nodes (total resources each) hold every worker."""
    demand = worker_resources(placement, plan.threads)
    fits = sum(min(math.floor(node.get(key, 0.0) / need + 1e-9) for key, need in demand.items()) for node in nodes)
    if fits >= plan.processes:
        return
    have = ", ".join(f"{key}: {sum(node.get(key, 0.0) for node in nodes):g}" for key in demand)
    each = ", ".join(f"{key}: {need:g}" for key, need in demand.items())
    raise InputError(f"{plan.processes} processes need {{{each}}} each, but the Ray cluster ({len(nodes)} node(s), "
                     f"{{{have}}} in all) holds {fits}; lower distributed.processes (or executor.threads) or add "
                     "nodes", field="distributed.processes")


@dataclass(frozen=True)
class _RayJob:
    """Everything a Ray Train worker needs (pickled once into the train function's object)."""

    space: SearchSpace
    data: Any  # supernets.data.ImageSplits on the CPU
    config: Any  # supernets.config.SupernetConfig
    checkpoint: Path  # absolute
    token: str  # in checkpoint.parent / SAME_STORAGE
    placement: Placement
    plan: LaunchPlan
    events: Any  # a ray.util.queue.Queue, or None
    steps: bool


def train_ray(space: SearchSpace, data: Any, config: Any, *, checkpoint: Path, placement: Placement,
              plan: LaunchPlan, on_event: Callable[[tuple], None] | None = None, steps: bool = False) -> None:
    """Train the supernet of ``space`` to the end on ``plan.processes`` Ray Train workers (resuming ``checkpoint``).

    Needs a Ray connection in this process (``qnas run`` opens it from ``executor.address``). ``on_event``
    receives rank 0's ``("epoch", EpochLog, total)`` events (and with ``steps`` its ``("step", epoch, step,
    steps)`` events) in a thread of this process while the workers run. A worker's failure is raised here as a
    RuntimeError with its message (the others are stopped); the cluster's lack of resources as an InputError.
    """
    import ray

    if not ray.is_initialized():
        raise RuntimeError("launcher 'ray' needs a Ray connection in this process (qnas run opens one from "
                           "executor.address; in Python, open nas.executors.ray_env.RaySession first)")
    from ray.util.queue import Queue

    import_ray_train()
    check_capacity([dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")], plan, placement)
    checkpoint = Path(checkpoint).resolve()
    token = secrets.token_hex(16)
    marker = checkpoint.parent / SAME_STORAGE
    marker.write_text(token)
    storage = Path(tempfile.mkdtemp(prefix=".ray-train-", dir=checkpoint.parent))
    events, relay = None, None
    try:  # whatever fails from here on, the marker and the temporary folder leave the run folder
        events = Queue(actor_options={"num_cpus": 0}) if on_event is not None else None
        job = _RayJob(space, data.to("cpu"), config, checkpoint, token, placement, plan, events,
                      steps and on_event is not None)
        relay = _Relay(events, on_event)
        trainer = _trainer(job, storage)
        relay.start()
        with _quiet_controller():
            trainer.run()
    finally:
        if relay is not None:
            relay.stop()
        if events is not None:
            events.shutdown(force=True)
        marker.unlink(missing_ok=True)
        shutil.rmtree(storage, ignore_errors=True)
    relay.raise_error()


def _trainer(job: _RayJob, storage: Path) -> _Trainer:
    from ray.train import FailureConfig, RunConfig, ScalingConfig

    try:
        from ray.train import LoggingConfig
        logging_config: dict[str, Any] = {"logging_config": LoggingConfig(log_level="WARNING")}
    except ImportError:  # an older Ray Train
        logging_config = {}
    plan = job.plan
    return _Trainer(
        _train_loop, train_loop_config={"job": job},
        torch_config=bound_store_torch_config()(backend=plan.backend, timeout_s=int(plan.timeout_s)),
        scaling_config=ScalingConfig(num_workers=plan.processes, use_gpu=job.placement.is_cuda,
                                     resources_per_worker=worker_resources(job.placement, plan.threads)),
        run_config=RunConfig(name="supernet", storage_path=str(storage),
                             failure_config=FailureConfig(max_failures=0, controller_failure_limit=0,
                                                          max_preemption_failures=0),
                             **logging_config))


@contextlib.contextmanager
def _quiet_controller() -> Iterator[None]:
    """No preemption watcher (unless the user asks for one): its actor watches for node drains so that Ray Train
    can retry after a preemption, and qnas never retries (it resumes from its own checkpoint). Ray Train passes
    the variable on to its controller, which reads it when it starts."""
    name = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
    if name in os.environ:
        yield
        return
    os.environ[name] = "0"
    try:
        yield
    finally:
        os.environ.pop(name, None)


def _torch_trainer_class() -> type:
    from ray.train.torch import TorchTrainer

    return TorchTrainer


class _Trainer:
    """A ``TorchTrainer`` whose ``fit`` leaves SIGINT alone and whose failures are RuntimeErrors with the cause."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        base = _torch_trainer_class()
        holder: dict[str, Any] = {}

        class Trainer(base):  # type: ignore[misc, valid-type]
            # Two private methods of Ray Train V2's DataParallelTrainer (ray[train] is pinned in requirements.lock)
            def _register_sigint_handler(self, controller: Any) -> None:
                holder["controller"] = controller  # no handler: Ctrl-C stays this process's KeyboardInterrupt

            def _create_default_callbacks(self) -> list[Any]:
                return [c for c in super()._create_default_callbacks() if type(c).__name__ not in _unused_callbacks()]

        self._controller = holder
        self._trainer = Trainer(*args, **kwargs)

    def run(self) -> None:
        import ray

        try:
            self._trainer.fit()
        except KeyboardInterrupt:
            self._abort(ray)
            raise
        except Exception as err:  # noqa: BLE001 - Ray Train's TrainingFailedError and what it wraps
            failed = _training_failed(err)
            if failed is None:
                raise
            raise RuntimeError(f"a training process failed: {failed}") from None

    def _abort(self, ray: Any) -> None:
        controller = self._controller.get("controller")
        if controller is None:
            return
        try:
            ray.get(controller.abort.remote(), timeout=60)
        except Exception:  # noqa: BLE001 - the controller exits while answering; kill it if it did not
            pass
        try:
            ray.kill(controller)
        except Exception:  # noqa: BLE001 - already gone
            pass


def _unused_callbacks() -> set[str]:
    """Ray Train callbacks (by class name) to leave out: ``PlacementGroupCleanerCallback`` on a cluster without a
    dashboard (qnas's private Ray has none). Its actor asks the dashboard's state API every second whether the
    controller still lives; without one it only logs a warning each time, and delays the end."""
    return set() if _has_dashboard() else {"PlacementGroupCleanerCallback"}


def _has_dashboard() -> bool:
    """Whether the cluster this process is connected to runs Ray's dashboard (its state API)."""
    try:
        from ray._private.worker import get_dashboard_url

        return bool(get_dashboard_url())
    except Exception:  # noqa: BLE001 - Ray Client, or a Ray without it: assume there is one (Ray's default)
        return True


def _training_failed(err: BaseException) -> str | None:
    """``Type: last line`` of the lowest failing rank's error (or the controller's); None if not Ray Train's error."""
    try:
        from ray.train import TrainingFailedError
    except ImportError:
        return None
    if not isinstance(err, TrainingFailedError):
        return None
    failures = getattr(err, "worker_failures", None) or {}
    cause = failures[min(failures)] if failures else getattr(err, "controller_failure", err)
    return f"{type(cause).__name__}: {last_line(str(cause))}"


class _Relay:
    """Hands rank 0's events from the Ray queue to ``on_event``, in a thread of this process."""

    def __init__(self, events: Any, on_event: Callable[[tuple], None] | None) -> None:
        self.events, self.on_event = events, on_event
        self.done = threading.Event()
        self.error: BaseException | None = None  # raised by on_event; raised again in the caller's thread
        self.thread = threading.Thread(target=self._loop, name="qnas-ray-train-events", daemon=True)

    def start(self) -> None:
        if self.events is not None:
            self.thread.start()

    def _loop(self) -> None:
        import queue

        while not self.done.is_set():
            try:
                event = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            except Exception:  # noqa: BLE001 - the queue's actor is gone: nothing more to show
                return
            self._hand(event)

    def _hand(self, event: tuple) -> None:
        if self.error is not None:
            return
        try:
            self.on_event(event)
        except BaseException as err:  # noqa: BLE001 - raised in the caller's thread after training
            self.error = err

    def stop(self) -> None:
        """Stop the thread, then hand over what is left (rank 0 put every event before its worker ended)."""
        if self.events is None:
            return
        self.done.set()
        if self.thread.is_alive():
            self.thread.join(timeout=30)
        if self.thread.is_alive():  # still inside on_event: draining here too would call it from two threads
            return
        try:
            while not self.events.empty():
                self._hand(self.events.get_nowait())
        except Exception:  # noqa: BLE001 - the queue's actor is gone
            pass

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error


# ---- in the workers ------------------------------------------------------------------------------------
def _train_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: check the run folder, train every remaining epoch, rank 0 checkpoints and reports."""
    import ray.train

    job: _RayJob = config["job"]
    context = ray.train.get_context()
    rank, size = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(job.plan.threads)
    _check_same_storage(job, rank)
    placement = job.placement
    if placement.is_cuda:
        from ray.train.torch import get_device

        placement = dataclasses.replace(placement, device=get_device())
        torch.cuda.set_device(placement.device)
    events = _QueueEvents(job.events) if rank == 0 and job.events is not None else None
    trained = False
    try:
        train_rank(job.space, job.data, job.config, checkpoint=job.checkpoint, placement=placement,
                   world=World(rank, size, sync_bn=job.plan.sync_bn), events=events, steps=job.steps)
        trained = True
    finally:
        leave_group(together=trained)  # rank 0's store lives on in its worker until Ray Train shuts the group down


def _check_same_storage(job: _RayJob, rank: int) -> None:
    """Fail unless this worker sees the run folder the launching process wrote (and rank 0 may write there)."""
    import socket

    folder = job.checkpoint.parent
    try:
        seen = (folder / SAME_STORAGE).read_text()
    except OSError:
        seen = None
    writable = rank != 0 or os.access(folder, os.W_OK)
    if seen == job.token and writable:
        return
    what = "cannot write to" if seen == job.token else "does not see"
    raise RuntimeError(f"rank {rank} on {socket.gethostname()} {what} the run folder {folder} of the qnas process; "
                       "with launcher: ray on several machines the run folder (output.root) must be on a file "
                       "system every node mounts at the same path")


class _QueueEvents:
    """Rank 0's events onto the driver's Ray queue."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def put(self, event: tuple) -> None:
        self.queue.put(event)


# ---- the process group, with the store bound to the node's IP -------------------------------------------
_HELD: list[Any] = []  # this worker's rendezvous store (rank 0: the one it serves): kept until Ray Train shuts down


def _torch_config_class() -> type:
    from ray.train.torch import TorchConfig

    return TorchConfig


def bound_store_torch_config() -> type:
    """``BoundStoreTorchConfig``: Ray Train's ``TorchConfig`` whose backend binds the store to the node's IP.

    Built on first use (Ray is imported only when the Ray launcher runs) and kept as this module's attribute, so
    that Ray pickles it by reference.
    """
    if "BoundStoreTorchConfig" not in globals():
        globals()["BoundStoreTorchConfig"] = _make_bound_store_config()
    return globals()["BoundStoreTorchConfig"]


def _make_bound_store_config() -> type:
    from ray.train.torch.config import _TorchBackend

    class BoundStoreBackend(_TorchBackend):
        """Ray Train's torch backend with the rendezvous store on the node's IP only (see the module docstring)."""

        def on_start(self, worker_group: Any, backend_config: Any) -> None:
            from ray.train._internal.utils import get_address_and_port

            address, _ = worker_group.execute_single(0, get_address_and_port)
            port = worker_group.execute_single(0, _serve_store, address=address, size=len(worker_group),
                                               timeout_s=backend_config.timeout_s)  # bound before anyone connects
            try:
                from ray.train.torch.config import _set_torch_distributed_env_vars

                worker_group.execute(_set_torch_distributed_env_vars)  # LOCAL_RANK etc., as Ray Train sets them
            except ImportError:
                pass
            import ray

            size = len(worker_group)
            ray.get([worker_group.execute_single_async(rank, _join_group, backend=backend_config.backend,
                                                       world_rank=rank, size=size, address=address, port=port,
                                                       timeout_s=backend_config.timeout_s)
                     for rank in range(size)])

        def on_shutdown(self, worker_group: Any, backend_config: Any) -> None:
            super().on_shutdown(worker_group, backend_config)
            try:
                import ray

                ray.get(worker_group.execute_async(_release), timeout=30)
            except Exception:  # noqa: BLE001 - a worker that crashed holds nothing any more
                pass

    @dataclass
    class BoundStoreTorchConfig(_torch_config_class()):  # type: ignore[misc]
        """``TorchConfig`` whose backend binds the rendezvous store to the node's IP."""

        @property
        def backend_cls(self) -> type:
            return BoundStoreBackend

    BoundStoreTorchConfig.__module__ = __name__
    BoundStoreTorchConfig.__qualname__ = "BoundStoreTorchConfig"
    BoundStoreBackend.__module__ = __name__
    BoundStoreBackend.__qualname__ = "BoundStoreBackend"
    return BoundStoreTorchConfig


def _serve_store(*, address: str, size: int, timeout_s: float) -> int:
    """Rank 0: serve the rendezvous store on ``address`` only (:func:`~supernets.launch.serve_store`), kept until
    Ray Train shuts down; returns its port."""
    store = serve_store(address, datetime.timedelta(seconds=timeout_s), size)
    _HELD[:] = [store]
    return int(store.port)


def _join_group(*, backend: str, world_rank: int, size: int, address: str, port: int, timeout_s: float) -> None:
    """Join the process group over the store rank 0 serves (:func:`_serve_store`) on ``address`` only."""
    import torch.distributed as dist

    if ipaddress.ip_address(address).is_loopback:  # a private Ray: the collectives stay on loopback too
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")
    timeout = datetime.timedelta(seconds=timeout_s)
    if world_rank == 0:
        store = _HELD[0]
    else:
        store = dist.TCPStore(address, port, size, False, timeout=timeout)
        _HELD[:] = [store]
    dist.init_process_group(backend, store=store, rank=world_rank, world_size=size, timeout=timeout)


def _release() -> None:
    """Let go of the store (after every rank has left the group); rank 0's store closes its socket."""
    _HELD.clear()


def __getattr__(name: str) -> Any:
    if name == "BoundStoreTorchConfig":  # unpickled in Ray Train's controller: build it there too
        return bound_store_torch_config()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
