"""The searcher interface (ask/tell over a :class:`SearchSpace`) and the searcher registry.

A searcher proposes genomes and learns from their metrics; it never evaluates anything itself, so
the same searcher runs against true evaluations, predictors or cached results alike. Everything is
minimised internally: maximised objectives are flipped with :meth:`Objective.to_min` and constraint
violations (0 = satisfied) come from :func:`violation_matrix`.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from nas.objectives import Constraint, Objective, objective_matrix, violation_matrix
from search_spaces import Genome, InputError, SearchSpace
from search_spaces.errors import nearest
from search_spaces.registries import Registry

__all__ = ["Searcher", "register_searcher", "get_searcher", "list_searchers", "searcher_class",
           "searcher_options", "missing_requirements", "check_option"]

STATE_VERSION = 1
# Arguments every searcher takes; they are not "options" (get_searcher passes them itself).
_COMMON = ("constraints", "seed", "storage_dir", "context")


def check_option(name: str, ok: bool, got: Any, expected: str) -> None:
    """Raise the standard error for a bad searcher option (field ``search.options.<name>``)."""
    if not ok:
        raise InputError(f"got {got!r}, expected {expected}", field=f"search.options.{name}")


class Searcher(ABC):
    """Ask/tell multi-objective searcher over a search space.

    The driver calls :meth:`ask` for a batch, evaluates it (or looks results up in its cache) and
    calls :meth:`tell` with the results of *every* genome of that batch, in the same order, before
    asking again. Asking again before telling returns the same pending batch, so a searcher restored
    from a state taken between ask and tell hands the interrupted batch out once more.

    Args:
        space: the search space; every asked genome is a valid canonical genome of it.
        objectives: metrics to optimise (at least one; names must be distinct).
        constraints: ``metric <= bound`` / ``metric >= bound`` limits; a candidate is feasible when
            every violation is 0.
        seed: seeds the searcher's own random generator; no global random state is used or changed.

    Attributes:
        name: the registry name (set by :func:`register_searcher`).
        expensive: True when proposing a genome costs seconds (model-based samplers such as a GP);
            drivers may want to say so; our tests run such searchers on a tiny budget only.
        requires: optional packages the searcher imports when built (a clear error names them).
        min_objectives: the fewest objectives the searcher handles.
        path_options: options that name files, with the words that are not paths (``{"sensitivity":
            ("hessian", "kl")}``); the config resolves them against its own folder, like every input path.
    """

    name: ClassVar[str] = ""
    expensive: ClassVar[bool] = False
    requires: ClassVar[tuple[str, ...]] = ()
    min_objectives: ClassVar[int] = 1
    path_options: ClassVar[Mapping[str, tuple[str, ...]]] = {}

    def __init__(self, space: SearchSpace, objectives: Sequence[Objective], *,
                 constraints: Sequence[Constraint] = (), seed: int = 0) -> None:
        missing = _missing(type(self))
        if missing:
            raise InputError(f"searcher {self.name!r} needs the optional packages {missing} "
                             f"(pip install {' '.join(missing)})", field="search.algorithm")
        objectives, constraints = tuple(objectives), tuple(constraints)
        if len(objectives) < max(1, self.min_objectives):
            raise InputError(f"searcher {self.name!r} needs {max(1, self.min_objectives)} or more objectives, "
                             f"got {len(objectives)}", field="search.objectives")
        metrics = [o.metric for o in objectives]
        if len(set(metrics)) != len(metrics):
            raise InputError(f"objectives repeat a metric: {metrics}", field="search.objectives")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise InputError(f"got {seed!r}, expected a non-negative integer", field="search.seed")
        self.space = space
        self.objectives: tuple[Objective, ...] = objectives
        self.constraints: tuple[Constraint, ...] = constraints
        self.seed = int(seed)
        self._batch_size = 1  # implementations set their own
        self._pending: list[Genome] | None = None

    # ---- the interface ------------------------------------------------------------------------
    @abstractmethod
    def ask(self) -> list[Genome]:
        """The next batch: valid canonical genomes of the space, no duplicates inside one batch.

        A batch may be shorter than :attr:`batch_size` (duplicates removed, space exhausted) and
        may be empty when nothing new can be proposed.
        """

    @abstractmethod
    def tell(self, genomes: Sequence[Genome], results: Sequence[Mapping[str, float]]) -> None:
        """Report the metrics of every genome of the last :meth:`ask`, in the same order.

        ``results[i]`` holds every objective and constraint metric of ``genomes[i]`` (more keys
        may be present). A NaN or infinite objective marks a failed evaluation: the searcher treats
        it as the worst possible candidate instead of crashing.
        """

    def notes(self) -> list[str]:
        """What the user should know about the candidates proposed so far, e.g. a budget none of them
        could meet; the run warns with each and report.md lists them. None by default."""
        return []

    @property
    def batch_size(self) -> int:
        """The largest number of genomes one :meth:`ask` returns (to size worker pools)."""
        return int(self._batch_size)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue identically (picklable; may hold bytes from pickle).

        The header records the searcher, the space fingerprint, objectives and constraints, so
        loading a state into a differently configured searcher fails loudly.
        """
        return {**self._header(),
                "pending": None if self._pending is None else [self.space.to_indices(g).tolist()
                                                               for g in self._pending],
                "body": self._state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` output; the searcher must be built with the same setup."""
        for key, value in self._header().items():
            if state.get(key) != value:
                raise InputError(f"the saved searcher state has {key} {state.get(key)!r}, this run has {value!r}",
                                 field="search.resume")
        pending = state["pending"]
        self._pending = None if pending is None else [self.space.from_indices(p) for p in pending]
        self._load_state(state["body"])

    def _header(self) -> dict[str, Any]:
        """The part of :meth:`state_dict` that must match on load."""
        return {"version": STATE_VERSION, "searcher": self.name, "space": self.space.fingerprint(),
                "objectives": [(o.metric, o.direction) for o in self.objectives],
                "constraints": [str(c) for c in self.constraints]}

    # ---- hooks and helpers for implementations --------------------------------------------------
    def _state(self) -> dict[str, Any]:
        raise NotImplementedError(f"searcher {type(self).__qualname__} does not support resuming")

    def _load_state(self, body: dict[str, Any]) -> None:
        raise NotImplementedError(f"searcher {type(self).__qualname__} does not support resuming")

    def _start_batch(self, genomes: Sequence[Genome]) -> list[Genome]:
        """Record ``genomes`` as the pending batch (first occurrence of each kept) and return it."""
        self._pending = list(dict.fromkeys(genomes))
        return list(self._pending)

    def _finish_batch(self, genomes: Sequence[Genome],
                      results: Sequence[Mapping[str, float]]) -> tuple[np.ndarray, np.ndarray]:
        """Check a tell against the pending batch; return (F, violations), both to minimise.

        F is ``(n, n_objectives)`` (NaN where an evaluation failed), violations ``(n, n_constraints)``.
        """
        genomes, results = list(genomes), list(results)
        if self._pending is None:
            raise ValueError("tell() without a pending ask()")
        if genomes != self._pending:
            raise ValueError("tell() must report exactly the genomes of the last ask(), in the same order")
        if len(results) != len(genomes):
            raise ValueError(f"got {len(results)} results for {len(genomes)} genomes")
        needed = [o.metric for o in self.objectives] + [c.metric for c in self.constraints]
        for genome, result in zip(genomes, results):
            missing = [m for m in needed if m not in result]
            if missing:
                raise InputError(f"result of genome {genome.key} lacks metrics {missing} (has {sorted(result)})",
                                 field="search.objectives")
        self._pending = None
        F = objective_matrix(results, self.objectives)
        F[~np.isfinite(F)] = math.nan
        return F, violation_matrix(results, self.constraints)


# ---- registry ------------------------------------------------------------------------------------
_SEARCHERS: Registry[type[Searcher]] = Registry("searcher", field="search.algorithm")
S = TypeVar("S", bound=type[Searcher])


def register_searcher(name: str) -> Callable[[S], S]:
    """Class decorator registering a searcher under ``name`` (duplicate names raise)."""

    def wrap(cls: S) -> S:
        _SEARCHERS.register(name, cls)
        cls.name = name
        return cls

    return wrap


def list_searchers() -> list[str]:
    """Names of all registered searchers, sorted."""
    return _SEARCHERS.names()


def searcher_class(name: str) -> type[Searcher]:
    """The class registered under ``name``; unknown names get the nearest valid one."""
    return _SEARCHERS.get(name)


def missing_requirements(name: str) -> list[str]:
    """Optional packages searcher ``name`` needs that are not installed (empty when it can run)."""
    return _missing(searcher_class(name))


def _missing(cls: type[Searcher]) -> list[str]:
    return [module for module in cls.requires if importlib.util.find_spec(module) is None]


def searcher_options(name: str) -> dict[str, Any]:
    """The options (keyword-only hyperparameters) of searcher ``name`` with their defaults."""
    params = inspect.signature(searcher_class(name).__init__).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _COMMON}


def get_searcher(name: str, space: SearchSpace, objectives: Sequence[Objective], *,
                 constraints: Sequence[Constraint] = (), seed: int = 0, storage_dir: Path | None = None,
                 context: Any = None, **options: Any) -> Searcher:
    """Build searcher ``name``, refusing unknown options by name.

    ``storage_dir`` reaches only searchers that keep files (the Optuna ones) and ``context`` (a
    :class:`~nas.searchers.context.SearchContext`) only model-based ones; the others ignore them.
    """
    cls = searcher_class(name)
    allowed = list(searcher_options(name))
    for key in options:
        if key not in allowed:
            raise InputError(f"unknown option for searcher {name!r}{nearest(key, allowed)} (options: {allowed})",
                             field=f"search.options.{key}")
    extra = {}
    accepted = inspect.signature(cls.__init__).parameters
    if "storage_dir" in accepted and storage_dir is not None:
        extra["storage_dir"] = Path(storage_dir)
    if "context" in accepted and context is not None:
        extra["context"] = context
    return cls(space, objectives, constraints=constraints, seed=seed, **extra, **options)
