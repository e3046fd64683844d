"""Optuna searchers: ``optuna-nsga2``, ``optuna-tpe``, ``optuna-gp``.

Each gene is one ``CategoricalDistribution`` over its choice *indices*; every objective is
minimised (we pass :meth:`Objective.to_min` values) and constraint violations are stored with
``Trial.set_constraint`` (Optuna 5 deprecates ``constraints_func``), which all three samplers read.
A batch is ``batch_size`` trials asked at once; trials that map to the same canonical genome share
one evaluation. A failed evaluation (NaN objective or constraint metric) is told as a FAIL trial.

With ``storage_dir`` the study lives in ``storage_dir/optuna.db`` (study ``qnas``), so
``optuna-dashboard sqlite:///.../optuna.db`` can watch it; otherwise it is in memory.

Resume state is the list of told batches (genome indices and the metrics the searcher reads), not
the sampler: samplers hold locks and caches that do not pickle and change between Optuna releases.
Loading a state builds a fresh sampler from the seed, starts the study afresh and replays every
batch through ``ask``/``tell``; seeded samplers then propose exactly what the original did (checked
batch by batch: a divergence is an error, never a silent different search).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import optuna
import sqlalchemy
from optuna.distributions import CategoricalDistribution
from optuna.exceptions import ExperimentalWarning
from optuna.samplers import BaseSampler
from optuna.trial import Trial, TrialState

from nas.objectives import Constraint, Objective
from search_spaces import Genome, InputError, SearchSpace

from .base import Searcher, check_option, register_searcher

__all__ = ["OptunaSearcher", "OptunaNsga2Searcher", "OptunaTpeSearcher", "OptunaGpSearcher"]

STUDY_NAME = "qnas"
DB_NAME = "optuna.db"


@contextmanager
def _quiet() -> Iterator[None]:
    """Optuna logs every trial at INFO; keep it at WARNING while we drive the study, then restore."""
    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(old, optuna.logging.WARNING))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(old)


def _sqlite_storage(db: Path) -> optuna.storages.RDBStorage:
    """SQLite storage in WAL mode without an fsync per commit.

    Optuna commits once per suggested parameter; with the default journal every commit waits for the
    disk (tens of ms each). WAL + ``synchronous=NORMAL`` survives a crash of the process (only a power
    cut may lose the last commits, and resuming relies on the searcher state anyway).
    """
    db.parent.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    sqlalchemy.event.listen(storage.engine, "connect", _fast_sqlite)
    storage.engine.dispose()  # reconnect, so every pooled connection gets the pragmas
    return storage


def _fast_sqlite(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class OptunaSearcher(Searcher):
    """Base of the Optuna searchers: study, storage, batch bookkeeping and resume.

    Subclasses call ``super().__init__`` and then :meth:`_open` with a function that makes their sampler.
    ``conditional`` samplers suggest only the genes active for the values drawn so far
    (define-by-run, as Optuna intends for conditional spaces); the others suggest every gene.
    """

    conditional: ClassVar[bool] = False

    def __init__(self, space: SearchSpace, objectives: Sequence[Objective], *,
                 constraints: Sequence[Constraint] = (), seed: int = 0, storage_dir: Path | None = None,
                 batch_size: int = 16) -> None:
        super().__init__(space, objectives, constraints=constraints, seed=seed)
        check_option("batch_size", isinstance(batch_size, int) and batch_size >= 1, batch_size, "a positive integer")
        self._batch_size = batch_size
        self._db = None if storage_dir is None else Path(storage_dir) / DB_NAME
        self._dists = {g.name: CategoricalDistribution(list(range(len(g.choices)))) for g in space.genes}
        self._trials: list[Trial] = []
        self._told: list[tuple[list[list[int]], list[dict[str, float]]]] = []

    def _open(self, make_sampler: Callable[[], BaseSampler], *, fresh: bool = False) -> None:
        """Create (or attach to) the study; refuse a stored study of another space or objectives.

        Attaching to a stored study without :meth:`load_state_dict` continues it loosely: its
        finished trials inform the sampler. Resuming exactly needs the saved state, which replays
        into a ``fresh`` study (a stored one is deleted first).
        """
        self._make_sampler = make_sampler
        with _quiet():
            self._sampler = make_sampler()
        if fresh and self._db is not None and self._db.exists():
            optuna.delete_study(study_name=STUDY_NAME, storage=_sqlite_storage(self._db))
        self._study = self._create_study(self._db)
        attrs = self._study.user_attrs
        if not attrs:
            for key, value in self._identity().items():
                self._study.set_user_attr(key, value)
        elif {k: attrs.get(k) for k in self._identity()} != self._identity():
            raise InputError(f"the study there belongs to another search ({attrs}); use another directory",
                             source=str(self._db), field="search.storage_dir")

    def _identity(self) -> dict[str, Any]:
        return {"qnas.space": self.space.fingerprint(),
                "qnas.objectives": [f"{o.metric}:{o.direction}" for o in self.objectives],
                "qnas.constraints": [str(c) for c in self.constraints]}

    def _create_study(self, db: Path | None) -> optuna.Study:
        storage = None if db is None else _sqlite_storage(db)
        try:
            with _quiet():
                return optuna.create_study(storage=storage, sampler=self._sampler, study_name=STUDY_NAME,
                                           directions=["minimize"] * len(self.objectives), load_if_exists=True)
        except ValueError as err:  # e.g. a stored study with another number of objectives
            raise InputError(str(err), source=str(db), field="search.storage_dir") from None

    # ---- ask / tell ---------------------------------------------------------------------------
    def ask(self) -> list[Genome]:
        if self._pending is not None:
            return list(self._pending)
        with _quiet():
            self._trials = [self._study.ask() if self.conditional else self._study.ask(self._dists)
                            for _ in range(self._batch_size)]
            genomes = [self._suggest_genome(t) for t in self._trials]
        return self._start_batch(genomes)

    def _suggest_genome(self, trial: Trial) -> Genome:
        """Draw the trial's genome; conditional samplers are asked only for the genes that are active."""
        if not self.conditional:
            return self.space.from_indices([trial.params[g.name] for g in self.space.genes])
        index: dict[str, int] = {}
        for gene in self.space.genes:
            if gene.active_if is not None:
                controller, minimum = gene.active_if
                if self.space.gene(controller).choices[index[controller]] < minimum:  # type: ignore[operator]
                    index[gene.name] = 0
                    continue
            index[gene.name] = trial.suggest_categorical(gene.name, self._dists[gene.name].choices)  # type: ignore
        return self.space.from_indices([index[g.name] for g in self.space.genes])

    def tell(self, genomes: Sequence[Genome], results: Sequence[Mapping[str, float]]) -> None:
        F, violations = self._finish_batch(genomes, results)
        row = {g: i for i, g in enumerate(genomes)}
        with _quiet():
            for trial in self._trials:
                i = row[self._genome_of(trial)]
                if np.isnan(F[i]).any() or np.isinf(violations[i]).any():
                    self._study.tell(trial, state=TrialState.FAIL)
                    continue
                for constraint, value in zip(self.constraints, violations[i]):
                    trial.set_constraint(str(constraint), float(value))
                self._study.tell(trial, F[i].tolist())
        self._trials = []
        read = [o.metric for o in self.objectives] + [c.metric for c in self.constraints]
        self._told.append(([self.space.to_indices(g).tolist() for g in genomes],
                           [{m: float(r[m]) for m in read} for r in results]))

    def _genome_of(self, trial: Trial) -> Genome:
        params = trial.params
        return self.space.from_indices([params.get(g.name, 0) for g in self.space.genes])

    # ---- resume -------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {"told": [(list(indices), [dict(r) for r in results]) for indices, results in self._told]}

    def _load_state(self, body: dict[str, Any]) -> None:
        """Replay the told batches into a fresh sampler and study, then ask the pending batch again."""
        pending, self._pending = self._pending, None
        self._trials, self._told = [], []
        self._open(self._make_sampler, fresh=True)
        for number, (indices, results) in enumerate(body["told"]):
            asked = self._ask_again([self.space.from_indices(i) for i in indices], number)
            self.tell(asked, results)
        if pending is not None:
            self._ask_again(pending, len(body["told"]))

    def _ask_again(self, expected: Sequence[Genome], batch: int) -> list[Genome]:
        """Ask the next batch during a replay; it must be the one the original run asked."""
        asked = self.ask()
        if asked != list(expected):
            raise InputError(f"replaying the saved state diverged at batch {batch}: the sampler proposed other "
                             "genomes than the original run (another Optuna release or seed?)", field="search.resume")
        return asked


