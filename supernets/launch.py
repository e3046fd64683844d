"""Start N training processes on this machine and wait for them: ``distributed.launcher: local``.

The calling process stays the one that owns the run: it checks (and resumes from) the checkpoint
itself, spawns ``processes`` workers (``torch.multiprocessing``, start method ``spawn``), shows their
progress and, once they finish, reloads the checkpoint rank 0 wrote. Each worker joins a process
group over a rendezvous on 127.0.0.1, trains on its shard of every batch and, if it is rank 0, writes
the checkpoint after every epoch, so a killed launch loses at most one epoch and resumes on any number
of processes. The calling process serves the rendezvous store (a ``TCPStore``) and every worker is a
client of it: the store outlives every worker, since this process closes it only once all of them have
ended (a rank 0 that served it and exited first left the others tearing down a store client, or their gloo
context, against a vanished server, which aborted them now and then: SIGABRT, "terminate called without an
active exception"). Nothing listens beyond the loopback interface: this process binds the store's socket
to 127.0.0.1 itself (given ``tcp://127.0.0.1:port``, torch's store listens on every interface), and gloo
and NCCL connect over ``lo``.

A worker dies with its parent (``PR_SET_PDEATHSIG`` on Linux: SIGKILL, where torch's spawn sets a SIGINT
that a worker could catch and outlive): a killed run must not leave orphans writing into a folder that
a resume may already be using (a test SIGKILLs a run and checks).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import queue as queue_module
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from search_spaces import SearchSpace

from search_spaces.errors import InputError

from .device import Placement, _cuda_inventory
from .distributed import World

__all__ = ["LaunchPlan", "resolve_launch", "train_processes", "train_rank", "torchrun_rank", "join_torchrun",
           "rank_placement", "serve_store", "last_line", "BACKENDS", "LAUNCHERS"]

LOOPBACK = "127.0.0.1"
BACKENDS: tuple[str, ...] = ("auto", "gloo", "nccl")
LAUNCHERS: tuple[str, ...] = ("local", "ray")


@dataclass(frozen=True)
class LaunchPlan:
    """How many processes train, with which collective backend, their torch threads each, and whether BN
    statistics are those of the global batch (``sync_bn``, see :class:`~supernets.distributed.World`).

    ``timeout_s``: how long a collective waits for a missing peer before the group gives up (rank 0
    evaluates two subnets after each epoch while the others wait, so this is generous). ``torchrun``: the
    processes were started by ``torchrun`` (this one joins their group instead of spawning any).
    ``launcher``: ``local`` spawns the processes here (:func:`train_processes`), ``ray`` runs them as Ray Train
    workers on the cluster this process is connected to (:func:`supernets.launch_ray.train_ray`).
    """

    processes: int
    backend: str = "gloo"
    threads: int = 1
    sync_bn: bool = True
    timeout_s: float = 1800.0
    torchrun: bool = False
    launcher: str = "local"


def resolve_launch(*, processes: int, backend: str, launcher: str, placement: Placement, threads: int = 1,
                   sync_bn: bool = True, batch_size: int | None = None, torchrun: bool = False) -> LaunchPlan:
    """The plan a ``distributed: {processes, backend, launcher}`` section asks for, checked against this machine.

    ``backend: auto`` is NCCL when the supernet trains on CUDA, else gloo. Raises :class:`InputError` naming
    ``distributed.*`` and what this machine has: more processes than CPUs (or than CUDA devices from
    ``device.index`` on), NCCL without CUDA, a backend this torch lacks, more processes than images per batch,
    or ``launcher: ray`` under torchrun. With ``torchrun`` the processes are torchrun's (perhaps on several
    machines), and with ``launcher: ray`` they are Ray Train workers on the cluster (whose resources are checked
    once it is connected, :func:`supernets.launch_ray.check_capacity`): their count is not checked against
    this machine. ``launcher: ray`` with one process trains in this process, as ``local`` does.
    """
    if launcher not in LAUNCHERS:
        raise InputError(f"unknown launcher {launcher!r}; expected {' or '.join(map(repr, LAUNCHERS))}",
                         field="distributed.launcher")
    if launcher == "ray" and torchrun:
        raise InputError("torchrun started these processes, and launcher: ray starts its own (Ray Train workers); "
                         "remove launcher: ray, or run qnas without torchrun", field="distributed.launcher")
    if launcher == "ray" and processes > 1 and placement.is_cuda and (placement.device.index or 0) != 0:
        raise InputError(f"got {placement.device.index}, but with launcher: ray every worker trains on the GPU Ray "
                         "gives it, not on a device chosen here; leave device.index at 0", field="device.index")
    if backend == "auto":
        backend = "nccl" if placement.is_cuda else "gloo"
    _check_backend(backend, placement)
    if not torchrun and launcher == "local":
        _check_count(processes, placement)
    if batch_size is not None and processes > batch_size:
        raise InputError(f"{processes} processes cannot share a batch of {batch_size} images (supernet.batch_size); "
                         "every process needs at least one", field="distributed.processes")
    return LaunchPlan(processes=processes, backend=backend, threads=threads, sync_bn=sync_bn, torchrun=torchrun,
                      launcher=launcher)


def _check_backend(backend: str, placement: Placement) -> None:
    import torch.distributed as dist

    if backend == "nccl" and not placement.is_cuda:
        raise InputError(f"nccl needs CUDA devices, but the supernet trains on the CPU (this machine has "
                         f"{_cuda_inventory()}); use gloo or auto", field="distributed.backend")
    available = {"gloo": dist.is_available() and dist.is_gloo_available(),
                 "nccl": dist.is_available() and dist.is_nccl_available()}
    if not available.get(backend, False):
        have = [name for name, ok in available.items() if ok]
        raise InputError(f"this torch ({torch.__version__}) has no {backend} backend (it has: "
                         f"{', '.join(have) or 'none'})", field="distributed.backend")


def _check_count(processes: int, placement: Placement) -> None:
    if placement.is_cuda:
        first = placement.device.index or 0
        if first + processes > torch.cuda.device_count():
            raise InputError(f"{processes} processes need one CUDA device each from cuda:{first} on, but this machine "
                             f"has {_cuda_inventory()}", field="distributed.processes")
        return
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if processes > cpus:
        raise InputError(f"{processes} processes need a CPU each, but this machine lets qnas use {cpus} "
                         f"CPU{'s' if cpus != 1 else ''}", field="distributed.processes")


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs, picklable (data as CPU tensors, shared with the workers by torch)."""

    space: SearchSpace
    data: Any  # supernets.data.ImageSplits on the CPU
    config: Any  # supernets.config.SupernetConfig
    checkpoint: Path
    placement: Placement
    plan: LaunchPlan
    port: int
    parent: int
    steps: bool  # rank 0 reports every step (for a progress bar), not only every epoch


