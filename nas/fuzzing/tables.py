"""Damaged latency tables (CSV and JSON), each run through ``qnas latency check``."""

from __future__ import annotations

import copy
import functools
import json
import random
import re
from collections.abc import Callable, Sequence
from typing import Any

from .values import DIR, SPACE_OPTIONS, Case, encode, noise

__all__ = ["TABLE_KINDS", "base_table", "base_table_object", "table_case", "check_case"]


# ---- the valid inputs that the generators damage ---------------------------------------------------
def base_table_object() -> Any:
    """A valid latency table for :data:`SPACE_OPTIONS` (blocks of a few sampled subnets)."""
    import numpy as np

    from predictors.latency.table import Entry, LatencyTable, TableHeader
    from search_spaces import get_space

    space = get_space("mbv3", **SPACE_OPTIONS)
    rng = np.random.default_rng(0)
    blocks = {b.key(): b for g in [space.smallest(), space.largest(), *(space.sample(rng) for _ in range(6))]
              for b in space.blocks(g)}
    entries = [Entry(b, round(0.01 + 0.001 * i, 6), 0.0005, 50) for i, b in enumerate(blocks.values())]
    header = TableHeader(device="fuzz CPU", backend="onnxruntime-int8", space="mbv3", dtype="int8",
                         calibration_scale=0.8, calibration_offset_ms=0.01, calibration_subnets=10,
                         date="2025-01-31T12:00:00+00:00", space_fingerprint=space.fingerprint(),
                         bits_measured_as={4: 8})
    return LatencyTable(header, entries)


@functools.lru_cache(maxsize=None)
def base_table(suffix: str) -> str:
    """The valid table as ``.csv`` or ``.json`` text (built once: generators call it for every case)."""
    table = base_table_object()
    return table.to_json() if suffix == ".json" else table.to_csv()


# ---- table kinds --------------------------------------------------------------------------------------
def table_case(rng: random.Random, suffix: str | None = None) -> Case:
    """One damaged table of a random kind (also used by the config kind that references a table)."""
    kind = rng.choice(sorted(TABLE_KINDS))
    return TABLE_KINDS[kind](rng) if suffix is None else _table_mutation(kind, rng, suffix)


def check_case(kind: str, suffix: str, body: bytes | int) -> Case:
    """``qnas latency check`` of a table file against the space it was made for."""
    name = f"table{suffix}"
    return Case(kind, {name: body}, ("latency", "check", f"{DIR}/{name}", "--space", "mbv3", "--space-options",
                                     json.dumps(SPACE_OPTIONS)), (f"{DIR}/{name}",))


def _table_lines(suffix: str) -> list[str]:
    return base_table(suffix).splitlines(keepends=True)


def _csv_cells(rng: random.Random, mutate: Callable[[list[str], list[str]], None]) -> str:
    """The CSV table with ``mutate(columns, cells)`` applied to one random data row."""
    lines = _table_lines(".csv")
    header_end = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    columns = lines[header_end].strip().split(",")
    row = rng.randrange(header_end + 1, len(lines))
    cells = lines[row].strip().split(",")
    mutate(columns, cells)
    lines[row] = ",".join(cells) + "\n"
    return "".join(lines)


def _json_data() -> dict[str, Any]:
    return json.loads(base_table(".json"))


def _json_text(data: Any) -> str:
    return json.dumps(data, indent=1, allow_nan=True)


_NON_FINITE_CSV = ["nan", "inf", "-inf", "1e999", "NaN", "Infinity", "-1e400"]
_NUMBER_HEADERS = ["threads", "batch", "calibration_subnets", "per_call_overhead_ms", "calibration_scale",
                   "calibration_offset_ms"]


def _set_cell(rng: random.Random, values: list[Any], columns: list[str] | None = None) -> Callable[..., None]:
    def mutate(cols: list[str], cells: list[str]) -> None:
        names = columns or cols
        i = cols.index(rng.choice(names))
        cells[i] = str(rng.choice(values))
    return mutate


