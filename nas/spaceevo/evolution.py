"""Aging evolution over candidate spaces, ranked by the Q-T score (SpaceEvo).

The population starts with every uniform space (one block type everywhere, each window index); when
the population is larger than that, it is filled with mutants of random seeds. Each cycle draws
``sample`` members, mutates the best (one stage's block type and one stage's width window), adds the
child and drops the oldest member. ``total`` counts every scored space, the initial population
included (SpaceEvo, Wang et al., ICCV 2023: population 500, sample 125, 5000 spaces). Scores are
deterministic, so a space proposed twice is answered from a cache (and still counted).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from search_spaces.meta import CandidateSpace, all_combos, uniform_candidates

from .lut import QtLut
from .qt_score import QtScore, QtSettings, qt_score

__all__ = ["EvolutionSettings", "EvolutionResult", "aging_evolution"]


@dataclass(frozen=True)
class EvolutionSettings:
    """Population size, tournament sample and number of spaces scored in all."""

    population: int = 500
    sample: int = 125
    total: int = 5000
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.sample <= self.population or self.total < 1:
            raise ValueError(f"need 1 <= sample <= population and total >= 1, got {self}")


@dataclass(frozen=True)
class EvolutionResult:
    """Every scored space in order (``history``) and the distinct spaces best first (``ranking``)."""

    history: tuple[QtScore, ...]
    ranking: tuple[QtScore, ...]

    @property
    def best(self) -> QtScore:
        return self.ranking[0]


def aging_evolution(lut: QtLut, macro: str, qt: QtSettings, settings: EvolutionSettings = EvolutionSettings(), *,
                    on_trial: Callable[[int, QtScore], None] | None = None) -> EvolutionResult:
    """Evolve candidate spaces of ``macro``; the table must cover every (stage, block, window) first."""
    lut.require(all_combos(macro), needed_by="the space evolution (mutations can reach every combination)")
    rng = np.random.default_rng(settings.seed)
    cache: dict[str, QtScore] = {}
    history: list[QtScore] = []

    def evaluate(candidate: CandidateSpace) -> tuple[CandidateSpace, QtScore]:
        key = str(candidate)
        if key not in cache:
            cache[key] = qt_score(lut, candidate, qt)
        history.append(cache[key])
        if on_trial is not None:
            on_trial(len(history) - 1, cache[key])
        return candidate, cache[key]

    seeds = uniform_candidates(macro)
    population: deque[tuple[CandidateSpace, QtScore]] = deque()
    for candidate in seeds[: settings.total]:
        population.append(evaluate(candidate))
    while len(population) < settings.population and len(history) < settings.total:
        population.append(evaluate(seeds[int(rng.integers(len(seeds)))].mutated(rng)))
    while len(history) < settings.total:
        picked = rng.choice(len(population), size=min(settings.sample, len(population)), replace=False)
        parent = max((population[int(i)] for i in picked), key=lambda m: m[1].score)
        population.append(evaluate(parent[0].mutated(rng)))
        if len(population) > settings.population:
            population.popleft()
    ranking = sorted(cache.values(), key=lambda s: (-s.score, s.candidate))
    return EvolutionResult(tuple(history), tuple(ranking))
