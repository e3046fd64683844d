"""What an executor is: it turns a picklable *evaluator factory* into an :class:`~nas.evaluators.Evaluator`.

Why factories, not evaluators: an evaluator that holds a trained supernet, its BN-calibration images
and a validation split cannot be shipped per candidate. A factory is the small recipe (weights and
data as tensors, settings) that each worker turns into its evaluator once, in ``build()``; the
executor decides where that happens: here (:class:`~nas.executors.local.LocalExecutor`) or in Ray
actors (:class:`~nas.executors.ray_executor.RayExecutor`). Either way the result is an ordinary
Evaluator, so ``run_search`` and its journal, cache and resume do not change.

Contract (what makes local and distributed results identical): ``build()`` gives an evaluator whose
result for a genome depends only on that genome, never on which genomes it saw before or where.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, TypeVar, runtime_checkable

from nas.evaluators import Evaluator

__all__ = ["EvaluatorFactory", "Executor", "split_even"]

T = TypeVar("T")


@runtime_checkable
class EvaluatorFactory(Protocol):
    """A picklable recipe for an expensive evaluator, built once per worker.

    ``metrics`` and ``bounds`` are known without building (the search loop needs them up front);
    ``build()`` may load weights, set threads and so on, and must give order-independent results.
    """

    @property
    def metrics(self) -> Mapping[str, str]: ...

    @property
    def bounds(self) -> Mapping[str, tuple[float, float]]: ...

    def build(self) -> Evaluator: ...


class Executor(Protocol):
    """Where expensive evaluations run; :meth:`close` releases workers (and a Ray it started)."""

    name: str

    def evaluator(self, factory: EvaluatorFactory) -> Evaluator: ...

    def close(self) -> None: ...


def split_even(items: Sequence[T], parts: int) -> list[list[T]]:
    """``items`` in ``parts`` contiguous slices whose sizes differ by at most one (empty ones dropped)."""
    if parts < 1:
        raise ValueError(f"parts must be at least 1, got {parts}")
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        stop = start + size + (1 if i < extra else 0)
        if stop > start:
            out.append(list(items[start:stop]))
        start = stop
    return out