@register_searcher("optuna-nsga2")
class OptunaNsga2Searcher(OptunaSearcher):
    """Optuna's NSGA-II sampler (generations of ``population_size`` trials, constrained domination)."""

    def __init__(self, space: SearchSpace, objectives: Sequence[Objective], *,
                 constraints: Sequence[Constraint] = (), seed: int = 0, storage_dir: Path | None = None,
                 batch_size: int = 16, population_size: int = 50, mutation_prob: float | None = None,
                 crossover_prob: float = 0.9, swapping_prob: float = 0.5) -> None:
        super().__init__(space, objectives, constraints=constraints, seed=seed, storage_dir=storage_dir,
                         batch_size=batch_size)
        check_option("population_size", isinstance(population_size, int) and population_size >= 2,
                     population_size, "an integer >= 2")
        for name, value in (("mutation_prob", mutation_prob), ("crossover_prob", crossover_prob),
                            ("swapping_prob", swapping_prob)):
            ok = (value is None and name == "mutation_prob") or (isinstance(value, (int, float)) and 0 <= value <= 1)
            check_option(name, ok, value, "a number in [0, 1]" + (" or null" if name == "mutation_prob" else ""))
        self._open(lambda: optuna.samplers.NSGAIISampler(
            population_size=population_size, mutation_prob=mutation_prob, crossover_prob=crossover_prob,
            swapping_prob=swapping_prob, seed=self.seed))


