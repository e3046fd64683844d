"""LPGNAS experiments: for each cost weight λ, search, derive, retrain over seeds, journal, write the front.

A run directory gets the same artifacts as the CNN searches: ``trials.jsonl`` (one line per λ,
the record shape of :mod:`nas.journal`), ``pareto.csv`` / ``pareto.json`` / ``pareto.png`` (the
size–accuracy front over the derived designs) and ``report.md``; plus ``searches/lambda-<λ>.json``
(the per-epoch search curve). A rerun on the same folder skips the λ values already journaled.

Accuracy is *measured*: the test accuracy of the derived design retrained from scratch with QAT,
mean and population std over ``seeds`` seeds. Size, BitOps, MACs and parameters are *analytic*
(``space.costs``, conventions in :mod:`search_spaces.gnn`).

``qnas run`` integration: a config with ``kind: lpgnas`` has an ``lpgnas:`` section parsed by
:func:`lpgnas_config` (or embedded as a :class:`LpgnasConfig` field); the runner loads the dataset and
the space and calls :func:`run_lpgnas`. Until then ``python -m nas.lpgnas CONFIG.yaml`` runs one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import sys
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nas.journal import Journal, read_journal
from nas.objectives import Objective
from nas.rundir import atomic_write_bytes, atomic_write_json, atomic_write_text, now_iso
from search_spaces import SearchSpace
from search_spaces.errors import InputError

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

    lambdas: list[float] = Field(default_factory=lambda: [0.01, 0.03, 0.06, 0.1])
    target_size_kb: float | None = Field(None, gt=0)
    max_size_kb: float | None = Field(None, gt=0)
    penalty: Literal["log", "linear"] = "log"
    bitops_weight: float = Field(0.1, ge=0)
    search_epochs: int = Field(200, ge=1, strict=True)
    warmup_epochs: int = Field(50, ge=0, strict=True)
    weight_sampling: Literal["mixture", "path"] = "mixture"
    gumbel: bool = False
    tau_start: float = Field(1.0, gt=0)
    tau_end: float = Field(0.1, gt=0)
    lr: float = Field(0.05, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    arch_lr: float = Field(0.03, gt=0)
    arch_weight_decay: float = Field(0.0, ge=0)
    dropout: float = Field(0.5, ge=0, lt=1)
    retrain_epochs: int = Field(200, ge=1, strict=True)
    retrain_lr: float = Field(0.01, gt=0)
    retrain_weight_decay: float = Field(5e-4, ge=0)
    retrain_step_lr_scale: float = Field(3.0, gt=0)
    patience: int = Field(100, ge=1, strict=True)
    seeds: int = Field(10, ge=1, strict=True)
    search_restarts: int = Field(1, ge=1, strict=True)
    select_by: Literal["validation", "accuracy", "objective"] = "validation"
    select_seeds: int = Field(2, ge=1, strict=True)
    workers: int = Field(1, ge=1, strict=True)
    normalize_features: bool = True

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
    def _warmup_before_end(self) -> LpgnasConfig:
        if self.warmup_epochs >= self.search_epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be below search_epochs "
                             f"({self.search_epochs}), or α/β are never trained")
        return self

    @property
    def retrains_restarts(self) -> bool:
        """Whether restarts are compared after ``select_seeds`` QAT retrainings (not by the search objective)."""
        return self.search_restarts > 1 and self.select_by != "objective"

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
    from nas.config import translate_validation_error

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
               progress: bool = True) -> list[dict[str, Any]]:
    """Search, derive and retrain once per λ (skipping journaled ones); write the artifacts; return all records.

    Every λ gets ``search_restarts`` searches (seeds ``seed``, ``seed + 1``, ...): one search's design changes
    with its seed on small graphs, and some collapse. The kept design is chosen by ``select_by`` (see
    :func:`_choose`). Searches and retrainings run on ``workers`` processes; each λ is journaled once its
    design is retrained, so an interrupted run resumes by λ.
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
    by_validation = config.retrains_restarts
    with _executor(config.workers) as pool, Journal(path) as journal:
        searches = {lam: [pool.submit(_search_job, space, graph, config.search_settings(), lam, seed + r)
                          for r in range(config.search_restarts)] for _, lam in todo}
        if todo:
            _say(progress, f"searching λ = {[lam for _, lam in todo]}, {config.search_restarts} restart(s) each, "
                           f"{config.search_epochs} epochs, {config.workers} worker(s)")
        retrainings = _Retrainings(pool, space, graph, config.retrain_settings(), seed)
        outcomes = {}
        for _, lam in todo:  # queue the short selection retrainings as each λ's searches finish
            outcomes[lam] = [f.result() for f in searches[lam]]
            for outcome in outcomes[lam] if by_validation else ():
                retrainings.ensure(outcome.genome, config.select_seeds)
        chosen = {}
        for _, lam in todo:
            chosen[lam] = _choose(space, config, lam, outcomes[lam], retrainings if by_validation else None, progress)
            genome = chosen[lam][0].genome
            if not any(r["key"] == genome.key for r in done.values()):
                _say(progress, f"λ={lam:g}: derived {genome.key} ({space.costs(genome).size_kb:.2f} KB); "
                               f"retraining over {config.seeds} seeds")
                retrainings.ensure(genome, config.seeds)
        for batch, lam in todo:
            outcome, restarts = chosen[lam]
            record = _record(space, run_dir, outcome, restarts, batch, list(done.values()),
                             retrainings.results(outcome.genome.key, config.seeds), progress)
            journal.append(record)
            done[lam] = record
    records = list(read_journal(path).records)
    write_artifacts(run_dir, records, space, config, getattr(data, "description", ""))
    return records


