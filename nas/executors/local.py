"""The default executor: build each factory's evaluator in this process (no Ray, no copies)."""

from __future__ import annotations

from nas.evaluators import Evaluator

from .base import EvaluatorFactory

__all__ = ["LocalExecutor"]


class LocalExecutor:
    """Evaluations run here, one after another; ``close`` has nothing to release."""

    name = "local"

    def evaluator(self, factory: EvaluatorFactory) -> Evaluator:
        """The factory's evaluator, built here."""
        return factory.build()

    def describe(self) -> str:
        return "local (this process)"

    def close(self) -> None:
        pass
