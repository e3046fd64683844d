"""What the search driver hands to model-based searchers besides YAML options."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from search_spaces import Genome

__all__ = ["SearchContext"]


@dataclass(frozen=True)
class SearchContext:
    """Collaborators of a predictor-guided searcher.

    Attributes:
        cheap: an evaluator whose metrics are exact and cheap (analytic costs, latency tables);
            metrics it does not provide are predicted from measurements. ``None``: predict all.
        model: accuracy-predictor model name (``predictors.accuracy.list_models()``, ``auto``, ``ensemble``).
        model_options: keyword options of ``make_predictor`` (e.g. ``analytic_features``).
        prior: ``(genome, metrics)`` measured in earlier runs (a predictor dataset), used for fitting.
        sensitivity: per-gene sensitivity table (``predictors.accuracy.QuantSensitivity``) the bit-allocation
            searchers minimise (``ilp-bits``, ``nas-then-ilp``); ``None`` when the run measures none.
    """

    cheap: Any = None
    model: str = "ensemble"
    model_options: Mapping[str, Any] = field(default_factory=dict)
    prior: Sequence[tuple[Genome, Mapping[str, float]]] = ()
    sensitivity: Any = None

    @property
    def cheap_metrics(self) -> set[str]:
        return set(self.cheap.metrics) if self.cheap is not None else set()

    def cheap_evaluate(self, genomes: Sequence[Genome]) -> list[dict[str, float]]:
        if self.cheap is None:
            return [{} for _ in genomes]
        return [dict(row) for row in self.cheap.evaluate(list(genomes))]
