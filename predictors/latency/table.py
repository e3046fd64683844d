"""Latency tables: per-block latencies of one device/backend, as CSV or JSON, loaded strictly.

The unit is a block (stem, each searchable block, head), keyed by :meth:`BlockSpec.key`: per-op
sums miss the effects between ops inside a block (fusion, caches; cf. nn-Meter, Zhang et al., MobiSys
2021), and under-predicted whole blocks on the CPUs tried.

CSV: header lines ``# name: value``, then a column row and one row per block::

    # format: qnas-latency-table/1
    # device: AMD EPYC (avx512_vnni, avx512f)
    # backend: onnxruntime-int8
    # space: mbv3
    ...
    op,in_size,in_ch,out_ch,kernel,stride,mid_ch,se,act,shortcut,w_bits,a_bits,mean_ms,std_ms,count
    conv,16,3,8,3,1,0,0,hswish,none,8,8,0.0241,0.0008,100

JSON: ``{"header": {name: value, ...}, "entries": [{column: value, ...}, ...]}`` with the same names.
Every loader error is an :class:`InputError` naming the file, the line and the field.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from search_spaces.atomic import atomic_write_text
from search_spaces import BlockSpec, InputError, SearchSpace
from search_spaces.blocks import OP_TYPES
from search_spaces.errors import nearest, shown
from search_spaces.inputs import read_text

from .formats import SIGNATURE_COLUMNS, STAT_COLUMNS, parse_csv, parse_json

__all__ = ["FORMAT", "SIGNATURE_COLUMNS", "STAT_COLUMNS", "TableHeader", "Entry", "LatencyTable", "check_target",
           "header_space", "map_bits"]

FORMAT = "qnas-latency-table/1"
_INT_COLUMNS = ("in_size", "in_ch", "out_ch", "kernel", "stride", "mid_ch", "w_bits", "a_bits")


@dataclass(frozen=True)
class TableHeader:
    """Where and how a table was measured. ``bits_measured_as`` maps bit-widths without integer kernels
    on the backend to the width they were timed at (e.g. ``{4: 8}`` on INT8 CPUs, all -> 32 for FP32);
    calibration maps a raw block sum to end-to-end latency: ``ms = scale * raw + offset``."""

    device: str
    backend: str
    space: str
    format: str = FORMAT
    dtype: str = ""
    threads: int = 1
    batch: int = 1
    clock: str = ""
    per_call_overhead_ms: float = 0.0
    calibration_scale: float = 1.0
    calibration_offset_ms: float = 0.0
    calibration_subnets: int = 0
    date: str = ""
    space_fingerprint: str = ""
    space_options: str = ""  # JSON of the space's options (informative; the fingerprint is checked)
    bits_measured_as: Mapping[int, int] = field(default_factory=dict)
    notes: str = ""


@dataclass(frozen=True)
class Entry:
    """Latency of one block signature (``spec.slot`` is irrelevant)."""

    spec: BlockSpec
    mean_ms: float
    std_ms: float
    count: int


def map_bits(block: BlockSpec, bits_measured_as: Mapping[int, int]) -> BlockSpec:
    """The block as it was measured: bit-widths replaced through ``bits_measured_as`` (others kept)."""
    w, a = bits_measured_as.get(block.w_bits, block.w_bits), bits_measured_as.get(block.a_bits, block.a_bits)
    return block if (w, a) == (block.w_bits, block.a_bits) else replace(block, w_bits=w, a_bits=a)


class LatencyTable:
    """Header + entries keyed by the (bit-mapped) block key.

    ``unfilled``: blocks listed without a timing yet (rows of a ``qnas latency template`` whose
    ``mean_ms, std_ms, count`` are still empty). They are written back as empty rows, so a table can be
    filled a little at a time, and count as missing blocks until they are timed.
    """

    def __init__(self, header: TableHeader, entries: Iterable[Entry], unfilled: Iterable[BlockSpec] = ()) -> None:
        self.header = header
        self.entries: dict[str, Entry] = {}
        for entry in entries:
            self.entries[entry.spec.key()] = entry
        self.unfilled: dict[str, BlockSpec] = {b.key(): b for b in unfilled if b.key() not in self.entries}

    def __len__(self) -> int:
        return len(self.entries)

    def key_for(self, block: BlockSpec) -> str:
        """Table key of ``block`` after mapping its bits the way the table was measured."""
        return map_bits(block, self.header.bits_measured_as).key()

    def get(self, block: BlockSpec) -> Entry | None:
        return self.entries.get(self.key_for(block))

    def with_header(self, **changes: Any) -> LatencyTable:
        """A copy with some header fields changed (e.g. a fitted calibration)."""
        return LatencyTable(replace(self.header, **changes), self.entries.values(), self.unfilled.values())

    def check_target(self, *, backend: str | None = None, device: str | None = None, threads: int | None = None,
                     batch: int | None = None, source: str | None = None) -> None:
        """Refuse a table of another backend; warn when device, threads or batch differ (:func:`check_target`)."""
        check_target(self.header, backend=backend, device=device, threads=threads, batch=batch,
                     source=source or "latency table")

    # ---- writing -------------------------------------------------------------------------------
    def header_items(self) -> list[tuple[str, Any]]:
        """Header fields as JSON-ready (name, value) pairs, in declaration order."""
        items = []
        for f in sorted(fields(TableHeader), key=lambda f: f.name != "format"):
            value = getattr(self.header, f.name)
            if f.name == "bits_measured_as":
                value = {str(k): v for k, v in sorted(value.items())}
            items.append((f.name, value))
        return items

    def entry_rows(self) -> list[dict[str, Any]]:
        """One row per entry and per unfilled block (its statistics ``None``), sorted by key."""
        stats: dict[str, tuple[Any, Any, Any]] = {k: (e.mean_ms, e.std_ms, e.count) for k, e in self.entries.items()}
        specs = {**{k: e.spec for k, e in self.entries.items()}, **self.unfilled}
        rows = []
        for key in sorted(specs):
            sig = specs[key].signature()
            mean, std, count = stats.get(key, (None, None, None))
            rows.append({**{c: sig[c] for c in SIGNATURE_COLUMNS}, "mean_ms": mean, "std_ms": std, "count": count})
        return rows

    def to_csv(self) -> str:
        buf = io.StringIO()
        for name, value in self.header_items():
            text = json.dumps(value) if isinstance(value, dict) else str(value).replace("\n", " ")
            buf.write(f"# {name}: {text}\n")
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([*SIGNATURE_COLUMNS, *STAT_COLUMNS])
        for row in self.entry_rows():
            writer.writerow([int(v) if isinstance(v, bool) else repr(v) if isinstance(v, float) else
                             "" if v is None else v for v in row.values()])
        return buf.getvalue()

    def to_json(self) -> str:
        rows = ",\n".join("    " + json.dumps(r) for r in self.entry_rows())
        header = json.dumps(dict(self.header_items()), indent=2)
        return '{\n  "header": ' + header.replace("\n", "\n  ") + ',\n  "entries": [\n' + rows + "\n  ]\n}\n"

    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file + ``os.replace``); the suffix picks CSV or JSON."""
        path = Path(path)
        text = self.to_json() if path.suffix.lower() == ".json" else self.to_csv()
        return atomic_write_text(path, text)

    # ---- reading ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, *, space: SearchSpace | None = None) -> LatencyTable:
        """Load and check a CSV or JSON table; with ``space``, refuse a table made for another space."""
        path = Path(path)
        src = str(path)
        if not path.exists():
            raise InputError("latency table not found", source=src)
        if path.suffix.lower() not in (".csv", ".json"):
            raise InputError(f"expected a .csv or .json latency table, got {path.suffix!r}", source=src)
        text = read_text(path, what="latency table")  # size, binary and encoding checks; a BOM is dropped
        parse = parse_json if path.suffix.lower() == ".json" else parse_csv
        raw_header, raw_entries = parse(text, src)
        header = parse_header(raw_header, src)
        entries, unfilled = parse_entries(raw_entries, src)
        if space is not None:
            check_space(header, raw_header, space, src)
        return cls(header, entries, unfilled)


