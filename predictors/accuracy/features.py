"""Genomes → feature matrices: the space's one-hot encoding (optionally with the joint one-hot of the
gene pairs the space declares in ``feature_interactions``) plus standardised log analytic costs, the
genome's bit-width histogram (and, given a :class:`~predictors.accuracy.QuantSensitivity` table, the
genome's summed sensitivity).

The search refits and queries predictors on thousands of genomes per round, so encoding is the hot
path: for spaces that keep :meth:`SearchSpace.encode` and :meth:`SearchSpace.costs` as inherited,
the one-hot rows are built from precomputed column lookups and subnet costs from a per-encoder
cache of block costs (many genomes share blocks). Both give exactly what the space itself gives
(a test checks), and spaces that override either method are encoded through the method itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from search_spaces import Genome, InputError, SearchSpace
from search_spaces.costs import block_costs

from .sensitivity import QuantSensitivity

__all__ = ["FeatureEncoder", "COST_FEATURES", "bit_count_map", "gene_columns", "interaction_plan"]

#: Analytic features and the :class:`Costs` field each one takes the log of.
COST_FEATURES = ("macs", "bitops", "size_bytes")
KINDS = ("arch", "quant")


def gene_columns(space: SearchSpace, kinds: Sequence[str]) -> np.ndarray:
    """Indices of the columns of ``space.encode`` that belong to genes of the given kinds."""
    spans = space.encode_spans()
    cols = [i for gene in space.genes if gene.kind in kinds for i in range(*spans[gene.name])]
    return np.asarray(cols, dtype=np.int64)


Span = tuple[int, int]  # [start, stop) of one gene's columns in SearchSpace.encode


def interaction_plan(space: SearchSpace, kinds: Sequence[str]) -> tuple[list[tuple[Span, Span]], list[str]]:
    """Column slices (of :meth:`SearchSpace.encode`) of each declared pair whose second gene is of one of
    ``kinds``, and the names of their joint columns; a pair naming an unknown gene is the space's bug."""
    start = space.encode_spans()
    pairs: list[tuple[Span, Span]] = []
    names: list[str] = []
    for context, name in space.feature_interactions():
        for gene in (context, name):
            if gene not in start:
                raise ValueError(f"space {space.name!r} declares an interaction with unknown gene {gene!r}")
        if space.gene(name).kind not in kinds:
            continue
        pairs.append((start[context], start[name]))
        names += [f"{context}={a}&{name}={b}" for a in space.gene(context).choices for b in space.gene(name).choices]
    return pairs, names


def bit_count_map(space: SearchSpace) -> tuple[list[str], np.ndarray]:
    """Names ``count_<kind>=<bits>`` and the ``(one-hot width, counts)`` 0/1 matrix that maps the one-hot
    rows of :meth:`SearchSpace.encode` (zero for inactive genes) to the bit-width histogram."""
    spans = space.encode_spans()
    index: dict[tuple[str, object], int] = {}
    entries = []
    for gene in space.genes:
        if gene.kind == "quant":
            for i, choice in enumerate(gene.choices):
                key = (gene.name.rsplit(".", 1)[-1], choice)
                entries.append((spans[gene.name][0] + i, index.setdefault(key, len(index))))
    matrix = np.zeros((sum(len(g.choices) for g in space.genes), len(index)), dtype=np.float32)
    for row, col in entries:
        matrix[row, col] = 1.0
    return [f"count_{kind}={bits}" for kind, bits in index], matrix


