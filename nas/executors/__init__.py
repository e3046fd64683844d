"""Executors: where the expensive evaluators (supernet accuracy) of a run execute — here, or on Ray.

``executor: {kind: local}`` (the default) builds evaluators in this process and never imports Ray;
``kind: ray`` runs them in Ray actors on a private Ray or an existing cluster::

    executor = make_executor(config.executor)            # LocalExecutor or RayExecutor
    evaluator = executor.evaluator(SupernetAccuracyFactory.from_subnets(subnets))
    ...                                                   # an ordinary Evaluator for run_search
    executor.close()

:func:`check_executor` is the pre-flight check a run makes before it creates its folder: Ray
importable, the cluster reachable, its resources enough for every worker — one InputError each.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from search_spaces.errors import InputError

from .base import EvaluatorFactory, Executor, split_even
from .local import LocalExecutor

if TYPE_CHECKING:
    from nas.config import ExecutorConfig, LoadedConfig

__all__ = ["EvaluatorFactory", "Executor", "LocalExecutor", "RayExecutor", "RayEvaluator", "SupernetAccuracyFactory",
           "RayBlockMeasurer", "make_executor", "check_executor", "split_even"]

_LAZY = {"RayExecutor": "nas.executors.ray_executor", "RayEvaluator": "nas.executors.ray_executor",
         "SupernetAccuracyFactory": "nas.executors.supernet", "RayBlockMeasurer": "nas.executors.ray_profiling"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nas.executors' has no attribute {name!r}")


def make_executor(config: ExecutorConfig) -> Executor:
    """The executor of a config's ``executor`` section (for Ray: on the session the pre-flight check opened)."""
    if config.kind == "local":
        return LocalExecutor()
    from .ray_env import current_session
    from .ray_executor import RayExecutor

    return RayExecutor(current_session(config.address), num_workers=config.num_workers,
                       cpus_per_worker=config.cpus_per_worker, resources=config.resources, threads=config.threads,
                       max_retries=config.max_retries)


def check_executor(loaded: LoadedConfig) -> None:
    """Pre-flight: for ``kind: ray``, connect (or start a private Ray) and check the resources.

    Every problem is one InputError pointing at the config line; the connection stays open for the
    run (closed when the run's stages close, or at exit). Nothing is written anywhere.
    """
    config = loaded.config.executor
    if config.kind != "ray":
        return
    try:
        executor = make_executor(config)
    except InputError as err:
        raise loaded.error(err.field or "executor", err.detail) from None
    try:
        executor.check()  # type: ignore[attr-defined]
    except InputError as err:
        executor.close()
        raise loaded.error(err.field or "executor", err.detail) from None