def _search_job(space: Any, graph: Any, settings: Any, lam: float, seed: int) -> Any:
    import supernets.gnn  # looked up at call time (tests count the searches)

    return supernets.gnn.search(space, graph, settings, lam=lam, seed=seed)


def _retrain_job(space: Any, genome: Any, graph: Any, settings: Any, seed: int) -> Any:
    import supernets.gnn

    return supernets.gnn.retrain(space, genome, graph, settings, seed=seed)


class _Retrainings:
    """QAT retrainings per design, seeds ``seed``, ``seed + 1``, ... queued on demand: the selection's short
    retrainings are the first seeds of the chosen design's full one, and no design is retrained twice."""

    def __init__(self, pool: Any, space: Any, graph: Any, settings: Any, seed: int) -> None:
        self.pool, self.space, self.graph, self.settings, self.seed = pool, space, graph, settings, seed
        self.futures: dict[str, list[Future]] = {}

    def ensure(self, genome: Any, n: int) -> None:
        futures = self.futures.setdefault(genome.key, [])
        while len(futures) < n:
            futures.append(self.pool.submit(_retrain_job, self.space, genome, self.graph, self.settings,
                                            self.seed + len(futures)))

    def results(self, key: str, n: int) -> list[Any] | None:
        futures = self.futures.get(key, [])
        return [f.result() for f in futures[:n]] if len(futures) >= n else None