# ---- validation (shared by both formats) ---------------------------------------------------------
Located = dict[str, tuple[Any, int | None]]  # name -> (raw value, line)
_HEADER_FIELDS = {f.name: f for f in fields(TableHeader)}


def _number(value: Any, kind: type, *, src: str, name: str, line: int | None) -> Any:
    """Parse an int or float from text or JSON, refusing bools, NaN and infinities."""
    try:
        if isinstance(value, bool):
            raise ValueError
        number = kind(value.strip()) if isinstance(value, str) else value
        if not isinstance(number, (int, float)) or (kind is int and number != int(number)):
            raise ValueError
        number = kind(number)
        if not math.isfinite(number):
            raise ValueError
        return number
    except (ValueError, TypeError, OverflowError):
        expected = "an integer" if kind is int else "a finite number"
        raise InputError(f"expected {expected}, got {shown(value)}", source=src, field=name, line=line) from None


def parse_header(raw: Located, src: str) -> TableHeader:
    """Typed header from raw name -> (value, line); unknown, missing and out-of-range values raise."""
    for name, (_, line) in raw.items():
        if name not in _HEADER_FIELDS:
            raise InputError(f"unknown header field{nearest(name, _HEADER_FIELDS)}", source=src, field=name, line=line)
    if "format" not in raw:
        raise InputError(f"not a qnas latency table: missing '# format: {FORMAT}'", source=src, field="format", line=1)
    for name in ("device", "backend", "space"):
        if name not in raw or not str(raw[name][0]).strip():
            raise InputError("required header field is missing or empty", source=src, field=name)
    values: dict[str, Any] = {}
    for name, (value, line) in raw.items():
        values[name] = _header_value(name, value, src, line)
    if values["format"] != FORMAT:
        raise InputError(f"unsupported format {shown(values['format'])}, expected {FORMAT!r}", source=src,
                         field="format", line=raw["format"][1])
    return TableHeader(**values)


