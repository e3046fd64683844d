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

__all__ = ["check_distributed", "RESUMABLE_PREFIX"]

RESUMABLE_PREFIX = "distributed."
"""Keys a resume may set differently from the run's config.yaml: a checkpoint continues on any number of processes."""


def check_distributed(loaded: LoadedConfig, placement: Any) -> Any:
    """The :class:`~supernets.launch.LaunchPlan` of the config on this machine; errors point at the config line.

    More than one process needs a supernet to train (``kind: search`` with a ``supernet:`` section that is
    not a reused ``checkpoint``): nothing else is trained in several processes.
    """
    from supernets.launch import resolve_launch

    from nas.kinds import get_kind

    config = loaded.config
    section = config.distributed
    trains = get_kind(config.kind).trains_in_processes
    if section.processes > 1 and (not trains or config.supernet is None or config.supernet.checkpoint is not None):
        raise loaded.error("distributed.processes", f"got {section.processes}; several processes train a supernet, "
                                                    "and this config trains none (it needs kind: search and a "
                                                    "supernet: section without checkpoint); remove distributed")
    batch = config.supernet.batch_size if config.supernet is not None else None
    try:
        plan = resolve_launch(processes=section.processes, backend=section.backend, launcher=section.launcher,
                              placement=placement, threads=config.executor.threads,
                              sync_bn=section.sync_batch_norm, batch_size=batch)
    except InputError as err:
        raise loaded.error(err.field or "distributed", err.detail) from None
    return plan
