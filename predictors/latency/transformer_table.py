"""Latency tables of transformer blocks: embed, attention, MLP and head, keyed like :meth:`TransformerBlock.key`.

The transformer twin of :mod:`.table`: the same header (:class:`~predictors.latency.table.TableHeader`:
backend, device, threads, batch, clock, per-call overhead, calibration, space fingerprint and options,
``bits_measured_as``), its own format name and columns::

    # format: qnas-transformer-latency-table/1
    # device: AMD EPYC (avx512_vnni, avx512f)
    # backend: onnxruntime-int8
    # space: transformer
    # bits_measured_as: {"4": 8, "32": 8}
    ...
    op,front,seq_len,width,inner,heads,bits,mean_ms,std_ms,count
    attention,lm,64,128,128,4,w8a8.w8a8,0.0712,0.0011,200

A row is one block as the backend runs it: bit-widths mapped through ``bits_measured_as`` (ONNX Runtime
INT8 runs every bit-width as 8, the float backends as 32), so a W4 and a W8 block share a row.
``mean_ms`` is the block's own time with the per-call overhead (``per_call_overhead_ms``) taken off, so
a subnet is ``overhead + Σ blocks`` (one model call), then ``calibration_scale · that + calibration_offset_ms``
(identity unless fitted on whole subnets measured end to end, as for CNN tables).

Profiling lives in :mod:`nas.transformer_latency` (it builds and times ONNX models; predictors import no
torch). Every loader error is one :class:`InputError` naming the file, the line and the field.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from search_spaces import Genome, InputError, SearchSpace
from search_spaces.atomic import atomic_write_text
from search_spaces.errors import nearest, shown
from search_spaces.inputs import read_text
from search_spaces.transformer import FRONTS, TRANSFORMER_OPS, TransformerBlock

from .formats import parse_csv
from .predictor import LatencyEstimate
from .table import _HEADER_FIELDS, TableHeader, _header_value, _number, check_space, check_target

__all__ = ["TRANSFORMER_FORMAT", "TRANSFORMER_COLUMNS", "TransformerEntry",
           "TransformerFallback", "TransformerLatencyTable", "TransformerLatencyPredictor", "bits_text",
           "distinct_transformer_blocks", "map_transformer_bits", "transformer_bits_measured_as"]

TRANSFORMER_FORMAT = "qnas-transformer-latency-table/1"
SIGNATURE = ("op", "front", "seq_len", "width", "inner", "heads", "bits")
STATS = ("mean_ms", "std_ms", "count")
TRANSFORMER_COLUMNS = SIGNATURE + STATS
_INTS = ("seq_len", "width", "inner", "heads")
_BITS = re.compile(r"w(\d+)a(\d+)")


def bits_text(bits: Sequence[tuple[int, int]]) -> str:
    """``((8, 8), (4, 8))`` -> ``"w8a8.w4a8"``."""
    return ".".join(f"w{w}a{a}" for w, a in bits)


def _parse_bits(text: str, src: str, line: int | None) -> tuple[tuple[int, int], ...]:
    parts = text.strip().split(".")
    matches = [_BITS.fullmatch(p) for p in parts]
    if not text.strip() or not all(matches):
        raise InputError(f"expected (w, a) bit pairs like w8a8.w4a8, got {shown(text)}", source=src, field="bits",
                         line=line)
    return tuple((int(m.group(1)), int(m.group(2))) for m in matches if m)


def map_transformer_bits(block: TransformerBlock, bits_measured_as: Mapping[int, int]) -> TransformerBlock:
    """The block as the table keys it: bits mapped through ``bits_measured_as``, no slot or granularity."""
    bits = tuple((bits_measured_as.get(w, w), bits_measured_as.get(a, a)) for w, a in block.bits)
    return replace(block, bits=bits, w_per_channel=(), slot="")


def transformer_bits_measured_as(space: SearchSpace, dtype: str) -> dict[int, int]:
    """Every bit-width a subnet of ``space`` can have, to what a ``dtype`` backend runs it at: 8 on INT8
    backends (no integer kernels below 8 bits; the ``lm`` token lookup's 32 too: ORT stores the table
    8-bit), 32 on float ones."""
    target = 8 if dtype == "int8" else 32
    bits = {*space.w_bits, *space.a_bits, space.first_last_bits, 32}
    return {b: target for b in sorted(bits) if b != target}


def distinct_transformer_blocks(space: SearchSpace, bits_measured_as: Mapping[int, int]) -> list[TransformerBlock]:
    """Every distinct block a subnet of the transformer ``space`` can contain, bits mapped (a table's rows)."""
    t, front, flb = space.tokens, space.front, space.first_last_bits
    pairs = list(itertools.product(space.w_bits, space.a_bits))
    raw: list[TransformerBlock] = []
    for d in space.widths:
        raw.append(TransformerBlock("embed", front, t, d, space.embed_inputs,
                                    bits=((flb, flb) if front == "vit" else (flb, 32),)))
        for heads, bits in itertools.product(space.heads, itertools.product(pairs, repeat=2)):
            raw.append(TransformerBlock("attention", front, t, d, heads * space.head_dim, heads, bits))
        hidden = sorted({space.hidden_units(d, float(r)) for r in space.mlp_ratios})
        for inner, bits in itertools.product(hidden, itertools.product(pairs, repeat=2)):
            raw.append(TransformerBlock("mlp", front, t, d, inner, 0, bits))
        raw.append(TransformerBlock("head", front, t, d, space.classes, bits=((flb, flb),)))
    seen: dict[str, TransformerBlock] = {}
    for block in raw:
        mapped = map_transformer_bits(block, bits_measured_as)
        seen.setdefault(mapped.key(), mapped)
    return list(seen.values())


@dataclass(frozen=True)
class TransformerEntry:
    """Latency of one (bit-mapped) block, per-call overhead taken off."""

    block: TransformerBlock
    mean_ms: float
    std_ms: float
    count: int


class TransformerLatencyTable:
    """Header + entries keyed by the bit-mapped :meth:`TransformerBlock.key`."""

    def __init__(self, header: TableHeader, entries: Iterable[TransformerEntry]) -> None:
        self.header = header
        self.entries: dict[str, TransformerEntry] = {e.block.key(): e for e in entries}

    def __len__(self) -> int:
        return len(self.entries)

    def key_for(self, block: TransformerBlock) -> str:
        """Table key of ``block`` after mapping its bits the way the table was measured."""
        return map_transformer_bits(block, self.header.bits_measured_as).key()

    def get(self, block: TransformerBlock) -> TransformerEntry | None:
        return self.entries.get(self.key_for(block))

    def missing(self, space: SearchSpace) -> list[str]:
        """Keys of the blocks of ``space`` the table has no row for (empty: every subnet is predictable)."""
        blocks = distinct_transformer_blocks(space, self.header.bits_measured_as)
        return [b.key() for b in blocks if b.key() not in self.entries]

    def with_header(self, **changes: Any) -> TransformerLatencyTable:
        return TransformerLatencyTable(replace(self.header, **changes), self.entries.values())

    def check_target(self, *, backend: str | None = None, device: str | None = None, threads: int | None = None,
                     batch: int | None = None, source: str | None = None) -> None:
        """Another backend is an error; another device, thread count or batch a warning (as for CNN tables)."""
        check_target(self.header, backend=backend, device=device, threads=threads, batch=batch,
                     source=source or "transformer latency table")

    # ---- writing -------------------------------------------------------------------------------
    def to_csv(self) -> str:
        buf = io.StringIO()
        for f in sorted(fields(TableHeader), key=lambda f: f.name != "format"):
            value = getattr(self.header, f.name)
            if f.name == "bits_measured_as":
                value = json.dumps({str(k): v for k, v in sorted(value.items())})
            buf.write(f"# {f.name}: {str(value).replace(chr(10), ' ')}\n")
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(TRANSFORMER_COLUMNS)
        for key in sorted(self.entries):
            e = self.entries[key]
            b = e.block
            writer.writerow([b.op, b.front, b.seq_len, b.width, b.inner, b.heads, bits_text(b.bits),
                             repr(float(e.mean_ms)), repr(float(e.std_ms)), int(e.count)])
        return buf.getvalue()

    def save(self, path: str | Path) -> Path:
        """Write the CSV atomically (temp file + ``os.replace``)."""
        return atomic_write_text(Path(path), self.to_csv())

    # ---- reading ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, *, space: SearchSpace | None = None) -> TransformerLatencyTable:
        """Load and check a CSV table; with ``space``, refuse a table made for another space."""
        path = Path(path)
        src = str(path)
        if not path.is_file():
            raise InputError("transformer latency table not found", source=src)
        if path.suffix.lower() != ".csv":
            raise InputError(f"expected a .csv transformer latency table, got {path.suffix!r}", source=src)
        text = read_text(path, what="latency table")
        raw_header, rows = parse_csv(text, src, expected=TRANSFORMER_COLUMNS,
                                     needs="a transformer latency table needs")
        header = _parse_header(raw_header, src)
        if space is not None:
            try:
                check_space(header, raw_header, space, src)
            except InputError as err:
                if err.field != "space_fingerprint":
                    raise
                raise InputError(f"the table was made for another {space.name!r} space (fingerprint "
                                 f"{header.space_fingerprint}, the configured space has {space.fingerprint()}): "
                                 "different options; profile this space (latency: {profile: {backend: "
                                 "onnxruntime-int8}} in a run, or nas.transformer_latency.profile_transformer_space)",
                                 source=src, field=err.field, line=err.line) from None
        entries: dict[str, tuple[TransformerEntry, int | None]] = {}
        for row, line in rows:
            entry = _parse_row(row, src, line)
            key = entry.block.key()
            if key in entries:
                raise InputError(f"duplicate entry for block {key} (first on line {entries[key][1]})", source=src,
                                 field="key", line=line)
            if space is not None and entry.block.front != space.front:
                raise InputError(f"got {entry.block.front!r}, the space's front is {space.front!r}", source=src,
                                 field="front", line=line)
            entries[key] = (entry, line)
        if not entries:
            raise InputError("the table has no entries", source=src, field="entries")
        return cls(header, [e for e, _ in entries.values()])


def _parse_header(raw: dict[str, tuple[Any, int | None]], src: str) -> TableHeader:
    if "format" not in raw:
        raise InputError(f"not a qnas transformer latency table: missing '# format: {TRANSFORMER_FORMAT}'",
                         source=src, field="format", line=1)
    fmt, line = str(raw["format"][0]).strip(), raw["format"][1]
    if fmt != TRANSFORMER_FORMAT:
        what = " (a CNN latency table)" if fmt.startswith("qnas-latency-table") else ""
        raise InputError(f"unsupported format {shown(fmt)}{what}, expected {TRANSFORMER_FORMAT!r}", source=src,
                         field="format", line=line)
    for name, (_, at) in raw.items():
        if name not in _HEADER_FIELDS:
            raise InputError(f"unknown header field{nearest(name, _HEADER_FIELDS)}", source=src, field=name, line=at)
    for name in ("device", "backend", "space"):
        if name not in raw or not str(raw[name][0]).strip():
            raise InputError("required header field is missing or empty", source=src, field=name)
    values = {name: _header_value(name, value, src, at) for name, (value, at) in raw.items() if name != "format"}
    return TableHeader(format=TRANSFORMER_FORMAT, **values)


def _parse_row(row: dict[str, tuple[Any, int | None]], src: str, line: int | None) -> TransformerEntry:
    get = {name: value for name, (value, _) in row.items()}
    op, front = str(get["op"]).strip(), str(get["front"]).strip()
    if op not in TRANSFORMER_OPS:
        raise InputError(f"unknown op {shown(op)}{nearest(op, TRANSFORMER_OPS)} (known: {list(TRANSFORMER_OPS)})",
                         source=src, field="op", line=line)
    if front not in FRONTS:
        raise InputError(f"unknown front {shown(front)}{nearest(front, FRONTS)} (known: {list(FRONTS)})",
                         source=src, field="front", line=line)
    ints = {c: _number(get[c], int, src=src, name=c, line=line) for c in _INTS}
    block = TransformerBlock(op, front, bits=_parse_bits(str(get["bits"]), src, line), **ints)
    try:
        block.validate(src)
    except InputError as err:
        raise InputError(err.detail, source=src, field=err.field, line=line) from None
    if all(str(get[c]).strip() == "" for c in STATS):  # a template row nobody has timed yet
        raise InputError(f"block {block.key()} is not timed yet: fill mean_ms, std_ms and count with its timing on "
                         "the device (a template's blocks.csv), then run qnas latency calibrate", source=src,
                         field="mean_ms", line=line)
    stats = {c: _number(get[c], int if c == "count" else float, src=src, name=c, line=line) for c in STATS}
    for c in STATS:
        if stats[c] < (1 if c == "count" else 0):
            expected = "a count >= 1" if c == "count" else "a non-negative latency"
            raise InputError(f"got {stats[c]!r}, expected {expected}", source=src, field=c, line=line)
    return TransformerEntry(block, stats["mean_ms"], stats["std_ms"], stats["count"])


# ---- prediction ------------------------------------------------------------------------------------
def _features(block: TransformerBlock, space: SearchSpace) -> np.ndarray:
    """``[1, MACs, T·d]`` of a block: its linears' and attention's work, and its element-wise work."""
    macs = block.costs(first_last_bits=space.first_last_bits, attn_bits=space.attn_bits,
                       cls_token=space.pooling == "cls", patches=space.patches).macs
    return np.array([1.0, float(macs), float(block.seq_len * block.width)])


class TransformerFallback:
    """A simple learned fallback for blocks a table lacks: per op, least squares of the rows' ``mean_ms``
    on ``[1, MACs, T·d]`` (:func:`_features`), never below zero. A block whose op has no row at all
    cannot be estimated (error naming its key).

    How well it estimates a block it never saw (each row of the example spaces' tables left out in turn) is in
    BENCHMARKS.md (design choices)."""

    def __init__(self, table: TransformerLatencyTable, space: SearchSpace) -> None:
        self.space = space
        self.coef: dict[str, np.ndarray] = {}
        for op in TRANSFORMER_OPS:
            rows = [e for e in table.entries.values() if e.block.op == op]
            if rows:
                x = np.stack([_features(e.block, space) for e in rows])
                scale = np.maximum(np.abs(x).max(axis=0), 1.0)  # columns of very different magnitudes
                coef, *_ = np.linalg.lstsq(x / scale, np.array([e.mean_ms for e in rows]), rcond=None)
                self.coef[op] = coef / scale

    def predict(self, block: TransformerBlock) -> float | None:
        coef = self.coef.get(block.op)
        return None if coef is None else max(float(_features(block, self.space) @ coef), 0.0)


class TransformerLatencyPredictor:
    """Subnet latency of a transformer ``space`` from a :class:`TransformerLatencyTable`.

    ``raw = per_call_overhead_ms + Σ entries`` of the subnet's blocks (bits mapped), then the table's
    calibration. A block without a row is an :class:`InputError` naming its key, unless ``fallback``:
    then :class:`TransformerFallback` estimates it and the estimate lists it in ``missing_keys``.
    """

    def __init__(self, table: TransformerLatencyTable, space: SearchSpace, *, fallback: bool = False,
                 source: str | None = None) -> None:
        self.table, self.space, self.fallback = table, space, fallback
        self.source = source or f"transformer latency table ({table.header.backend} on {table.header.device})"
        self._memo: dict[str, tuple[float, bool]] = {}
        self._fallback: TransformerFallback | None = None

    def _block(self, block: TransformerBlock) -> tuple[float, bool, str]:
        """(ms, from the fallback, table key) of one block."""
        key = self.table.key_for(block)
        if key not in self._memo:
            entry = self.table.entries.get(key)
            if entry is not None:
                self._memo[key] = (float(entry.mean_ms), False)
            else:
                ms = None
                if self.fallback:
                    self._fallback = self._fallback or TransformerFallback(self.table, self.space)
                    ms = self._fallback.predict(map_transformer_bits(block, self.table.header.bits_measured_as))
                if ms is None:
                    why = (f"and no row of op {block.op!r} to estimate it from" if self.fallback else
                           "(re-profile the table for this space, or allow the fallback: strict: false)")
                    raise InputError(f"no entry for block {key} {why}", source=self.source, field=key)
                self._memo[key] = (ms, True)
        ms, fell_back = self._memo[key]
        return ms, fell_back, key

    def block_ms(self, block: TransformerBlock) -> float:
        return self._block(block)[0]

    def predict_blocks(self, blocks: Sequence[TransformerBlock]) -> LatencyEstimate:
        h = self.table.header
        looked_up = [self._block(b) for b in blocks]
        raw = h.per_call_overhead_ms + sum(ms for ms, _, _ in looked_up)
        missing = tuple(dict.fromkeys(key for _, fell_back, key in looked_up if fell_back))
        return LatencyEstimate(h.calibration_scale * raw + h.calibration_offset_ms, raw, len(blocks), missing)

    def predict(self, genome: Genome) -> LatencyEstimate:
        """Calibrated latency (ms) of ``genome``'s subnet."""
        return self.predict_blocks(self.space.transformer_blocks(genome))

    def predict_genomes(self, genomes: Sequence[Genome]) -> np.ndarray:
        return np.array([self.predict(g).ms for g in genomes], dtype=np.float64)
