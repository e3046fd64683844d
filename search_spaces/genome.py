"""The genome: one point of a search space (architecture genes + quantization genes).

A genome is a frozen, hashable record of ``gene name -> value`` in the order the space declares its
genes. It knows nothing about which values are allowed: :class:`search_spaces.space.SearchSpace`
validates, samples and canonicalises genomes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, Union

from .errors import InputError

__all__ = ["Gene", "Genome", "Value"]

Value = Union[int, float, str]


@dataclass(frozen=True)
class Gene:
    """One categorical decision of a search space.

    Attributes:
        name: dotted name, e.g. ``"s2.b1.kernel"``.
        choices: allowed values, ordered from the smallest to the largest network.
        kind: ``"arch"`` for architecture genes, ``"quant"`` for quantization genes.
        active_if: ``(controller gene, minimum value)``: the gene only matters while the controller's
            value is at least that minimum (block ``j`` of a stage exists iff ``depth >= j + 1``).
    """

    name: str
    choices: tuple[Value, ...]
    kind: Literal["arch", "quant"] = "arch"
    active_if: tuple[str, int] | None = None

    def __post_init__(self) -> None:
        if not self.choices:
            raise ValueError(f"gene {self.name!r} has no choices")
        if len(set(self.choices)) != len(self.choices):
            raise ValueError(f"gene {self.name!r} has duplicate choices {self.choices}")

    @property
    def is_bit_width(self) -> bool:
        """A quantization gene whose choices are bit-widths (numbers), not a granularity or symmetry choice."""
        return self.kind == "quant" and all(isinstance(c, (int, float)) and not isinstance(c, bool)
                                            for c in self.choices)


@dataclass(frozen=True)
class Genome:
    """A point of a search space: ``space`` name plus ``(gene, value)`` pairs in declaration order."""

    space: str
    values: tuple[tuple[str, Value], ...]
    _lookup: dict[str, Value] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_lookup", dict(self.values))

    def __getitem__(self, name: str) -> Value:
        try:
            return self._lookup[name]
        except KeyError:
            raise KeyError(f"genome of space {self.space!r} has no gene {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._lookup

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self.values)

    def as_dict(self) -> dict[str, Value]:
        """Gene name -> value, in declaration order."""
        return dict(self.values)

    def with_values(self, changes: Mapping[str, Value]) -> Genome:
        """A copy with some genes changed (no validation: use the space's ``make`` for that)."""
        unknown = set(changes) - set(self._lookup)
        if unknown:
            raise KeyError(f"unknown genes {sorted(unknown)} for space {self.space!r}")
        return Genome(self.space, tuple((n, changes.get(n, v)) for n, v in self.values))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"space": name, "genes": {gene: value}}``."""
        return {"space": self.space, "genes": self.as_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> Genome:
        """Inverse of :meth:`to_dict`; checks the structure only (the space checks the values)."""
        if not isinstance(data, Mapping) or "space" not in data or "genes" not in data:
            raise InputError("expected a mapping with keys 'space' and 'genes'", source=source, field="genome")
        genes = data["genes"]
        if not isinstance(genes, Mapping):
            raise InputError(f"expected a mapping of gene -> value, got {type(genes).__name__}",
                             source=source, field="genome.genes")
        for name, value in genes.items():
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise InputError(f"expected an int, float or string, got {value!r}",
                                 source=source, field=f"genome.genes.{name}")
        return cls(str(data["space"]), tuple((str(k), v) for k, v in genes.items()))

    @cached_property
    def key(self) -> str:
        """Stable 16-hex-digit hash of the genome (same across processes and machines)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]
