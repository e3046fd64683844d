"""``random``: uniform samples from the space, never proposing the same network twice.

The baseline every other searcher must beat (and the one the conformance suite compares against).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nas.objectives import Constraint, Objective
from search_spaces import Genome, SearchSpace

from .base import Searcher, check_option, register_searcher

__all__ = ["RandomSearcher"]

# Rejection sampling gives up after this many draws per wanted genome (the space is nearly exhausted).
_TRIES_PER_GENOME = 50


@register_searcher("random")
class RandomSearcher(Searcher):
    """Batches of ``batch_size`` genomes drawn with :meth:`SearchSpace.sample`, without repeats.

    Results are ignored. Once every distinct network was proposed, ``ask`` returns an empty batch.
    """

    def __init__(self, space: SearchSpace, objectives: Sequence[Objective], *,
                 constraints: Sequence[Constraint] = (), seed: int = 0, batch_size: int = 16) -> None:
        super().__init__(space, objectives, constraints=constraints, seed=seed)
        check_option("batch_size", isinstance(batch_size, int) and batch_size >= 1, batch_size,
                     "a positive integer")
        self._batch_size = batch_size
        self._rng = np.random.default_rng(self.seed)
        self._seen: set[Genome] = set()
        self._cardinality = space.cardinality()

    def ask(self) -> list[Genome]:
        if self._pending is not None:
            return list(self._pending)
        batch: list[Genome] = []
        tries = 0
        while (len(batch) < self._batch_size and len(self._seen) < self._cardinality
               and tries < _TRIES_PER_GENOME * self._batch_size):
            genome = self.space.sample(self._rng)
            tries += 1
            if genome not in self._seen:
                self._seen.add(genome)
                batch.append(genome)
        return self._start_batch(batch)

    def tell(self, genomes: Sequence[Genome], results: Sequence[Mapping[str, float]]) -> None:
        self._finish_batch(genomes, results)

    def _state(self) -> dict[str, Any]:
        return {"rng": self._rng.bit_generator.state,
                "seen": [self.space.to_indices(g).tolist() for g in self._seen]}

    def _load_state(self, body: dict[str, Any]) -> None:
        self._rng.bit_generator.state = body["rng"]
        self._seen = {self.space.from_indices(x) for x in body["seen"]}
