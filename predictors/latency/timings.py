"""End-to-end subnet timings from a device, and the table calibration fitted on them.

A table's blocks are timed one call each; a whole network runs as one call, with its blocks slower or
faster together than apart. ``qnas latency profile`` fits that (per-call overhead, scale, offset) by
timing whole subnets here; a device qnas cannot run on needs the same numbers from its own runtime.
``qnas latency template`` therefore writes ``subnets.csv``: the calibration subnets (and the empty
model, whose time is the per-call overhead) with an empty ``mean_ms`` column. The user times the
matching models on the device, fills the column, and :func:`calibrate_from_timings` fits the table::

    # format: qnas-subnet-timings/1
    # space: mbv3
    # space_fingerprint: 56735f1246b6b90a
    name,genome,mean_ms
    empty,,0.0056
    subnet-00,"{""s1.depth"": 1, ...}",0.412
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_spaces import Genome, InputError, SearchSpace
from search_spaces.atomic import atomic_write_text
from search_spaces.errors import shown
from search_spaces.inputs import parse_json, read_text

from .calibration import Calibration, fit_calibration, raw_latency
from .formats import parse_csv
from .table import LatencyTable

__all__ = ["TIMINGS_FORMAT", "OVERHEAD_ROW", "MIN_SUBNETS", "SubnetTiming", "SubnetTimings", "write_timings_template",
           "read_timings", "calibrate_from_timings"]

TIMINGS_FORMAT = "qnas-subnet-timings/1"
OVERHEAD_ROW = "empty"
"""Name of the row timing the empty model: one call's cost, removed once per block entry."""
MIN_SUBNETS = 2
"""Fewest timed subnets a calibration is fitted on (a scale alone needs one; a check of it, another)."""
COLUMNS = ("name", "genome", "mean_ms")
_HEADER = ("format", "space", "space_fingerprint")


@dataclass(frozen=True)
class SubnetTiming:
    """One timed subnet: its name, genome and mean end-to-end latency, and its line in the file."""

    name: str
    genome: Genome
    mean_ms: float
    line: int


@dataclass(frozen=True)
class SubnetTimings:
    """A filled timings file: the per-call overhead and the timed subnets."""

    source: str
    overhead_ms: float
    overhead_line: int
    subnets: tuple[SubnetTiming, ...]


def write_timings_template(path: str | Path, space: SearchSpace, genomes: Sequence[Genome],
                           names: Sequence[str]) -> Path:
    """``subnets.csv`` with the empty model and ``genomes`` (named ``names``), ``mean_ms`` left empty."""
    buf = io.StringIO()
    buf.write("## Time each model of subnets/ end to end on the device (one call, batch and threads as in\n"
              "## blocks.csv) and write its mean latency in ms; 'empty' is the empty model (the per-call overhead).\n")
    for name, value in (("format", TIMINGS_FORMAT), ("space", space.name), ("space_fingerprint", space.fingerprint())):
        buf.write(f"# {name}: {value}\n")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerow([OVERHEAD_ROW, "", ""])
    for name, genome in zip(names, genomes):
        writer.writerow([name, _genes_json(genome), ""])
    return atomic_write_text(Path(path), buf.getvalue())


def _genes_json(genome: Genome) -> str:
    return json.dumps(genome.as_dict(), separators=(", ", ": "))


# ---- reading --------------------------------------------------------------------------------------
def read_timings(path: str | Path, space: SearchSpace) -> SubnetTimings:
    """Read a filled timings file of ``space``; every problem is one InputError naming file, line and field."""
    src = str(path)
    text = read_text(path, what="subnet timings file")
    raw_header, rows = parse_csv(text, src, expected=COLUMNS, needs="expected", header_names=_HEADER)
    _check_header({name: (value, line or 1) for name, (value, line) in raw_header.items()}, space, src)
    overhead: tuple[float, int] | None = None
    subnets: list[SubnetTiming] = []
    names: dict[str, int] = {}
    for located, number in rows:
        number = number or 1
        row = {column: value for column, (value, _) in located.items()}
        name = row["name"]
        if not name:
            raise InputError("empty subnet name", source=src, field="name", line=number)
        if name in names:
            raise InputError(f"subnet {shown(name)} appears twice (first on line {names[name]})", source=src,
                             field="name", line=number)
        names[name] = number
        ms = _time(row["mean_ms"], name, src, number, minimum=0.0 if name == OVERHEAD_ROW else None)
        if name == OVERHEAD_ROW:
            overhead = (ms, number)
        else:
            subnets.append(SubnetTiming(name, _genome(row["genome"], space, src, number), ms, number))
    if overhead is None:
        raise InputError(f"missing the row {OVERHEAD_ROW!r}: time the empty model (subnets/{OVERHEAD_ROW}.onnx) for "
                         "the per-call overhead, or write 0", source=src, field="name")
    if len(subnets) < MIN_SUBNETS:
        raise InputError(f"{len(subnets)} timed subnet(s); a calibration needs at least {MIN_SUBNETS}", source=src,
                         field="name")
    return SubnetTimings(src, overhead[0], overhead[1], tuple(subnets))


