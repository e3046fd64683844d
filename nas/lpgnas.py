"""LPGNAS experiments: for each cost weight λ, search, derive, retrain over seeds, journal, write the front.

A run directory gets the same artifacts as the CNN searches, written by the same code (:mod:`nas.report`,
:mod:`nas.plots`: every derived design is a trial, every λ a batch): ``trials.jsonl`` (one line per λ, the
record shape of :mod:`nas.journal`), ``pareto.csv`` / ``pareto.json`` / ``pareto.png`` (the size–accuracy front
over the derived designs, error bars over seeds), ``hypervolume.csv`` / ``.png`` (after each λ) and
``report.md`` (LPGNAS's tables as its sections); plus ``searches/lambda-<λ>.json``
(the per-epoch search curve) and ``jobs.jsonl`` (every finished search and retraining, fsync'd as it returns).
A rerun on the same folder skips the λ values already journaled and every job already in ``jobs.jsonl``, so a
run killed at any instant loses only the jobs in flight and resumes to the records of an uninterrupted run.

Accuracy is *measured*: the test accuracy of the derived design retrained from scratch with QAT,
mean and population std over ``seeds`` seeds. Size, BitOps, MACs and parameters are *analytic*
(``space.costs``, conventions in :mod:`search_spaces.gnn`).

``qnas run`` integration: a config with ``kind: lpgnas`` has an ``lpgnas:`` section parsed by
:func:`lpgnas_config` (or embedded as a :class:`LpgnasConfig` field); the runner loads the dataset and
the space and calls :func:`run_lpgnas`. Until then ``python -m nas.lpgnas CONFIG.yaml`` runs one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import statistics
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nas.config_errors import translate_validation_error
from nas.journal import Journal, read_journal
from nas.objectives import Objective
from nas.rundir import atomic_write_json, now_iso
from search_spaces import SearchSpace
from search_spaces.errors import InputError
from supernets.config import MAX_EPOCHS

__all__ = ["LpgnasConfig", "lpgnas_config", "run_lpgnas", "design_metrics", "SOURCES"]

SOURCES = {"accuracy": "measured", "accuracy_std": "measured", "val_accuracy": "measured",
           "supernet_val_accuracy": "measured", "size_kb": "analytic", "bitops": "analytic",
           "macs": "analytic", "params": "analytic", "lambda": "config", "search_seconds": "measured",
           "retrain_seconds": "measured", "selection_seconds": "measured"}


OBJECTIVES = (Objective("accuracy", "max"), Objective("size_kb", "min"))
"""The size–accuracy front over the λ values (``qnas pareto`` shows it)."""


class LpgnasConfig(BaseModel):
    """The ``lpgnas:`` section: search, retraining and reporting settings (see ``supernets.gnn.train``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lambdas: list[float] = Field(default_factory=lambda: [0.01, 0.03, 0.06, 0.1],
                                 description="cost weights; one differentiable search (and one front point) per value")
    target_size_kb: float | None = Field(None, gt=0, description="size below which the size penalty vanishes (relu of "
                                                                 "the log ratio); none: always penalise")
    max_size_kb: float | None = Field(None, gt=0, description="deployment budget: larger designs are neither retrained"
                                                              " nor kept")
    penalty: Literal["log", "linear"] = Field("log", description="log: lambda * (log E[size] + bitops_weight * log "
                                                                 "E[BitOps]) under the architecture softmax; linear: "
                                                                 "the expectations themselves")
    bitops_weight: float = Field(0.1, ge=0, description="weight of the BitOps term beside the size term of the penalty")
    search_epochs: int = Field(200, ge=1, le=MAX_EPOCHS, strict=True, description="epochs of the differentiable search")
    warmup_epochs: int = Field(50, ge=0, le=MAX_EPOCHS, strict=True, description="search epochs that train only the "
                                                                                 "weights before the architecture "
                                                                                 "parameters move")
    weight_sampling: Literal["mixture", "path"] = Field("mixture", description="mixture: weights train on the relaxed "
                                                                               "mixture (LPGNAS, DARTS); path: on one "
                                                                               "design sampled per step")
    gumbel: bool = Field(False, description="sample the architecture with Gumbel-softmax instead of the plain softmax")
    tau_start: float = Field(1.0, gt=0, description="Gumbel-softmax temperature at the start of the search")
    tau_end: float = Field(0.1, gt=0, description="Gumbel-softmax temperature at the end of the search")
    lr: float = Field(0.05, gt=0, description="learning rate of the supernet weights during the search")
    weight_decay: float = Field(5e-4, ge=0, description="weight decay of the supernet weights during the search")
    arch_lr: float = Field(0.03, gt=0, description="learning rate of the architecture parameters")
    arch_weight_decay: float = Field(0.0, ge=0, description="weight decay of the architecture parameters")
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout of node features in search and retraining")
    retrain_epochs: int = Field(200, ge=1, le=MAX_EPOCHS, strict=True, description="QAT retraining epochs of a derived"
                                                                                   " design")
    retrain_lr: float = Field(0.01, gt=0, description="learning rate of the retraining")
    retrain_weight_decay: float = Field(5e-4, ge=0, description="weight decay of the retraining")
    retrain_step_lr_scale: float = Field(3.0, gt=0, description="learning-rate multiplier of the quantizer steps "
                                                                "during retraining (at 1 the steps lag the growing "
                                                                "weights)")
    patience: int = Field(100, ge=1, le=MAX_EPOCHS, strict=True, description="retraining stops after this many epochs "
                                                                             "without a better validation accuracy")
    seeds: int = Field(10, ge=1, le=1000, strict=True, description="retraining seeds of the kept design (its accuracy "
                                                                   "is their mean)")
    search_restarts: int = Field(1, ge=1, le=1000, strict=True, description="seeded searches per lambda; one design is"
                                                                            " kept per lambda")
    select_by: Literal["validation", "accuracy", "objective"] = Field("validation",
                                                                      description="how restarts are compared: "
                                                                                  "validation (cross-entropy after "
                                                                                  "select_seeds retrainings plus "
                                                                                  "lambda * penalty), accuracy "
                                                                                  "(validation accuracy), objective "
                                                                                  "(the searches' own objective, no "
                                                                                  "retraining)")
    select_from: Literal["lambda", "run"] = Field("lambda", description="lambda: each lambda chooses among its own "
                                                                        "searches; run: among all searches of the run")
    select_seeds: int = Field(2, ge=1, le=1000, strict=True, description="retrainings each candidate design gets when "
                                                                         "restarts are compared")
    final_select_seeds: int | None = Field(None, ge=1, le=1000, strict=True,
                                           description="compare the best two candidates again on this many retrainings")
    workers: int = Field(1, ge=1, le=1024, strict=True, description="processes running searches and retrainings in "
                                                                    "parallel")
    normalize_features: bool = Field(True, description="row-normalise the node features (as the Planetoid GCN)")

    @field_validator("lambdas")
    @classmethod
    def _lambdas(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("expected at least one cost weight, e.g. [0.001, 0.003]")
        if any(not math.isfinite(v) or v < 0 for v in value):
            raise ValueError("every λ must be a finite number >= 0")
        if len(set(value)) != len(value):
            raise ValueError("λ values must be distinct (each one is one search)")
        return value

    @model_validator(mode="after")
    def _select_within_seeds(self) -> LpgnasConfig:
        if self.retrains_restarts and self.select_seeds > self.seeds:
            raise ValueError(f"select_seeds ({self.select_seeds}) must be at most seeds ({self.seeds}): the "
                             "selection's retrainings are the kept design's first seeds")
        return self

    @model_validator(mode="after")
    def _final_within_seeds(self) -> LpgnasConfig:
        final = self.final_select_seeds
        if final is not None and not self.select_seeds <= final <= self.seeds:
            raise ValueError(f"final_select_seeds ({final}) must be between select_seeds ({self.select_seeds}) and "
                             f"seeds ({self.seeds}): the finalists' retrainings are the kept design's first seeds")
        return self

    @model_validator(mode="after")
    def _warmup_before_end(self) -> LpgnasConfig:
        if self.warmup_epochs >= self.search_epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be below search_epochs "
                             f"({self.search_epochs}), or α/β are never trained")
        return self

    @property
    def retrains_restarts(self) -> bool:
        """Whether restarts are compared after ``select_seeds`` QAT retrainings (not by the search objective)."""
        several = self.search_restarts > 1 or (self.select_from == "run" and len(self.lambdas) > 1)
        return several and self.select_by != "objective"

    def search_settings(self) -> Any:
        """:class:`supernets.gnn.SearchSettings` of this config."""
        from supernets.gnn import SearchSettings

        return SearchSettings(epochs=self.search_epochs, warmup_epochs=self.warmup_epochs, lr=self.lr,
                              weight_decay=self.weight_decay, arch_lr=self.arch_lr,
                              arch_weight_decay=self.arch_weight_decay, dropout=self.dropout, gumbel=self.gumbel,
                              tau_start=self.tau_start, tau_end=self.tau_end, penalty=self.penalty,
                              bitops_weight=self.bitops_weight, target_size_kb=self.target_size_kb,
                              weight_sampling=self.weight_sampling)

    def retrain_settings(self) -> Any:
        """:class:`supernets.gnn.RetrainSettings` of this config."""
        from supernets.gnn import RetrainSettings

        return RetrainSettings(epochs=self.retrain_epochs, lr=self.retrain_lr,
                               weight_decay=self.retrain_weight_decay, dropout=self.dropout, patience=self.patience,
                               step_lr_scale=self.retrain_step_lr_scale)


def lpgnas_config(data: Mapping[str, Any] | None, *, source: str | Path | None = None) -> LpgnasConfig:
    """Validate an ``lpgnas:`` mapping; the first problem is one InputError naming ``lpgnas.<key>``."""
    try:
        return LpgnasConfig.model_validate(dict(data or {}))
    except ValidationError as err:
        field, message = translate_validation_error(err, LpgnasConfig, {})
        raise InputError(message, source=source, field=f"lpgnas.{field}" if field else "lpgnas") from None


def design_metrics(space: SearchSpace, genome: Any, outcomes: Sequence[Any]) -> dict[str, float]:
    """Measured accuracy (mean, population std over seeds) and the analytic costs of one design."""
    tests = [100 * o.test_accuracy for o in outcomes]
    costs = space.costs(genome)
    return {"accuracy": statistics.fmean(tests), "accuracy_std": statistics.pstdev(tests),
            "val_accuracy": statistics.fmean(100 * o.val_accuracy for o in outcomes),
            "size_kb": costs.size_kb, "bitops": float(costs.bitops), "macs": float(costs.macs),
            "params": float(costs.params), "retrain_seconds": sum(o.seconds for o in outcomes)}


def _say(progress: bool, text: str) -> None:
    if progress:
        print(f"[lpgnas] {text}", file=sys.stderr, flush=True)


def run_lpgnas(config: LpgnasConfig, space: SearchSpace, data: Any, run_dir: Path, *, seed: int,
               progress: bool = True, journal: Journal | None = None) -> list[dict[str, Any]]:
    """Search, derive and retrain once per λ (skipping journaled ones); write the artifacts; return all records.

    Every λ gets ``search_restarts`` searches (seeds: :func:`_search_seeds`): one search's design changes
    with its seed on small graphs, and some collapse. The kept design is chosen by ``select_by`` (see
    :func:`_choose`). Searches and retrainings run on ``workers`` processes; each one is journaled in
    ``jobs.jsonl`` as soon as it returns and each λ in ``trials.jsonl`` once its design is retrained, so an
    interrupted run resumes by λ and, within a λ, by job (see :class:`_Jobs`). ``journal``: the run's
    ``trials.jsonl``, already open (the runner holds it, as for every kind); else opened here.
    """
    from search_spaces.gnn import GnnSpace
    from supernets.gnn import check_graph, prepare_graph

    if not isinstance(space, GnnSpace):
        raise InputError(f"LPGNAS searches the 'gnn' space, not {space.name!r}", field="search_space.name")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    graph = prepare_graph(data, normalize_features=config.normalize_features)
    check_graph(space, graph)
    path = run_dir / "trials.jsonl"
    done = {float(r["metrics"]["lambda"]): r for r in read_journal(path, repair=True).records}
    for lam in config.lambdas:
        if lam in done:
            _say(progress, f"λ={lam:g}: already in the journal, skipped")
    todo = [(batch, lam) for batch, lam in enumerate(config.lambdas) if lam not in done]
    finished = _read_jobs(run_dir / JOBS_FILE, space, progress) if todo else {}
    with (Journal(path) if journal is None else nullcontext(journal)) as journal, \
            Journal(run_dir / JOBS_FILE) as job_journal, _executor(config.workers) as pool:
        jobs = _Jobs(pool, job_journal, finished, space, graph, config)
        if todo:
            _say(progress, f"searching λ = {[lam for _, lam in todo]}, {config.search_restarts} restart(s) each, "
                           f"{config.search_epochs} epochs, {config.workers} worker(s)"
                           + (f"; {len(finished)} finished job(s) in {JOBS_FILE}" if finished else ""))
        for batch, lam, outcome, restarts, retraining in _search_and_retrain(config, space, jobs, todo, done,
                                                                            seed, progress):
            record = _record(space, run_dir, lam, outcome, restarts, batch, list(done.values()), retraining,
                             progress)
            journal.append(record)
            done[lam] = record
    records = list(read_journal(path).records)
    write_artifacts(run_dir, records, space, config, getattr(data, "description", ""))
    return records


def _search_and_retrain(config: LpgnasConfig, space: Any, jobs: _Jobs, todo: list[tuple[int, float]],
                        done: dict[float, dict[str, Any]], seed: int,
                        progress: bool) -> Iterator[tuple[int, float, Any, list[dict[str, Any]], list[Any] | None]]:
    """Queue the searches, then the selection retrainings as each λ's searches finish, then the kept designs'
    full retrainings; yield (batch, λ, kept search, restart summaries, retraining) per λ to do, in order.
    With ``select_from: run`` every λ chooses among the searches of all λ (journaled ones are not rerun)."""
    pooled = config.select_from == "run"
    lams = list(config.lambdas) if pooled else [lam for _, lam in todo]
    searches = {lam: [jobs.search(lam, s) for s in _search_seeds(config, lam, seed)] for lam in lams}
    retrainings = _Retrainings(jobs, seed)
    outcomes = {}
    for lam in lams:  # queue the short selection retrainings as each λ's searches finish
        outcomes[lam] = [f.result() for f in searches[lam]]
        queued = _fitting(space, config, outcomes[lam]) if pooled else _contenders(space, config, outcomes[lam])
        for i in queued if config.retrains_restarts else ():
            retrainings.ensure(outcomes[lam][i].genome, config.select_seeds)
    everything = [o for lam in lams for o in outcomes[lam]]
    chosen = {}
    for i, (_, lam) in enumerate(todo):
        candidates = everything if pooled else outcomes[lam]
        chosen[lam] = _choose(space, config, lam, candidates, retrainings if config.retrains_restarts else None,
                              progress, listed=not (pooled and i))  # a pool is listed once
        genome = chosen[lam][0].genome
        if not any(r["key"] == genome.key for r in done.values()):
            _say(progress, f"λ={lam:g}: derived {genome.key} ({space.costs(genome).size_kb:.2f} KB); "
                           f"retraining over {config.seeds} seeds")
            retrainings.ensure(genome, config.seeds)
    for batch, lam in todo:
        outcome, restarts = chosen[lam]
        yield batch, lam, outcome, restarts, retrainings.results(outcome.genome.key, config.seeds)


def _search_seeds(config: LpgnasConfig, lam: float, seed: int) -> range:
    """Seeds of λ's searches: ``seed``, ``seed + 1``, ... for every λ (the λ values are compared on the same
    random draws); with ``select_from: run`` each λ gets its own, the next ``search_restarts`` after the previous
    λ's, because on a small graph a search's architecture follows its seed more than its λ, and a pool of
    same-seed searches holds few independent designs."""
    start = seed + (config.lambdas.index(lam) * config.search_restarts if config.select_from == "run" else 0)
    return range(start, start + config.search_restarts)


def _search_job(space: Any, graph: Any, settings: Any, lam: float, seed: int) -> Any:
    import supernets.gnn  # looked up at call time (tests count the searches)

    return supernets.gnn.search(space, graph, settings, lam=lam, seed=seed)


def _retrain_job(space: Any, genome: Any, graph: Any, settings: Any, seed: int) -> Any:
    import supernets.gnn

    return supernets.gnn.retrain(space, genome, graph, settings, seed=seed)


# ---- the job journal ----------------------------------------------------------------------------
JOBS_FILE = "jobs.jsonl"
"""One fsync'd line per finished search or retraining (the record shape of :mod:`nas.journal`, plus ``job`` and
``outcome``): a kill loses only the jobs in flight, and a rerun on the folder takes the rest from here."""


class _Jobs:
    """Searches and QAT retrainings on ``pool``, each appended to the job journal the moment it returns.

    A job is named by what its result depends on: its kind, λ or design, seed, and a fingerprint of the space,
    the graph's tensors and the search or retraining settings. Every job is seeded, so a named job found in
    the journal is not run again: its outcome, read back exactly (JSON floats round-trip), is what running it
    would give, and a resumed run equals an uninterrupted one. Jobs of other settings are ignored, not reused.
    """

    def __init__(self, pool: Any, journal: Journal, finished: dict[str, Any], space: Any, graph: Any,
                 config: LpgnasConfig) -> None:
        self.pool, self.journal, self.finished, self.space, self.graph = pool, journal, finished, space, graph
        self.search_settings, self.retrain_settings = config.search_settings(), config.retrain_settings()
        digest = _graph_digest(graph)
        self.search_tag = _fingerprint(space, digest, self.search_settings)
        self.retrain_tag = _fingerprint(space, digest, self.retrain_settings)
        self.lock = threading.Lock()  # pool callbacks run on the pool's thread

    def search(self, lam: float, seed: int) -> Future:
        """The search outcome of (λ, seed), from the journal or run."""
        return self._run(f"search/lambda={lam!r}/seed={seed}/{self.search_tag}", "search", _search_job, None,
                         (self.space, self.graph, self.search_settings, lam, seed))

    def retrain(self, genome: Any, seed: int) -> Future:
        """The retraining outcome of (design, seed), from the journal or run."""
        return self._run(f"retrain/{genome.key}/seed={seed}/{self.retrain_tag}", "retrain", _retrain_job, genome,
                         (self.space, genome, self.graph, self.retrain_settings, seed))

    def _run(self, key: str, kind: str, fn: Any, genome: Any, args: tuple[Any, ...]) -> Future:
        result: Future = Future()
        if key in self.finished:
            result.set_result(self.finished[key])
            return result
        self.pool.submit(fn, *args).add_done_callback(lambda f: self._journal(f, result, key, kind, genome))
        return result

    def _journal(self, future: Future, result: Future, key: str, kind: str, genome: Any) -> None:
        """Append the finished job, then hand its outcome on (a journal error reaches whoever waits on it)."""
        try:
            outcome = future.result()
            with self.lock:
                self.journal.append(_job_record(key, kind, outcome, genome if genome is not None else outcome.genome))
        except BaseException as err:  # the job's own error, a cancellation, or a failed write
            result.set_exception(err)
        else:
            result.set_result(outcome)


def _graph_digest(graph: Any) -> str:
    """SHA-256 of the tensors a job reads (features, row scales, edges, labels, split masks)."""
    h = hashlib.sha256()
    for name in ("x", "row_scale", "edge_index", "y", "train_mask", "val_mask", "test_mask"):
        tensor = getattr(graph, name)
        h.update(name.encode() + (b"-" if tensor is None else str(tuple(tensor.shape)).encode()))
        if tensor is not None:
            h.update(tensor.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def _fingerprint(space: Any, graph_digest: str, settings: Any) -> str:
    """12 hex digits naming everything besides λ/design and seed that a job's result depends on."""
    text = json.dumps({"space": space.name, "options": space.options(), "graph": graph_digest,
                       type(settings).__name__: dataclasses.asdict(settings)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _job_record(key: str, kind: str, outcome: Any, genome: Any) -> dict[str, Any]:
    """The journal line of one finished job: the :mod:`nas.journal` keys, its kind and its whole outcome."""
    fields = {f.name: getattr(outcome, f.name) for f in dataclasses.fields(outcome) if f.name != "genome"}
    if "history" in fields:
        fields["history"] = [vars(e) for e in fields["history"]]
    metrics = {k: v for k, v in fields.items() if isinstance(v, float | int) and k not in ("seconds", "seed")}
    return {"key": key, "genome": genome.to_dict(), "metrics": metrics, "sources": {m: "measured" for m in metrics},
            "seconds": outcome.seconds, "batch": 0, "finished_at": now_iso(), "job": kind, "outcome": fields}


def _job_outcome(record: dict[str, Any], space: Any) -> Any:
    """The SearchOutcome or RetrainOutcome of a job line (inverse of :func:`_job_record`)."""
    from supernets.gnn import EpochLog, RetrainOutcome, SearchOutcome

    fields = dict(record["outcome"])
    if record["job"] == "retrain":
        return RetrainOutcome(**fields)
    if record["job"] != "search":
        raise ValueError(f"unknown job kind {record['job']!r}")
    history = tuple(EpochLog(**e) for e in fields.pop("history"))
    return SearchOutcome(space.from_dict(record["genome"]), history=history, **fields)


def _read_jobs(path: Path, space: Any, progress: bool) -> dict[str, Any]:
    """Job name -> outcome of every finished job in ``path`` (a torn last line is dropped and cut off; a damaged
    line elsewhere, or one that is no job, is an InputError naming the file and line)."""
    contents = read_journal(path, repair=True)
    if contents.dropped is not None:
        _say(progress, str(contents.dropped))
    finished = {}
    for line, record in enumerate(contents.records, start=1):
        try:
            finished[str(record["key"])] = _job_outcome(record, space)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise InputError(f"line {line} is not a finished LPGNAS job ({type(err).__name__}: {err}); remove the "
                             "line (the job is then run again) or start a new run folder", source=path,
                             line=line) from None
    return finished


class _Retrainings:
    """QAT retrainings per design, seeds ``seed``, ``seed + 1``, ... queued on demand: the selection's short
    retrainings are the first seeds of the chosen design's full one, and no design is retrained twice."""

    def __init__(self, jobs: _Jobs, seed: int) -> None:
        self.jobs, self.seed = jobs, seed
        self.futures: dict[str, list[Future]] = {}

    def ensure(self, genome: Any, n: int) -> None:
        futures = self.futures.setdefault(genome.key, [])
        while len(futures) < n:
            futures.append(self.jobs.retrain(genome, self.seed + len(futures)))

    def results(self, key: str, n: int) -> list[Any] | None:
        futures = self.futures.get(key, [])
        return [f.result() for f in futures[:n]] if len(futures) >= n else None


def _fitting(space: Any, config: LpgnasConfig, outcomes: list[Any]) -> list[int]:
    """The restarts whose design is within ``max_size_kb`` (all without one); if none is, the smallest."""
    sizes = [space.costs(o.genome).size_kb for o in outcomes]
    fits = [i for i, size in enumerate(sizes) if config.max_size_kb is None or size <= config.max_size_kb]
    return fits or [min(range(len(sizes)), key=sizes.__getitem__)]


def _contenders(space: Any, config: LpgnasConfig, outcomes: list[Any]) -> list[int]:
    """The restarts the selection retrains: one per distinct design among those that fit, if there are two or
    more (a design that cannot be kept is not retrained, and a single one needs no comparison)."""
    first: dict[str, int] = {}
    for i in _fitting(space, config, outcomes):
        first.setdefault(outcomes[i].genome.key, i)
    return list(first.values()) if len(first) > 1 else []


def _choose(space: Any, config: LpgnasConfig, lam: float, outcomes: list[Any], retrainings: _Retrainings | None,
            progress: bool, listed: bool = True) -> tuple[Any, list[dict[str, Any]]]:
    """The kept restart and every restart's summary (for the journal).

    ``max_size_kb`` first: restarts whose design is larger are not kept, nor retrained (if every one is larger,
    the smallest is kept, its ``within_budget`` false). Then ``select_by: validation`` (with ``retrainings``):
    the lowest *selection score*, the mean validation cross-entropy (at the best-accuracy epoch) of
    ``select_seeds`` QAT retrainings plus ``λ · penalty`` of the design's costs: the search's own objective with
    the supernet's cross-entropy replaced by the retrained design's (DARTS keeps the best of several searches by
    a short training from scratch). λ must still price the size: by validation accuracy alone every Cora λ kept
    its largest restart, and with the error rate in place of the cross-entropy (smaller differences) the
    smallest. ``accuracy``: the highest mean validation accuracy of those retrainings, for a size budget
    (``max_size_kb``) that does the pricing: the most accurate design that fits. With ``final_select_seeds``
    the two best designs are compared again on that many retrainings (:func:`_race`). ``objective``: the
    lowest :func:`~supernets.gnn.search_objective` (no retraining).
    """
    from supernets.gnn import design_penalty, search_objective

    settings = config.search_settings()
    restarts = [{"lambda": o.lam, "seed": o.seed, "key": o.genome.key,
                 "objective": search_objective(space, replace(o, lam=lam), settings),
                 "penalty": design_penalty(space, o.genome, settings),
                 "supernet_val_accuracy": 100 * o.supernet_val_accuracy, "size_kb": space.costs(o.genome).size_kb,
                 "search_seconds": o.seconds} for o in outcomes]
    fits = _fitting(space, config, outcomes)
    for r in restarts:
        r["within_budget"] = config.max_size_kb is None or r["size_kb"] <= config.max_size_kb
    if not restarts[fits[0]]["within_budget"]:
        _say(progress, f"λ={lam:g}: no restart fits max_size_kb {config.max_size_kb:g} KB; kept the smallest "
                       f"({restarts[fits[0]]['size_kb']:.1f} KB)")
    raced = retrainings is not None and bool(_contenders(space, config, outcomes))
    shown = ("objective" if not raced else
             "selection_val_accuracy" if config.select_by == "accuracy" else "selection_score")
    best = (_race(config, lam, outcomes, restarts, fits, retrainings) if raced and retrainings is not None
            else min(fits, key=lambda i: restarts[i]["objective"]))
    for i, r in enumerate(restarts):
        r["chosen"] = i == best
    if len(outcomes) > 1:
        kept = restarts[best]
        where = f" (searched at λ={kept['lambda']:g})" if kept["lambda"] != lam else ""
        listing = "restarts " + ", ".join(_shown(r, shown) for r in restarts) + "; " if listed else ""
        _say(progress, f"λ={lam:g}: {listing}kept seed {kept['seed']}{where}")
    return outcomes[best], restarts


def _race(config: LpgnasConfig, lam: float, outcomes: list[Any], restarts: list[dict[str, Any]], fits: list[int],
          retrainings: _Retrainings) -> int:
    """The best restart that fits by ``select_by`` after ``select_seeds`` retrainings; with ``final_select_seeds``,
    the best two designs then get that many and are ranked again (the last round of successive halving: the
    seeds go where the decision is close, and the winner's are the first of its full retraining)."""
    rank = _ranking(config)
    _score(lam, restarts, fits, retrainings, config.select_seeds)
    best = min(fits, key=lambda i: rank(restarts[i]))
    final = config.final_select_seeds
    if final is None or final <= config.select_seeds:
        return best
    leaders = list(dict.fromkeys(restarts[i]["key"] for i in sorted(fits, key=lambda i: rank(restarts[i]))))[:2]
    finalists = [i for i in fits if restarts[i]["key"] in leaders]
    for i in finalists:
        retrainings.ensure(outcomes[i].genome, final)
    _score(lam, restarts, finalists, retrainings, final)
    return min(finalists, key=lambda i: rank(restarts[i]))


def _ranking(config: LpgnasConfig) -> Any:
    """Sort key of a scored restart (lower is better) for ``select_by``."""
    if config.select_by == "accuracy":
        return lambda r: (-r["selection_val_accuracy"], r["selection_val_loss"], r["objective"])
    return lambda r: (r["selection_score"], r["objective"])


def _score(lam: float, restarts: list[dict[str, Any]], which: list[int], retrainings: _Retrainings, n: int) -> None:
    """Add the mean validation accuracy and cross-entropy of the first ``n`` retrainings to the restarts."""
    for i in which:
        r = restarts[i]
        runs = retrainings.results(r["key"], n)
        assert runs is not None
        r["selection_seeds"] = n
        r["selection_val_accuracy"] = statistics.fmean(100 * o.val_accuracy for o in runs)
        r["selection_seconds"] = sum(o.seconds for o in runs)
        r["selection_val_loss"] = statistics.fmean(o.val_loss for o in runs)
        r["selection_score"] = r["selection_val_loss"] + lam * r["penalty"]


def _shown(r: dict[str, Any], shown: str) -> str:
    """``seed 2 ba1cdc9e (21.9 KB, val 72.6 % CE 1.278 on 2 seeds) selection_val_accuracy 72.6000``."""
    text = f"λ={r['lambda']:g} seed {r['seed']} {r['key'][:8]} ({r['size_kb']:.1f} KB"
    if "selection_seeds" in r:
        text += (f", val {r['selection_val_accuracy']:.1f} % CE {r['selection_val_loss']:.3f} "
                 f"on {r['selection_seeds']} seeds")
    text += ")" if r["within_budget"] else ", over budget)"
    return text + (f" {shown} {r[shown]:.4f}" if shown in r else "")


def _record(space: Any, run_dir: Path, lam: float, outcome: Any, restarts: list[dict[str, Any]],
            batch: int, previous: list[dict[str, Any]], retraining: list[Any] | None,
            progress: bool) -> dict[str, Any]:
    """The journal record of one λ: the kept design's retraining (or a reused one) and its search curve (the kept
    search's, which with ``select_from: run`` may have been run at another λ: ``search_lambda``)."""
    genome = outcome.genome
    curve = f"searches/lambda-{lam:g}.json"
    atomic_write_json(run_dir / curve, {"lambda": lam, "search_lambda": outcome.lam, "genome": genome.to_dict(),
                                        "seed": outcome.seed, "probabilities": outcome.probabilities,
                                        "epochs": [vars(e) for e in outcome.history]})
    same = next((r for r in previous if r["key"] == genome.key), None)
    if same is not None:  # another λ derived the same design: its retraining is reused
        _say(progress, f"λ={lam:g}: derived {genome.key}, already retrained for λ={same['metrics']['lambda']:g}")
        metrics = {**same["metrics"], "retrain_seconds": 0.0}
        details = {k: v for k, v in same["details"].items() if k not in ("restarts", "search_curve")}
        details["reused_from_lambda"] = same["metrics"]["lambda"]
    else:
        assert retraining is not None
        metrics = design_metrics(space, genome, retraining)
        details = {"test_accuracies": [100 * o.test_accuracy for o in retraining],
                   "best_epochs": [o.best_epoch for o in retraining], "seeds": [o.seed for o in retraining]}
    own = [r for r in restarts if r["lambda"] == lam]  # each search and selection is counted for one λ
    search_seconds = sum(r["search_seconds"] for r in own)
    others = {r["key"]: r.get("selection_seconds", 0.0) for r in own if r["key"] != genome.key}
    metrics.update({"lambda": lam, "search_seconds": search_seconds, "selection_seconds": sum(others.values()),
                    "supernet_val_accuracy": 100 * outcome.supernet_val_accuracy})
    _say(progress, f"λ={lam:g}: accuracy {metrics['accuracy']:.2f} ± {metrics['accuracy_std']:.2f} %, "
                   f"{metrics['size_kb']:.2f} KB, {metrics['bitops']:.3g} BitOps")
    return {"key": genome.key, "genome": genome.to_dict(), "metrics": metrics,
            "sources": {m: SOURCES[m] for m in metrics},
            "seconds": search_seconds + metrics["retrain_seconds"] + metrics["selection_seconds"],
            "batch": batch, "finished_at": now_iso(),
            "details": {**details, "search_curve": curve, "restarts": restarts}}


class _InlineExecutor:
    """``submit`` runs the call at once (one worker: no process start-up, monkeypatching works). Its errors
    are re-raised by ``result()``, like a process pool's; Ctrl-C stops the run at once."""

    def submit(self, fn: Any, *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as err:
            future.set_exception(err)
        return future


@contextmanager
def _executor(workers: int) -> Iterator[Any]:
    """Inline for one worker; otherwise spawned processes with one torch thread each (no oversubscription).
    On an error (a NaN loss in a worker, Ctrl-C) the queued calls are cancelled, not run first."""
    if workers == 1:
        yield _InlineExecutor()
        return
    import multiprocessing

    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_one_thread)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


# ---- artifacts ----------------------------------------------------------------------------------
def _designs(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One record per distinct design (the latest batch's when two λ derived the same), in batch order."""
    latest = {r["key"]: r for r in sorted(records, key=lambda r: r["batch"])}
    return sorted(latest.values(), key=lambda r: r["batch"])


def pareto_front(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Distinct designs not dominated in (max accuracy, min size_kb), best accuracy first."""
    import numpy as np

    from nas.pareto import front_indices

    designs = _designs(records)
    if not designs:
        return []
    F = np.array([[o.to_min(r["metrics"][o.metric]) for o in OBJECTIVES] for r in designs], dtype=float)
    return [designs[i] for i in front_indices(F, np.zeros(len(designs)))]


def search_result(records: Sequence[Mapping[str, Any]], space: SearchSpace, config: LpgnasConfig) -> Any:
    """The run as a :class:`~nas.search.SearchResult`: every derived design a trial, one batch per λ, the
    hypervolume after each λ in the box of test accuracy [0, 100] % and the space's smallest and largest size."""
    import numpy as np

    from nas.pareto import Normalization, hypervolume
    from nas.search import HypervolumePoint, SearchResult, Trial

    def trial(r: Mapping[str, Any]) -> Trial:
        return Trial(space.from_dict(r["genome"]), {k: float(v) for k, v in r["metrics"].items()},
                     {k: SOURCES.get(k, "measured") for k in r["metrics"]}, float(r.get("seconds", math.nan)),
                     int(r["batch"]), str(r.get("finished_at", "")))

    sizes = sorted(space.costs(g).size_kb for g in (space.smallest(), space.largest()))
    norm = Normalization((-100.0, sizes[0]), (0.0, sizes[1]))
    designs, history = _designs(records), []
    for batch in sorted({int(r["batch"]) for r in designs}):
        done = [r for r in designs if int(r["batch"]) <= batch]
        F = np.array([[o.to_min(r["metrics"][o.metric]) for o in OBJECTIVES] for r in done], dtype=float)
        history.append(HypervolumePoint(batch, len(done), len(pareto_front(done)), hypervolume(F, norm)))
    trials = tuple(trial(r) for r in designs)
    by_key = {t.key: t for t in trials}
    front = tuple(by_key[r["key"]] for r in pareto_front(records))
    todo = len(config.lambdas) - len({float(r["metrics"]["lambda"]) for r in records})
    return SearchResult(trials, front, (), OBJECTIVES, (), len(config.lambdas), len(trials), 0, len(history),
                        tuple(history), norm, "every λ searched and its design retrained" if todo <= 0 else
                        f"{todo} λ not searched yet")


def write_artifacts(run_dir: Path, records: Sequence[Mapping[str, Any]], space: SearchSpace, config: LpgnasConfig,
                    dataset: str = "") -> None:
    """pareto.csv/json/png, hypervolume.csv/png and report.md from the journal records, through the writers every
    experiment kind uses (:mod:`nas.report`, :mod:`nas.plots`); LPGNAS's own tables are report sections."""
    from nas.artifacts import write_front_files
    from nas.report import write_report

    result = search_result(records, space, config)
    write_front_files(run_dir, result, title=f"LPGNAS: test accuracy (mean ± std over {config.seeds} seeds) vs size",
                      hypervolume_title="LPGNAS: hypervolume after each λ", errors={"accuracy": "accuracy_std"},
                      label=lambda t: f"λ={t.metrics['lambda']:g}",
                      pareto_fields={"dataset": dataset, "sources": SOURCES,
                                     "space": {"name": space.name, "options": space.options()},
                                     "lpgnas": config.model_dump(mode="json"),
                                     "designs": [_summary(r, None) for r in sorted(records, key=lambda r: r["batch"])],
                                     "details": {r["key"]: r.get("details", {}) for r in records}})
    setup = {"dataset": dataset or "?", "search space": space.describe(),
             "procedure": _procedure(config)}
    write_report(run_dir / "report.md", result, title="LPGNAS run", setup=setup, sources=result.trials[0].sources
                 if result.trials else SOURCES, sections=_sections(run_dir, records, result.front, space, config))


def _summary(record: Mapping[str, Any], rank: int | None) -> dict[str, Any]:
    return {"rank": rank, "key": record["key"], "metrics": dict(record["metrics"]), "genome": record["genome"],
            "details": record.get("details", {})}


def _genes(genome: Mapping[str, Any], space: Any) -> str:
    """``l1: gcn/add h16 elu W4A8C8 | l2: …`` (inactive genes left out)."""
    from search_spaces.genome import Genome

    g = Genome.from_dict(genome)
    parts = []
    for i in range(1, space.num_layers + 1):
        p, v = f"l{i}", g.as_dict()
        op = str(v[f"{p}.op"]) + (f"/{v[f'{p}.aggr']}" if v[f"{p}.op"] != "linear" and f"{p}.aggr" in v else "")
        op += f"×{v[f'{p}.heads']}" if v[f"{p}.op"] == "gat" and f"{p}.heads" in v else ""
        shape = f" h{v[f'{p}.hidden']} {v[f'{p}.act']}" if f"{p}.hidden" in v else ""
        bits = f" W{v[f'{p}.w_bits']}A{v[f'{p}.a_bits']}"
        bits += f"C{v[f'{p}.c_bits']}" if v[f"{p}.op"] in ("gcn", "gat") else ""
        parts.append(f"{p}: {op}{shape}{bits}" + (" +skip" if v[f"{p}.skip"] == "linear" else ""))
    return " \\| ".join(parts)


def _procedure(config: LpgnasConfig) -> str:
    """One line: how each λ was searched and its design retrained."""
    return (f"one search round per λ ({config.search_epochs} epochs, {config.warmup_epochs} weight-only warm-up, "
            f"τ {config.tau_start:g}→{config.tau_end:g}, {'Gumbel-softmax' if config.gumbel else 'softmax'}, "
            f"penalty `{config.penalty}`, BitOps weight {config.bitops_weight:g}"
            + (f", target {config.target_size_kb:g} KB" if config.target_size_kb else "") + "); each derived design "
            f"retrained from scratch with QAT over {config.seeds} seeds ({config.retrain_epochs} epochs, test "
            "accuracy at the best validation epoch)")


def _sections(run_dir: Path, records: Sequence[Mapping[str, Any]], front: Sequence[Any], space: Any,
              config: LpgnasConfig) -> list[str]:
    """report.md's LPGNAS sections: what was measured, the derived designs, search curves, restarts."""
    from nas.report import fmt

    front_keys = {t.key for t in front}
    lines = ["## What was measured", "", "- **accuracy** (test, %), **accuracy_std** (population std over seeds), "
             "val_accuracy: *measured* by retraining each derived design.",
             "- supernet_val_accuracy: *measured*, the derived design inside the trained supernet (one-hot).",
             "- **size_kb**, **bitops**, macs, params: *analytic* (`space.costs`: weights at their bits, biases "
             "float32; BitOps = Σ MACs · operand bits).", "",
             "## Derived designs", "", "| λ | accuracy % | size KB | BitOps | design | front |",
             "|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: r["metrics"]["lambda"]):
        m = r["metrics"]
        lines.append(f"| {m['lambda']:g} | {m['accuracy']:.2f} ± {m['accuracy_std']:.2f} | {m['size_kb']:.2f} | "
                     f"{fmt(m['bitops'])} | {_genes(r['genome'], space)} | {'yes' if r['key'] in front_keys else ''} |")
    lines += ["", "![size vs accuracy](pareto.png)", "", "## Search curves", "",
              "| λ | E[size] start → end KB | final val CE | final val acc (relaxed) | supernet val acc (derived) "
              "| search s | retrain s |", "|---|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: r["metrics"]["lambda"]):
        m, curve = r["metrics"], _read_curve(run_dir / r.get("details", {}).get("search_curve", ""))
        first, last = (curve[0], curve[-1]) if curve else ({}, {})
        lines.append(f"| {m['lambda']:g} | {first.get('expected_size_kb', math.nan):.1f} → "
                     f"{last.get('expected_size_kb', math.nan):.1f} | {last.get('val_loss', math.nan):.3f} | "
                     f"{100 * last.get('val_accuracy', math.nan):.1f} | {m['supernet_val_accuracy']:.1f} | "
                     f"{m['search_seconds']:.0f} | {m['retrain_seconds']:.0f} |")
    with_restarts = [r for r in records if len(r.get("details", {}).get("restarts", [])) > 1]
    if with_restarts:
        kept_by = {"validation": "has the lowest selection score: validation cross-entropy after its first "
                                 f"{config.select_seeds} QAT retrainings + λ · penalty.",
                   "accuracy": f"has the highest validation accuracy after its first {config.select_seeds} QAT "
                               "retrainings.",
                   "objective": "has the lowest search objective (validation CE in the supernet + λ · penalty)."}
        final = ("" if config.select_by == "objective" or config.final_select_seeds is None else
                 f" The best two designs were then compared again on {config.final_select_seeds} retrainings.")
        budget = ("" if config.max_size_kb is None else
                  f" Only designs within max_size_kb = {config.max_size_kb:g} KB are retrained and kept (if none is, "
                  "the smallest is kept).")
        pool = " among the searches of every λ" if config.select_from == "run" else ""
        lines += ["", "## Restarts", "", f"Each λ was searched with {config.search_restarts} seeds; the kept "
                  f"design{pool} " + kept_by[config.select_by] + final + budget, "",
                  "| λ | searched at λ | seed | design | size KB | supernet val acc | objective | selection val acc "
                  "| selection score | selection seeds | kept |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(with_restarts, key=lambda r: r["metrics"]["lambda"]):
            for x in r["details"]["restarts"]:
                size = f"{x['size_kb']:.2f}" + ("" if x.get("within_budget", True) else " (over budget)")
                lines.append(f"| {r['metrics']['lambda']:g} | {x.get('lambda', r['metrics']['lambda']):g} | "
                             f"{x['seed']} | {x['key']} | {size} | "
                             f"{x['supernet_val_accuracy']:.1f} | {x['objective']:.3f} | "
                             f"{x.get('selection_val_accuracy', math.nan):.1f} | {x.get('selection_score', math.nan):.4f} | "
                             f"{x.get('selection_seeds', '')} | {'yes' if x['chosen'] else ''} |")
    lines += ["", "Per-epoch curves: `searches/lambda-<λ>.json`; every record: `trials.jsonl`.", ""]
    return lines


def _read_curve(path: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads(path.read_text(encoding="utf-8"))["epochs"])
    except (OSError, ValueError, KeyError):
        return []
