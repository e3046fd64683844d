"""A per-layer quantization-sensitivity table and the prior feature it gives the predictors.

``supernets.sensitivity.measure_quant_sensitivity`` measures ZeroQ's ``Ω_i(k)`` (output KL when only
quantization gene ``i`` is lowered to choice ``k``) once per supernet; this module holds the result,
saves and loads it (``quant_sensitivity.json`` in the run directory), and scores a genome by the sum
over its *active* quantization genes, ZeroQ's proxy for the damage of a whole bit-width assignment.
Genes of the space's declared interactions (``SearchSpace.feature_interactions``) may carry values
measured in each other context (``measure_context_sensitivity``); a genome in such a context is scored
with those.
Given as one more feature beside the one-hot genes, it tells a predictor fitted on a few dozen
subnets which low-bit layers hurt, which it could not learn from so few (the gain on the CIFAR-10
supernet, largest at the smallest training sizes: BENCHMARKS.md, ``predictor_benchmark.py``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from search_spaces import Gene, Genome, InputError, SearchSpace
from search_spaces.atomic import atomic_write_text
from search_spaces.errors import nearest
from search_spaces.inputs import read_json

__all__ = ["QuantSensitivity", "SENSITIVITY_JSON"]

#: File name of the table in a run directory.
SENSITIVITY_JSON = "quant_sensitivity.json"


class QuantSensitivity:
    """``{quant gene: {choice: Ω ≥ 0}}`` for every quantization gene and choice of ``space``.

    Args:
        space: the search space the table was measured for.
        values: the measured sensitivities (choices as the space spells them, or as strings from JSON).
        metric: what the values are (``"kl"``: ZeroQ's output KL divergence).
        contexts: ``{"ctx=value": {gene: {choice: Ω}}}`` for genes of the space's declared interactions,
            measured with the context gene at that value (``measure_context_sensitivity``): a genome whose
            context gene has that value is scored with these instead of the reference's.
        source: where the values came from, for error messages.
    """

    def __init__(self, space: SearchSpace, values: Mapping[str, Mapping[Any, float]], *, metric: str = "kl",
                 contexts: Mapping[str, Mapping[str, Mapping[Any, float]]] | None = None,
                 source: str | None = None) -> None:
        self.space, self.metric = space, metric
        self._src = source or f"quantization sensitivity of space {space.name!r}"
        quant = [g for g in space.genes if g.kind == "quant"]
        if not quant:
            raise InputError("the space has no quantization genes to be sensitive to", source=self._src)
        names = {g.name for g in quant}
        for name in values:
            if name not in names:
                raise InputError(f"not a quantization gene of space {space.name!r}{nearest(name, names)}",
                                 source=self._src, field=f"genes.{name}")
        self.values: dict[str, dict[Any, float]] = {}
        for gene in quant:
            if gene.name not in values:
                raise InputError(f"missing: every quantization gene needs its sensitivities "
                                 f"(choices {list(gene.choices)})", source=self._src, field=f"genes.{gene.name}")
            self.values[gene.name] = self._row(gene, values[gene.name], f"genes.{gene.name}")
        # aligned with the columns of space.encode, which are all zero for inactive genes: a genome's
        # score is its one-hot row times these weights (plus the context corrections below)
        self.weights = np.array([self.values[g.name][c] if g.kind == "quant" else 0.0
                                 for g in space.genes for c in g.choices])
        self.contexts = self._check_contexts(contexts or {})
        self._corrections = self._correction_columns()

    def _row(self, gene: Gene, given_raw: Mapping[Any, float], field: str) -> dict[Any, float]:
        """One gene's ``{choice: value}``, every choice present with a finite value ≥ 0."""
        given = {str(k): v for k, v in given_raw.items()}
        unknown = sorted(set(given) - {str(c) for c in gene.choices})
        if unknown:
            raise InputError(f"choice {unknown[0]!r} is not one of {list(gene.choices)}", source=self._src, field=field)
        row = {}
        for choice in gene.choices:
            value = given.get(str(choice))
            if value is None:
                raise InputError(f"missing the sensitivity of choice {choice!r}", source=self._src, field=field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise InputError(f"expected a finite number >= 0 for choice {choice!r}, got {value!r}",
                                 source=self._src, field=field)
            row[choice] = float(value)
        return row

    def _check_contexts(self, contexts: Mapping[str, Any]) -> dict[tuple[str, Any], dict[str, dict[Any, float]]]:
        """``{"ctx=value": {gene: {choice: value}}}`` → ``{(ctx, value): {gene: row}}``; each (ctx, gene) must
        be one of the space's declared interactions."""
        declared = self.space.feature_interactions()
        options = sorted({c for c, _ in declared})
        out: dict[tuple[str, Any], dict[str, dict[Any, float]]] = {}
        for key, genes in contexts.items():
            field = f"contexts.{key}"
            context, _, raw = str(key).rpartition("=")
            if context not in options:
                raise InputError(f"expected 'gene=value' with a context gene the space declares {options}",
                                 source=self._src, field=field)
            value = next((c for c in self.space.gene(context).choices if str(c) == raw), None)
            if value is None:
                raise InputError(f"{raw!r} is not one of {list(self.space.gene(context).choices)}", source=self._src,
                                 field=field)
            if not isinstance(genes, Mapping):
                raise InputError("expected an object {gene: {choice: value}}", source=self._src, field=field)
            out[(context, value)] = {}
            for name, row in genes.items():
                if (context, name) not in declared:
                    raise InputError(f"the space declares no interaction of {context!r} with {name!r}",
                                     source=self._src, field=f"{field}.{name}")
                if not isinstance(row, Mapping):
                    raise InputError("expected an object {choice: value}", source=self._src, field=f"{field}.{name}")
                out[(context, value)][name] = self._row(self.space.gene(name), row, f"{field}.{name}")
        return out

    def _correction_columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(context column, gene column, Ω in context − Ω in the reference) for each context entry."""
        spans = self.space.encode_spans()

        def column(name: str, choice: Any) -> int:
            return spans[name][0] + self.space.gene(name).choices.index(choice)

        rows = [(column(ctx, value), column(name, choice), v - self.values[name][choice])
                for (ctx, value), genes in self.contexts.items() for name, row in genes.items()
                for choice, v in row.items()]
        ctx_cols, gene_cols, deltas = zip(*rows) if rows else ((), (), ())
        return np.array(ctx_cols, dtype=np.int64), np.array(gene_cols, dtype=np.int64), np.array(deltas)

    def score_onehot(self, onehot: np.ndarray) -> np.ndarray:
        """The score of genomes given as rows of :meth:`SearchSpace.encode` (zero for inactive genes): the
        summed Ω of their quantization choices, each taken in the genome's context where one was measured."""
        ctx_cols, gene_cols, deltas = self._corrections
        out = onehot @ self.weights
        if deltas.size:
            out = out + (onehot[:, ctx_cols] * onehot[:, gene_cols]) @ deltas
        return out

    def score(self, genomes: Sequence[Genome]) -> np.ndarray:
        """Σ of the sensitivities of each genome's active quantization genes (0 = the reference), each in
        the genome's context where the table has one."""
        if not genomes:
            return np.zeros(0)
        for genome in genomes:
            self.space.validate(genome)
        return self.score_onehot(np.stack([self.space.encode(g) for g in genomes]).astype(np.float64))

    # ---- files ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {"space": self.space.name, "space_fingerprint": self.space.fingerprint(), "metric": self.metric,
               "genes": {g: {str(c): v for c, v in row.items()} for g, row in self.values.items()}}
        if self.contexts:
            out["contexts"] = {f"{ctx}={value}": {g: {str(c): v for c, v in row.items()} for g, row in genes.items()}
                               for (ctx, value), genes in self.contexts.items()}
        return out

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path, space: SearchSpace) -> QuantSensitivity:
        """Read a saved table, refusing one of another space (the message names the file and field)."""
        src = str(path)
        if not Path(path).exists():
            raise InputError("no such file (expected a quant_sensitivity.json written by a run)", source=src)
        try:
            data = read_json(path, what="quantization-sensitivity table")
        except InputError as err:
            raise InputError(f"not a JSON quantization-sensitivity table ({err.detail})", source=src,
                             line=err.line) from None
        if not isinstance(data, dict) or not isinstance(data.get("genes"), dict):
            raise InputError("expected an object with a 'genes' object {gene: {choice: value}}", source=src,
                             field="genes")
        if data.get("space") != space.name:
            raise InputError(f"table of space {data.get('space')!r}, not {space.name!r}", source=src, field="space")
        if data.get("space_fingerprint") not in (None, space.fingerprint()):
            raise InputError("measured for other options of this space (its fingerprint differs): measure it "
                             "again for this space", source=src, field="space_fingerprint")
        for gene, row in data["genes"].items():
            if not isinstance(row, dict):
                raise InputError(f"expected an object {{choice: value}}, got {type(row).__name__}", source=src,
                                 field=f"genes.{gene}")
        contexts = data.get("contexts", {})
        if not isinstance(contexts, dict):
            raise InputError("expected an object {'gene=value': {gene: {choice: value}}}", source=src, field="contexts")
        return cls(space, data["genes"], metric=str(data.get("metric", "kl")), contexts=contexts, source=src)