class FeatureEncoder:
    """Encode genomes of one space as float32 rows: ``[one-hot genes | interactions | log costs | bit
    counts | sensitivity]``, the last three z-scored.

    Args:
        space: the search space the genomes belong to.
        kinds: which genes to one-hot encode (``("arch",)`` for a full-precision base predictor).
        costs: which analytic costs to add as standardised logs, from :data:`COST_FEATURES`
            (log MACs, log BitOps, log bytes: accuracy grows roughly with the log of capacity).
        interactions: add the joint one-hot of each pair of :meth:`SearchSpace.feature_interactions`
            (zero while either gene is inactive) whose second gene is of one of ``kinds``.
        bit_counts: add the bit-width histogram: per kind of quantization gene (the last part of its name,
            e.g. ``w_bits``, ``a_bits``) and per bit-width, how many *active* genes use it. How many layers
            sit at 3 bits is what the one-hot columns spread over many genes; a few dozen measured genomes
            cannot learn that sum gene by gene (only with ``"quant"`` in ``kinds``).
        sensitivity: a quantization-sensitivity table of the space: adds ZeroQ's summed sensitivity of
            the genome's bit-widths (only with ``"quant"`` in ``kinds``: it describes quantization).
        cache_size: genomes whose rows are remembered (by value) before the cache is cleared
            (a search re-predicts its population every round; 20k rows of ~300 floats ≈ 24 MB).
    """

    def __init__(self, space: SearchSpace, *, kinds: Sequence[str] = KINDS,
                 costs: Sequence[str] = COST_FEATURES, interactions: bool = False, bit_counts: bool = False,
                 sensitivity: QuantSensitivity | None = None, cache_size: int = 20_000) -> None:
        unknown = [k for k in kinds if k not in KINDS] + [c for c in costs if c not in COST_FEATURES]
        if unknown:
            raise ValueError(f"unknown kinds/costs {unknown}; kinds from {KINDS}, costs from {COST_FEATURES}")
        if sensitivity is not None and sensitivity.space.fingerprint() != space.fingerprint():
            raise ValueError("the sensitivity table belongs to another space")
        self.space, self.kinds, self.costs = space, tuple(kinds), tuple(costs)
        self.sensitivity = sensitivity if "quant" in self.kinds else None
        self.bit_counts = bit_counts and "quant" in self.kinds
        self._count_names, self._count_map = bit_count_map(space) if self.bit_counts else ([], None)
        self._n_extra = len(self.costs) + len(self._count_names) + (self.sensitivity is not None)
        self._columns = gene_columns(space, self.kinds)
        self._pairs, self._pair_names = interaction_plan(space, self.kinds) if interactions else ([], [])
        self.interactions = bool(self._pairs)
        self._plan = self._make_plan(space)
        self._width = sum(len(g.choices) for g in space.genes)
        self._fast_encode = type(space).encode is SearchSpace.encode and type(space).is_active is SearchSpace.is_active
        self._fast_costs = type(space).costs is SearchSpace.costs
        self._block_cache: dict = {}
        self._row_cache: dict[Genome, np.ndarray] = {}
        self._cache_size = cache_size
        self.mean_ = np.zeros(self._n_extra)
        self.scale_ = np.ones(self._n_extra)

    @staticmethod
    def _make_plan(space: SearchSpace) -> list[tuple[int, dict, int | None, object]]:
        """Per gene: first column, value → choice index, controller position, controller minimum."""
        index = {g.name: i for i, g in enumerate(space.genes)}
        spans = space.encode_spans()
        plan = []
        for gene in space.genes:
            ctrl, minimum = (None, None) if gene.active_if is None else (index[gene.active_if[0]], gene.active_if[1])
            plan.append((spans[gene.name][0], {c: i for i, c in enumerate(gene.choices)}, ctrl, minimum))
        return plan

    @property
    def names(self) -> list[str]:
        """Column names: ``gene=value`` (one-hot), ``a=x&b=y`` (interactions), ``log_<cost>``,
        ``count_<kind>=<bits>`` (bit counts), then ``quant_sensitivity``."""
        all_names = self.space.feature_names()
        extra = ["quant_sensitivity"] if self.sensitivity is not None else []
        return ([all_names[i] for i in self._columns] + self._pair_names + [f"log_{c}" for c in self.costs]
                + self._count_names + extra)

    @property
    def n_features(self) -> int:
        return len(self._columns) + len(self._pair_names) + self._n_extra

    def fit(self, genomes: Sequence[Genome]) -> FeatureEncoder:
        """Learn the mean and spread of the extra columns (so every model sees them on a unit scale)."""
        if self._n_extra:
            raw = self._raw(genomes)[:, self.n_features - self._n_extra:].astype(np.float64)
            self.mean_ = raw.mean(axis=0)
            self.scale_ = np.where(raw.std(axis=0) > 1e-12, raw.std(axis=0), 1.0)
        return self

    def transform(self, genomes: Sequence[Genome]) -> np.ndarray:
        """Feature matrix ``(n, n_features)`` (float32)."""
        out = self._raw(genomes)
        if self._n_extra:
            k = self.n_features - self._n_extra
            out[:, k:] = (out[:, k:] - self.mean_) / self.scale_
        return out

    def fit_transform(self, genomes: Sequence[Genome]) -> np.ndarray:
        return self.fit(genomes).transform(genomes)

    # ---- raw rows (one-hot + unscaled log costs), cached by genome -----------------------------
    def _raw(self, genomes: Sequence[Genome]) -> np.ndarray:
        genomes = list(genomes)
        out = np.empty((len(genomes), self.n_features), dtype=np.float32)
        missing = [i for i, g in enumerate(genomes) if g not in self._row_cache]
        if missing:
            fresh = self._compute([genomes[i] for i in missing])
            if len(self._row_cache) + len(missing) > self._cache_size:
                self._row_cache.clear()
            for i, row in zip(missing, fresh):
                self._row_cache[genomes[i]] = row
        for i, g in enumerate(genomes):
            out[i] = self._row_cache[g]
        return out

    def _compute(self, genomes: list[Genome]) -> np.ndarray:
        onehot = self._onehot(genomes)
        parts = [onehot[:, self._columns]]
        for (c0, c1), (g0, g1) in self._pairs:  # joint one-hot: outer product of the two genes' one-hot slices
            parts.append((onehot[:, c0:c1, None] * onehot[:, None, g0:g1]).reshape(len(genomes), -1))
        if self.costs:
            logs = np.log(np.maximum(np.array([self._cost_row(g) for g in genomes], dtype=np.float64), 1.0))
            parts.append(logs.astype(np.float32))
        if self._count_map is not None:  # like the sensitivity, a linear map of the one-hot rows
            parts.append(onehot @ self._count_map)
        if self.sensitivity is not None:  # the table's score, from the one-hot rows already built
            parts.append(self.sensitivity.score_onehot(onehot.astype(np.float64)).astype(np.float32)[:, None])
        return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]

    def _onehot(self, genomes: list[Genome]) -> np.ndarray:
        if not self._fast_encode:
            return np.stack([self.space.encode(g) for g in genomes]).astype(np.float32)
        rows: list[int] = []
        cols: list[int] = []
        for r, genome in enumerate(genomes):
            self._check(genome)
            values = genome.values
            for (_, value), (offset, lookup, ctrl, minimum) in zip(values, self._plan):
                if ctrl is not None and values[ctrl][1] < minimum:
                    continue
                if value not in lookup:
                    self.space.validate(genome)  # raises the space's own error naming the gene
                rows.append(r)
                cols.append(offset + lookup[value])
        out = np.zeros((len(genomes), self._width), dtype=np.float32)
        out[rows, cols] = 1.0
        return out

    def _check(self, genome: Genome) -> None:
        if genome.space != self.space.name or len(genome.values) != len(self._plan):
            self.space.validate(genome)
            raise InputError("genome does not match the space's genes", source=f"space {self.space.name!r}")

    def _cost_row(self, genome: Genome) -> list[float]:
        """The selected costs of ``space.costs(genome)``, summing cached per-block costs when the
        space does not override ``costs`` (``space.blocks`` is then the only per-genome work)."""
        if not self._fast_costs:
            costs = self.space.costs(genome)
            return [float(getattr(costs, name)) for name in self.costs]
        total = [0.0] * len(self.costs)
        for block in self.space.blocks(genome):
            cost = self._block_cache.get(block)
            if cost is None:
                cost = self._block_cache[block] = [float(getattr(block_costs(block), n)) for n in self.costs]
            for i, value in enumerate(cost):
                total[i] += value
        return total
