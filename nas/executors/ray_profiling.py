"""Latency profiling fanned out over the nodes of a Ray cluster of identical machines.

:func:`supernets.timing.measure_blocks` is pure (specs and settings in, timings out), so a chunk of
blocks can be timed on any node. :class:`RayBlockMeasurer` has its signature: pass it as
``profile_space(..., measure_blocks=RayBlockMeasurer(session))`` and each chunk is split over the
nodes, one task per node (pinned to it), all timed at once, and put back in order.

Why one task per node and whole CPUs: two timings on one machine disturb each other, so each task
reserves ``protocol.threads`` CPUs of its node and nodes are never shared. Tables only transfer
between identical machines, so every result carries its node's CPU name and a mix is an error.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from search_spaces import BlockSpec
from supernets.timing import Protocol, Timing

from .base import split_even
from .ray_env import RaySession

__all__ = ["measure_on_this_node", "RayBlockMeasurer"]


def measure_on_this_node(specs: Sequence[BlockSpec], backend: str, batch: int, seed: int,
                         protocol: Protocol) -> tuple[str, list[Timing]]:
    """``(CPU name, timings)`` measured here; the protocol's CPU pinning is remapped to this node's own CPUs."""
    from supernets import timing

    if protocol.cpus is not None and hasattr(os, "sched_getaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        protocol = dataclasses.replace(protocol, cpus=tuple(allowed[-len(protocol.cpus):]))
    timings = timing.measure_blocks(list(specs), backend, batch=batch, seed=seed, protocol=protocol)
    return timing.device_name(), timings


class RayBlockMeasurer:
    """A drop-in ``measure_blocks`` that times each chunk on all (or ``max_nodes``) nodes of the cluster at once."""

    def __init__(self, session: RaySession, *, max_nodes: int | None = None, max_retries: int = 2) -> None:
        self.session = session
        self.max_nodes = max_nodes
        self.max_retries = max_retries
        self.devices: set[str] = set()

    def _nodes(self, threads: int) -> list[str]:
        nodes = [n for n in self.session.ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) >= threads]
        if not nodes:
            raise RuntimeError(f"no alive Ray node has {threads} CPU(s) for profiling")
        return [n["NodeID"] for n in nodes][: self.max_nodes]

    def __call__(self, specs: Sequence[BlockSpec], backend: str, *, batch: int = 1, seed: int = 0,
                 protocol: Protocol = Protocol()) -> list[Timing]:
        """Timings of ``specs`` in order; block ``i`` gets ``seed + i`` wherever it is timed, as in one process."""
        ray = self.session.ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        remote = ray.remote(measure_on_this_node)
        nodes = self._nodes(protocol.threads)
        refs: list[Any] = []
        start = 0
        for node, part in zip(nodes, split_even(list(specs), len(nodes))):
            strategy = NodeAffinitySchedulingStrategy(node, soft=False)
            task = remote.options(num_cpus=protocol.threads, scheduling_strategy=strategy, max_retries=self.max_retries)
            refs.append(task.remote(part, backend, batch, seed + start, protocol))
            start += len(part)
        timings: list[Timing] = []
        for device, part_timings in ray.get(refs):
            self.devices.add(device)
            timings.extend(part_timings)
        if len(self.devices) > 1:
            raise RuntimeError(f"the Ray nodes are different machines ({sorted(self.devices)}); a latency table "
                               "holds for one kind of hardware: profile on identical nodes only")
        return timings