_RULES: dict[str, tuple[type, float, str]] = {  # name -> (type, minimum, what)
    "threads": (int, 1, "an integer >= 1"), "batch": (int, 1, "an integer >= 1"),
    "calibration_subnets": (int, 0, "an integer >= 0"), "per_call_overhead_ms": (float, 0.0, "a number >= 0"),
    "calibration_scale": (float, 1e-12, "a number > 0"), "calibration_offset_ms": (float, -math.inf, "a number"),
}


def _header_value(name: str, value: Any, src: str, line: int | None) -> Any:
    if name in _RULES:
        kind, minimum, what = _RULES[name]
        number = _number(value, kind, src=src, name=name, line=line)
        if number < minimum:
            raise InputError(f"got {number!r}, expected {what}", source=src, field=name, line=line)
        return number
    if name == "bits_measured_as":
        return _bits_mapping(value, src, line)
    if isinstance(value, (dict, list)):
        raise InputError(f"expected text, got a JSON {'object' if isinstance(value, dict) else 'array'}",
                         source=src, field=name, line=line)
    text = str(value).strip()
    if name == "date" and text:
        try:
            datetime.fromisoformat(text)
        except ValueError:
            raise InputError(f"expected an ISO date like 2025-01-31T12:00:00+00:00, got {shown(text)}", source=src,
                             field=name, line=line) from None
    if name == "space_fingerprint" and text and not re.fullmatch(r"[0-9a-f]{16}", text):
        raise InputError(f"expected 16 hex digits, got {shown(text)}", source=src, field=name, line=line)
    return text


def _bits_mapping(value: Any, src: str, line: int | None) -> dict[int, int]:
    try:
        data = json.loads(value) if isinstance(value, str) else value
        if not isinstance(data, Mapping):
            raise ValueError
        out = {int(k): int(v) for k, v in data.items()}
        if any(not 1 <= b <= 32 for pair in out.items() for b in pair):
            raise ValueError
        return out
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise InputError(f'expected a JSON object of bit-widths 1..32 like {{"4": 8}}, got {shown(value)}', source=src,
                         field="bits_measured_as", line=line) from None


