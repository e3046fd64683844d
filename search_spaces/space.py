"""The search-space base class: genes, validity, sampling, variation, encoding, cardinality.

A concrete space only declares its genes (:meth:`SearchSpace._declare_genes`), its constructor
options (:meth:`SearchSpace.options`) and how a genome becomes blocks (:meth:`SearchSpace.blocks`);
everything else is generic and shared.

Genomes are kept *canonical*: a gene that does not matter (a block beyond its stage's depth) holds
its first choice, so two genomes describing the same network are equal and share one hash.
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from .blocks import BlockSpec
from .costs import Costs, model_costs
from .errors import InputError, nearest
from .genome import Gene, Genome, Value

__all__ = ["SearchSpace"]


class SearchSpace(ABC):
    """Base class of every search space; subclasses are registered with ``@register_space``."""

    name: ClassVar[str] = ""
    has_blocks: ClassVar[bool] = True
    """Whether :meth:`blocks` describes subnets (False for spaces, like ``gnn``, that are not CNNs)."""

    def __init__(self) -> None:
        genes = tuple(self._declare_genes())
        self._genes = genes
        self._index = {g.name: i for i, g in enumerate(genes)}
        if len(self._index) != len(genes):
            raise ValueError(f"space {self.name!r} declares a gene twice")
        for gene in genes:
            if gene.active_if is not None:
                controller = self._genes[self._index[gene.active_if[0]]]
                if controller.active_if is not None:
                    raise ValueError(f"gene {gene.name!r}: controllers may not be conditional themselves")

    # ---- what a concrete space provides -------------------------------------------------------
    @abstractmethod
    def _declare_genes(self) -> list[Gene]:
        """All genes, controllers (e.g. depth) before the genes they control."""

    @abstractmethod
    def options(self) -> dict[str, Any]:
        """JSON-ready constructor options: ``get_space(name, **options)`` rebuilds this space."""

    def blocks(self, genome: Genome) -> list[BlockSpec]:
        """The subnet of ``genome`` as blocks (stem, active blocks, head), in forward order."""
        raise NotImplementedError(f"space {self.name!r} does not describe its subnets as blocks")

    def block_records(self, genome: Genome) -> list[dict[str, Any]]:
        """JSON-ready description of the subnet's blocks (a deployed subnet's ``arch.json``); none for spaces
        without a block list."""
        return [block.to_dict() for block in self.blocks(genome)] if self.has_blocks else []

    # ---- genes ---------------------------------------------------------------------------------
    @property
    def genes(self) -> tuple[Gene, ...]:
        return self._genes

    def gene(self, name: str) -> Gene:
        if name not in self._index:
            raise InputError(f"unknown gene{nearest(name, self._index)}", source=f"space {self.name!r}", field=name)
        return self._genes[self._index[name]]

    def is_active(self, genome: Genome, gene: Gene) -> bool:
        """Whether ``gene`` changes the network described by ``genome``."""
        if gene.active_if is None:
            return True
        controller, minimum = gene.active_if
        return genome[controller] >= minimum  # type: ignore[operator]

    def fingerprint(self) -> str:
        """Hash of the space name and options: tables and checkpoints record it to detect mismatches."""
        text = json.dumps({"space": self.name, "options": self.options()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # ---- building and checking genomes -------------------------------------------------------
    def make(self, values: Mapping[str, Value], *, source: str | None = None) -> Genome:
        """Build a canonical genome from gene values, refusing unknown, missing or invalid genes."""
        src = source or f"space {self.name!r}"
        for name in values:
            if name not in self._index:
                raise InputError(f"unknown gene{nearest(name, self._index)}", source=src, field=name)
        missing = [g.name for g in self._genes if g.name not in values]
        if missing:
            raise InputError(f"missing genes {missing}", source=src, field="genes")
        genome = Genome(self.name, tuple((g.name, values[g.name]) for g in self._genes))
        self.validate(genome, source=source)
        return self.canonical(genome)

    def validate(self, genome: Genome, *, source: str | None = None) -> None:
        """Raise :class:`InputError` naming the first gene whose value is not allowed."""
        src = source or f"space {self.name!r}"
        if genome.space != self.name:
            raise InputError(f"genome belongs to space {genome.space!r}, not {self.name!r}", source=src, field="space")
        names = [n for n, _ in genome.values]
        if names != [g.name for g in self._genes]:
            extra = sorted(set(names) - set(self._index))
            if extra:
                raise InputError(f"unknown gene{nearest(extra[0], self._index)}", source=src, field=extra[0])
            raise InputError(f"expected the genes {[g.name for g in self._genes]}", source=src, field="genes")
        for gene, (_, value) in zip(self._genes, genome.values):
            if isinstance(value, bool) or value not in gene.choices:
                raise InputError(f"value {value!r} is not allowed; allowed: {list(gene.choices)}",
                                 source=src, field=gene.name)

    def from_dict(self, data: Mapping[str, Any], *, source: str | None = None) -> Genome:
        """Parse a genome written by :meth:`Genome.to_dict` and check it belongs to this space."""
        raw = Genome.from_dict(data, source=source)
        if raw.space != self.name:
            raise InputError(f"genome belongs to space {raw.space!r}, not {self.name!r}",
                             source=source, field="genome.space")
        return self.make(raw.as_dict(), source=source)

    def canonical(self, genome: Genome) -> Genome:
        """The same network with every inactive gene set to its first choice."""
        values = tuple((g.name, v if self.is_active(genome, g) else g.choices[0])
                       for g, (_, v) in zip(self._genes, genome.values))
        return genome if values == genome.values else Genome(self.name, values)

    # ---- sampling and variation -----------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> Genome:
        """A genome with every gene drawn uniformly from its choices."""
        values = tuple((g.name, g.choices[int(rng.integers(len(g.choices)))]) for g in self._genes)
        return self.canonical(Genome(self.name, values))

    def mutate(self, genome: Genome, rng: np.random.Generator, *, prob: float = 0.1) -> Genome:
        """Resample each active gene with probability ``prob``; at least one gene always changes.

        Genes that a mutation activates (a deeper stage) are drawn afresh rather than left at the
        canonical default, so mutation does not bias new blocks towards the smallest choice.
        """
        values = genome.as_dict()
        mutable = [g for g in self._genes if len(g.choices) > 1 and self.is_active(genome, g)]
        if not mutable:
            return genome
        chosen = [g for g in mutable if rng.random() < prob] or [mutable[int(rng.integers(len(mutable)))]]
        for gene in chosen:
            others = [c for c in gene.choices if c != values[gene.name]]
            values[gene.name] = others[int(rng.integers(len(others)))]
        return self._fill_new_genes(genome, Genome(self.name, tuple(values.items())), rng)

    def crossover(self, a: Genome, b: Genome, rng: np.random.Generator) -> Genome:
        """Uniform crossover: each gene from either parent (a gene inactive in its donor is redrawn)."""
        take_a = rng.random(len(self._genes)) < 0.5
        values = tuple((g.name, a[g.name] if ta else b[g.name]) for g, ta in zip(self._genes, take_a))
        child = Genome(self.name, values)
        fixed = dict(child.values)
        for gene, ta in zip(self._genes, take_a):
            donor, other = (a, b) if ta else (b, a)
            if self.is_active(child, gene) and not self.is_active(donor, gene):
                fixed[gene.name] = other[gene.name] if self.is_active(other, gene) else self._draw(gene, rng)
        return self.canonical(Genome(self.name, tuple(fixed.items())))

    def _fill_new_genes(self, before: Genome, after: Genome, rng: np.random.Generator) -> Genome:
        values = after.as_dict()
        for gene in self._genes:
            if self.is_active(after, gene) and not self.is_active(before, gene):
                values[gene.name] = self._draw(gene, rng)
        return self.canonical(Genome(self.name, tuple(values.items())))

    @staticmethod
    def _draw(gene: Gene, rng: np.random.Generator) -> Value:
        return gene.choices[int(rng.integers(len(gene.choices)))]

    # ---- encodings ----------------------------------------------------------------------------------
    def feature_names(self) -> list[str]:
        """Names of the columns of :meth:`encode`: ``gene=value``."""
        return [f"{g.name}={c}" for g in self._genes for c in g.choices]

    def encode_spans(self) -> dict[str, tuple[int, int]]:
        """``[start, stop)`` of each gene's columns in :meth:`encode` (and :meth:`feature_names`)."""
        spans, offset = {}, 0
        for gene in self._genes:
            spans[gene.name] = (offset, offset + len(gene.choices))
            offset += len(gene.choices)
        return spans

    def encode(self, genome: Genome) -> np.ndarray:
        """One-hot per gene, all zeros for inactive genes (the OFA/APQ predictor encoding)."""
        parts = []
        for gene in self._genes:
            onehot = np.zeros(len(gene.choices), dtype=np.float32)
            if self.is_active(genome, gene):
                onehot[gene.choices.index(genome[gene.name])] = 1.0
            parts.append(onehot)
        return np.concatenate(parts)

    def feature_interactions(self) -> list[tuple[str, str]]:
        """Pairs ``(context gene, gene)`` whose joint value predictors should see as one categorical
        feature, because the gene's effect on accuracy depends on the context gene's value in a way a
        few hundred measured genomes cannot learn from the two one-hots alone. Default: none."""
        return []

    def to_indices(self, genome: Genome) -> np.ndarray:
        """Choice index of every gene (for optimisers that work on integer vectors)."""
        return np.array([g.choices.index(genome[g.name]) for g in self._genes], dtype=np.int64)

    def from_indices(self, indices: Sequence[int] | np.ndarray) -> Genome:
        """Inverse of :meth:`to_indices` (returns the canonical genome)."""
        if len(indices) != len(self._genes):
            raise ValueError(f"expected {len(self._genes)} indices, got {len(indices)}")
        values = tuple((g.name, g.choices[int(i)]) for g, i in zip(self._genes, indices))
        return self.canonical(Genome(self.name, values))

    # ---- size of the space and its extremes ---------------------------------------------------
    def cardinality(self) -> int:
        """Number of distinct canonical genomes (distinct networks)."""
        controlled: dict[str, list[Gene]] = {}
        for gene in self._genes:
            if gene.active_if is not None:
                controlled.setdefault(gene.active_if[0], []).append(gene)
        total = 1
        for gene in self._genes:
            if gene.active_if is not None:
                continue
            if gene.name not in controlled:
                total *= len(gene.choices)
                continue
            total *= sum(math.prod(len(d.choices) for d in controlled[gene.name] if v >= d.active_if[1])  # type: ignore[index]
                         for v in gene.choices)
        return total

    def largest(self) -> Genome:
        """Every gene at its last (largest) choice."""
        return self.canonical(Genome(self.name, tuple((g.name, g.choices[-1]) for g in self._genes)))

    def smallest(self) -> Genome:
        """Every gene at its first (smallest) choice."""
        return self.canonical(Genome(self.name, tuple((g.name, g.choices[0]) for g in self._genes)))

    def costs(self, genome: Genome) -> Costs:
        """Analytic MACs, parameters, size and BitOps of the subnet."""
        return model_costs(self.blocks(genome))

    def describe(self) -> str:
        """One line for summaries: name, genes, cardinality."""
        n_quant = sum(g.kind == "quant" for g in self._genes)
        return (f"{self.name}: {len(self._genes)} genes ({len(self._genes) - n_quant} architecture, "
                f"{n_quant} quantization), {self.cardinality():.3e} distinct subnets")
