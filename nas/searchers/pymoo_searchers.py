"""pymoo evolutionary searchers: ``nsga2``, ``nsga3``, ``agemoea2``, ``smsemoa``.

A genome is an integer vector of choice indices (``xl = 0``, ``xu = len(choices) - 1``), and the
variation operators delegate to the space (``sample``, ``crossover``, ``mutate``), which know
about conditional genes; a repair keeps every vector canonical so equal networks are equal vectors.

pymoo 0.6.2 draws all its randomness from ``algorithm.random_state``, a ``np.random.Generator``
seeded by ``setup(seed=...)`` and handed to every operator; it never touches NumPy's global state,
so no swapping is needed, and pickling the algorithm captures the generator for resuming.

Duplicate elimination also drops every genome told before: with expensive evaluations a repeat is
wasted work, so each ask only holds genomes the searcher has never proposed.
"""

from __future__ import annotations

import math
import pickle
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.algorithms.moo.nsga3 import NSGA3, comp_by_cv_then_random
from pymoo.algorithms.moo.sms import SMSEMOA, cv_and_dom_tournament
from pymoo.core.algorithm import Algorithm
from pymoo.core.crossover import Crossover
from pymoo.core.duplicate import DuplicateElimination
from pymoo.core.evaluator import Evaluator
from pymoo.core.mutation import Mutation
from pymoo.core.population import Population
from pymoo.core.problem import Problem
from pymoo.core.repair import Repair
from pymoo.core.sampling import Sampling
from pymoo.core.termination import NoTermination
from pymoo.operators.selection.tournament import TournamentSelection
from pymoo.problems.static import StaticProblem
from pymoo.util.ref_dirs import get_reference_directions

from nas.objectives import Constraint, Objective
from search_spaces import Genome, SearchSpace

from .base import Searcher, check_option, register_searcher

__all__ = ["PymooSearcher", "Nsga2Searcher", "Nsga3Searcher", "AgeMoea2Searcher", "SmsEmoaSearcher",
           "reference_directions"]

_TRIES_PER_GENOME = 50  # rejection-sampling budget for new genomes
_FAILED = 1e30  # constraint value marking a failed evaluation (worse than any real violation)


