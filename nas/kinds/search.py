"""``kind: search`` (the default): a searcher over one space, guided by measured, predicted and analytic metrics.

Prepare checks every metric, predictor, latency table, the searcher and the executor before a run folder
exists; a run trains or loads the supernet (:mod:`nas.stages`), searches with every evaluation journaled
(``trials.jsonl``), validates the front and writes pareto.csv/json/png, hypervolume, subnets/ and report.md.
A resume replays the seeded search with the journal as its cache.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nas.config import LoadedConfig
from nas.experiment import (Experiment, Reporter, build_space, check_dataset, device_line, device_record, launch_rows,
                            processes)
from nas.journal import Journal, read_journal, require_metrics
from nas.latency_stage import check_latency
from nas.predictor_stage import check_predictors, search_context, write_predictor_artifacts
from nas.rundir import JOURNAL, now_iso, read_manifest, update_manifest
from nas.search import SearchResult, Trial, run_search
from nas.search_config import SearchExperimentConfig
from nas.stages import Stages, build_stages, declared_metrics
from search_spaces import InputError, SearchSpace
from search_spaces.errors import nearest

from .base import ExperimentKind, KindOutcome, register_kind

__all__ = ["PLANNED_METRICS", "SearchKind", "check_metrics", "make_searcher", "write_artifacts"]

PLANNED_METRICS = {"accuracy": "add a `supernet:` section to train (or load) the quantized supernet",
                   "val_loss": "add a `supernet:` section to train (or load) the quantized supernet",
                   "val_loss_extracted": "it is measured on the final Pareto subnets only, not during the search",
                   "test_loss": "it is measured on the final Pareto subnets only, not during the search",
                   "accuracy_test": "it is measured on the final Pareto subnets only, not during the search",
                   "accuracy_extracted": "it is measured on the final Pareto subnets only, not during the search",
                   "latency_ms": "add a `latency:` section (a table file, or `profile: {backend: onnxruntime-int8}`)",
                   "latency_measured_ms": "it is measured on the final Pareto subnets only, not during the search",
                   "latency_pred_ms": "it is written for the final Pareto subnets only; use latency_ms"}



def check_metrics(loaded: LoadedConfig[SearchExperimentConfig], available: Sequence[str]) -> None:
    """Every objective and constraint must name a metric the evaluators provide."""
    search = loaded.config.search
    named = [(f"search.objectives[{i}].metric", o.metric) for i, o in enumerate(search.objectives)]
    named += [(f"search.constraints[{i}]", c.metric) for i, c in enumerate(search.constraint_list())]
    for field, metric in named:
        if metric in available:
            continue
        later = f"; {PLANNED_METRICS[metric]}" if metric in PLANNED_METRICS else ""
        raise loaded.error(field, f"metric {metric!r} is not available{nearest(metric, available)}{later} "
                                  f"(available now: {', '.join(available)})")


def make_searcher(loaded: LoadedConfig[SearchExperimentConfig], space: SearchSpace, storage_dir: Path,
                  context: Any = None) -> Any:
    """``get_searcher`` for the config's ``search`` section, its errors pointing at the config."""
    from nas.searchers import get_searcher, list_searchers

    search = loaded.config.search
    known = list(list_searchers())
    if search.algorithm not in known:
        raise loaded.error("search.algorithm", f"unknown algorithm {search.algorithm!r}"
                                               f"{nearest(search.algorithm, known)} (known: {', '.join(known)})")
    try:
        return get_searcher(search.algorithm, space, list(search.objective_list()),
                            constraints=list(search.constraint_list()), seed=loaded.config.search_seed,
                            storage_dir=storage_dir, context=context, **search.options)
    except InputError as err:
        raise loaded.error(err.field if (err.field or "").startswith("search") else
                           f"search.options.{err.field}" if err.field else "search.options", err.detail) from None
    except TypeError as err:
        if "keyword argument" not in str(err):
            raise
        raise loaded.error("search.options", f"{err}") from None


