"""Latency tables in a run: load or profile them, predict subnet latency, measure the final front.

Every table of the ``latency:`` section becomes one metric (``latency_ms``, or ``latency_ms.<name>``
with several tables, e.g. two devices), ``predicted`` from the table's calibrated block sums, plus
``<metric>_fallback`` (1 when a block was missing from the table and the learned fallback filled it).
After the search, the Pareto subnets of every table measured on *this* machine are timed for real
end to end (same protocol as the tables): ``latency_pred_ms`` / ``latency_measured_ms`` columns.

Why a run keeps its own copy of every table (``latency/<metric>.csv``): a profiled table's calibration
is refitted at run start on this machine's current speed, and a user's table file may be edited
later. A resumed run must predict exactly what the interrupted one did, so it reads the copy, and
the manifest records where each copy came from and whether its calibration was refitted.

Transformer spaces dispatch to :mod:`nas.transformer_latency` (tables of embed/attention/MLP/head blocks,
profiled on ONNX Runtime, no fallback; the front is timed as the extracted subnets' ORT models).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.config import LoadedConfig
from nas.config_sections import LatencyTableSpec
from search_spaces import Genome, SearchSpace
from search_spaces.transformer import TransformerSpace

__all__ = ["LoadedTable", "RUN_TABLES", "latency_metrics", "check_latency", "check_coverage", "load_tables",
           "TableLatencyEvaluator", "measure_front"]

RUN_TABLES = "latency"
"""Folder of a run holding the copy of every latency table it predicts with."""


@dataclass(frozen=True)
class LoadedTable:
    """A table ready to predict with, and what it is called in the run."""

    metric: str
    spec: LatencyTableSpec
    table: Any  # predictors.latency.LatencyTable
    source: str

    @property
    def suffix(self) -> str:
        return self.metric.removeprefix("latency_ms")


def latency_metrics(loaded_config: Any) -> dict[str, str]:
    """``{metric: "predicted"}`` for every configured table (and its fallback flag)."""
    section = loaded_config.latency
    if section is None:
        return {}
    out: dict[str, str] = {}
    for metric, _ in section.specs():
        out[metric] = "predicted"
        out[f"{metric}_fallback"] = "predicted"
    return out


def _field(loaded: LoadedConfig, index: int, name: str) -> str:
    section = loaded.config.latency
    return f"latency.tables[{index}].{name}" if section is not None and section.tables else f"latency.{name}"


def _is_transformer(space: SearchSpace) -> bool:
    """Transformer spaces have their own tables and profiler (:mod:`nas.transformer_latency`)."""
    return isinstance(space, TransformerSpace)


def _load_table(path: Path, space: SearchSpace) -> Any:
    from predictors.latency import LatencyTable
    from predictors.latency.transformer_table import TransformerLatencyTable

    return (TransformerLatencyTable if _is_transformer(space) else LatencyTable).load(path, space=space)


def _load_file(loaded: LoadedConfig, index: int, spec: LatencyTableSpec, space: SearchSpace) -> Any:
    table = _load_table(spec.table, space)
    if spec.backend is not None:
        if table.header.backend != spec.backend:
            raise loaded.error(_field(loaded, index, "backend"), f"the table {spec.table} was measured on backend "
                               f"{table.header.backend!r}, not {spec.backend!r}")
    return table


def check_latency(loaded: LoadedConfig, space: SearchSpace) -> list[str]:
    """Load every table file and check its coverage of the space now, so a bad table stops the run before
    any work: a table for another space, or a strict one lacking blocks, is an error naming the table;
    a non-strict one's note says how many blocks it has and how many random subnets need the fallback."""
    section, notes = loaded.config.latency, []
    if section is None:
        return notes
    for index, (metric, spec) in enumerate(section.specs()):
        if _is_transformer(space):
            from nas.transformer_latency import check_transformer_latency

            notes.append(check_transformer_latency(loaded, _field(loaded, index, "table" if spec.table else
                                                                 "profile.backend"), metric, spec, space,
                                                   lambda: _load_file(loaded, index, spec, space)))
        elif spec.table is not None:
            table = _load_file(loaded, index, spec, space)
            coverage = check_coverage(loaded, index, spec, table, space)
            notes.append(f"{metric}: {spec.table.name} ({table.header.backend} on {table.header.device}, "
                         f"{coverage.summary()})")
        else:
            notes.append(f"{metric}: profiled on this machine ({spec.profile.backend}, {spec.profile.threads} thread(s),"
                         f" batch {spec.profile.batch}); cached after the first run")
    return notes