class _GenomeProblem(Problem):
    """The space as a pymoo problem; qnas evaluates, pymoo only proposes."""

    def __init__(self, space: SearchSpace, n_obj: int, n_ieq_constr: int) -> None:
        upper = np.array([len(g.choices) - 1 for g in space.genes])
        super().__init__(n_var=len(upper), n_obj=n_obj, n_ieq_constr=n_ieq_constr, xl=np.zeros_like(upper),
                         xu=upper, vtype=int)
        self.space = space

    def _evaluate(self, x: np.ndarray, out: dict, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("qnas evaluates genomes itself; the pymoo problem only describes the variables")


def _genome(problem: _GenomeProblem, x: np.ndarray) -> Genome:
    return problem.space.from_indices(np.asarray(x, dtype=np.int64))


def _rows(problem: _GenomeProblem, genomes: Sequence[Genome]) -> np.ndarray:
    return np.array([problem.space.to_indices(g) for g in genomes], dtype=np.int64).reshape(len(genomes), -1)


def _key(x: np.ndarray) -> bytes:
    return np.asarray(x, dtype=np.int64).tobytes()


class _SpaceSampling(Sampling):
    """Distinct genomes from ``space.sample`` (fewer when the space runs out)."""

    def _do(self, problem: _GenomeProblem, n_samples: int, *args: Any, random_state: np.random.Generator,
            **kwargs: Any) -> np.ndarray:
        genomes: dict[Genome, None] = {}
        for _ in range(_TRIES_PER_GENOME * n_samples):
            if len(genomes) == n_samples:
                break
            genomes.setdefault(problem.space.sample(random_state), None)
        return _rows(problem, list(genomes))


class _SpaceCrossover(Crossover):
    """Uniform crossover through ``space.crossover`` (redraws genes a parent had inactive)."""

    def __init__(self, prob: float) -> None:
        super().__init__(n_parents=2, n_offsprings=2, prob=prob)

    def _do(self, problem: _GenomeProblem, X: np.ndarray, *args: Any, random_state: np.random.Generator,
            **kwargs: Any) -> np.ndarray:
        out = np.empty_like(X)  # (n_offsprings=2, n_matings, n_var)
        for k in range(X.shape[1]):
            a, b = _genome(problem, X[0, k]), _genome(problem, X[1, k])
            out[0, k] = problem.space.to_indices(problem.space.crossover(a, b, random_state))
            out[1, k] = problem.space.to_indices(problem.space.crossover(b, a, random_state))
        return out


class _SpaceMutation(Mutation):
    """``space.mutate``: each active gene moves to another choice with ``gene_prob`` (at least one)."""

    def __init__(self, gene_prob: float) -> None:
        super().__init__(prob=1.0)
        self.gene_prob = gene_prob

    def _do(self, problem: _GenomeProblem, X: np.ndarray, *args: Any, random_state: np.random.Generator,
            **kwargs: Any) -> np.ndarray:
        space = problem.space
        children = [space.mutate(_genome(problem, x), random_state, prob=self.gene_prob) for x in X]
        return _rows(problem, children).reshape(X.shape)


class _Canonicalise(Repair):
    """Inactive genes back to choice 0, so one network is one vector."""

    def _do(self, problem: _GenomeProblem, X: np.ndarray, **kwargs: Any) -> np.ndarray:
        return _rows(problem, [_genome(problem, x) for x in X]).reshape(X.shape)


class _NewOnly(DuplicateElimination):
    """Drops repeats inside a population, against the given populations and against all told genomes."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[bytes] = set()

    def do(self, pop: Population, *args: Population, return_indices: bool = False,
           to_itself: bool = True) -> Any:
        taken = set(self.seen)
        for other in args:
            if len(other):
                taken.update(_key(x) for x in other.get("X"))
        keep: list[int] = []
        for i in range(len(pop)):
            key = _key(pop[i].X)
            if key not in taken:
                keep.append(i)
                if to_itself:
                    taken.add(key)
        out = pop[keep]
        if return_indices:
            kept = set(keep)
            return out, keep, [i for i in range(len(pop)) if i not in kept]
        return out


# pymoo wraps these comparators in a local decorator function, which pickle cannot find by name;
# module-level stand-ins make the algorithm picklable for resuming.
def _cv_then_random(pop: Population, P: np.ndarray, **kwargs: Any) -> np.ndarray:
    return comp_by_cv_then_random(pop, P, **kwargs)


def _cv_then_dominance(pop: Population, P: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
    return cv_and_dom_tournament(pop, P, *args, **kwargs)


class PymooSearcher(Searcher):
    """Base of the pymoo searchers: operators, ask/tell plumbing, failure handling and resume.

    Subclasses only build the algorithm (:meth:`_make_algorithm`). The first batch is the initial
    population (``population_size``), later batches are ``n_offsprings`` children. A failed
    evaluation (NaN objective) becomes an infeasible candidate through an extra constraint column.
    """

    def __init__(self, space: SearchSpace, objectives: Sequence[Objective], *,
                 constraints: Sequence[Constraint] = (), seed: int = 0, population_size: int = 50,
                 n_offsprings: int | None = None, mutation_prob: float = 0.1, crossover_prob: float = 0.9) -> None:
        super().__init__(space, objectives, constraints=constraints, seed=seed)
        check_option("population_size", isinstance(population_size, int) and population_size >= 2,
                     population_size, "an integer >= 2")
        check_option("n_offsprings", n_offsprings is None or (isinstance(n_offsprings, int) and n_offsprings >= 1),
                     n_offsprings, "a positive integer or null (= population_size)")
        for name, value in (("mutation_prob", mutation_prob), ("crossover_prob", crossover_prob)):
            check_option(name, isinstance(value, (int, float)) and 0.0 <= value <= 1.0, value, "a number in [0, 1]")
        self._batch_size = max(population_size, n_offsprings or population_size)
        self._problem = _GenomeProblem(space, len(self.objectives), len(self.constraints) + 1)
        self._new_only = _NewOnly()
        operators = {"sampling": _SpaceSampling(), "crossover": _SpaceCrossover(crossover_prob),
                     "mutation": _SpaceMutation(mutation_prob), "repair": _Canonicalise(),
                     "eliminate_duplicates": self._new_only}
        self._algorithm = self._make_algorithm(population_size, n_offsprings, operators)
        self._algorithm.setup(self._problem, seed=self.seed, termination=NoTermination(), verbose=False)
        self._pop: Population | None = None

    @abstractmethod
    def _make_algorithm(self, population_size: int, n_offsprings: int | None,
                        operators: dict[str, Any]) -> Algorithm:
        """The pymoo algorithm, built with ``operators`` (sampling, variation, repair, duplicates)."""

    def ask(self) -> list[Genome]:
        if self._pending is not None:
            return list(self._pending)
        pop = self._algorithm.ask()
        if pop is None or len(pop) == 0:  # mating found nothing new: top up with fresh samples
            self._algorithm.termination.force_termination = False
            pop = self._fresh(self._batch_size)
        self._pop = pop
        genomes = [_genome(self._problem, x) for x in pop.get("X")] if len(pop) else []
        batch = self._start_batch(genomes)
        if len(batch) != len(genomes):
            raise RuntimeError("pymoo proposed a duplicate despite the duplicate elimination")
        return batch

    def _fresh(self, n: int) -> Population:
        pop = _SpaceSampling().do(self._problem, n, random_state=self._algorithm.random_state)
        pop = self._new_only.do(pop)
        pop.set("n_gen", self._algorithm.n_iter)
        return pop

    def tell(self, genomes: Sequence[Genome], results: Sequence[Mapping[str, float]]) -> None:
        F, violations = self._finish_batch(genomes, results)
        pop, self._pop = self._pop, None
        if pop is None or len(pop) == 0:
            return
        failed = np.isnan(F).any(axis=1)
        F = np.where(np.isnan(F), 0.0, F)  # failed rows are infeasible, so pymoo never ranks their F
        G = np.column_stack([np.minimum(violations, _FAILED), np.where(failed, _FAILED, 0.0)])
        Evaluator().eval(StaticProblem(self._problem, F=F, G=G), pop)
        self._algorithm.tell(infills=pop)
        self._new_only.seen.update(_key(x) for x in pop.get("X"))

    def _state(self) -> dict[str, Any]:
        return {"algorithm": pickle.dumps((self._algorithm, self._pop))}

    def _load_state(self, body: dict[str, Any]) -> None:
        self._algorithm, self._pop = pickle.loads(body["algorithm"])
        self._problem = self._algorithm.problem
        self._problem.space = self.space
        self._new_only = self._algorithm.eliminate_duplicates


@register_searcher("nsga2")
class Nsga2Searcher(PymooSearcher):
    """NSGA-II (rank + crowding distance), the DyNAS-T default with a population of 50."""

    def _make_algorithm(self, population_size: int, n_offsprings: int | None,
                        operators: dict[str, Any]) -> Algorithm:
        return NSGA2(pop_size=population_size, n_offsprings=n_offsprings, **operators)


def reference_directions(n_obj: int, n_points: int, seed: int) -> np.ndarray:
    """Das-Dennis directions, as many as fit in ``n_points`` with >= 2 partitions; else Riesz energy."""
    if n_obj == 1:
        return np.ones((1, 1))
    partitions = 0
    while math.comb(partitions + 1 + n_obj - 1, n_obj - 1) <= n_points:
        partitions += 1
    if partitions >= 2:
        return get_reference_directions("das-dennis", n_obj, n_partitions=partitions)
    return get_reference_directions("energy", n_obj, n_points, seed=seed)


@register_searcher("nsga3")
class Nsga3Searcher(PymooSearcher):
    """NSGA-III: reference-direction niching, for three or more objectives.

    The directions fill the population: the largest Das-Dennis lattice with at most
    ``population_size`` points, or Riesz s-energy points when the lattice would be too coarse.
    """

    def _make_algorithm(self, population_size: int, n_offsprings: int | None,
                        operators: dict[str, Any]) -> Algorithm:
        ref_dirs = reference_directions(len(self.objectives), population_size, self.seed)
        return NSGA3(ref_dirs=ref_dirs, pop_size=population_size, n_offsprings=n_offsprings,
                     selection=TournamentSelection(func_comp=_cv_then_random), **operators)


@register_searcher("agemoea2")
class AgeMoea2Searcher(PymooSearcher):
    """AGE-MOEA-II: survival by the estimated geometry of the front (good for curved fronts).

    pymoo implements it with numba, an optional dependency imported only when this searcher is built;
    its front-geometry estimate divides by zero for a single objective, hence ``min_objectives``.
    """

    requires = ("numba",)
    min_objectives = 2

    def _make_algorithm(self, population_size: int, n_offsprings: int | None,
                        operators: dict[str, Any]) -> Algorithm:
        from pymoo.algorithms.moo.age2 import AGEMOEA2

        return AGEMOEA2(pop_size=population_size, n_offsprings=n_offsprings, **operators)


@register_searcher("smsemoa")
class SmsEmoaSearcher(PymooSearcher):
    """SMS-EMOA: survival by least hypervolume contribution."""

    def _make_algorithm(self, population_size: int, n_offsprings: int | None,
                        operators: dict[str, Any]) -> Algorithm:
        return SMSEMOA(pop_size=population_size, n_offsprings=n_offsprings,
                       selection=TournamentSelection(func_comp=_cv_then_dominance), **operators)
