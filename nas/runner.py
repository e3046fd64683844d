"""From a config to a finished run directory: config → space → evaluators → searcher → run_search → artifacts.

Why a separate layer from the CLI: notebooks, benchmarks and tests start and resume runs with the
same code path as ``qnas run``. Everything that can be wrong with the input is checked by
:func:`prepare` before a run folder is created, so a typo never leaves an empty run behind.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from nas.config import LoadedConfig, config_diff, config_to_yaml, load_config
from nas.distributed import RESUMABLE_PREFIX, check_distributed
from nas.latency_stage import check_latency
from nas.predictor_stage import check_predictors, search_context, write_predictor_artifacts
from nas.stages import Stages, build_stages, declared_metrics
from nas.journal import Journal, read_journal, require_metrics
from nas.objectives import Constraint, Objective
from nas.rundir import (CONFIG, JOURNAL, atomic_write_text, check_new_run_dir, check_output_folder, check_run_dir,
                        create_run_dir, new_manifest, now_iso, read_manifest, update_manifest)
from nas.runlock import run_lock
from nas.search import SearchResult, Trial, run_search
from search_spaces import InputError, SearchSpace, get_space
from search_spaces.errors import nearest

__all__ = ["PLANNED_METRICS", "Reporter", "SilentReporter", "Experiment", "RunOutcome", "prepare",
           "summary", "check_destination", "start_run", "resume_run"]

PLANNED_METRICS = {"accuracy": "add a `supernet:` section to train (or load) the quantized supernet",
                   "accuracy_test": "it is measured on the final Pareto subnets only, not during the search",
                   "accuracy_extracted": "it is measured on the final Pareto subnets only, not during the search",
                   "latency_ms": "add a `latency:` section (a table file, or `profile: {backend: onnxruntime-int8}`)",
                   "latency_measured_ms": "it is measured on the final Pareto subnets only, not during the search",
                   "latency_pred_ms": "it is written for the final Pareto subnets only; use latency_ms"}


class Reporter(Protocol):
    """Progress and messages of a run (the CLI's ``RichReporter`` prints them; :class:`SilentReporter` does not)."""

    def step(self, text: str) -> AbstractContextManager[None]: ...

    def search_progress(self, budget: int) -> AbstractContextManager[Callable[[int, int], None]]: ...

    def info(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...


class SilentReporter:
    """A :class:`Reporter` that says nothing (library use, tests)."""

    @contextmanager
    def step(self, text: str) -> Iterator[None]:
        yield

    @contextmanager
    def search_progress(self, budget: int) -> Iterator[Callable[[int, int], None]]:
        yield lambda done, total: None

    def info(self, text: str) -> None:
        pass

    def warn(self, text: str) -> None:
        pass


@dataclass(frozen=True)
class Experiment:
    """A checked config with everything built that a run needs (but no run folder yet)."""

    loaded: LoadedConfig
    space: SearchSpace | None  # None for kind: space-search (it searches over spaces)
    metrics: Mapping[str, str]
    dataset: str
    data: Any
    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...]
    batch_size: int
    latency_notes: tuple[str, ...] = ()  # one line per latency table, from check_latency
    placement: Any = None  # supernets.device.Placement of the config's device section
    launch: Any = None  # supernets.launch.LaunchPlan of the config's distributed section


@dataclass(frozen=True)
class RunOutcome:
    """A finished (or resumed-and-finished) run."""

    run_dir: Path
    result: SearchResult | None  # None for kinds with their own procedure (their artifacts are in run_dir)
    seconds: float


def _rewrap(loaded: LoadedConfig, err: InputError, field: str) -> InputError:
    return loaded.error(err.field if err.field and err.field.startswith(field.split(".")[0]) else field, err.detail)


def build_space(loaded: LoadedConfig) -> SearchSpace:
    """``get_space(name, **options)``, its errors pointing at the config line."""
    section = loaded.config.search_space
    try:
        return get_space(section.name, source=str(loaded.source), **section.options)
    except InputError as err:
        raise _rewrap(loaded, err, "search_space") from None


def check_dataset(loaded: LoadedConfig, space: SearchSpace) -> tuple[str, Any]:
    """Load the dataset and check it fits the space (channels, classes, image size); (summary, splits)."""
    from supernets.data import dataset_kind, load_dataset

    section, options = loaded.config.dataset, space.options()
    try:
        kind = dataset_kind(section.name)
        splits = load_dataset(section.name, root=section.root, seed=loaded.config.seed, **section.options)
    except InputError as err:
        field = f"dataset.options.{err.field}" if err.field in section.options else (
            err.field if err.field and err.field.startswith("dataset") else "dataset")
        raise loaded.error(field, err.detail) from None
    if (kind != "image") == ("in_channels" in options):
        wants = "images" if "in_channels" in options else "graphs"
        raise loaded.error("dataset.name", f"dataset {section.name!r} is a {kind} dataset but search space "
                                           f"{space.name!r} is for {wants}")
    for attr, data_attr in (("in_channels", "in_channels"), ("num_classes", "num_classes"),
                            ("image_size", "image_size"), ("in_features", "num_features")):
        have, want = options.get(attr), getattr(splits, data_attr, None)
        if have is not None and want is not None and have != want:
            raise loaded.error(f"search_space.options.{attr}", f"is {have} but dataset {section.name!r} has "
                                                               f"{data_attr}={want}; set search_space.options.{attr}: {want}")
    if kind == "image":
        sizes = "/".join(str(len(getattr(splits, f"{s}_y"))) for s in ("train", "val", "test"))
    else:
        sizes = "/".join(str(int(getattr(splits.data, f"{s}_mask").sum())) for s in ("train", "val", "test"))
    shape = f"{splits.in_channels}×{splits.image_size}×{splits.image_size}" if kind == "image" else "graph"
    return f"{section.name} ({shape}, {splits.num_classes} classes, train/val/test {sizes})", splits


def check_metrics(loaded: LoadedConfig, available: Sequence[str]) -> None:
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


def make_searcher(loaded: LoadedConfig, space: SearchSpace, storage_dir: Path, context: Any = None) -> Any:
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


def check_device(loaded: LoadedConfig) -> Any:
    """The config's ``device`` section resolved on this machine; its errors point at the config line."""
    try:
        return loaded.config.device.placement()
    except InputError as err:
        raise loaded.error(err.field or "device", err.detail) from None


def prepare(loaded: LoadedConfig, reporter: Reporter | None = None) -> Experiment:
    """Build and cross-check everything; every problem is an InputError pointing into the config."""
    reporter = reporter or SilentReporter()
    placement = check_device(loaded)
    launch = check_distributed(loaded, placement)
    if loaded.config.kind == "space-search":
        return dataclasses.replace(_prepare_space_search(loaded), placement=placement, launch=launch)
    space = build_space(loaded)
    with reporter.step(f"loading dataset {loaded.config.dataset.name}"):
        dataset, data = check_dataset(loaded, space)
    if loaded.config.kind != "search":  # its own procedure checks the rest (e.g. LPGNAS)
        return Experiment(loaded, space, {}, dataset, data, (), (), 0, placement=placement, launch=launch)
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


def _prepare_space_search(loaded: LoadedConfig) -> Experiment:
    """Space search loads the dataset only when it must build its lookup table (then in the run)."""
    from supernets.data import dataset_kind, load_dataset

    section = loaded.config.dataset
    try:
        kind = dataset_kind(section.name)
    except InputError as err:
        raise loaded.error("dataset.name", err.detail) from None
    if kind != "image":
        raise loaded.error("dataset.name", f"space search ranks image-model spaces; {section.name!r} is a "
                                           f"{kind} dataset")

    def load() -> Any:
        try:
            return load_dataset(section.name, root=section.root, seed=loaded.config.seed, **section.options)
        except InputError as err:
            raise loaded.error("dataset", err.detail) from None

    return Experiment(loaded, None, {}, f"{section.name} (loaded if the lookup table is built)", load, (), (), 0)


def summary(exp: Experiment) -> list[tuple[str, str]]:
    """``(label, text)`` rows describing what a run of this config will do (``qnas validate`` prints them)."""
    config, sources = exp.loaded.config, exp.metrics
    if config.kind != "search":
        return _kind_summary(exp)
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
        ("device", _device_line(exp.placement)),
        *_launch_rows(exp),
        ("executor", config.executor.describe()),
        ("output", f"{config.output.root}/{config.name}-<timestamp>/ (export top {config.output.export_top})"),
    ]