def train_processes(space: SearchSpace, data: Any, config: Any, *, checkpoint: Path, placement: Placement,
                    plan: LaunchPlan, on_event: Callable[[tuple], None] | None = None, steps: bool = False) -> None:
    """Train the supernet of ``space`` to the end on ``plan.processes`` local processes (resuming ``checkpoint``).

    ``on_event`` receives rank 0's ``("epoch", EpochLog, total)`` events (and with ``steps`` its
    ``("step", epoch, step, steps)`` events) in this process while the workers run. A worker's failure
    is raised here as a RuntimeError with its message (the others are stopped).
    """
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    events = context.SimpleQueue() if on_event is not None else None
    store = serve_store(LOOPBACK, datetime.timedelta(seconds=plan.timeout_s))
    try:
        job = _Job(space, data.to("cpu"), config, Path(checkpoint), placement, plan, store.port, os.getpid(),
                   steps and on_event is not None)
        procs = mp.start_processes(_worker, args=(job, events), nprocs=plan.processes, join=False,
                                   start_method="spawn")
        try:
            while not procs.join(0.2):
                _drain(events, on_event)
        except mp.ProcessRaisedException as err:
            raise RuntimeError(f"a training process failed: {last_line(str(err))}") from None
        except mp.ProcessExitedException as err:
            raise RuntimeError(f"a training process died: {err}") from None
        finally:
            _end(procs.processes)
        _drain(events, on_event)
    finally:
        del store  # closed only now that no worker is left to use it


def serve_store(address: str, timeout: datetime.timedelta, size: int | None = None) -> Any:
    """The rendezvous store, served by this process from a socket bound to ``address`` only, on a port the kernel
    picks (no window in which another process could take it; ``store.port`` says which).

    The store takes the socket over: it closes the descriptor when it is destroyed, so the socket is detached
    here (closing it too could close a number another thread has reused).
    """
    import socket

    import torch.distributed as dist

    listener = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind((address, 0))
        listener.listen(128)
        store = dist.TCPStore(address, listener.getsockname()[1], size, True, timeout=timeout,
                              wait_for_workers=False, master_listen_fd=listener.fileno())
    except BaseException:
        listener.close()
        raise
    listener.detach()
    return store


def _end(processes: list[Any]) -> None:
    """Stop the workers still running (after a failure) and wait until every one has ended."""
    for p in processes:
        if p.is_alive():
            p.terminate()
    for p in processes:
        p.join(10)
        if p.is_alive():
            p.kill()
            p.join()


