"""The ``distributed:`` section of a run: checked before any work, and the one part a resume may change.

Why here and not in :mod:`nas.runner`: the rules of the section (what it needs from the rest of the
config, what this machine has, which differences a resume accepts) are few but their own; the
runner only asks for a :class:`~supernets.launch.LaunchPlan` and records ``processes``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from search_spaces import InputError

if TYPE_CHECKING:
    from nas.config import LoadedConfig

__all__ = ["check_distributed", "check_cluster", "release_cluster", "is_torchrun_follower", "follow_torchrun",
           "RESUMABLE_PREFIX"]

RESUMABLE_PREFIX = "distributed."
"""Keys a resume may set differently from the run's config.yaml: a checkpoint continues on any number of processes."""


def check_distributed(loaded: LoadedConfig, placement: Any) -> Any:
    """The :class:`~supernets.launch.LaunchPlan` of the config on this machine; errors point at the config line.

    More than one process needs a supernet to train (``kind: search`` with a ``supernet:`` section that is
    not a reused ``checkpoint``): nothing else is trained in several processes. Under ``torchrun`` the
    processes are torchrun's: ``distributed.processes`` may stay 1 or must equal its world size.
    """
    from supernets.launch import resolve_launch, torchrun_rank

    from nas.kinds import get_kind

    config = loaded.config
    section = config.distributed
    started = torchrun_rank()
    processes = section.processes if started is None else started[1]
    if started is not None and section.processes not in (1, processes):
        raise loaded.error("distributed.processes", f"got {section.processes}, but torchrun started {processes} "
                                                    f"processes (WORLD_SIZE); leave it at 1 or set {processes}")
    trains = get_kind(config.kind).trains_in_processes
    supernet = config.supernet if trains else None  # a kind that trains in processes has the section
    if processes > 1 and (supernet is None or supernet.checkpoint is not None):
        raise loaded.error("distributed.processes", f"got {processes}; several processes train a supernet, "
                                                    "and this config trains none (it needs kind: search and a "
                                                    "supernet: section without checkpoint); remove distributed")
    batch = supernet.batch_size if supernet is not None else None
    try:
        plan = resolve_launch(processes=processes, backend=section.backend, launcher=section.launcher,
                              placement=placement, threads=config.executor.threads,
                              sync_bn=section.sync_batch_norm, batch_size=batch, torchrun=started is not None)
    except InputError as err:
        raise loaded.error(err.field or "distributed", err.detail) from None
    return plan


def check_cluster(loaded: LoadedConfig, plan: Any, placement: Any) -> None:
    """``launcher: ray`` with several processes: Ray Train importable, the cluster of ``executor.address``
    reachable (null: a private Ray starts here) and able to hold every training worker; one error pointing at
    the config otherwise. Slow (Ray starts or connects), so :func:`nas.runner.prepare` calls it after every other
    check. The connection stays open for the run (the Ray executor uses the same one); :func:`release_cluster`
    closes it at the end.
    """
    if plan is None or getattr(plan, "launcher", "local") != "ray" or plan.processes < 2:
        return
    from nas.executors.ray_env import current_session
    from supernets.launch_ray import check_capacity, import_ray_train

    try:
        import_ray_train()
        session = current_session(loaded.config.executor.address)
    except InputError as err:
        raise loaded.error(err.field or "distributed.launcher", err.detail) from None
    try:
        check_capacity(session.nodes(), plan, placement)
    except InputError as err:
        session.close()
        raise loaded.error(err.field or "distributed.processes", err.detail) from None


def release_cluster(plan: Any) -> None:
    """Close the Ray connection :func:`check_cluster` opened, if the executor has not already (a private Ray stops)."""
    if plan is None or getattr(plan, "launcher", "local") != "ray":
        return
    import sys

    ray_env = sys.modules.get("nas.executors.ray_env")
    if ray_env is not None:
        ray_env.close_current_session()


def is_torchrun_follower() -> bool:
    """Whether this process is a torchrun rank other than 0 (it trains its shards; rank 0 owns the run)."""
    from supernets.launch import torchrun_rank

    started = torchrun_rank()
    return started is not None and started[0] != 0


def follow_torchrun(loaded: LoadedConfig, reporter: Any = None) -> Any:
    """A torchrun rank other than 0: check the config as rank 0 does, wait for rank 0 to say where the
    checkpoint is, train this rank's shards, and end. Rank 0 creates and owns the run folder (journal,
    checkpoint, search); this rank writes nothing. Returns a :class:`~nas.experiment.RunOutcome` marked
    ``follower`` (the CLI prints nothing for it)."""
    import time
    from pathlib import Path

    import torch.distributed as dist

    from supernets.launch import join_torchrun, leave_group, rank_placement, torchrun_rank, train_rank

    from nas.experiment import RunOutcome, build_space, check_dataset

    start = time.perf_counter()
    try:
        placement = loaded.config.device.placement()
    except InputError as err:
        raise loaded.error(err.field or "device", err.detail) from None
    plan = check_distributed(loaded, placement)
    space = build_space(loaded)
    _, data = check_dataset(loaded, space)
    placement = rank_placement(placement, torchrun_rank()[2])
    world = join_torchrun(plan, placement)
    finished = False
    try:
        where: list[str | None] = [None]
        dist.broadcast_object_list(where, src=0)
        if where[0] is not None:
            train_rank(space, data, loaded.config.supernet.train_config(), checkpoint=Path(where[0]),
                       placement=placement, world=world)
        finished = True
    finally:
        leave_group(together=finished)
    run_dir = Path(where[0]).parent if where[0] is not None else Path.cwd()
    return RunOutcome(run_dir, None, time.perf_counter() - start, follower=True)