def _section_rows(exp: Experiment) -> list[tuple[str, str]]:
    """Summary rows of the optional sections (supernet, predictors, latency)."""
    config, rows = exp.loaded.config, []
    if config.supernet is not None:
        s = config.supernet
        rows.append(("supernet", f"reuse {s.checkpoint}" if s.checkpoint else
                     f"train {s.warmup_epochs}+{s.epochs} epochs (QAT from sandwich epoch {s.qat_start}), batch "
                     f"{s.batch_size}, lr {s.lr:g}, {s.random_subnets} random subnets per step"))
    if config.predictors is not None:
        p = config.predictors
        sensitivity = {True: ", quantization sensitivity measured on the supernet", False: "",
                       "hessian": ", Hessian sensitivity (HAWQ-V3) measured on the supernet"}.get(
            p.quant_sensitivity, f", quantization sensitivity from {p.quant_sensitivity}")
        rows.append(("predictors", f"{p.model}" + (f" among {', '.join(p.candidates)}" if p.model == "auto" else "")
                     + (f", prior dataset {p.dataset}" if p.dataset else "") + sensitivity))
    if exp.latency_notes:
        rows.append(("latency", "; ".join(exp.latency_notes)))
    return rows


def _prior(exp: Experiment, journal: Path, records: Sequence[dict[str, Any]]) -> dict[str, Trial]:
    """Trials of an interrupted run, checked against the space (a foreign journal is an error)."""
    prior: dict[str, Trial] = {}
    for line, record in enumerate(records, start=1):
        genome = exp.space.from_dict(record["genome"], source=f"{journal}:{line}")
        if genome.key != record["key"]:
            raise InputError(f"record key {record['key']!r} does not match its genome ({genome.key})",
                             source=journal, line=line)
        prior.setdefault(genome.key, Trial(genome, {m: float(v) for m, v in record["metrics"].items()},
                                           dict(record["sources"]), float(record["seconds"]), int(record["batch"]),
                                           str(record["finished_at"])))
    return prior


def _execute(exp: Experiment, run_dir: Path, journal: Journal, reporter: Reporter,
             prior: dict[str, Trial]) -> KindOutcome:
    """Search with an open (locked) journal, validate the front, write the artifacts."""
    from nas.report import write_hypervolume_csv

    config = exp.loaded.config
    stages: Stages | None = None
    try:
        stages = build_stages(exp, run_dir, reporter)
        context = search_context(exp.loaded, exp.space, stages.cheap, subnets=stages.subnets, run_dir=run_dir,
                                 log=reporter.info)
        searcher = make_searcher(exp.loaded, exp.space, run_dir / "searcher", context)
        with reporter.search_progress(config.search.budget) as progress:
            result = run_search(exp.space, stages.evaluator, searcher, objectives=exp.objectives,
                                constraints=exp.constraints, budget=config.search.budget, journal=journal,
                                prior=prior, progress=progress, clock=now_iso,
                                on_batch=lambda history: write_hypervolume_csv(run_dir / "hypervolume.csv", history))
    finally:
        if stages is not None:
            stages.close()  # the executor's workers (Ray) are not needed for the local validation below
    with reporter.step(f"validating {len(result.front)} Pareto subnets"):
        result = stages.validate(result)
    with reporter.step("writing artifacts"):
        measured = [m for m, source in stages.sources.items() if source == "measured"]
        sections = write_predictor_artifacts(run_dir, searcher, result, exp.space, measured)
        write_artifacts(exp, run_dir, result, stages, sections, notes=searcher.notes())
    for note in searcher.notes():
        reporter.warn(note)
    if not result.stop_reason.startswith("budget"):
        reporter.warn(result.stop_reason)
    return result, {"evaluations": len(result.trials), "front_size": len(result.front),
                    "hypervolume": result.hypervolume, "stop_reason": result.stop_reason}


def write_artifacts(exp: Experiment, run_dir: Path, result: SearchResult, stages: Stages,
                    sections: Sequence[str] = (), notes: Sequence[str] = ()) -> None:
    """pareto.csv/json/png, hypervolume.csv/png, subnets/, report.md (with the searcher's ``notes``)."""
    from nas.artifacts import write_front_files
    from nas.report import export_subnets, write_report

    config = exp.loaded.config
    write_front_files(run_dir, result, title=config.name, hypervolume_title=f"{config.name}: hypervolume",
                      pareto_fields={"name": config.name, "space_fingerprint": exp.space.fingerprint()})
    exported = export_subnets(run_dir, result, exp.space, config.output.export_top)
    stages.export_models([p.parent for p in exported])
    notes = [*notes] + ([] if result.feasible else
                        ["No candidate satisfied every constraint; see the closest candidates below."])
    write_report(run_dir / "report.md", result, title=f"qnas run: {config.name}",
                 setup=dict(search_summary(exp)[1:-1]),
                 sources=stages.sources, exported=exported, notes=notes, sections=sections)