def _choose(space: Any, config: LpgnasConfig, lam: float, outcomes: list[Any], retrainings: _Retrainings | None,
            progress: bool) -> tuple[Any, list[dict[str, Any]]]:
    """The kept restart and every restart's summary (for the journal).

    ``max_size_kb`` first: restarts whose design is larger are not kept (if every one is, the smallest is, and
    its ``within_budget`` is false). Then ``select_by: validation`` (with ``retrainings``): the lowest
    *selection score*, the mean validation cross-entropy (at the best-accuracy epoch) of ``select_seeds`` QAT
    retrainings plus ``λ · penalty`` of the design's costs: the search's own objective with the supernet's
    cross-entropy replaced by the retrained design's (DARTS keeps the best of several searches by a short
    training from scratch). λ must still price the size: by validation accuracy alone every Cora λ kept its
    largest restart, and with the error rate in place of the cross-entropy (smaller differences) the smallest.
    ``accuracy``: the highest mean validation accuracy of those retrainings, for a size budget
    (``max_size_kb``) that does the pricing: the most accurate design that fits. ``objective``: the lowest
    :func:`~supernets.gnn.search_objective` (no retraining).
    """
    from supernets.gnn import design_penalty, search_objective

    settings = config.search_settings()
    restarts = [{"seed": o.seed, "key": o.genome.key, "objective": search_objective(space, o, settings),
                 "penalty": design_penalty(space, o.genome, settings),
                 "supernet_val_accuracy": 100 * o.supernet_val_accuracy, "size_kb": space.costs(o.genome).size_kb,
                 "search_seconds": o.seconds} for o in outcomes]
    if retrainings is not None:
        for r in restarts:
            runs = retrainings.results(r["key"], config.select_seeds)
            assert runs is not None
            r["selection_val_accuracy"] = statistics.fmean(100 * o.val_accuracy for o in runs)
            r["selection_seconds"] = sum(o.seconds for o in runs)
            r["selection_val_loss"] = statistics.fmean(o.val_loss for o in runs)
            r["selection_score"] = r["selection_val_loss"] + lam * r["penalty"]
    if retrainings is None:
        shown, rank = "objective", lambda r: r["objective"]
    elif config.select_by == "accuracy":
        shown, rank = "selection_val_accuracy", lambda r: (-r[shown], r["selection_val_loss"], r["objective"])
    else:
        shown, rank = "selection_score", lambda r: (r[shown], r["objective"])
    budget = config.max_size_kb
    for r in restarts:
        r["within_budget"] = budget is None or r["size_kb"] <= budget
    eligible = [i for i, r in enumerate(restarts) if r["within_budget"]]
    if not eligible:  # nothing fits: the closest, flagged
        eligible = [min(range(len(restarts)), key=lambda i: restarts[i]["size_kb"])]
        _say(progress, f"λ={lam:g}: no restart fits max_size_kb {budget:g} KB; kept the smallest "
                       f"({restarts[eligible[0]]['size_kb']:.1f} KB)")
    best = min(eligible, key=lambda i: rank(restarts[i]))
    for i, r in enumerate(restarts):
        r["chosen"] = i == best
    if len(outcomes) > 1:
        _say(progress, f"λ={lam:g}: restarts " + ", ".join(
            f"seed {r['seed']} {r['key'][:8]} ({r['size_kb']:.1f} KB"
            + (f", val {r['selection_val_accuracy']:.1f} % CE {r['selection_val_loss']:.3f}" if retrainings is not None else "")
            + ("" if r["within_budget"] else ", over budget")
            + f") {shown} {r[shown]:.4f}" for r in restarts) + f"; kept seed {restarts[best]['seed']}")
    return outcomes[best], restarts