def _kind_summary(exp: Experiment) -> list[tuple[str, str]]:
    config = exp.loaded.config
    head = [("config", str(exp.loaded.source)), ("name", f"{config.name} (seed {config.seed})")]
    tail = [("output", f"{config.output.root}/{config.name}-<timestamp>/")]
    if config.kind == "space-search":
        s = config.space_search
        lut = (f"{s.lut.path}" if s.lut.path else
               f"build the lookup table ({s.lut.backend}, teacher {s.lut.teacher_epochs} epochs, {s.lut.rows} rows)")
        return head + [("kind", "space-search: rank candidate search spaces by Q-T score (SpaceEvo)"),
                       ("dataset", exp.dataset), ("macro", s.macro), ("lookup table", lut),
                       ("Q-T score", f"constraints {s.qt.latency_constraints_ms} ms, N {s.qt.n_subnets}, "
                                     f"top-{s.qt.top_k}, t {s.qt.t:g}, a {s.qt.a:g}"),
                       ("evolution", f"population {s.evolution.population}, sample {s.evolution.sample}, "
                                     f"{s.evolution.total} spaces scored")] + tail
    l = config.lpgnas
    return head + [("kind", "lpgnas: differentiable architecture + quantization search for GNNs"),
                   ("dataset", exp.dataset), ("search space", f"{exp.space.describe()}"),
                   ("lpgnas", f"lambdas {l.lambdas}, {l.search_epochs} search epochs ({l.warmup_epochs} warm-up), "
                              f"retrain {l.retrain_epochs} epochs x {l.seeds} seeds")] + tail