def parse_entries(rows: list[tuple[Located, int | None]], src: str) -> tuple[list[Entry], list[BlockSpec]]:
    """Typed entries and unfilled blocks (rows whose statistics are all empty, as a template writes them);
    a bad value, an unknown op type or a duplicate key raises naming its line and field."""
    if not rows:
        raise InputError("the table has no entries", source=src, field="entries")
    entries, unfilled, first_line = [], [], {}
    for row, line in rows:
        entry = _parse_entry(row, src, line)
        spec = entry.spec if isinstance(entry, Entry) else entry
        key = spec.key()
        if key in first_line:
            raise InputError(f"duplicate entry for block {key} (first on line {first_line[key]})", source=src,
                             field="key", line=line)
        first_line[key] = line
        (entries if isinstance(entry, Entry) else unfilled).append(entry)
    if not entries:
        raise InputError(f"the table has no entries: none of its {len(unfilled)} rows has mean_ms, std_ms, count "
                         "filled in yet (time the blocks on the device and fill them)", source=src, field="entries")
    return entries, unfilled


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _parse_entry(row: Located, src: str, line: int | None) -> Entry | BlockSpec:
    """The row's entry, or only its block when its statistics are all empty (not timed yet)."""
    get = {name: value for name, (value, _) in row.items()}
    op = str(get["op"]).strip()
    if op not in OP_TYPES:
        raise InputError(f"unknown op type {shown(op)}{nearest(op, OP_TYPES)} (known: {list(OP_TYPES)})", source=src,
                         field="op", line=line)
    ints = {c: _number(get[c], int, src=src, name=c, line=line) for c in _INT_COLUMNS}
    se = str(get["se"]).strip().lower()
    if se not in ("0", "1", "true", "false"):
        raise InputError(f"expected 0/1 or true/false, got {shown(get['se'])}", source=src, field="se", line=line)
    spec = BlockSpec(op, se=se in ("1", "true"), act=str(get["act"]).strip(), shortcut=str(get["shortcut"]).strip(),
                     **ints)
    try:
        spec.validate(src)
    except InputError as err:
        raise InputError(err.detail, source=src, field=err.field, line=line) from None
    empty = [c for c in STAT_COLUMNS if _is_empty(get[c])]
    if len(empty) == len(STAT_COLUMNS):
        return spec
    if empty:
        raise InputError("empty; a timed block needs mean_ms, std_ms and count (leave all three empty for a block "
                         "not timed yet)", source=src, field=empty[0], line=line)
    stats = {c: _number(get[c], int if c == "count" else float, src=src, name=c, line=line) for c in STAT_COLUMNS}
    for c in STAT_COLUMNS:
        if stats[c] < (1 if c == "count" else 0):
            expected = "a count >= 1" if c == "count" else "a non-negative latency"
            raise InputError(f"got {stats[c]!r}, expected {expected}", source=src, field=c, line=line)
    return Entry(spec, stats["mean_ms"], stats["std_ms"], stats["count"])


def check_space(header: TableHeader, raw: Located, space: SearchSpace, src: str) -> None:
    """Refuse a table made for another space (by name, and by fingerprint when the table records one)."""
    if header.space != space.name:
        raise InputError(f"the table is for space {shown(header.space)}, not {space.name!r}", source=src, field="space",
                         line=raw["space"][1])
    if header.space_fingerprint and header.space_fingerprint != space.fingerprint():
        raise InputError(f"the table was made for another {space.name!r} space (fingerprint "
                         f"{header.space_fingerprint}, the configured space has {space.fingerprint()}): "
                         "different options; re-profile it with `qnas latency profile`, or for another device "
                         "write a new template with `qnas latency template`", source=src, field="space_fingerprint",
                         line=raw["space_fingerprint"][1])



def header_space(header: TableHeader, source: str) -> SearchSpace:
    """The space a table header names (``space`` + ``space_options``; CNN and transformer tables alike), for
    commands where the space is optional."""
    from search_spaces.inputs import parse_json as parse_json_text
    from search_spaces.registry import space_from_options

    text = header.space_options
    if not text:
        raise InputError("the header has no space_options to rebuild the space from; give --space and "
                         "--space-options", source=source, field="space_options")
    options = parse_json_text(text, source=f"{source}: space_options")
    if not isinstance(options, dict):
        raise InputError("expected a JSON object of space options", source=source, field="space_options")
    return space_from_options(header.space, options, source=source)


def check_target(h: TableHeader, *, backend: str | None = None, device: str | None = None, threads: int | None = None,
                 batch: int | None = None, source: str) -> None:
    """Refuse a table of another backend (its numbers mean nothing there: error); warn when device, threads or
    batch differ (a table from a similar machine may be used on purpose). CNN and transformer tables alike."""
    if backend is not None and h.backend != backend:
        raise InputError(f"the table was measured on backend {h.backend!r}, the config asks for {backend!r}",
                         source=source, field="backend")
    for name, want in (("device", device), ("threads", threads), ("batch", batch)):
        if want is not None and getattr(h, name) != want:
            warnings.warn(f"{source}: table {name} is {getattr(h, name)!r}, the config asks for {want!r}; "
                          "its latencies may not transfer", UserWarning, stacklevel=3)
