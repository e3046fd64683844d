"""Objectives and constraints of a search, as typed records every searcher understands.

Metrics are plain names (``accuracy``, ``latency_ms``, ``size_kb``, ``macs``, ``bitops``, ...); the
evaluators produce them, the searchers optimise them. Internally everything is minimised:
:meth:`Objective.to_min` flips maximised metrics.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["Objective", "Constraint", "parse_constraint", "objective_matrix", "violation_matrix"]


@dataclass(frozen=True)
class Objective:
    """A metric to optimise and its direction."""

    metric: str
    direction: Literal["min", "max"] = "min"

    def to_min(self, value: float) -> float:
        """The value as a quantity to minimise."""
        return -value if self.direction == "max" else value

    def from_min(self, value: float) -> float:
        return -value if self.direction == "max" else value


_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w.:-]*)\s*(<=|>=)\s*([-+]?[\d.]+(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Constraint:
    """``metric <= bound`` or ``metric >= bound``."""

    metric: str
    op: Literal["<=", ">="]
    bound: float

    def violation(self, value: float) -> float:
        """How far ``value`` is outside the bound (0 when satisfied; inf for NaN)."""
        if math.isnan(value):
            return math.inf
        gap = value - self.bound if self.op == "<=" else self.bound - value
        return max(0.0, gap)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


def parse_constraint(text: str) -> Constraint:
    """Parse ``"latency_ms <= 5"``; raises ValueError with the expected form."""
    match = _CONSTRAINT.match(text)
    if not match:
        raise ValueError(f"cannot parse constraint {text!r}; expected 'METRIC <= NUMBER' or 'METRIC >= NUMBER'")
    return Constraint(match.group(1), match.group(2), float(match.group(3)))  # type: ignore[arg-type]


def objective_matrix(results: Sequence[Mapping[str, float]], objectives: Sequence[Objective]) -> np.ndarray:
    """(n, k) array of objective values turned into quantities to minimise."""
    return np.array([[o.to_min(float(r[o.metric])) for o in objectives] for r in results], dtype=float).reshape(
        len(results), len(objectives))


def violation_matrix(results: Sequence[Mapping[str, float]], constraints: Sequence[Constraint]) -> np.ndarray:
    """(n, c) array of constraint violations (0 = satisfied)."""
    return np.array([[c.violation(float(r[c.metric])) for c in constraints] for r in results], dtype=float).reshape(
        len(results), len(constraints))
