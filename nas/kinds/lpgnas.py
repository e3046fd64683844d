"""``kind: lpgnas``: differentiable architecture + quantization search for graph neural networks (LPGNAS).

One search per cost weight lambda, the kept design retrained with QAT over seeds; the procedure, its
journal (``jobs.jsonl``) and its artifacts are :mod:`nas.lpgnas`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from nas.config import ExperimentConfig, LoadedConfig, SearchSpaceConfig
from nas.experiment import Experiment, Reporter, build_space, check_dataset
from nas.lpgnas import LpgnasConfig

from .base import ExperimentKind, KindOutcome, register_kind

__all__ = ["LpgnasExperimentConfig", "LpgnasKind"]


class LpgnasExperimentConfig(ExperimentConfig):
    """``kind: lpgnas``: LPGNAS over a graph space (``search_space: {name: gnn}``), its settings in ``lpgnas``."""

    search_space: SearchSpaceConfig = Field(description="the space to search (gnn)")
    lpgnas: LpgnasConfig = Field(description="LPGNAS settings: cost weights, search and retraining lengths, seeds")


@register_kind
class LpgnasKind(ExperimentKind):
    """LPGNAS over the ``gnn`` space (see the module docstring)."""

    name = "lpgnas"
    config_model = LpgnasExperimentConfig
    description = "differentiable architecture + quantization search for GNNs"

    def prepare(self, loaded: LoadedConfig, reporter: Reporter, placement: Any, launch: Any) -> Experiment:
        space = build_space(loaded)
        with reporter.step(f"loading dataset {loaded.config.dataset.name}"):
            dataset, data = check_dataset(loaded, space)
        return Experiment(loaded, space, {}, dataset, data, (), (), 0, placement=placement, launch=launch)

    def summary(self, exp: Experiment) -> list[tuple[str, str]]:
        config, section = exp.loaded.config, exp.loaded.config.lpgnas
        assert exp.space is not None
        return self.head_rows(exp) + [
            ("kind", f"lpgnas: {self.description}"), ("dataset", exp.dataset),
            ("search space", f"{exp.space.describe()}"),
            ("lpgnas", f"lambdas {section.lambdas}, {section.search_epochs} search epochs ({section.warmup_epochs} "
                       f"warm-up), retrain {section.retrain_epochs} epochs x {section.seeds} seeds"),
            ("output", f"{config.output.root}/{config.name}-<timestamp>/")]

    def run(self, exp: Experiment, run_dir: Path, reporter: Reporter, *, resume: bool,
            handle: Any = None) -> KindOutcome:
        from nas.lpgnas import run_lpgnas

        config = exp.loaded.config
        run_lpgnas(config.lpgnas, exp.space, exp.data, run_dir, seed=config.seed,
                   progress=not getattr(reporter, "quiet", True), journal=handle)
        return None, {}

    def front_definition(self, loaded: LoadedConfig) -> tuple[Sequence[Any], Sequence[Any]]:
        from nas.lpgnas import OBJECTIVES

        return OBJECTIVES, ()
