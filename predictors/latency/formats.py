"""Text formats of latency tables: CSV and JSON to raw ``name -> (value, line)`` records.

Only structure is checked here (columns, cells, JSON shape); :mod:`.table` types and validates the
values. Line numbers are 1-based and point at the offending line of the file.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from typing import Any

from search_spaces import InputError
from search_spaces.errors import nearest
from search_spaces.inputs import parse_json as load_json

__all__ = ["parse_csv", "parse_json", "SIGNATURE_COLUMNS", "STAT_COLUMNS", "COLUMNS"]

SIGNATURE_COLUMNS = ("op", "in_size", "in_ch", "out_ch", "kernel", "stride", "mid_ch", "se", "act", "shortcut",
                     "w_bits", "a_bits")
STAT_COLUMNS = ("mean_ms", "std_ms", "count")
COLUMNS = SIGNATURE_COLUMNS + STAT_COLUMNS
Located = dict[str, tuple[Any, "int | None"]]
Rows = list[tuple[Located, "int | None"]]


def check_columns(names: list[str], src: str, line: int | None, where: str = "column", *,
                  expected: Sequence[str] = COLUMNS, needs: str = "a table needs") -> None:
    """Refuse unknown, repeated and missing columns, naming the first offender."""
    for name in names:
        if name not in expected:
            raise InputError(f"unknown {where}{nearest(name, expected)} (expected: {', '.join(expected)})",
                             source=src, field=name or None, line=line)
        if names.count(name) > 1:
            raise InputError(f"{where} appears twice", source=src, field=name, line=line)
    missing = [c for c in expected if c not in names]
    if missing:
        raise InputError(f"missing {where}(s) {', '.join(missing)} ({needs}: {', '.join(expected)})",
                         source=src, field=missing[0], line=line)


def parse_csv(text: str, src: str, *, expected: Sequence[str] = COLUMNS, needs: str = "a table needs",
              header_names: Sequence[str] | None = None) -> tuple[Located, Rows]:
    """``# name: value`` header lines (``##`` lines are free comments), a column row, data rows.

    ``expected``: the columns (any order, each once); ``header_names``: the only header fields allowed
    (None: any). Shared by latency tables and the subnet timings files of ``qnas latency calibrate``.
    """
    header: Located = {}
    columns: list[str] | None = None
    rows: Rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("##") or stripped == "#":
            continue
        if stripped.startswith("#"):
            if columns is not None:
                raise InputError("header lines must come before the column row", source=src, line=number)
            name, sep, value = stripped[1:].partition(":")
            if header_names is not None and (not sep or name.strip() not in header_names):
                raise InputError(f"expected a header line '# name: value' with name one of {', '.join(header_names)}"
                                 f"{nearest(name.strip(), header_names)}", source=src, field=name.strip() or None,
                                 line=number)
            if not sep:
                raise InputError("expected a header line '# name: value' (use '##' for comments)", source=src,
                                 line=number)
            if name.strip() in header:
                raise InputError("header field appears twice", source=src, field=name.strip(), line=number)
            header[name.strip()] = (value.strip(), number)
            continue
        try:
            cells = [c.strip() for c in next(csv.reader([line]))]
        except csv.Error as err:  # e.g. a cell beyond csv's field size limit
            raise InputError(f"not a CSV row: {err}", source=src, line=number) from None
        if columns is None:
            columns = cells
            check_columns(columns, src, number, expected=expected, needs=needs)
            continue
        if len(cells) != len(columns):
            raise InputError(f"expected {len(columns)} cells, got {len(cells)}", source=src, field="row", line=number)
        rows.append(({c: (v, number) for c, v in zip(columns, cells)}, number))
    if columns is None:
        raise InputError(f"no column row found (expected: {', '.join(expected)})", source=src, field="columns")
    return header, rows


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _entry_lines(text: str) -> list[int]:
    """Line of each element of the top-level "entries" array (best effort; [] when not found)."""
    match = re.search(r'"entries"\s*:\s*\[', text)
    if not match:
        return []
    decoder, pos, lines = json.JSONDecoder(), match.end(), []
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return lines
        try:
            _, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return lines
        lines.append(_line_of(text, pos))
        pos = end


def parse_json(text: str, src: str) -> tuple[Located, Rows]:
    """``{"header": {...}, "entries": [{...}, ...]}``."""
    data = load_json(text, source=src)  # depth and number limits, one error naming the file
    if not isinstance(data, dict) or not isinstance(data.get("header"), dict) or not isinstance(
            data.get("entries"), list):
        raise InputError('expected an object {"header": {...}, "entries": [...]}', source=src, line=1)
    extra = sorted(set(data) - {"header", "entries"})
    if extra:
        raise InputError(f"unknown top-level key{nearest(extra[0], ['header', 'entries'])}", source=src,
                         field=extra[0])
    start = text.find('"header"')
    header: Located = {}
    for name, value in data["header"].items():
        at = text.find(f'"{name}"', start)
        header[name] = (value, _line_of(text, at) if at >= 0 else None)
    lines = _entry_lines(text)
    rows: Rows = []
    for i, item in enumerate(data["entries"]):
        line = lines[i] if i < len(lines) else None
        if not isinstance(item, dict):
            raise InputError(f"expected an object, got {type(item).__name__}", source=src, field=f"entries[{i}]",
                             line=line)
        check_columns(list(item), src, line, where="key")
        rows.append(({k: (v, line) for k, v in item.items()}, line))
    return header, rows