def _device_line(placement: Any) -> str:
    """Where the supernet trains and evaluates, for ``qnas validate`` and the report."""
    info = placement.describe()
    return f"{info['name']} ({info['device']}, {info['precision']}{', torch.compile' if placement.compile else ''})"


def _launch_rows(exp: Experiment) -> list[tuple[str, str]]:
    """A summary row for supernet training in several processes (none for one: the report stays as it was)."""
    plan = exp.launch
    if plan is None or plan.processes == 1:
        return []
    return [("training processes", f"{plan.processes} local processes ({plan.backend}), each on its shard of every "
                                   f"batch; the search runs in this one")]


def _processes(exp: Experiment) -> int:
    """How many processes train the supernet (the manifest's ``processes``)."""
    return exp.launch.processes if exp.launch is not None else 1


def _device_record(exp: Experiment) -> dict[str, Any]:
    """The manifest's ``device``: name, CUDA and cuDNN versions, precision (what the numbers were computed on)."""
    return exp.placement.describe() if exp.placement is not None else {}


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
        sensitivity = {True: ", quantization sensitivity measured on the supernet", False: ""}.get(
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


def _use_threads(exp: Experiment) -> None:
    """Torch threads for this process (``executor.threads``; see :class:`nas.config.ExecutorConfig`)."""
    import torch

    torch.set_num_threads(exp.loaded.config.executor.threads)


def _execute(exp: Experiment, run_dir: Path, journal: Journal, reporter: Reporter,
             prior: dict[str, Trial]) -> SearchResult:
    """Search with an open (locked) journal, then write the artifacts; the manifest says how it ended."""
    from nas.report import write_hypervolume_csv

    config = exp.loaded.config
    stages: Stages | None = None
    _use_threads(exp)
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
    except BaseException as err:
        update_manifest(run_dir, status="interrupted" if isinstance(err, KeyboardInterrupt) else "failed",
                        finished_at=now_iso())
        raise
    finally:
        if stages is not None:
            stages.close()  # the executor's workers (Ray) are not needed for the local validation below
    with reporter.step(f"validating {len(result.front)} Pareto subnets"):
        result = stages.validate(result)
    with reporter.step("writing artifacts"):
        measured = [m for m, source in stages.sources.items() if source == "measured"]
        sections = write_predictor_artifacts(run_dir, searcher, result, exp.space, measured)
        write_artifacts(exp, run_dir, result, stages, sections)
    update_manifest(run_dir, status="finished", finished_at=now_iso(), evaluations=len(result.trials),
                    front_size=len(result.front), hypervolume=result.hypervolume, stop_reason=result.stop_reason)
    if not result.stop_reason.startswith("budget"):
        reporter.warn(result.stop_reason)
    return result


def write_artifacts(exp: Experiment, run_dir: Path, result: SearchResult, stages: Stages,
                    sections: Sequence[str] = ()) -> None:
    """pareto.csv/json/png, hypervolume.csv/png, subnets/, report.md."""
    from nas.plots import plot_hypervolume, plot_pareto
    from nas.report import export_subnets, write_hypervolume_csv, write_pareto_csv, write_pareto_json, write_report

    config = exp.loaded.config
    write_pareto_csv(run_dir / "pareto.csv", result)
    write_pareto_json(run_dir / "pareto.json", result, name=config.name, space_fingerprint=exp.space.fingerprint())
    write_hypervolume_csv(run_dir / "hypervolume.csv", result.history)
    plot_pareto(result, run_dir / "pareto.png", title=config.name)
    plot_hypervolume(result.history, run_dir / "hypervolume.png", title=f"{config.name}: hypervolume")
    exported = export_subnets(run_dir, result, exp.space, config.output.export_top)
    stages.export_models([p.parent for p in exported])
    notes = [] if result.feasible else ["No candidate satisfied every constraint; see the closest candidates below."]
    write_report(run_dir / "report.md", result, title=f"qnas run: {config.name}", setup=dict(summary(exp)[1:-1]),
                 sources=stages.sources, exported=exported, notes=notes, sections=sections)


def check_destination(loaded: LoadedConfig, out: str | Path | None = None) -> None:
    """Where the run folder would go must be usable before any work: ``out`` new (or empty) and writable,
    else ``output.root`` writable; one InputError naming ``--out`` or the config line otherwise."""
    if out is not None:
        check_new_run_dir(out)
        return
    try:
        check_output_folder(loaded.config.output.root)
    except InputError as err:
        raise loaded.error("output.root", err.detail) from None


def start_run(config_path: str | Path, *, overrides: Sequence[str] = (), out: str | Path | None = None,
              reporter: Reporter | None = None) -> RunOutcome:
    """``qnas run CONFIG``: check everything, create the run folder, search, write the artifacts."""
    reporter, start = reporter or SilentReporter(), time.perf_counter()
    loaded = load_config(config_path, overrides)
    check_destination(loaded, out)
    exp = prepare(loaded, reporter)
    config = loaded.config
    run_dir = create_run_dir(config.output.root, config.name, out=out)
    with run_lock(run_dir):
        reporter.info(f"run folder {run_dir}")
        atomic_write_text(run_dir / CONFIG, config_to_yaml(config))
        update_manifest(run_dir, **new_manifest(seed=config.seed, space=_space_info(exp)), device=_device_record(exp),
                        processes=_processes(exp))
        if config.kind != "search":
            _execute_kind(exp, run_dir, reporter)
            return RunOutcome(run_dir, None, time.perf_counter() - start)
        with Journal(run_dir / JOURNAL) as journal:
            result = _execute(exp, run_dir, journal, reporter, {})
    return RunOutcome(run_dir, result, time.perf_counter() - start)


def _execute_kind(exp: Experiment, run_dir: Path, reporter: Reporter) -> None:
    """Run an experiment kind that has its own procedure (it journals and resumes by itself)."""
    config = exp.loaded.config
    _use_threads(exp)
    update_manifest(run_dir, status="running")
    try:
        KIND_PROCEDURES[config.kind](exp, run_dir, reporter)
    except BaseException as err:
        update_manifest(run_dir, status="interrupted" if isinstance(err, KeyboardInterrupt) else "failed",
                        finished_at=now_iso())
        raise
    update_manifest(run_dir, status="finished", finished_at=now_iso())


def _run_lpgnas(exp: Experiment, run_dir: Path, reporter: Reporter) -> None:
    from nas.lpgnas import run_lpgnas

    config = exp.loaded.config
    run_lpgnas(config.lpgnas, exp.space, exp.data, run_dir, seed=config.seed,
               progress=not getattr(reporter, "quiet", True))


def _run_space_search(exp: Experiment, run_dir: Path, reporter: Reporter) -> None:
    from nas.spaceevo.run import run_space_search

    config = exp.loaded.config
    try:
        run_space_search(config.space_search, run_dir=run_dir, seed=config.seed, data=exp.data, log=reporter.info)
    except InputError as err:
        if err.source is not None or not (err.field or "").startswith("space_search"):
            raise
        raise exp.loaded.error(err.field, err.detail) from None


KIND_PROCEDURES: dict[str, Callable[[Experiment, Path, Reporter], None]] = {
    "lpgnas": _run_lpgnas, "space-search": _run_space_search}
"""The procedure of each experiment kind other than ``search`` (each journals and resumes by itself)."""


def resume_run(run_dir: str | Path, *, config_path: str | Path | None = None, overrides: Sequence[str] = (),
               reporter: Reporter | None = None) -> RunOutcome:
    """``qnas run --resume RUN_DIR``: replay the seeded search with the journal as cache, then finish."""
    reporter, start = reporter or SilentReporter(), time.perf_counter()
    run = check_run_dir(run_dir)
    with run_lock(run):  # first: another process may still be running this folder
        return _resume_locked(run, config_path, overrides, reporter, start)


def _resume_locked(run: Path, config_path: str | Path | None, overrides: Sequence[str], reporter: Reporter,
                   start: float) -> RunOutcome:
    stored = load_config(run / CONFIG)
    if config_path is not None or overrides:
        given = load_config(config_path if config_path is not None else run / CONFIG, overrides)
        diff = [d for d in config_diff(stored.config, given.config) if not d.startswith(RESUMABLE_PREFIX)]
        if diff:
            raise InputError("differs from the run's config.yaml (run -> given): " + "; ".join(diff[:8])
                             + ("; ..." if len(diff) > 8 else "") + "; start a new run instead", source=given.source)
        stored = given  # equal but for the training processes, which a resume may change
    read_manifest(run)  # a damaged manifest or journal stops the resume before any work
    if stored.config.kind == "search":
        search = stored.config.search
        needed = [o.metric for o in search.objective_list()] + [c.metric for c in search.constraint_list()]
        require_metrics(run / JOURNAL, read_journal(run / JOURNAL).records, needed)
    exp = prepare(stored, reporter)
    if stored.config.kind != "search":
        _execute_kind(exp, run, reporter)
        return RunOutcome(run, None, time.perf_counter() - start)
    with Journal(run / JOURNAL) as journal:
        contents = read_journal(run / JOURNAL, repair=True)
        if contents.dropped is not None:
            reporter.warn(str(contents.dropped))
        prior = _prior(exp, run / JOURNAL, contents.records)
        reporter.info(f"resuming {run}: {len(prior)} candidates in the journal")
        resumes = [*read_manifest(run).get("resumes", []), {"at": now_iso(), "journal_records": len(prior),
                   "dropped_line": None if contents.dropped is None else contents.dropped.line,
                   "device": _device_record(exp).get("name"), "processes": _processes(exp)}]
        update_manifest(run, status="running", resumes=resumes)
        shutil.rmtree(run / "searcher", ignore_errors=True)  # the replay rebuilds the searcher's own files
        result = _execute(exp, run, journal, reporter, prior)
    unused = len(set(prior) - {t.key for t in result.trials})
    if unused:
        reporter.warn(f"{unused} journal records were not proposed again by the replayed search (is the searcher "
                      "deterministic for a given seed?); they stay in trials.jsonl but not in the front")
    return RunOutcome(run, result, time.perf_counter() - start)


def _space_info(exp: Experiment) -> dict[str, Any]:
    if exp.space is None:  # a space search: the spaces are its results
        return {"macro": exp.loaded.config.space_search.macro, "dataset": exp.loaded.config.dataset.name}
    return {"name": exp.space.name, "options": exp.space.options(), "fingerprint": exp.space.fingerprint(),
            "cardinality": str(exp.space.cardinality()), "dataset": exp.loaded.config.dataset.name}