def search_summary(exp: Experiment) -> list[tuple[str, str]]:
    """The rows ``qnas validate`` prints and report.md's setup holds."""
    config, sources = exp.loaded.config, exp.metrics
    search = config.search
    options = ", ".join(f"{k}={v}" for k, v in search.options.items())
    return [
        ("config", str(exp.loaded.source)),
        ("name", f"{config.name} (seed {config.seed})"),
        ("dataset", exp.dataset),
        ("search space", f"{exp.space.describe()}; fingerprint {exp.space.fingerprint()}"),
        ("searcher", f"{search.algorithm}" + (f" ({options})" if options else "") +
         f", up to {exp.batch_size} candidates per batch, seed {config.search_seed}"),
        ("objectives", ", ".join(f"{o.metric} ({o.direction}, {sources[o.metric]})" for o in exp.objectives)),
        ("constraints", ", ".join(str(c) for c in exp.constraints) or "none"),
        ("budget", f"{search.budget} distinct candidates"),
        *_section_rows(exp),
        ("device", device_line(exp.placement)),
        *launch_rows(exp),
        ("executor", config.executor.describe()),
        ("output", f"{config.output.root}/{config.name}-<timestamp>/ (export top {config.output.export_top})"),
    ]


@register_kind
class SearchKind(ExperimentKind):
    """A searcher over one space (see the module docstring)."""

    name = "search"
    config_model = SearchExperimentConfig
    description = "joint architecture and quantization search over one space"
    trains_in_processes = True

    def prepare(self, loaded: LoadedConfig, reporter: Reporter, placement: Any, launch: Any) -> Experiment:
        space = build_space(loaded)
        with reporter.step(f"loading dataset {loaded.config.dataset.name}"):
            dataset, data = check_dataset(loaded, space)
        metrics = declared_metrics(loaded.config)
        check_metrics(loaded, list(metrics))
        check_predictors(loaded, space)
        latency_notes = tuple(check_latency(loaded, space))
        with tempfile.TemporaryDirectory(prefix="qnas-probe-") as probe:
            batch_size = int(make_searcher(loaded, space, Path(probe)).batch_size)
        search = loaded.config.search
        if batch_size > search.budget:
            raise loaded.error("search.budget", f"got {search.budget}; the {search.algorithm} searcher proposes "
                                                f"{batch_size} candidates per batch (its population), more than the "
                                                f"budget; raise the budget or lower the population in search.options")
        from nas.executors import check_executor

        check_executor(loaded)  # kind ray: Ray importable, cluster reachable, enough resources; last, as it is slow
        return Experiment(loaded, space, metrics, dataset, data, search.objective_list(), search.constraint_list(),
                          batch_size, latency_notes, placement, launch)

    def summary(self, exp: Experiment) -> list[tuple[str, str]]:
        return search_summary(exp)

    def check_resume(self, loaded: LoadedConfig, run_dir: Path) -> None:
        search = loaded.config.search
        needed = [o.metric for o in search.objective_list()] + [c.metric for c in search.constraint_list()]
        require_metrics(run_dir / JOURNAL, read_journal(run_dir / JOURNAL).records, needed)

    def run(self, exp: Experiment, run_dir: Path, reporter: Reporter, *, resume: bool,
            handle: Any = None) -> KindOutcome:
        journal: Journal = handle
        if not resume:
            return _execute(exp, run_dir, journal, reporter, {})
        contents = read_journal(run_dir / JOURNAL, repair=True)
        if contents.dropped is not None:
            reporter.warn(str(contents.dropped))
        prior = _prior(exp, run_dir / JOURNAL, contents.records)
        reporter.info(f"resuming {run_dir}: {len(prior)} candidates in the journal")
        resumes = [*read_manifest(run_dir).get("resumes", []), {
            "at": now_iso(), "journal_records": len(prior),
            "dropped_line": None if contents.dropped is None else contents.dropped.line,
            "device": device_record(exp).get("name"), "processes": processes(exp)}]
        update_manifest(run_dir, resumes=resumes)
        shutil.rmtree(run_dir / "searcher", ignore_errors=True)  # the replay rebuilds the searcher's own files
        result, fields = _execute(exp, run_dir, journal, reporter, prior)
        unused = len(set(prior) - {t.key for t in result.trials})
        if unused:
            reporter.warn(f"{unused} journal records were not proposed again by the replayed search (is the "
                          "searcher deterministic for a given seed?); they stay in trials.jsonl but not in the front")
        return result, fields

    def front_definition(self, loaded: LoadedConfig) -> tuple[Sequence[Any], Sequence[Any]]:
        return loaded.config.search.objective_list(), loaded.config.search.constraint_list()

