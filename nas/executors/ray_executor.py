"""Candidate evaluations as calls to Ray actors that each build their evaluator once.

Design (the numbers are in BENCHMARKS.md, ``experiments/benchmarks/ray_throughput.py``):

- The factory (supernet weights, calibration and validation tensors) is ``ray.put`` once; each actor
  builds its evaluator from that object in ``__init__``: plain tasks would rebuild the model per call.
- One actor call per candidate, dealt round-robin, collected with ``ray.wait`` as they finish: the
  search journals each result as it arrives, so a crash of the driver loses only calls in flight.
  A call costs milliseconds; a subnet evaluation (BN recalibration + a validation pass) far more.
- Faults: actors restart (``max_restarts``) and their calls are retried (``max_task_retries``) when
  a worker process dies; the object ref is kept alive so a restarted actor rebuilds from it. Work may
  run twice, so results are collected by genome key, and the search journals each candidate once.
- Fractional CPUs (0.5 by default): whole-CPU actors on a 2-core machine would starve other tasks.
  Workers use ``threads`` torch threads (1 by default), and actors are spread over nodes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from search_spaces import Genome
from search_spaces.errors import InputError

from .base import EvaluatorFactory
from .ray_env import RaySession

__all__ = ["EvaluatorActor", "RayEvaluator", "RayExecutor", "worker_demand", "workers_that_fit", "check_fits"]


def worker_demand(cpus_per_worker: float, resources: Mapping[str, float]) -> dict[str, float]:
    """Everything one worker asks Ray for: ``{"CPU": cpus_per_worker, **resources}``."""
    return {"CPU": float(cpus_per_worker), **{k: float(v) for k, v in resources.items()}}


def workers_that_fit(nodes: Sequence[Mapping[str, float]], demand: Mapping[str, float]) -> int:
    """How many workers with ``demand`` the nodes (total resources each) can hold at once."""
    wanted = {k: v for k, v in demand.items() if v > 0}
    if not wanted:
        return 10**9
    return sum(min(math.floor(node.get(k, 0.0) / v + 1e-9) for k, v in wanted.items()) for node in nodes)


def check_fits(nodes: Sequence[Mapping[str, float]], demand: Mapping[str, float], num_workers: int) -> None:
    """One InputError when the cluster cannot hold ``num_workers`` workers of ``demand`` (or has no such resource)."""
    missing = sorted(k for k, v in demand.items() if v > 0 and not any(node.get(k, 0.0) > 0 for node in nodes))
    have = {k: sum(node.get(k, 0.0) for node in nodes) for k in demand}
    if missing:
        field = "executor.cpus_per_worker" if missing == ["CPU"] else "executor.resources"
        raise InputError(f"the Ray cluster has no {', '.join(repr(m) for m in missing)} resource (its {len(nodes)} "
                         f"node(s) have {_short(_union(nodes))}); each worker asks for {_short(demand)}", field=field)
    fits = workers_that_fit(nodes, demand)
    if fits < num_workers:
        raise InputError(f"the Ray cluster can hold {fits} of the {num_workers} workers asked for: each needs "
                         f"{_short(demand)}, its {len(nodes)} node(s) have {_short(have)} in all; lower "
                         "num_workers or the per-worker resources, or add nodes", field="executor.num_workers")


def _union(nodes: Sequence[Mapping[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for node in nodes:
        for k, v in node.items():
            if not k.startswith("node:") and k not in ("memory", "object_store_memory"):
                out[k] = out.get(k, 0.0) + v
    return out


def _short(resources: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(resources.items())) + "}"


class EvaluatorActor:
    """A Ray actor body: builds the factory's evaluator once, then evaluates chunks of genomes."""

    def __init__(self, factory: EvaluatorFactory, threads: int) -> None:
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:  # a factory that needs no torch
            pass
        self._evaluator = factory.build()

    def evaluate(self, genomes: Sequence[Genome]) -> list[tuple[str, dict[str, float]]]:
        """``(genome key, metrics)`` pairs: the caller matches results by key, not position."""
        results = self._evaluator.evaluate(list(genomes))
        return [(g.key, dict(r)) for g, r in zip(genomes, results)]

    def pid(self) -> int:
        return os.getpid()