def check_coverage(loaded: LoadedConfig, index: int, spec: LatencyTableSpec, table: Any, space: SearchSpace) -> Any:
    """The table's :class:`~predictors.latency.Coverage` of ``space``; an error pointing at the config's
    ``table`` key when the table cannot serve the space (see :meth:`Coverage.problem`)."""
    from predictors.latency import table_coverage

    coverage = table_coverage(table, space)
    problem = coverage.problem(strict=spec.strict)
    if problem is not None:
        raise loaded.error(_field(loaded, index, "table"), f"{spec.table}: {problem}")
    return coverage


def load_tables(loaded: LoadedConfig, space: SearchSpace, *, progress: bool,
                log: Callable[[str], None] | None = None, run_dir: Path | None = None) -> list[LoadedTable]:
    """Every configured table, profiling the ``profile`` ones on first use (cached).

    With ``run_dir``, a table the run has already copied is read from its copy; otherwise the table
    is copied there and the manifest's ``latency_tables`` says where it came from.
    """
    section, out = loaded.config.latency, []
    for index, (metric, spec) in enumerate(section.specs() if section is not None else []):
        copy = None if run_dir is None else Path(run_dir) / RUN_TABLES / f"{metric}.csv"
        if copy is not None and copy.is_file():
            if log:
                log(f"{metric}: the run's copy {copy.relative_to(run_dir)} (as the run started)")
            table, source, _ = _load_table(copy, space), _source(spec), {}
        else:
            table, source, record = _fresh_table(loaded, index, metric, spec, space, progress, log)
            if copy is not None:
                table.save(copy)
                _record_copy(Path(run_dir), metric, copy, table, record)
        out.append(LoadedTable(metric, spec, table, source))
    return out


def _source(spec: LatencyTableSpec) -> str:
    return str(spec.table) if spec.table is not None else f"profiled table ({spec.profile.backend})"