def _record(space: Any, run_dir: Path, outcome: Any, restarts: list[dict[str, Any]],
            batch: int, previous: list[dict[str, Any]], retraining: list[Any] | None,
            progress: bool) -> dict[str, Any]:
    """The journal record of one λ: the kept design's retraining (or a reused one) and its search curve."""
    lam, genome = outcome.lam, outcome.genome
    curve = f"searches/lambda-{lam:g}.json"
    atomic_write_json(run_dir / curve, {"lambda": lam, "genome": genome.to_dict(), "seed": outcome.seed,
                                        "probabilities": outcome.probabilities,
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
    search_seconds = sum(r["search_seconds"] for r in restarts)
    others = {r["key"]: r.get("selection_seconds", 0.0) for r in restarts if r["key"] != genome.key}
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
    """``submit`` runs the call at once (one worker: no process start-up, monkeypatching works)."""

    def submit(self, fn: Any, *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as err:  # re-raised by result(), like a process pool would
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
CSV_COLUMNS = ["rank", "key", "lambda", "accuracy", "accuracy_std", "size_kb", "bitops", "macs", "params",
               "val_accuracy", "supernet_val_accuracy", "search_seconds", "retrain_seconds", "genome"]


def pareto_front(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Distinct designs not dominated in (max accuracy, min size_kb), best accuracy first."""
    import numpy as np

    from nas.pareto import front_indices

    designs = list({r["key"]: r for r in sorted(records, key=lambda r: r["batch"], reverse=True)}.values())
    if not designs:
        return []
    F = np.array([[-r["metrics"]["accuracy"], r["metrics"]["size_kb"]] for r in designs], dtype=float)
    return [designs[i] for i in front_indices(F, np.zeros(len(designs)))]


def write_artifacts(run_dir: Path, records: Sequence[Mapping[str, Any]], space: SearchSpace, config: LpgnasConfig,
                    dataset: str = "") -> None:
    """``pareto.csv``, ``pareto.json``, ``pareto.png`` and ``report.md`` from the journal records."""
    front = pareto_front(records)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for rank, r in enumerate(front, start=1):
        m = r["metrics"]
        writer.writerow([rank, r["key"], *[repr(float(m.get(c, math.nan))) for c in CSV_COLUMNS[2:-1]],
                         json.dumps(r["genome"], separators=(",", ":"))])
    atomic_write_text(run_dir / "pareto.csv", buffer.getvalue())
    atomic_write_json(run_dir / "pareto.json", {
        "objectives": [{"metric": "accuracy", "direction": "max"}, {"metric": "size_kb", "direction": "min"}],
        "sources": SOURCES, "dataset": dataset, "space": {"name": space.name, "options": space.options()},
        "lpgnas": config.model_dump(mode="json"),
        "front": [_summary(r, i) for i, r in enumerate(front, start=1)],
        "designs": [_summary(r, None) for r in sorted(records, key=lambda r: r["batch"])]})
    _plot(run_dir / "pareto.png", records, front)
    atomic_write_text(run_dir / "report.md", _report(run_dir, records, front, space, config, dataset))


def _summary(record: Mapping[str, Any], rank: int | None) -> dict[str, Any]:
    return {"rank": rank, "key": record["key"], "metrics": dict(record["metrics"]), "genome": record["genome"],
            "details": record.get("details", {})}


def _plot(path: Path, records: Sequence[Mapping[str, Any]], front: Sequence[Mapping[str, Any]]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for group, style in ((records, dict(fmt="o", color="0.6", label="derived designs")),
                         (front, dict(fmt="o-", color="C0", label="Pareto front"))):
        rows = sorted(group, key=lambda r: r["metrics"]["size_kb"])
        ax.errorbar([r["metrics"]["size_kb"] for r in rows], [r["metrics"]["accuracy"] for r in rows],
                    yerr=[r["metrics"]["accuracy_std"] for r in rows], capsize=3, **style)
    for r in records:
        ax.annotate(f"λ={r['metrics']['lambda']:g}", (r["metrics"]["size_kb"], r["metrics"]["accuracy"]),
                    textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("model size (KB, analytic)")
    ax.set_ylabel("test accuracy (%, mean ± std over seeds)")
    ax.legend(loc="lower right")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(path, buffer.getvalue())


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


def _report(run_dir: Path, records: Sequence[Mapping[str, Any]], front: Sequence[Mapping[str, Any]],
            space: Any, config: LpgnasConfig, dataset: str) -> str:
    from nas.report import fmt

    front_keys = {r["key"] for r in front}
    lines = ["# LPGNAS run", "", f"Dataset: {dataset or '?'}. Space `{space.name}`: {space.describe()}.", "",
             f"One search round per λ ({config.search_epochs} epochs, {config.warmup_epochs} weight-only warm-up, "
             f"τ {config.tau_start:g}→{config.tau_end:g}, {'Gumbel-softmax' if config.gumbel else 'softmax'}, "
             f"penalty `{config.penalty}`, BitOps weight {config.bitops_weight:g}"
             + (f", target {config.target_size_kb:g} KB" if config.target_size_kb else "") + "); each derived design "
             f"retrained from scratch with QAT over {config.seeds} seeds ({config.retrain_epochs} epochs, test "
             "accuracy at the best validation epoch).", "",
             "## What was measured", "", "- **accuracy** (test, %), **accuracy_std** (population std over seeds), "
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
        budget = ("" if config.max_size_kb is None else
                  f" Only designs within max_size_kb = {config.max_size_kb:g} KB are kept (if none is, the smallest).")
        lines += ["", "## Restarts", "", f"Each λ was searched with {config.search_restarts} seeds; the kept design "
                  + kept_by[config.select_by] + budget, "",
                  "| λ | seed | design | size KB | supernet val acc | objective | selection val acc | selection score "
                  "| kept |", "|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(with_restarts, key=lambda r: r["metrics"]["lambda"]):
            for x in r["details"]["restarts"]:
                size = f"{x['size_kb']:.2f}" + ("" if x.get("within_budget", True) else " (over budget)")
                lines.append(f"| {r['metrics']['lambda']:g} | {x['seed']} | {x['key']} | {size} | "
                             f"{x['supernet_val_accuracy']:.1f} | {x['objective']:.3f} | "
                             f"{x.get('selection_val_accuracy', math.nan):.1f} | {x.get('selection_score', math.nan):.4f} | "
                             f"{'yes' if x['chosen'] else ''} |")
    lines += ["", "Per-epoch curves: `searches/lambda-<λ>.json`; every record: `trials.jsonl`.", ""]
    return "\n".join(lines)


def _read_curve(path: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads(path.read_text(encoding="utf-8"))["epochs"])
    except (OSError, ValueError, KeyError):
        return []
