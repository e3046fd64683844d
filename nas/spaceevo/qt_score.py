"""SpaceEvo's Q-T score of a candidate space, vectorised (one space in a few milliseconds).

For each latency constraint T: draw N subnets (one lookup-table row per stage, uniformly); a subnet's
loss is the sum of its stages' NSR, its latency the sum of their INT8 latencies plus the fixed part.
p = fraction of subnets with latency <= T (+1e-5); L_top = mean loss of the ``top_k`` best subnets
within T; penalty = max(1, (t / p)^a); score_T = 1 / (penalty * L_top); Score = sum over T.
A constraint no drawn subnet meets scores 0. Every space is scored with the same seed (common random
numbers), so differences between spaces are not sampling noise of the draw order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from search_spaces.meta import CandidateSpace

from .lut import QtLut

__all__ = ["QtSettings", "QtScore", "draw_subnets", "score_draws", "score_draws_loop", "qt_score"]


@dataclass(frozen=True)
class QtSettings:
    """The Q-T score's knobs (SpaceEvo, Wang et al., ICCV 2023, and its code: N = 100,000,
    top 50, t = 0.1, a = 0.01)."""

    constraints_ms: tuple[float, ...]
    n_subnets: int = 100_000
    top_k: int = 50
    t: float = 0.1
    a: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.constraints_ms or any(c <= 0 for c in self.constraints_ms):
            raise ValueError(f"constraints_ms must be a non-empty list of positive numbers, got {self.constraints_ms}")
        if self.n_subnets < 1 or self.top_k < 1 or self.t <= 0 or self.a < 0:
            raise ValueError("n_subnets and top_k must be >= 1, t > 0 and a >= 0")


@dataclass(frozen=True)
class QtScore:
    """Score of one space, and its parts per constraint."""

    candidate: str
    score: float
    per_constraint: tuple[float, ...]
    feasible: tuple[float, ...]  # p (without the +1e-5)
    top_loss: tuple[float, ...]  # L_top (inf when nothing is feasible)

    def to_dict(self) -> dict:
        return {"candidate": self.candidate, "score": self.score, "per_constraint": list(self.per_constraint),
                "feasible": list(self.feasible), "top_loss": list(self.top_loss)}


def draw_subnets(lut: QtLut, candidate: CandidateSpace, n: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(loss, latency_ms) of ``n`` subnets drawn row-per-stage; a missing table entry raises."""
    lut.require(candidate.combos(), needed_by=f"space {candidate}")
    loss, lat = np.zeros(n), np.full(n, lut.fixed_ms)
    for combo in candidate.combos():
        entry = lut.entries[combo]
        idx = rng.integers(0, len(entry.nsr), n)  # (n,)
        loss += entry.nsr[idx]
        lat += entry.latency_ms[idx]
    return loss, lat


def score_draws(loss: np.ndarray, lat: np.ndarray, settings: QtSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised over subnets and constraints: (score_T, p, L_top), each (n_constraints,)."""
    limits = np.asarray(settings.constraints_ms, dtype=float)  # (K,)
    order = np.argsort(loss, kind="stable")
    ok = lat[order, None] <= limits[None, :]  # (n, K), best loss first
    rank = np.cumsum(ok, axis=0)  # (n, K): feasible subnets seen so far
    top = ok & (rank <= settings.top_k)
    count = top.sum(axis=0)  # (K,)
    sums = (loss[order, None] * top).sum(axis=0)
    l_top = np.where(count > 0, sums / np.maximum(count, 1), np.inf)
    p = ok.mean(axis=0)
    penalty = np.maximum(1.0, (settings.t / (p + 1e-5)) ** settings.a)
    scores = np.where(count > 0, 1.0 / (penalty * l_top), 0.0)
    return scores, p, l_top


def score_draws_loop(loss: Sequence[float], lat: Sequence[float], settings: QtSettings
                     ) -> tuple[list[float], list[float], list[float]]:
    """The same as :func:`score_draws`, written as plain loops (the reference the tests compare with)."""
    scores, ps, tops = [], [], []
    for limit in settings.constraints_ms:
        feasible = sorted(l for l, t in zip(loss, lat) if t <= limit)
        p = len(feasible) / len(loss)
        best = feasible[: settings.top_k]
        l_top = sum(best) / len(best) if best else float("inf")
        penalty = max(1.0, (settings.t / (p + 1e-5)) ** settings.a)
        scores.append(1.0 / (penalty * l_top) if best else 0.0)
        ps.append(p)
        tops.append(l_top)
    return scores, ps, tops


def qt_score(lut: QtLut, candidate: CandidateSpace, settings: QtSettings) -> QtScore:
    """Score one candidate space (draws in one shot: 100,000 subnets x 4 stages is a few MB)."""
    loss, lat = draw_subnets(lut, candidate, settings.n_subnets, np.random.default_rng(settings.seed))
    scores, p, l_top = score_draws(loss, lat, settings)
    return QtScore(str(candidate), float(scores.sum()), tuple(map(float, scores)), tuple(map(float, p)),
                   tuple(map(float, l_top)))
