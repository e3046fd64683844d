"""The Hessian-trace sensitivity table (HAWQ-V3's ILP costs), saved beside ZeroQ's KL table.

``supernets.hessian.measure_hessian_sensitivity`` measures, per quantization gene, the average Hessian
trace of what it quantizes and ``Ω(choice) = Tr(H)/n · ‖Q_choice − x‖²``. This module keeps both: the
``Ω`` rows in :class:`QuantSensitivity`'s format (metric ``hawq``), so the bit allocators minimise it and
the predictors can take it as their sensitivity feature (``predictors.quant_sensitivity: PATH``), plus the
traces themselves and how they were measured (Rademacher samples, images), validated on load.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from search_spaces import InputError, SearchSpace
from search_spaces.errors import nearest

from .sensitivity import QuantSensitivity

__all__ = ["HessianSensitivity", "HESSIAN_JSON", "variant_spearman"]

#: File name of the table in a run directory.
HESSIAN_JSON = "hessian_sensitivity.json"


class HessianSensitivity(QuantSensitivity):
    """:class:`QuantSensitivity` of HAWQ-V3 costs plus each gene's average Hessian trace.

    Args:
        space: the search space the table was measured for.
        omega: ``{quant gene: {choice: Ω ≥ 0}}``.
        traces: ``{quant gene: Tr(H)/n}`` for the genes that own tensors (weight and activation bits); a
            trace may be negative (sampling noise, a layer off its minimum) and then costs nothing in Ω.
        samples: Rademacher vectors per batch; images: how many images the loss was averaged over.
    """

    def __init__(self, space: SearchSpace, omega: Mapping[str, Mapping[Any, float]], *,
                 traces: Mapping[str, float], samples: int, images: int, source: str | None = None) -> None:
        super().__init__(space, omega, metric="hawq", source=source)
        quant = {g.name for g in space.genes if g.kind == "quant"}
        self.traces: dict[str, float] = {}
        for name, value in traces.items():
            if name not in quant:
                raise InputError(f"not a quantization gene of space {space.name!r}{nearest(name, quant)}",
                                 source=self._src, field=f"traces.{name}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"expected a finite number, got {value!r}", source=self._src, field=f"traces.{name}")
            self.traces[name] = float(value)
        for name, field, value in (("samples", "samples", samples), ("images", "images", images)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"expected a positive integer, got {value!r}", source=self._src, field=field)
        self.samples, self.images = samples, images

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "traces": dict(self.traces), "samples": self.samples, "images": self.images}

    @classmethod
    def load(cls, path: str | Path, space: SearchSpace) -> HessianSensitivity:
        """Read a saved table (checked like :meth:`QuantSensitivity.load`, plus the traces and settings)."""
        table = QuantSensitivity.load(path, space)
        from search_spaces.inputs import read_json

        data = read_json(path, what="Hessian-sensitivity table")
        src = str(path)
        if data.get("metric") != "hawq":
            raise InputError(f"expected metric 'hawq' (a Hessian table), got {data.get('metric')!r}", source=src,
                             field="metric")
        if not isinstance(data.get("traces"), dict):
            raise InputError("expected an object {gene: trace}", source=src, field="traces")
        return cls(space, table.values, traces=data["traces"], samples=data.get("samples"),
                   images=data.get("images"), source=src)


def variant_spearman(first: Mapping[str, Mapping[Any, float]], second: Mapping[str, Mapping[Any, float]],
                     reference: Mapping[str, Any]) -> tuple[float, int]:
    """Spearman ρ between two per-variant sensitivities, and how many variants it is over.

    A variant is one quantization gene lowered to one other choice in ``reference`` (a genome's values);
    each side counts its increase over the reference's own choice, so absolute tables (HAWQ's Ω) compare
    with relative ones (ZeroQ's KL, a measured accuracy drop). Only variants present on both sides count.
    """
    from scipy.stats import spearmanr

    pairs = []
    for gene in sorted(set(first) & set(second)):
        ref = reference[gene]
        for choice in first[gene]:
            if choice != ref and choice in second[gene]:
                pairs.append((first[gene][choice] - first[gene][ref], second[gene][choice] - second[gene][ref]))
    if len(pairs) < 3:
        raise ValueError(f"Spearman needs 3 or more shared variants, got {len(pairs)}")
    a, b = zip(*pairs)
    return float(spearmanr(a, b).statistic), len(pairs)