def _check_header(header: dict[str, tuple[str, int]], space: SearchSpace, src: str) -> None:
    """Refuse a file of another format or space (by name, and by fingerprint when it records one)."""
    value, line = header.get("format", ("", 1))
    if value != TIMINGS_FORMAT:
        raise InputError(f"expected '# format: {TIMINGS_FORMAT}', got {shown(value) if value else 'none'}",
                         source=src, field="format", line=line)
    value, line = header.get("space", ("", 1))
    if value != space.name:
        raise InputError(f"the timings are of space {shown(value)}, not {space.name!r}", source=src, field="space",
                         line=line)
    value, line = header.get("space_fingerprint", ("", 1))
    if value and value != space.fingerprint():
        raise InputError(f"the timings were made for another {space.name!r} space (fingerprint {shown(value)}, the "
                         f"table's space has {space.fingerprint()})", source=src, field="space_fingerprint", line=line)


def _time(text: str, name: str, src: str, line: int, *, minimum: float | None) -> float:
    """A finite latency in ms: > 0 for a subnet, >= ``minimum`` for the empty model."""
    if not text:
        model = f"subnets/{name}.onnx" if name else "its model"
        raise InputError(f"not filled in: time {model} on the device and write its mean latency in ms", source=src,
                         field="mean_ms", line=line)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InputError(f"expected a finite number of ms, got {shown(text)}", source=src, field="mean_ms", line=line)
    if value < 0 or (minimum is None and value == 0):
        expected = "a latency >= 0" if minimum is not None else "a latency > 0"
        raise InputError(f"got {value!r}, expected {expected}", source=src, field="mean_ms", line=line)
    return value


def _genome(text: str, space: SearchSpace, src: str, line: int) -> Genome:
    if not text:
        raise InputError("empty; expected the subnet's genes as a JSON object", source=src, field="genome", line=line)
    values: Any = parse_json(text, source=f"{src}:{line}")
    if not isinstance(values, dict):
        raise InputError(f"expected a JSON object of gene values, got {type(values).__name__}", source=src,
                         field="genome", line=line)
    try:
        return space.make(values, source=src)
    except InputError as err:
        raise InputError(err.detail, source=src, field=f"genome.{err.field}" if err.field else "genome",
                         line=line) from None


# ---- fitting --------------------------------------------------------------------------------------
def calibrate_from_timings(table: LatencyTable, space: SearchSpace, timings: SubnetTimings, *,
                           table_source: str = "the table") -> tuple[LatencyTable, Calibration]:
    """The table with the device's per-call overhead and a calibration fitted on its subnet timings.

    Every block of every timed subnet must be in the table: a fit on fallback guesses would hide them.
    """
    overhead = timings.overhead_ms
    raw, measured = [], []
    for subnet in timings.subnets:
        blocks = space.blocks(subnet.genome)
        entries = [table.get(b) for b in blocks]
        for block, entry in zip(blocks, entries):
            if entry is None:
                raise InputError(f"block {table.key_for(block)} of {subnet.name} is not in {table_source}; time and "
                                 "fill it first", source=timings.source, field="genome", line=subnet.line)
        value = float(raw_latency(sum(e.mean_ms for e in entries), len(blocks), overhead))
        if value <= 0:
            raise InputError(f"the per-call overhead {overhead:g} ms (line {timings.overhead_line}) x {len(blocks) + 1}"
                             f" calls exceeds the block sum of {subnet.name} in {table_source}: were the blocks and"
                             " the empty model timed the same way?", source=timings.source, field="mean_ms",
                             line=subnet.line)
        raw.append(value)
        measured.append(subnet.mean_ms)
    cal = fit_calibration(raw, measured)
    note = (f"{_NOTE} on {cal.n} subnets timed end to end ({Path(timings.source).name}, in-sample error "
            f"{cal.mape:.1f}%)")
    kept = [n for n in table.header.notes.split("; ") if n and not n.startswith(_NOTE)]  # a refit replaces its note
    notes = "; ".join([*kept, note])
    new = table.with_header(per_call_overhead_ms=_sig(overhead), calibration_scale=_sig(cal.scale),
                            calibration_offset_ms=_sig(cal.offset_ms), calibration_subnets=cal.n, notes=notes)
    return new, cal


_NOTE = "per-call overhead and calibration fitted by qnas latency calibrate"


def _sig(x: float) -> float:
    """Six significant digits, as profiled tables write them."""
    return float(f"{x:.6g}")
