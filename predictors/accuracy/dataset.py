"""Measured accuracies as a CSV dataset in the run directory, reusable by later runs.

Columns: ``key`` (``genome.key``), ``genome`` (JSON of ``genome.to_dict()``), ``accuracy``,
``measured_by`` (``supernet``, ``extracted``, ``fp-supernet``, ...) and ``space_fingerprint``.
Loading validates every row against the space and names the file, line and column of the first
problem, because a dataset from another run or another space silently poisons every predictor fit
on it. Also: :func:`synthetic_accuracy`, a deterministic stand-in for measurements in tests and demos.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from search_spaces.atomic import atomic_write_text
from search_spaces.inputs import read_text
from search_spaces import Genome, InputError, SearchSpace
from search_spaces.errors import nearest

from .conformal import MIN_SAMPLES
from .features import FeatureEncoder

__all__ = ["COLUMNS", "PredictorDataset", "Row", "synthetic_accuracy"]

COLUMNS = ("key", "genome", "accuracy", "measured_by", "space_fingerprint")


@dataclass(frozen=True)
class Row:
    """One measurement: which genome, its accuracy, and how it was measured."""

    genome: Genome
    accuracy: float
    measured_by: str

    @property
    def key(self) -> str:
        return self.genome.key


class PredictorDataset:
    """Genome → measured accuracy rows of one search space.

    Args:
        space: the space every genome belongs to (its fingerprint is written with each row).
        rows: initial measurements.
    """

    def __init__(self, space: SearchSpace, rows: Iterable[Row] = ()) -> None:
        self.space = space
        self.rows: list[Row] = []
        for row in rows:
            self.add(row.genome, row.accuracy, measured_by=row.measured_by)

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, genome: Genome, accuracy: float, *, measured_by: str) -> Row:
        """Record one measurement (the genome is validated against the space)."""
        self.space.validate(genome)
        if not math.isfinite(float(accuracy)):
            raise InputError(f"accuracy must be a finite number, got {accuracy!r}", field="accuracy")
        if not measured_by or any(c in measured_by for c in "\r\n"):
            raise InputError(f"measured_by must be a non-empty single-line name, got {measured_by!r}",
                             field="measured_by")
        row = Row(genome, float(accuracy), measured_by)
        self.rows.append(row)
        return row

    def select(self, measured_by: str | Sequence[str]) -> PredictorDataset:
        """The rows measured one of the given ways (e.g. only ``fp-supernet`` for a transfer base)."""
        wanted = {measured_by} if isinstance(measured_by, str) else set(measured_by)
        return PredictorDataset(self.space, [r for r in self.rows if r.measured_by in wanted])

    @property
    def genomes(self) -> list[Genome]:
        return [r.genome for r in self.rows]

    @property
    def accuracies(self) -> np.ndarray:
        return np.array([r.accuracy for r in self.rows], dtype=np.float64)

    # ---- files ----------------------------------------------------------------------------------
    def to_csv(self) -> str:
        """The CSV text (header + one line per row) that :meth:`save` writes."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        fingerprint = self.space.fingerprint()
        for row in self.rows:
            writer.writerow([row.key, json.dumps(row.genome.to_dict(), separators=(",", ":")),
                             repr(row.accuracy), row.measured_by, fingerprint])
        return buffer.getvalue()

    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file + ``os.replace``): readers never see a half-written file."""
        return atomic_write_text(path, self.to_csv())

    def append(self, path: str | Path) -> Path:
        """Add these rows to the dataset at ``path`` (created when missing), atomically.

        The existing file is validated first (so rows of another space are never mixed in), then
        the whole file is rewritten with ``save``: a crash mid-append leaves the old file intact.
        """
        path = Path(path)
        existing = (PredictorDataset.load(path, self.space, min_rows=0) if path.exists()
                    else PredictorDataset(self.space))
        existing.rows.extend(self.rows)
        return existing.save(path)

    @classmethod
    def load(cls, path: str | Path, space: SearchSpace, *, min_rows: int = MIN_SAMPLES) -> PredictorDataset:
        """Read and validate a dataset; errors name the file, the line and the column.

        Args:
            path: the CSV file.
            space: the space the genomes must belong to (same name and fingerprint).
            min_rows: fewest rows accepted (default: enough to cross-validate a predictor).
        """
        path = Path(path)
        text = read_text(path, what="predictor dataset")
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None)
        _check_header(header, path)
        assert header is not None
        data = cls(space)
        for values in reader:
            if values:
                data.rows.append(_parse_row(dict(zip(header, values)), len(values), len(header), space,
                                            path, reader.line_num))
        if len(data) < min_rows:
            raise InputError(f"{len(data)} rows; need at least {min_rows} measured genomes to cross-validate "
                             f"a predictor ({min_rows - len(data)} more)", source=path, field="rows")
        return data


def _check_header(header: list[str] | None, path: Path) -> None:
    if not header:
        raise InputError(f"empty file; expected a header with the columns {list(COLUMNS)}", source=path, line=1)
    missing = [c for c in COLUMNS if c not in header]
    unknown = [c for c in header if c not in COLUMNS]
    if missing or unknown or len(set(header)) != len(header):
        hint = "".join(nearest(u, COLUMNS) for u in unknown[:1])
        raise InputError(f"missing columns {missing}, unexpected columns {unknown}{hint}; expected the columns "
                         f"{list(COLUMNS)} (each once)", source=path, line=1, field="header")


def _parse_row(cells: dict[str, str], n_values: int, n_header: int, space: SearchSpace, path: Path,
               line: int) -> Row:
    """One validated row; every error names ``path:line`` and the column."""
    def fail(column: str, message: str) -> InputError:
        return InputError(message, source=path, line=line, field=column)

    if n_values != n_header:
        raise fail("row", f"{n_values} values but the header has {n_header} columns")
    try:
        raw = json.loads(cells["genome"])
    except json.JSONDecodeError as err:
        raise fail("genome", f"invalid JSON ({err.msg} at character {err.pos})") from None
    if not isinstance(raw, dict) or "space" not in raw or "genes" not in raw:
        raise fail("genome", "expected a JSON object with keys 'space' and 'genes'")
    if raw["space"] != space.name:
        raise fail("genome", f"genome belongs to space {raw['space']!r}, not {space.name!r}")
    fingerprint = cells["space_fingerprint"]
    if fingerprint != space.fingerprint():
        raise fail("space_fingerprint", f"row was measured in space {raw['space']!r} with fingerprint {fingerprint!r}, "
                   f"but this space's fingerprint is {space.fingerprint()!r} (different space options)")
    try:
        genome = space.from_dict(raw)
    except InputError as err:
        field = err.field or "genome"
        raise fail(field if field.startswith("genome") else f"genome.{field}", err.detail) from None
    if cells["key"] != genome.key:
        raise fail("key", f"key {cells['key']!r} does not match the genome (its key is {genome.key!r})")
    try:
        accuracy = float(cells["accuracy"])
    except ValueError:
        raise fail("accuracy", f"expected a number, got {cells['accuracy']!r}") from None
    if not math.isfinite(accuracy):
        raise fail("accuracy", f"expected a finite number, got {cells['accuracy']!r}")
    if not cells["measured_by"]:
        raise fail("measured_by", "empty; expected how the accuracy was measured (e.g. 'supernet')")
    return Row(genome, accuracy, cells["measured_by"])


def synthetic_accuracy(space: SearchSpace, genomes: Sequence[Genome], *, quantized: bool = True,
                       noise: float = 0.2, bits_scale: float = 12.0, seed: int = 0) -> np.ndarray:
    """Deterministic fake top-1 accuracies (%) for tests and demos, shaped like real ones.

    ``fp = 60 + 25·sat(u) + Σ small fixed effects of the architecture choices``, with ``u`` the log
    MACs scaled to [0, 1] between the smallest and largest subnet and ``sat`` a saturating curve.
    Quantized: ``fp - (1.5 - u)·bits_scale·mean(2^(2 - bits))`` over active bit-width genes (low bits
    hurt, small networks more), plus fixed effects of other quantization choices. Noise is seeded
    by ``seed`` and the genome's key, so a genome always gets the same "measurement".
    """
    genomes = list(genomes)
    encoder = FeatureEncoder(space, costs=("macs",))
    X = encoder.transform(genomes).astype(np.float64)
    lo, hi = (math.log(space.costs(g).macs) for g in (space.smallest(), space.largest()))
    u = (X[:, -1] - lo) / max(hi - lo, 1e-12)
    sat = (1 - np.exp(-3 * u)) / (1 - math.exp(-3))
    effects = np.random.default_rng(seed).normal(0.0, 0.3, size=X.shape[1] - 1)
    kinds = np.array([g.kind for g in space.genes for _ in g.choices])
    is_bits = np.array([g.is_bit_width for g in space.genes for _ in g.choices])
    arch = X[:, :-1] @ np.where(kinds == "arch", effects, 0.0)
    acc = 60 + 25 * sat + arch
    if quantized:
        bits = np.array([float(c) if isinstance(c, int) else 0.0 for g in space.genes for c in g.choices])
        hurt = np.where(is_bits, 2.0 ** (2 - bits), 0.0)
        n_bits = np.maximum(X[:, :-1] @ is_bits, 1.0)
        other = np.where((kinds == "quant") & ~is_bits, effects, 0.0)
        acc = acc - (1.5 - u) * bits_scale * (X[:, :-1] @ hurt) / n_bits + X[:, :-1] @ other
    jitter = np.array([np.random.default_rng([seed, int(g.key, 16)]).normal() for g in genomes])
    return acc + noise * jitter