def _drain(events: Any, on_event: Callable[[tuple], None] | None) -> None:
    while events is not None and on_event is not None and not events.empty():
        try:
            on_event(events.get())
        except (EOFError, queue_module.Empty):
            return


def last_line(text: str) -> str:
    """The last non-blank line of ``text`` (what a worker's traceback says went wrong)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else text


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies; exit now if it already has."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the collective timeout ends an orphan instead
    if os.getppid() != parent:
        os._exit(1)


def _worker(rank: int, job: _Job, events: Any) -> None:
    """One training process: join the group, train every remaining epoch, rank 0 checkpoints and reports."""
    import torch.distributed as dist

    _die_with_parent(job.parent)
    torch.set_num_threads(job.plan.threads)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")
    placement = rank_placement(job.placement, rank)
    if placement.is_cuda:
        torch.cuda.set_device(placement.device)
    timeout = datetime.timedelta(seconds=job.plan.timeout_s)
    store = dist.TCPStore(LOOPBACK, job.port, None, False, timeout=timeout)  # the launching process serves it
    dist.init_process_group(job.plan.backend, store=store, rank=rank, world_size=job.plan.processes, timeout=timeout)
    trained = False
    try:
        train_rank(job.space, job.data, job.config, checkpoint=job.checkpoint, placement=placement,
                   world=World(rank, job.plan.processes, sync_bn=job.plan.sync_bn), events=events, steps=job.steps)
        trained = True
    finally:
        leave_group(together=trained)
    # Trained, written (rank 0's checkpoint is atomic and on disk) and out of the group: nothing is left for the
    # interpreter's teardown to do, where gloo's C++ destructors have now and then aborted a rank that had
    # finished (std::terminate, SIGABRT), failing the whole run. A failure above still raises as before.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def leave_group(*, together: bool) -> None:
    """Leave the process group: after a normal end (``together``) every rank first waits at a barrier, so that
    none tears down its gloo context while a peer still uses it; after a failure nobody waits (the others are
    stopped anyway). The store outlives every rank: the launching process serves it (a local launch) or
    torchrun's agent does.
    """
    import torch.distributed as dist

    if together:
        dist.barrier()
    dist.destroy_process_group()


def rank_placement(placement: Placement, rank: int) -> Placement:
    """Local rank ``r`` of a CUDA run uses the device ``index + r``; CPU ranks share the CPU."""
    if not placement.is_cuda:
        return placement
    return dataclasses.replace(placement, device=torch.device("cuda", (placement.device.index or 0) + rank))


def torchrun_rank() -> tuple[int, int, int] | None:
    """``(rank, world size, local rank)`` when this process is one of several that ``torchrun`` started."""
    env = os.environ
    if "TORCHELASTIC_RUN_ID" not in env or int(env.get("WORLD_SIZE", "1")) < 2:
        return None
    return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0"))


def join_torchrun(plan: LaunchPlan, placement: Placement) -> World:
    """Join the process group of the processes ``torchrun`` started (its rendezvous: ``env://``)."""
    import torch.distributed as dist

    rank, size, _ = torchrun_rank() or (0, 1, 0)
    if placement.is_cuda:
        torch.cuda.set_device(placement.device)
    dist.init_process_group(plan.backend, init_method="env://", rank=rank, world_size=size,
                            timeout=datetime.timedelta(seconds=plan.timeout_s))
    return World(rank, size, sync_bn=plan.sync_bn)


def train_rank(space: SearchSpace, data: Any, config: Any, *, checkpoint: Path, placement: Placement, world: World,
               events: Any = None, steps: bool = False) -> None:
    """This rank's part of the training, in a process group that is already set up.

    Rank 0 writes the checkpoint after every epoch and puts its events on ``events`` (if given).
    """
    from .checkpoint import restore_trainer, save_checkpoint
    from .families import build_supernet
    from .training import SupernetTrainer

    net = build_supernet(space, image_size=getattr(data, "image_size", None), seed=config.seed)
    trainer = SupernetTrainer(net, data.train_x, data.train_y, data.val_x, data.val_y, config, placement=placement,
                              world=world)
    if checkpoint.exists():
        restore_trainer(trainer, checkpoint)  # every rank reads the same state: they start equal
    report = events is not None and world.is_main and steps
    while not trainer.done:
        epoch = trainer.epoch
        on_step = (lambda step, loss: events.put(("step", epoch, step, trainer.steps_per_epoch))) if report else None
        entry = trainer.train_epoch(on_step=on_step)
        if world.is_main:
            save_checkpoint(trainer, checkpoint)
            if events is not None:
                events.put(("epoch", entry, trainer.total_epochs))
