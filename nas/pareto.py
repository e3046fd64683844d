"""Non-dominated sorting, constraint handling and hypervolume, on arrays of quantities to minimise.

Why a fixed normalisation: hypervolume is only comparable between batches, runs and searchers when
every one of them measures it in the same box. The box comes from the search space itself: the
objective values of its smallest and largest subnets (the extremes of every analytic cost), scaled
to [0, 1]; the reference point sits 10% beyond the worst corner. It does not depend on what a
particular search happened to find.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nas.objectives import Constraint, Objective, violation_matrix

__all__ = [
    "nondominated_ranks", "front_indices", "total_violation", "Normalization", "normalization_from_extremes",
    "hypervolume", "spread",
]


def nondominated_ranks(F: np.ndarray) -> np.ndarray:
    """0-based non-domination rank of every row of ``F`` (n, k); rank 0 is the Pareto front."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    F = np.asarray(F, dtype=float)
    if len(F) == 0:
        return np.zeros(0, dtype=int)
    _, rank = NonDominatedSorting().do(F, return_rank=True)
    return np.asarray(rank, dtype=int)


def total_violation(results: Sequence[Mapping[str, float]], constraints: Sequence[Constraint]) -> np.ndarray:
    """Sum over constraints of the violation relative to the bound (0 = feasible), shape (n,).

    Relative, so that ``bitops`` off by 1e6 and ``size_kb`` off by 3 can be ranked together when
    reporting the closest candidates of an infeasible search.
    """
    if not constraints:
        return np.zeros(len(results))
    scale = np.array([max(abs(c.bound), 1e-12) for c in constraints])
    return (violation_matrix(results, constraints) / scale).sum(axis=1)


def front_indices(F: np.ndarray, violation: np.ndarray) -> np.ndarray:
    """Indices of the feasible, non-dominated rows, ordered by the first objective (then the next)."""
    F = np.asarray(F, dtype=float)
    feasible = np.flatnonzero(np.asarray(violation) == 0)
    finite = feasible[np.all(np.isfinite(F[feasible]), axis=1)] if len(feasible) else feasible
    if len(finite) == 0:
        return finite
    front = finite[nondominated_ranks(F[finite]) == 0]
    order = np.lexsort(F[front].T[::-1])
    return front[order]


@dataclass(frozen=True)
class Normalization:
    """Per-objective ideal and nadir (in minimisation terms) that define the hypervolume box."""

    ideal: tuple[float, ...]
    nadir: tuple[float, ...]
    margin: float = 0.1

    @property
    def reference_point(self) -> np.ndarray:
        """In normalised units: ``1 + margin`` in every objective."""
        return np.full(len(self.ideal), 1.0 + self.margin)

    def scale(self, F: np.ndarray) -> np.ndarray:
        """Map ideal to 0 and nadir to 1 (a flat objective gets span 1)."""
        ideal, nadir = np.array(self.ideal), np.array(self.nadir)
        span = np.where(nadir > ideal, nadir - ideal, 1.0)
        return (np.asarray(F, dtype=float) - ideal) / span

    def to_dict(self) -> dict[str, Any]:
        return {"ideal": list(self.ideal), "nadir": list(self.nadir),
                "reference_point": self.reference_point.tolist(), "units": "normalised: ideal=0, nadir=1"}


def normalization_from_extremes(space: Any, evaluator: Any, objectives: Sequence[Objective]) -> Normalization:
    """The box spanned by the space's smallest and largest subnets (two evaluations, not journaled).

    Metrics with natural bounds declared by their evaluator (``evaluator.bounds``, e.g. accuracy in
    [0, 1]) use those instead: the extremes of the space need not bound them, and an evaluator that
    can give some metrics alone (``evaluate_only``) is asked for just the others, so the box never
    costs an expensive measurement (or a second one when a run resumes) when only cheap metrics need it.
    """
    bounds: Mapping[str, tuple[float, float]] = getattr(evaluator, "bounds", {}) or {}
    needed = [o.metric for o in objectives if o.metric not in bounds]
    extremes = [space.smallest(), space.largest()]
    if not needed:
        rows: list[Mapping[str, float]] = []
    elif hasattr(evaluator, "evaluate_only"):
        rows = evaluator.evaluate_only(extremes, needed)
    else:
        rows = evaluator.evaluate(extremes)
    ideal, nadir = [], []
    for i, o in enumerate(objectives):
        if o.metric in bounds:
            values = sorted(o.to_min(v) for v in bounds[o.metric])
        else:
            values = sorted(o.to_min(float(r[o.metric])) for r in rows)
        ideal.append(values[0])
        nadir.append(values[-1])
    return Normalization(tuple(ideal), tuple(nadir))


def hypervolume(F: np.ndarray, normalization: Normalization) -> float:
    """Hypervolume of the points ``F`` (minimisation terms) in the normalised box; 0 when none is inside."""
    from pymoo.indicators.hv import HV

    F = np.asarray(F, dtype=float).reshape(-1, len(normalization.ideal))
    scaled = normalization.scale(F)
    ref = normalization.reference_point
    inside = scaled[np.all(np.isfinite(scaled), axis=1) & np.all(scaled < ref, axis=1)]
    if len(inside) == 0:
        return 0.0
    if inside.shape[1] == 1:
        return float(ref[0] - inside[:, 0].min())
    return float(HV(ref_point=ref)(inside))


def spread(n: int, k: int) -> list[int]:
    """``k`` of ``range(n)`` spaced evenly, both ends included (a representative pick along a front)."""
    if k <= 0 or n == 0:
        return []
    if k >= n:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, k)})
