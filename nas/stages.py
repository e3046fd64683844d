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

from nas.config import ExperimentConfig
from nas.evaluators import ANALYTIC_METRICS, AnalyticEvaluator, CompositeEvaluator
from nas.search import SearchResult, Trial

__all__ = ["declared_metrics", "Stages", "build_stages"]

VALIDATION_METRICS = {"accuracy_extracted": "measured", "accuracy_test": "measured"}


def declared_metrics(config: ExperimentConfig) -> dict[str, str]:
    """``{metric: source}`` of everything the search can optimise or constrain with this config."""
    metrics = {m: "analytic" for m in ANALYTIC_METRICS}
    if config.supernet is not None:
        metrics["accuracy"] = "measured"
    return metrics


@dataclass
class Stages:
    """The evaluators of a run plus what happens to the front afterwards."""

    evaluator: CompositeEvaluator
    space: Any
    data: Any = None
    subnets: Any = None  # supernets.evaluate.SubnetEvaluator when a supernet is configured
    extra_sources: dict[str, str] = field(default_factory=dict)

    @property
    def sources(self) -> dict[str, str]:
        return {**self.evaluator.metrics, **self.extra_sources}

    def validate(self, result: SearchResult) -> SearchResult:
        """Re-measure every Pareto subnet for real (extracted model) and add those metrics to the front."""
        if self.subnets is None or not result.front:
            return result
        from nas.accuracy import validate_front

        measured = validate_front(self.subnets, [t.genome for t in result.front], self.data)
        self.extra_sources.update(VALIDATION_METRICS)
        front = tuple(_with_metrics(t, measured[t.key], VALIDATION_METRICS) for t in result.front)
        return dataclasses.replace(result, front=front)

    def export_models(self, folders: Sequence[Path]) -> None:
        """Save the standalone model of every exported subnet beside its ``arch.json``."""
        if self.subnets is None:
            return
        from nas.export import save_exported

        for folder in folders:
            genome = self.space.from_dict(_read_genome(folder / "arch.json"), source=str(folder / "arch.json"))
            save_exported(self.subnets.extract(genome), self.data.val_x[:2], folder / "model.pt2")


def _with_metrics(trial: Trial, metrics: Mapping[str, float], sources: Mapping[str, str]) -> Trial:
    return dataclasses.replace(trial, metrics={**trial.metrics, **metrics}, sources={**trial.sources, **sources})


def _read_genome(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text())["genome"]


def build_stages(exp: Any, run_dir: Path, reporter: Any) -> Stages:
    """Build every evaluator the config asks for (training the supernet if it has to)."""
    config: ExperimentConfig = exp.loaded.config
    evaluators: list[Any] = [AnalyticEvaluator(exp.space)]
    stages = Stages(CompositeEvaluator(evaluators), exp.space, exp.data)
    if config.supernet is not None:
        from nas.accuracy import SupernetAccuracyEvaluator, supernet_evaluator

        stages.subnets = supernet_evaluator(config.supernet, exp.space, exp.data, run_dir,
                                            progress=not getattr(reporter, "quiet", True), log=reporter.info)
        evaluators.append(SupernetAccuracyEvaluator(stages.subnets))
        stages.evaluator = CompositeEvaluator(evaluators)
    return stages
