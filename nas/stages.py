"""What a run evaluates, as the config turns it on: analytic costs, supernet accuracy (and more).

``declared_metrics`` says up front (before any training) which metrics a config makes available,
so ``qnas validate`` can check objectives and constraints. ``build_stages`` then does the work that
needs a run folder (train or load the supernet), and the resulting :class:`Stages` evaluate
candidates, validate the final front for real and export the chosen subnets' models.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.search_config import SearchExperimentConfig
from nas.evaluators import ANALYTIC_METRICS, AnalyticEvaluator, CompositeEvaluator
from nas.search import SearchResult, Trial
from search_spaces.errors import InputError

__all__ = ["declared_metrics", "Stages", "build_stages"]

VALIDATION_METRICS = {"accuracy_extracted": "measured", "accuracy_test": "measured", "val_loss_extracted": "measured",
                      "test_loss": "measured"}


def declared_metrics(config: SearchExperimentConfig) -> dict[str, str]:
    """``{metric: source}`` of everything the search can optimise or constrain with this config."""
    from nas.latency_stage import latency_metrics

    metrics = {m: "analytic" for m in ANALYTIC_METRICS}
    if config.supernet is not None:
        metrics |= {"accuracy": "measured", "val_loss": "measured"}
    return metrics | latency_metrics(config)


@dataclass
class Stages:
    """The evaluators of a run plus what happens to the front afterwards.

    ``cheap`` holds the evaluators whose metrics are exact without measuring anything (analytic
    costs, latency tables): predictor-guided searchers call it freely for candidates they only predict.
    """

    evaluator: CompositeEvaluator
    cheap: CompositeEvaluator
    space: Any
    data: Any = None
    subnets: Any = None  # supernets.evaluate.SubnetEvaluator when a supernet is configured
    executor: Any = None  # nas.executors.Executor running the expensive evaluators (local or Ray)
    extra_sources: dict[str, str] = field(default_factory=dict)
    tables: list[Any] = field(default_factory=list)  # nas.latency_stage.LoadedTable per latency metric
    notes: list[str] = field(default_factory=list)

    @property
    def sources(self) -> dict[str, str]:
        return {**self.evaluator.metrics, **self.extra_sources}

    def close(self) -> None:
        """Release the executor's workers (and a Ray it started); the local validation needs none."""
        if self.executor is not None:
            self.executor.close()

    def validate(self, result: SearchResult) -> SearchResult:
        """Re-measure every Pareto subnet for real (extracted model, end-to-end latency) into the front."""
        if not result.front:
            return result
        genomes = [t.genome for t in result.front]
        measured: list[dict[str, float]] = [{} for _ in genomes]
        if self.subnets is not None:
            from nas.accuracy import validate_front

            by_key = validate_front(self.subnets, genomes, self.data)
            measured = [dict(by_key[g.key]) for g in genomes]
        if self.tables:
            from nas.latency_stage import measure_front

            rows, notes = measure_front(self.tables, self.space, genomes, [dict(t.metrics) for t in result.front],
                                        self._float_models(genomes))
            self.notes += notes
            measured = [a | b for a, b in zip(measured, rows)]
        sources = {m: ("predicted" if m.startswith("latency_pred") else "measured") for row in measured for m in row}
        self.extra_sources.update(sources)
        front = tuple(_with_metrics(t, row, sources) for t, row in zip(result.front, measured))
        return dataclasses.replace(result, front=front)

    def _float_models(self, genomes: Sequence[Any]) -> list[Any] | None:
        """The extracted subnets as float modules (real weights) for timing, or None (seeded weights)."""
        if self.subnets is None:
            return None
        from supernets.static import strip_fake_quant

        return [strip_fake_quant(self.subnets.extract(g)).cpu() for g in genomes]  # timed on this CPU

    def export_models(self, folders: Sequence[Path]) -> None:
        """Save the standalone model of every exported subnet beside its ``arch.json``."""
        if self.subnets is None:
            return
        from nas.export import save_exported

        for folder in folders:
            genome = self.space.from_dict(_read_genome(folder / "arch.json"), source=str(folder / "arch.json"))
            model = self.subnets.extract(genome).cpu()  # a deployable file runs wherever it is loaded
            save_exported(model, self.data.val_x[:2].cpu(), folder / "model.pt2")


def _with_metrics(trial: Trial, metrics: Mapping[str, float], sources: Mapping[str, str]) -> Trial:
    return dataclasses.replace(trial, metrics={**trial.metrics, **metrics}, sources={**trial.sources, **sources})


def _read_genome(path: Path) -> dict[str, Any]:
    from search_spaces.inputs import read_json

    data = read_json(path, what="subnet description")
    if not isinstance(data, dict) or not isinstance(data.get("genome"), dict):
        raise InputError("expected a JSON object with a 'genome' object", source=str(path), field="genome")
    return data["genome"]


def build_stages(exp: Any, run_dir: Path, reporter: Any) -> Stages:
    """Build every evaluator the config asks for (training the supernet if it has to)."""
    config: SearchExperimentConfig = exp.loaded.config
    evaluators: list[Any] = [AnalyticEvaluator(exp.space)]
    tables: list[Any] = []
    if config.latency is not None:
        from nas.latency_stage import TableLatencyEvaluator, load_tables

        tables = load_tables(exp.loaded, exp.space, progress=not getattr(reporter, "quiet", True), log=reporter.info,
                             run_dir=run_dir)
        evaluators += [TableLatencyEvaluator(exp.space, t) for t in tables]
    stages = Stages(CompositeEvaluator(evaluators), CompositeEvaluator(list(evaluators)), exp.space, exp.data,
                    tables=tables)
    if config.supernet is not None:
        from nas.accuracy import supernet_evaluator
        from nas.executors import make_executor
        from nas.executors.supernet import SupernetAccuracyFactory

        stages.subnets = supernet_evaluator(config.supernet, exp.space, exp.data, run_dir,
                                            progress=not getattr(reporter, "quiet", True), log=reporter.info,
                                            placement=exp.placement, launch=exp.launch)
        stages.executor = make_executor(config.executor)  # the expensive evaluators run through it
        factory = SupernetAccuracyFactory.from_subnets(stages.subnets, at_once=config.supernet.subnets_at_once)
        evaluators.append(stages.executor.evaluator(factory))
        stages.evaluator = CompositeEvaluator(evaluators)
    return stages