class RayEvaluator:
    """An Evaluator whose batches are spread over ``num_workers`` Ray actors, results streamed as they finish."""

    def __init__(self, factory: EvaluatorFactory, *, session: RaySession, num_workers: int = 2,
                 cpus_per_worker: float = 0.5, resources: Mapping[str, float] | None = None, threads: int = 1,
                 max_retries: int = 3, start_timeout_s: float = 600.0) -> None:
        ray = self._ray = session.ray
        self._metrics, self._bounds = dict(factory.metrics), dict(getattr(factory, "bounds", {}) or {})
        self._payload = ray.put(factory)  # once; restarted actors rebuild from it, so keep the ref
        self._per_call = max(1, int(getattr(factory, "at_once", 1)))  # subnets a worker measures concurrently
        extra = dict(resources or {})
        options: dict[str, Any] = {"num_cpus": cpus_per_worker, "num_gpus": extra.pop("GPU", 0),
                                   "resources": extra, "max_restarts": max_retries,
                                   "max_task_retries": max_retries, "scheduling_strategy": "SPREAD"}
        actor = ray.remote(EvaluatorActor).options(**options)
        self.max_retries = max_retries
        self._actors = [actor.remote(self._payload, threads) for _ in range(num_workers)]
        ready = [a.pid.remote() for a in self._actors]
        done, _ = ray.wait(ready, num_returns=len(ready), timeout=start_timeout_s)
        if len(done) < len(ready):
            self.close()
            raise RuntimeError(f"only {len(done)} of {num_workers} Ray workers started within {start_timeout_s:g} s; "
                               "the cluster's resources are busy with other work")
        ray.get(done)  # a worker that failed to build its evaluator raises here, with its traceback

    @property
    def metrics(self) -> Mapping[str, str]:
        return dict(self._metrics)

    @property
    def bounds(self) -> Mapping[str, tuple[float, float]]:
        return dict(self._bounds)

    @property
    def num_workers(self) -> int:
        return len(self._actors)

    def evaluate(self, genomes: Sequence[Genome]) -> list[dict[str, float]]:
        """Every genome's metrics, in input order (see :meth:`evaluate_iter`)."""
        found = dict(self.evaluate_iter(genomes))
        return [found[i] for i in range(len(genomes))]

    def evaluate_iter(self, genomes: Sequence[Genome]) -> Iterator[tuple[int, dict[str, float]]]:
        """``(position, metrics)`` as each worker call finishes: one call per distinct genome (per ``at_once`` of
        them when the factory's evaluator measures several at once), round-robin."""
        if not self._actors:
            raise RuntimeError("this RayEvaluator is closed")
        where: dict[str, list[int]] = {}
        for position, genome in enumerate(genomes):
            where.setdefault(genome.key, []).append(position)
        unique = [genomes[positions[0]] for positions in where.values()]
        calls = [unique[i:i + self._per_call] for i in range(0, len(unique), self._per_call)]
        pending = [self._actors[i % len(self._actors)].evaluate.remote(c) for i, c in enumerate(calls)]
        while pending:
            done, pending = self._ray.wait(pending, num_returns=1)
            try:
                parts = self._ray.get(done)
            except self._ray.exceptions.RayActorError as err:
                raise RuntimeError(f"a Ray worker died more than {self.max_retries} times (its restarts are used "
                                   "up); see the Ray logs of the cluster") from err
            for key, metrics in (pair for part in parts for pair in part):
                for position in where[key]:
                    yield position, dict(metrics)

    def pids(self) -> list[int]:
        """Process ids of the workers (tests use them to kill one)."""
        return list(self._ray.get([a.pid.remote() for a in self._actors]))

    def close(self) -> None:
        """Stop the workers (idempotent); the session (and a Ray qnas started) is closed by its owner."""
        for actor in self._actors:
            try:
                self._ray.kill(actor, no_restart=True)
            except Exception:  # already gone with its cluster
                pass
        self._actors = []
        self._payload = None


class RayExecutor:
    """Runs factories' evaluators as Ray actors on the session's cluster; ``close`` ends both."""

    name = "ray"

    def __init__(self, session: RaySession, *, num_workers: int = 2, cpus_per_worker: float = 0.5,
                 resources: Mapping[str, float] | None = None, threads: int = 1, max_retries: int = 3) -> None:
        self.session = session
        self.options = {"num_workers": num_workers, "cpus_per_worker": cpus_per_worker,
                        "resources": dict(resources or {}), "threads": threads, "max_retries": max_retries}
        self._evaluators: list[RayEvaluator] = []

    def check(self) -> None:
        """InputError unless the cluster can hold every worker at once."""
        demand = worker_demand(self.options["cpus_per_worker"], self.options["resources"])
        check_fits(self.session.nodes(), demand, self.options["num_workers"])

    def evaluator(self, factory: EvaluatorFactory) -> RayEvaluator:
        """Start the workers for ``factory`` (their evaluators are built once, in each actor)."""
        evaluator = RayEvaluator(factory, session=self.session, **self.options)
        self._evaluators.append(evaluator)
        return evaluator

    def describe(self) -> str:
        o = self.options
        return (f"ray: {o['num_workers']} workers × {o['cpus_per_worker']:g} CPU, {o['threads']} thread(s) each, "
                f"on {self.session.describe()}")

    def close(self) -> None:
        for evaluator in self._evaluators:
            evaluator.close()
        self._evaluators = []
        self.session.close()
