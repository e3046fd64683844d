"""qnas search layer: experiment configs, evaluators, the search loop, Pareto fronts, run folders, the CLI.

Light on purpose: ``import nas`` (and ``import nas.cli``) loads no torch, pydantic or matplotlib; the
names below are imported on first use::

    from nas import load_experiment, start_run
    outcome = start_run("experiments/quickstart.yaml", overrides=["search.budget=50"])
    outcome.result.front        # the feasible Pareto front (frozen Trial records)
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "run_search": "nas.search", "SearchResult": "nas.search", "Trial": "nas.search",
    "ExperimentConfig": "nas.config", "load_experiment": "nas.kinds",
    "start_run": "nas.runner", "resume_run": "nas.runner", "prepare": "nas.runner",
    "Objective": "nas.objectives", "Constraint": "nas.objectives",
    "Evaluator": "nas.evaluators", "AnalyticEvaluator": "nas.evaluators", "CompositeEvaluator": "nas.evaluators",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nas' has no attribute {name!r}")