def _json_literal(name: str, literal: str) -> str:
    """The JSON table text with the first value of key ``name`` replaced by raw ``literal`` (NaN, deep arrays)."""
    text = base_table(".json")
    return re.sub(rf'"{name}": ("[^"]*"|[^,}}\n]+)', lambda m: f'"{name}": {literal}', text, count=1)


def _json_entry(rng: random.Random, values: list[Any], columns: Sequence[str]) -> str:
    data = _json_data()
    entry = rng.choice(data["entries"])
    entry[rng.choice(list(columns))] = rng.choice(values)
    return _json_text(data)


def _json_header(rng: random.Random, values: list[Any], names: Sequence[str]) -> str:
    data = _json_data()
    data["header"][rng.choice(list(names))] = rng.choice(values)
    return _json_text(data)


def _csv_header(rng: random.Random, values: list[Any], names: Sequence[str]) -> str:
    name = rng.choice(list(names))
    lines = [f"# {name}: {rng.choice(values)}\n" if line.startswith(f"# {name}:") else line
             for line in _table_lines(".csv")]
    return "".join(lines)


_STATS = ["mean_ms", "std_ms", "count"]
_INTS = ["in_size", "in_ch", "out_ch", "kernel", "stride", "mid_ch", "w_bits", "a_bits"]
_ALL_COLUMNS = ["op", *_INTS[:6], "se", "act", "shortcut", *_INTS[6:], *_STATS]


def _table_mutation(kind: str, rng: random.Random, suffix: str) -> Case:
    """The table of ``kind`` in format ``suffix``."""
    return check_case(kind, suffix, _TABLE_MUTATIONS[kind](rng, suffix))


_TABLE_MUTATIONS: dict[str, Callable[[random.Random, str], bytes | int]] = {
    "binary": lambda rng, s: bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))) + b"\x00"
    + encode(base_table(s))[: rng.randint(0, 500)],
    "non_utf8": lambda rng, s: (lambda t, i: t[:i] + rng.choice([b"\xff", b"\xe9", b"\xc3\x28"]) + t[i:])(
        encode(base_table(s)), rng.randint(0, 800)),
    "truncated": lambda rng, s: (lambda t: t[: rng.randint(0, len(t))])(encode(base_table(s))),
    "noise": lambda rng, s: encode(noise(rng, base_table(s), ',"#:\n{}[]\\x0.-e')),
    "non_finite_stat": lambda rng, s: encode(
        _csv_cells(rng, _set_cell(rng, _NON_FINITE_CSV, _STATS)) if s == ".csv" else
        _json_literal(rng.choice(_STATS), rng.choice(["NaN", "Infinity", "-Infinity", "1e999", "-1e400"]))),
    "non_finite_header": lambda rng, s: encode(
        (_csv_header if s == ".csv" else _json_header)(rng, ["nan", "inf", float("nan"), float("-inf"), "1e999"],
                                                       _NUMBER_HEADERS)),
    "absurd_size": lambda rng, s: encode(
        _csv_cells(rng, _set_cell(rng, [10**12, -5, 0, 10**30, "9" * 5000, 2**63], _INTS + ["count"]))
        if s == ".csv" else _json_entry(rng, [10**12, -5, 0, 10**30, 2**63, 1e308], _INTS + ["count"])),
    "wrong_type": lambda rng, s: encode(
        _csv_cells(rng, _set_cell(rng, ["", "abc", "1.5", "true", "0x10", "é", '"']))
        if s == ".csv" else _json_entry(rng, ["", "abc", 1.5, True, None, [], {}, [1, [2]]], _ALL_COLUMNS)),
    "columns": lambda rng, s: encode(_columns(rng, s)),
    "header": lambda rng, s: encode(_header(rng, s)),
    "rows": lambda rng, s: encode(_rows(rng, s)),
    "deep_nesting": lambda rng, s: encode(
        _csv_header(rng, ["[" * 100_000 + "]" * 100_000, '{"4": ' * 5000 + "8" + "}" * 5000], ["bits_measured_as"])
        if s == ".csv" else _json_literal(rng.choice(["notes", "mean_ms", "op"]),
                                          (lambda n: "[" * n + "]" * n)(rng.choice([65, 1000, 100_000])))),
    "huge_field": lambda rng, s: encode(
        _csv_cells(rng, _set_cell(rng, ['"' + "x" * 200_000 + '"', "y" * 200_000])) if s == ".csv" else
        _json_entry(rng, ["x" * 200_000], ["op", "act"])),
    "oversized": lambda rng, s: rng.randint(32 * 2**20 + 1, 2**34),
    "structure": lambda rng, s: encode(rng.choice(
        ["[]", "{}", "42", '{"header": {}, "entries": {}}', '{"header": [], "entries": []}', "null",
         '{"header": {"format": "qnas-latency-table/1"}, "entries": [], "extra": 1}']) if s == ".json" else
        rng.choice(["", "\n", "# format: qnas-latency-table/1\n", "op\n", ",,,\n", "#\n##\n"])),
}


