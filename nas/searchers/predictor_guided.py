"""Predictor-in-the-loop search (LINAS): measure a few candidates, let predictors explore the rest.

Each round: fit one accuracy-style predictor per *measured* metric on every true evaluation so far
(plus rows from earlier runs), run an inner searcher (NSGA-II by default) for many generations on
predicted values and exact cheap metrics (analytic costs, latency tables), then pick the next
candidates to measure among everything the inner search visited:

1. *could it enter the front?* — its optimistic vector (prediction-interval bound in the favourable
   direction, exact cheap metrics) is not dominated by the measured front and meets the constraints;
2. among those, the best non-domination ranks of the *mean* predictions, spread along the front.

Candidates the predictors proposed are measured before the next round, so every round also yields
a genuinely held-out check of the predictors (predicted before measured), kept in :meth:`report`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nas.objectives import objective_matrix, violation_matrix
from nas.pareto import front_indices, nondominated_ranks, spread
from search_spaces import Genome, SearchSpace

from . import free_bits
from .base import Searcher, check_option, get_searcher, register_searcher
from .context import SearchContext

__all__ = ["PredictorGuidedSearcher"]


@register_searcher("predictor-nsga2")
class PredictorGuidedSearcher(Searcher):
    """LINAS-style search: predictors fitted each round drive an inner NSGA-II."""

    def __init__(self, space: SearchSpace, objectives: Sequence[Any], *, constraints: Sequence[Any] = (),
                 seed: int = 0, context: SearchContext | None = None, n_startup_trials: int = 16,
                 batch_size: int = 8, inner: str = "nsga2", population_size: int = 40, generations: int = 20,
                 alpha: float = 0.2, raise_free_bits: bool = False) -> None:
        super().__init__(space, objectives, constraints=constraints, seed=seed)
        check_option("n_startup_trials", isinstance(n_startup_trials, int) and n_startup_trials >= 10,
                     n_startup_trials, "an integer >= 10 (predictors need ten measurements to cross-validate)")
        check_option("batch_size", isinstance(batch_size, int) and batch_size >= 1, batch_size, "an integer >= 1")
        check_option("generations", isinstance(generations, int) and generations >= 1, generations, "an integer >= 1")
        check_option("alpha", isinstance(alpha, float) and 0 < alpha < 1, alpha, "a number in (0, 1)")
        check_option("inner", inner != self.name, inner, "another searcher (e.g. nsga2)")
        check_option("raise_free_bits", isinstance(raise_free_bits, bool), raise_free_bits, "true or false")
        self.context = context or SearchContext()
        self.n_startup, self.inner, self.population, self.generations = n_startup_trials, inner, population_size, generations
        self.alpha = alpha
        self._batch_size = max(batch_size, n_startup_trials)
        self.round_size = batch_size
        needed = dict.fromkeys([o.metric for o in self.objectives] + [c.metric for c in self.constraints])
        self.predicted = [m for m in needed if m not in self.context.cheap_metrics]
        self._free_bits = (free_bits.cheap_directions(self.objectives, self.constraints, self.context.cheap_metrics)
                           if raise_free_bits else None)
        self._rng = np.random.default_rng(seed)
        self._told: dict[str, tuple[Genome, dict[str, float]]] = {}
        self._forecast: dict[str, dict[str, float]] = {}
        self.rounds: list[dict[str, Any]] = []

    # ---- ask / tell ---------------------------------------------------------------------------------
    def ask(self) -> list[Genome]:
        if self._pending is not None:
            return list(self._pending)
        if len(self._told) < self.n_startup:
            return self._start_batch(self._random(self.n_startup - len(self._told)))
        return self._start_batch(self._guided())

    def tell(self, genomes: Sequence[Genome], results: Sequence[Mapping[str, float]]) -> None:
        self._finish_batch(genomes, results)
        needed = [o.metric for o in self.objectives] + [c.metric for c in self.constraints]
        for genome, result in zip(genomes, results):
            self._told.setdefault(genome.key, (genome, {m: float(result[m]) for m in needed}))
        if self.rounds and self.rounds[-1].get("held_out") is None and self._forecast:
            self.rounds[-1]["held_out"] = self._held_out(genomes, results)
            self._forecast = {}

    # ---- proposing ----------------------------------------------------------------------------------
    def _random(self, n: int) -> list[Genome]:
        out: dict[str, Genome] = {}
        draws = 0  # at most 50 n, drawn in batches of what is missing: one by one's draws exactly when not raising
        while len(out) < n and draws < 50 * n:
            k = min(n - len(out), 50 * n - draws)
            draws += k
            for genome in self._raised([self.space.sample(self._rng) for _ in range(k)]):
                if genome.key not in self._told:
                    out.setdefault(genome.key, genome)
        return list(out.values())

    def _raised(self, genomes: list[Genome]) -> list[Genome]:
        """``genomes`` with their free bits raised (option ``raise_free_bits``), else as they are."""
        if self._free_bits is None or not genomes:
            return genomes
        # Checked here, not when built: a config is validated without the run's evaluators.
        check_option("raise_free_bits", self.context.cheap is not None, True,
                     "false: no exact cheap metrics (analytic costs, latency tables) tell which bits are free")
        check_option("raise_free_bits", bool(self._free_bits), True,
                     "false: no objective or constraint is on an exact cheap metric "
                     f"({', '.join(sorted(self.context.cheap_metrics))}), so every bit would rise to its highest")
        return free_bits.raise_free_bits(genomes, self.space, self.context.cheap_evaluate, self._free_bits)

    def _guided(self) -> list[Genome]:
        from predictors.accuracy import MIN_SAMPLES

        short = [m for m in self.predicted if self._n_finite(m) < MIN_SAMPLES]
        if short:  # too many failed evaluations to fit a predictor yet: keep exploring at random
            self.rounds.append({"round": len(self.rounds) + 1, "n_train": len(self._told), "held_out": None,
                                "note": f"random round: fewer than {MIN_SAMPLES} finite values of {short}"})
            return self._random(self.round_size)
        predictors = {m: self._fit(m) for m in self.predicted}
        pool = self._inner_search(predictors)
        chosen = self._select_raised(pool, predictors)
        if len(chosen) < self.round_size:
            chosen += [g for g in self._random(self.round_size - len(chosen)) if g not in chosen]
        self.rounds.append({"round": len(self.rounds) + 1, "n_train": len(self._told), "pool": len(pool),
                            "chosen": len(chosen), "held_out": None,
                            "predictors": {m: p.report() for m, p in predictors.items()}})
        self._forecast = self._predict_points(chosen, predictors)
        return chosen

    def _n_finite(self, metric: str) -> int:
        own = sum(math.isfinite(r[metric]) for _, r in self._told.values())
        return own + sum(metric in v and math.isfinite(v[metric]) for _, v in self.context.prior)

    def _fit(self, metric: str) -> Any:
        from predictors.accuracy import make_predictor

        rows = [(g, r[metric]) for g, r in self._told.values() if math.isfinite(r[metric])]
        rows += [(g, v[metric]) for g, v in self.context.prior if metric in v and g.key not in self._told]
        predictor = make_predictor(self.space, self.context.model, seed=self.seed, **self.context.model_options)
        return predictor.fit([g for g, _ in rows], [y for _, y in rows])

    def _metrics(self, genomes: Sequence[Genome], predictors: Mapping[str, Any], *, optimistic: bool
                 ) -> list[dict[str, float]]:
        """Exact cheap metrics plus predicted ones (interval bound in the favourable direction if optimistic)."""
        rows = self.context.cheap_evaluate(genomes)
        for metric, predictor in predictors.items():
            values = predictor.predict(genomes)
            if optimistic:
                lo, hi = predictor.predict_interval(genomes, alpha=self.alpha)
                values = hi if self._favours_high(metric) else lo
            for row, value in zip(rows, values):
                row[metric] = float(value)
        return rows

    def _favours_high(self, metric: str) -> bool:
        directions = {o.metric: o.direction for o in self.objectives}
        if metric in directions:
            return directions[metric] == "max"
        return any(c.metric == metric and c.op == ">=" for c in self.constraints)

    def _inner_search(self, predictors: Mapping[str, Any]) -> list[Genome]:
        """Every distinct untold genome an inner searcher visits while optimising the predictions."""
        inner = get_searcher(self.inner, self.space, self.objectives, constraints=self.constraints,
                             seed=int(self._rng.integers(2**31)), population_size=self.population)
        visited: dict[str, Genome] = {}
        for _ in range(self.generations):
            batch = inner.ask()
            if not batch:
                break
            inner.tell(batch, self._metrics(batch, predictors, optimistic=False))
            visited.update((g.key, g) for g in batch if g.key not in self._told)
        return list(visited.values())

    def _select_raised(self, pool: list[Genome], predictors: Mapping[str, Any]) -> list[Genome]:
        """:meth:`_select`'s picks with their free bits raised; a pick that then equals a measured genome or
        another pick leaves the pool and the selection is made again (a few times at most)."""
        chosen: dict[str, Genome] = {}
        for _ in range(4):
            picks = self._select(pool, predictors, room=self.round_size - len(chosen))
            if self._free_bits is None or not picks:
                return list(chosen.values()) + picks
            for genome in self._raised(picks):
                if genome.key not in self._told:
                    chosen.setdefault(genome.key, genome)
            taken = {g.key for g in picks}
            pool = [g for g in pool if g.key not in taken]
            if len(chosen) >= self.round_size:
                break
        return list(chosen.values())[:self.round_size]

    def _select(self, pool: list[Genome], predictors: Mapping[str, Any], *, room: int) -> list[Genome]:
        if not pool or room <= 0:
            return []
        told = [r for _, r in self._told.values()]
        measured = objective_matrix(told, self.objectives)
        front = measured[front_indices(measured, violation_matrix(told, self.constraints).sum(axis=1))]
        hopeful = objective_matrix(self._metrics(pool, predictors, optimistic=True), self.objectives)
        means = self._metrics(pool, predictors, optimistic=False)
        feasible = violation_matrix(means, self.constraints).sum(axis=1) == 0
        promising = [i for i in range(len(pool)) if feasible[i] and not _dominated(hopeful[i], front)]
        order = promising or list(range(len(pool)))
        F = objective_matrix([means[i] for i in order], self.objectives)
        ranks = nondominated_ranks(F)
        chosen: list[int] = []
        for rank in np.unique(ranks):
            members = [order[i] for i in np.flatnonzero(ranks == rank)]
            members.sort(key=lambda i: tuple(objective_matrix([means[i]], self.objectives)[0]))
            chosen += [members[j] for j in spread(len(members), room - len(chosen))]
            if len(chosen) >= room:
                break
        return [pool[i] for i in chosen]

    # ---- predictor quality ------------------------------------------------------------------------------
    def _predict_points(self, genomes: Sequence[Genome], predictors: Mapping[str, Any]) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {g.key: {} for g in genomes}
        for metric, predictor in predictors.items():
            mean = predictor.predict(genomes)
            lo, hi = predictor.predict_interval(genomes, alpha=self.alpha)
            for g, m, a, b in zip(genomes, mean, lo, hi):
                out[g.key].update({metric: float(m), f"{metric}_lo": float(a), f"{metric}_hi": float(b)})
        return out

    def _held_out(self, genomes: Sequence[Genome], results: Sequence[Mapping[str, float]]) -> dict[str, Any]:
        from predictors.accuracy import ranking_metrics

        out: dict[str, Any] = {}
        for metric in self.predicted:
            rows = [(self._forecast[g.key], r[metric]) for g, r in zip(genomes, results)
                    if g.key in self._forecast and math.isfinite(r[metric])]
            if len(rows) >= 2:
                pred = np.array([p[metric] for p, _ in rows])
                lo, hi = np.array([p[f"{metric}_lo"] for p, _ in rows]), np.array([p[f"{metric}_hi"] for p, _ in rows])
                out[metric] = ranking_metrics(np.array([y for _, y in rows]), pred, lo, hi)
                out[metric]["pairs"] = [[float(p[metric]), float(y), float(p[f"{metric}_lo"]), float(p[f"{metric}_hi"])]
                                        for p, y in rows]
        return out

    def report(self) -> dict[str, Any]:
        """Rounds, cross-validated and held-out predictor quality (predicted before measured)."""
        from predictors.accuracy import ranking_metrics

        pooled: dict[str, Any] = {}
        for metric in self.predicted:
            pairs = [p for r in self.rounds for p in ((r.get("held_out") or {}).get(metric) or {}).get("pairs", [])]
            if len(pairs) >= 2:
                pred, true, lo, hi = np.array(pairs).T
                pooled[metric] = ranking_metrics(true, pred, lo, hi)
        return {"searcher": self.name, "predicted_metrics": self.predicted, "alpha": self.alpha,
                "n_startup_trials": self.n_startup, "raise_free_bits": self._free_bits is not None,
                "rounds": self.rounds, "held_out_pooled": pooled,
                "n_measured": len(self._told), "n_prior_rows": len(self.context.prior)}

    # ---- resume -----------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {"rng": self._rng.bit_generator.state, "rounds": self.rounds, "forecast": self._forecast,
                "told": [(self.space.to_indices(g).tolist(), r) for g, r in self._told.values()]}

    def _load_state(self, body: dict[str, Any]) -> None:
        self._rng.bit_generator.state = body["rng"]
        self.rounds, self._forecast = body["rounds"], body["forecast"]
        self._told = {}
        for indices, result in body["told"]:
            genome = self.space.from_indices(indices)
            self._told[genome.key] = (genome, dict(result))


def _dominated(point: np.ndarray, front: np.ndarray) -> bool:
    """Whether some row of ``front`` is at least as good everywhere and better somewhere (minimisation)."""
    if len(front) == 0:
        return False
    return bool(np.any(np.all(front <= point, axis=1) & np.any(front < point, axis=1)))
