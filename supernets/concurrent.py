"""Several subnets measured at once on one device: a supernet copy and a CUDA stream per concurrent subnet.

Why: one small subnet's validation pass (a few thousand images, a few MB of weights) leaves a large GPU
mostly idle, and a search measures thousands of them. Activating a subnet changes the supernet's modules,
so two subnets cannot share one copy; each of ``at_once`` threads owns a replica (the same weights, LSQ steps
and data; the images are shared, not copied) and, on CUDA, its own stream, so the kernels of different
subnets overlap. PyTorch releases the GIL inside kernels, so threads are enough. On the CPU the threads share
the intra-op thread pool: correct, but rarely faster than one subnet after another.
"""

from __future__ import annotations

import copy
import queue
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

import torch

from search_spaces import Genome

from .evaluate import SubnetEvaluator

__all__ = ["ConcurrentSubnets", "replica", "on_stream"]

T = TypeVar("T")


def on_stream(stream: torch.cuda.Stream | None, work: Callable[[], T]) -> T:
    """``work()`` on ``stream`` (``None``: as it comes), finished when this returns.

    The stream first waits for the device's default stream, where the model and the images were written, and
    is synchronised at the end, so whatever ``work`` left queued (BN statistics put back, weights stepped) is
    done before the caller hands its model to anyone else.
    """
    if stream is None:
        return work()
    stream.wait_stream(torch.cuda.default_stream(stream.device))
    with torch.cuda.stream(stream):
        out = work()
    stream.synchronize()
    return out


def replica(evaluator: SubnetEvaluator) -> SubnetEvaluator:
    """An evaluator with its own copy of the supernet (same device, same state) and the same data tensors."""
    twin = copy.copy(evaluator)
    twin.supernet = copy.deepcopy(evaluator.supernet)
    return twin


class ConcurrentSubnets:
    """Measures up to ``at_once`` subnets concurrently; results equal :meth:`SubnetEvaluator.measure`'s."""

    def __init__(self, evaluator: SubnetEvaluator, at_once: int) -> None:
        if at_once < 1:
            raise ValueError(f"at_once must be >= 1, got {at_once}")
        self.at_once = at_once
        self._free: queue.SimpleQueue[tuple[SubnetEvaluator, object]] = queue.SimpleQueue()
        cuda = evaluator.placement.device.type == "cuda"
        for i in range(at_once):
            ev = evaluator if i == 0 else replica(evaluator)
            self._free.put((ev, torch.cuda.Stream(evaluator.placement.device) if cuda else None))
        self._pool = ThreadPoolExecutor(max_workers=at_once, thread_name_prefix="qnas-subnet")

    def measure_iter(self, genomes: Sequence[Genome]) -> Iterator[tuple[int, dict[str, float]]]:
        """``(position, metrics)`` of every genome, in the order they finish."""
        pending: set[Future] = set()
        todo = iter(enumerate(genomes))
        try:
            for position, genome in todo:
                pending.add(self._pool.submit(self._measure, position, genome))
                if len(pending) >= self.at_once:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    yield from (f.result() for f in done)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (f.result() for f in done)
        finally:
            for f in pending:
                f.cancel()
            wait(pending)

    def _measure(self, position: int, genome: Genome) -> tuple[int, dict[str, float]]:
        ev, stream = self._free.get()
        try:  # finished on its stream before the replica is handed to anyone (or the live supernet used again)
            return position, on_stream(stream, lambda: ev.measure(genome))
        finally:
            self._free.put((ev, stream))

    def close(self) -> None:
        """Stop the threads (the replicas go with this object)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
