"""The config of ``kind: search``: its ``search`` section and :class:`SearchExperimentConfig`, the kind's model.

The model is the sections every experiment has (:class:`nas.config.ExperimentConfig`) plus ``search_space``
and ``search`` (required) and ``supernet``, ``predictors`` and ``latency`` (each optional, and each turning
on metrics: :func:`nas.stages.declared_metrics`). Its own module, not :mod:`nas.kinds.search`, so the
stages that kind runs can name the type without importing the kind.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from nas.config import ExperimentConfig, SearchSpaceConfig, Section
from nas.config_paths import relative_to_config
from nas.config_sections import LatencySection, PredictorsSection, SupernetSection
from nas.objectives import Constraint, Objective, parse_constraint

__all__ = ["ObjectiveConfig", "SearchConfig", "SearchExperimentConfig", "MAX_BUDGET"]


class ObjectiveConfig(Section):
    """A metric to optimise and its direction."""

    metric: str = Field(description="accuracy (with supernet), latency_ms (with latency), macs, params, size_kb, "
                                    "bitops")
    direction: Literal["min", "max"] = Field("min", description="minimise or maximise it")


def _check_constraint(text: str) -> str:
    constraint = parse_constraint(text)  # its ValueError names the expected form
    if not math.isfinite(constraint.bound):
        raise ValueError(f"the bound of {text!r} is not a finite number")
    return text


MAX_BUDGET = 1_000_000
"""Most candidates one search may evaluate (``search.budget``); more is a typo, not a plan."""


class SearchConfig(Section):
    """The search: algorithm, what to optimise, which candidates are allowed, how many to evaluate."""

    algorithm: str = Field("nsga2", description="a registered searcher: predictor-nsga2 (predictor in the loop), "
                                                "random, nsga2, nsga3, agemoea2, smsemoa, optuna-nsga2, optuna-tpe, "
                                                "optuna-gp, ilp-bits, nas-then-ilp")
    options: dict[str, Any] = Field(default_factory=dict, description="searcher options, e.g. population_size (pymoo),"
                                                                      " batch_size (random)")
    objectives: list[ObjectiveConfig] = Field(description="what to optimise: [{metric: accuracy, direction: max}, "
                                                          "{metric: latency_ms}]")
    constraints: list[Annotated[str, AfterValidator(_check_constraint)]] = Field(default_factory=list,
                                                                                 description="bounds like 'params >= "
                                                                                             "60000' or 'size_kb <= "
                                                                                             "200'; contradictory "
                                                                                             "bounds are refused")
    budget: int = Field(100, ge=1, le=MAX_BUDGET, strict=True, description="distinct candidates to evaluate; at least "
                                                                           "the searcher's batch (population)")
    seed: int | None = Field(None, ge=0, strict=True, description="searcher seed when it should differ from the "
                                                                  "experiment's seed")

    @field_validator("options")
    @classmethod
    def _paths_from_config_folder(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Options the searcher declares as file names resolve against the config's folder (and are stored
        absolute in the run's config.yaml, so a resume finds the same file)."""
        if not any(isinstance(v, str) for v in value.values()):
            return value  # nothing could name a file: no need to import the searchers (pymoo, optuna) here
        from nas.searchers import list_searchers, searcher_class

        algorithm = info.data.get("algorithm")
        if algorithm not in list_searchers():
            return value  # the runner names an unknown algorithm
        out = dict(value)
        for name, words in searcher_class(algorithm).path_options.items():
            given = out.get(name)
            if isinstance(given, str) and given.strip() and given not in words:
                out[name] = str(relative_to_config(Path(given), info))
        return out

    @field_validator("objectives")
    @classmethod
    def _distinct_objectives(cls, value: list[ObjectiveConfig]) -> list[ObjectiveConfig]:
        if not value:
            raise ValueError("at least one objective is required, e.g. [{metric: size_kb, direction: min}]")
        seen: dict[str, int] = {}
        for i, objective in enumerate(value):
            if objective.metric in seen:
                raise ValueError(f"objective {objective.metric!r} is listed twice (entries {seen[objective.metric]}"
                                 f" and {i})")
            seen[objective.metric] = i
        return value

    @field_validator("constraints")
    @classmethod
    def _satisfiable(cls, value: list[str]) -> list[str]:
        lower: dict[str, tuple[float, str]] = {}
        upper: dict[str, tuple[float, str]] = {}
        for text in value:
            c = parse_constraint(text)
            table, better = (upper, min) if c.op == "<=" else (lower, max)
            if c.metric not in table or better(c.bound, table[c.metric][0]) == c.bound:
                table[c.metric] = (c.bound, text)
        for metric, (low, low_text) in lower.items():
            if metric in upper and upper[metric][0] < low:
                raise ValueError(f"constraints {low_text!r} and {upper[metric][1]!r} contradict each other: "
                                 "no candidate can satisfy both")
        return value

    def objective_list(self) -> tuple[Objective, ...]:
        return tuple(Objective(o.metric, o.direction) for o in self.objectives)

    def constraint_list(self) -> tuple[Constraint, ...]:
        return tuple(parse_constraint(text) for text in self.constraints)


class SearchExperimentConfig(ExperimentConfig):
    """``kind: search`` (the default): a searcher over one registered space, with the metrics its optional
    sections turn on (``supernet``: accuracy; ``latency``: latency_ms)."""

    search_space: SearchSpaceConfig = Field(description="the space to search")
    search: SearchConfig = Field(description="the searcher, objectives, constraints and budget")
    supernet: SupernetSection | None = Field(None, description="train the quantized supernet in the run folder (or "
                                                               "reuse one); enables the accuracy metric")
    predictors: PredictorsSection | None = Field(None, description="accuracy predictors of predictor-guided searchers")
    latency: LatencySection | None = Field(None, description="latency tables (files of any device, or profiled here); "
                                                             "enables latency_ms")

    @property
    def search_seed(self) -> int:
        """The searcher's seed: ``search.seed`` when set, else the experiment's ``seed``."""
        return self.seed if self.search.seed is None else self.search.seed