def _fresh_table(loaded: LoadedConfig, index: int, metric: str, spec: LatencyTableSpec, space: SearchSpace,
                 progress: bool, log: Callable[[str], None] | None) -> tuple[Any, str, dict[str, Any]]:
    """The table from its file, or profiled / loaded from the cache (calibration refitted when configured)."""
    from nas.profiling import DEFAULT_CACHE, cached_table, cached_table_path

    if spec.table is not None:
        return _load_file(loaded, index, spec, space), _source(spec), {"from": str(spec.table),
                                                                        "calibration": "as in the file"}
    p = spec.profile
    if _is_transformer(space):
        from nas.transformer_latency import cached_transformer_table

        table, path, cached = cached_transformer_table(space, p.backend, threads=p.threads, batch=p.batch,
                                                       cache_dir=p.cache_dir or DEFAULT_CACHE, runs=p.runs,
                                                       passes=p.passes, refresh_calibration=p.recalibrate, log=log)
        calibration = ("refitted at run start" if p.recalibrate else "as cached") if cached else "fitted when profiled"
        return table, _source(spec), {"from": str(path), "calibration": calibration}
    path = cached_table_path(space, p.backend, threads=p.threads, batch=p.batch, cache_dir=p.cache_dir or DEFAULT_CACHE)
    cached = path.is_file()
    if log:
        log(f"{metric}: latency table for {p.backend} on this machine (profiled on first use, then cached)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # device/threads notes of a cached table: same machine
        table = cached_table(space, p.backend, threads=p.threads, batch=p.batch, progress=progress,
                             cache_dir=p.cache_dir or DEFAULT_CACHE, runs=p.runs, passes=p.passes,
                             refresh_calibration=p.recalibrate)
    calibration = ("refitted at run start" if p.recalibrate else "as cached") if cached else "fitted when profiled"
    return table, _source(spec), {"from": str(path), "calibration": calibration}


def _record_copy(run_dir: Path, metric: str, copy: Path, table: Any, record: dict[str, Any]) -> None:
    """The manifest's ``latency_tables.<metric>``: the copy, its origin and the calibration it holds."""
    from nas.rundir import now_iso, read_manifest, update_manifest

    h = table.header
    entry = {"copy": str(copy.relative_to(run_dir)), **record, "backend": h.backend, "device": h.device,
             "calibration_scale": h.calibration_scale, "calibration_offset_ms": h.calibration_offset_ms,
             "calibration_subnets": h.calibration_subnets, "at": now_iso()}
    tables = {**read_manifest(run_dir).get("latency_tables", {}), metric: entry}
    update_manifest(run_dir, latency_tables=tables)


class TableLatencyEvaluator:
    """``latency_ms`` (predicted) from one table, and whether the fallback filled a missing block."""

    def __init__(self, space: SearchSpace, loaded: LoadedTable) -> None:
        from predictors.latency import LatencyPredictor

        self.space, self.metric = space, loaded.metric
        self._transformer = None
        if _is_transformer(space):  # transformer blocks: their own table and predictor
            from nas.transformer_latency import TransformerTableEvaluator

            self._transformer = TransformerTableEvaluator(space, loaded.table, loaded.metric, loaded.source,
                                                          strict=loaded.spec.strict)
            return
        self.predictor = LatencyPredictor(loaded.table, strict=loaded.spec.strict, source=loaded.source)

    @property
    def metrics(self) -> dict[str, str]:
        return {self.metric: "predicted", f"{self.metric}_fallback": "predicted"}

    def evaluate(self, genomes: Sequence[Genome]) -> list[dict[str, float]]:
        if self._transformer is not None:
            return self._transformer.evaluate(genomes)
        if self.predictor.strict:  # strict: one error naming the missing block (the batch path would only say NaN)
            for genome in genomes:
                self.predictor.predict(self.space.blocks(genome))
        batch = self.predictor.predict_genomes(self.space, list(genomes))
        return [{self.metric: float(ms), f"{self.metric}_fallback": float(fb)}
                for ms, fb in zip(batch.ms, batch.used_fallback)]


def measurable_here(loaded: LoadedTable) -> bool:
    """Whether the table describes this machine, so its subnets can be timed for real here."""
    from supernets import timing
    from supernets.backends import LATENCY_BACKENDS

    header = loaded.table.header
    return header.backend in LATENCY_BACKENDS and header.device == timing.device_name()


def measure_front(tables: Sequence[LoadedTable], space: SearchSpace, genomes: Sequence[Genome],
                  predicted: Sequence[dict[str, float]], modules: Sequence[Any] | None
                  ) -> tuple[list[dict[str, float]], list[str]]:
    """``latency_pred_ms``/``latency_measured_ms`` (+ suffix) per genome for tables of this machine; notes."""
    from nas.profiling import measure_subnets

    rows: list[dict[str, float]] = [{} for _ in genomes]
    notes = []
    for table in tables:
        if not measurable_here(table):
            notes.append(f"{table.metric}: the table is for {table.table.header.device!r} "
                         f"({table.table.header.backend}); its subnets cannot be timed on this machine")
            continue
        h = table.table.header
        if _is_transformer(space):  # the extracted subnets' ONNX Runtime models, as the table was profiled
            from nas.transformer_latency import measure_transformer_subnets as measure
        else:
            measure = measure_subnets
        timings = measure(space, list(genomes), h.backend, threads=h.threads, batch=h.batch,
                          modules=None if modules is None else list(modules))
        for row, pred, timing in zip(rows, predicted, timings):
            row[f"latency_pred_ms{table.suffix}"] = float(pred[table.metric])
            row[f"latency_measured_ms{table.suffix}"] = float(timing.mean_ms)
    return rows, notes