def _columns(rng: random.Random, suffix: str) -> str:
    if suffix == ".json":
        data = _json_data()
        entry = rng.choice(data["entries"])
        name = rng.choice(_ALL_COLUMNS)
        if rng.random() < 0.5:
            del entry[name]
        else:
            entry[name + rng.choice(["_", "s", "x"])] = entry[name]
        return _json_text(data)
    lines = _table_lines(".csv")
    i = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    cols = lines[i].strip().split(",")
    j = rng.randrange(len(cols))
    cols[j] = rng.choice(["", cols[j] + "x", cols[(j + 1) % len(cols)], "mean ms"])
    lines[i] = ",".join(cols) + "\n"
    return "".join(lines)


def _header(rng: random.Random, suffix: str) -> str:
    names = ["format", "device", "backend", "space", "date", "space_fingerprint", "bits_measured_as", "threads"]
    name = rng.choice(names)
    bad = rng.choice(["", "x", "qnas-latency-table/2", "2025-13-45", "zz" * 8, '{"4": 99}', '{"4": [8]}',
                      "[4, 8]", '{"a": 8}', "-3", "0", "mbv2"])
    if rng.random() < 0.3:  # an unknown or repeated field instead
        text = base_table(suffix)
        if suffix == ".csv":
            return text.replace("# device:", rng.choice(["# devise:", "# format: x\n# device:", "# device:"]), 1) \
                .replace("# backend:", "# backend: a\n# backend:", 1)
        return text.replace('"device":', '"devise":', 1)
    return (_csv_header if suffix == ".csv" else _json_header)(rng, [bad], [name])


def _rows(rng: random.Random, suffix: str) -> str:
    lines = _table_lines(suffix)
    if suffix == ".json":
        data = _json_data()
        roll = rng.random()
        if roll < 0.3:
            data["entries"] = []
        elif roll < 0.6:
            data["entries"].append(copy.deepcopy(data["entries"][0]))
        else:
            data["entries"][rng.randrange(len(data["entries"]))] = rng.choice([1, "row", [], None])
        return _json_text(data)
    first = next(i for i, line in enumerate(lines) if not line.startswith("#")) + 1
    roll = rng.random()
    if roll < 0.3:
        return "".join(lines[:first])  # no rows
    if roll < 0.6:
        return "".join(lines + [lines[first]])  # a duplicate row
    row = rng.randrange(first, len(lines))
    cells = lines[row].rstrip("\n").split(",")
    lines[row] = ",".join(cells[: rng.randrange(len(cells))] + (["1"] * rng.randint(1, 3) if rng.random() < 0.5
                                                                    else [])) + "\n"
    return "".join(lines)


TABLE_KINDS: dict[str, Callable[[random.Random], Case]] = {
    kind: (lambda kind: lambda rng: _table_mutation(kind, rng, rng.choice([".csv", ".json"])))(kind)
    for kind in _TABLE_MUTATIONS
}