@register_searcher("optuna-tpe")
class OptunaTpeSearcher(OptunaSearcher):
    """Multivariate, grouped TPE over the conditional space (only active genes are suggested).

    The constant liar is off: a batch is drawn from one model fitted on the finished trials.
    """

    conditional = True

    def __init__(self, space: SearchSpace, objectives: Sequence[Objective], *,
                 constraints: Sequence[Constraint] = (), seed: int = 0, storage_dir: Path | None = None,
                 batch_size: int = 16, n_startup_trials: int = 10, n_ei_candidates: int = 24) -> None:
        super().__init__(space, objectives, constraints=constraints, seed=seed, storage_dir=storage_dir,
                         batch_size=batch_size)
        for name, value in (("n_startup_trials", n_startup_trials), ("n_ei_candidates", n_ei_candidates)):
            check_option(name, isinstance(value, int) and value >= 1, value, "a positive integer")
        self._open(lambda: optuna.samplers.TPESampler(
            n_startup_trials=n_startup_trials, n_ei_candidates=n_ei_candidates, seed=self.seed,
            multivariate=True, group=True, constant_liar=False))


@register_searcher("optuna-gp")
class OptunaGpSearcher(OptunaSearcher):
    """Gaussian-process Bayesian optimisation (log-EHVI for several objectives, constrained).

    Each proposal fits GPs and optimises the acquisition: seconds per genome, growing with the
    number of trials and of trials still running, so the default batch is small.
    """

    expensive = True

    def __init__(self, space: SearchSpace, objectives: Sequence[Objective], *,
                 constraints: Sequence[Constraint] = (), seed: int = 0, storage_dir: Path | None = None,
                 batch_size: int = 4, n_startup_trials: int = 10) -> None:
        super().__init__(space, objectives, constraints=constraints, seed=seed, storage_dir=storage_dir,
                         batch_size=batch_size)
        check_option("n_startup_trials", isinstance(n_startup_trials, int) and n_startup_trials >= 1,
                     n_startup_trials, "a positive integer")
        self._open(lambda: optuna.samplers.GPSampler(n_startup_trials=n_startup_trials, seed=self.seed,
                                                     warn_independent_sampling=False))
