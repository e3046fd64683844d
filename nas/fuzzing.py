"""Malformed configs, latency tables and flags, and a harness that runs them through the ``qnas`` CLI.

Why here: the property test (``tests/test_bad_input.py``, driven by hypothesis) and the benchmark
(``experiments/benchmarks/fuzz_inputs.py``, driven by a seeded ``random.Random``) must try the same
inputs, so every generator takes a ``random.Random`` and returns a :class:`Case`. A case is handled
when ``qnas`` exits 0 (the input happened to be valid) or exits 2 with exactly one stderr line
``error: ...`` that names the input (file or flag), without a traceback and within
:data:`TIME_LIMIT_S` seconds (:func:`run_case`).

Families (:data:`FAMILIES`): ``config`` (``qnas validate`` of a damaged experiment YAML, drawn from
four valid ones, the search one referencing a latency table), ``table`` (``qnas latency check`` of a
damaged CSV or JSON table), ``cli`` (bad numeric flags and ``--space-options``) and ``run`` (``qnas
pareto``, ``export`` or ``run --resume`` of a run folder with one damaged file). Each kind names one
class of bad input.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import gc
import io
import json
import random
import re
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Case", "Outcome", "FAMILIES", "TIME_LIMIT_S", "SPACE_OPTIONS", "base_config", "base_table",
           "run_case", "generate", "warmed_up"]

TIME_LIMIT_S = 1.0
"""Longest a bad input may take to be refused (the issue's bound)."""

DIR = "@DIR@"
"""Placeholder for the case's folder in file contents and arguments."""

SPACE_OPTIONS: dict[str, Any] = {
    "in_channels": 1, "num_classes": 10, "image_size": 8, "stem_channels": 8, "stage_channels": [16, 24],
    "stage_strides": [1, 2], "stage_se": [False, True], "stage_act": ["relu", "hswish"], "depths": [1, 2],
    "kernels": [3, 5], "expands": [3, 6], "head_channels": 32, "w_bits": [4, 8], "a_bits": [4, 8],
}
"""A small ``mbv3`` space for the ``digits`` images (valid configs validate in a fraction of a second)."""


@dataclass(frozen=True)
class Case:
    """One input: files to write into a fresh folder, the ``qnas`` arguments, and what an error must name.

    ``files`` values are bytes, or an int for a sparse file of that many bytes (an oversized input
    without writing megabytes). ``@DIR@`` in contents and arguments becomes the folder."""

    kind: str
    files: dict[str, bytes | int]
    argv: tuple[str, ...]
    names: tuple[str, ...]  # an error line must contain one of these (after @DIR@ is replaced)


@dataclass(frozen=True)
class Outcome:
    """What ``qnas`` did with a case, and whether that is the promised handling."""

    kind: str
    exit_code: int | None
    stderr: str
    seconds: float  # wall clock: what the promise is about
    cpu_seconds: float  # this process's CPU time: tells a slow case from a busy machine
    problem: str = ""  # empty when handled

    @property
    def handled(self) -> bool:
        return not self.problem


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


def base_config() -> dict[str, Any]:
    """A valid search config (digits, small mbv3, a latency table file, nsga2) as data."""
    return {
        "name": "fuzz", "seed": 0,
        "dataset": {"name": "digits", "options": {"max_train": 200}},
        "search_space": {"name": "mbv3", "options": copy.deepcopy(SPACE_OPTIONS)},
        "latency": {"table": "table.csv"},
        "search": {"algorithm": "nsga2", "options": {"population_size": 8},
                   "objectives": [{"metric": "size_kb", "direction": "min"}, {"metric": "latency_ms"}],
                   "constraints": ["params >= 1000"], "budget": 24},
        "executor": {"kind": "local", "threads": 1},
        "output": {"root": f"{DIR}/runs", "export_top": 2},
    }


def _predictor_config() -> dict[str, Any]:
    """A valid config of the quickstart's shape: supernet, profiled latency, predictors, predictor-nsga2."""
    data = base_config()
    del data["latency"]["table"]
    data["latency"]["profile"] = {"backend": "onnxruntime-int8", "threads": 1, "cache_dir": f"{DIR}/cache"}
    data["supernet"] = {"warmup_epochs": 0, "epochs": 1, "batch_size": 64, "lr": 0.05, "bn_calib_samples": 64}
    data["predictors"] = {"model": "ensemble", "quant_sensitivity": True}
    data["search"] = {"algorithm": "predictor-nsga2", "options": {"n_startup_trials": 10, "batch_size": 4,
                                                                   "population_size": 8, "generations": 2},
                      "objectives": [{"metric": "accuracy", "direction": "max"}, {"metric": "latency_ms"}],
                      "constraints": ["size_kb <= 60"], "budget": 20}
    return data


def _lpgnas_config() -> dict[str, Any]:
    """A valid ``kind: lpgnas`` config (Cora, a small GNN space)."""
    return {"kind": "lpgnas", "name": "fuzz-gnn", "seed": 0, "dataset": {"name": "cora"},
            "search_space": {"name": "gnn", "options": {"num_layers": 2, "in_features": 1433, "num_classes": 7,
                                                        "num_nodes": 2708, "num_edges": 10556,
                                                        "ops": ["linear", "gcn"], "hidden": [8, 16],
                                                        "heads": [1, 2], "w_bits": [4, 8]}},
            "lpgnas": {"lambdas": [0.01, 0.1], "search_epochs": 2, "warmup_epochs": 1, "retrain_epochs": 2,
                       "seeds": 1},
            "output": {"root": f"{DIR}/runs"}}


def _space_search_config() -> dict[str, Any]:
    """A valid ``kind: space-search`` config (its lookup table would be built by a run)."""
    return {"kind": "space-search", "name": "fuzz-spaces", "seed": 0, "dataset": {"name": "cifar10"},
            "space_search": {"macro": "c10", "lut": {"rows": 4, "teacher_epochs": 1},
                             "qt": {"latency_constraints_ms": [0.1, 0.2], "n_subnets": 1000, "top_k": 10},
                             "evolution": {"population": 20, "sample": 5, "total": 50}},
            "output": {"root": f"{DIR}/runs"}}


BASE_CONFIGS: dict[str, Callable[[], dict[str, Any]]] = {
    "search": base_config, "predictors": _predictor_config, "lpgnas": _lpgnas_config,
    "space-search": _space_search_config}
"""The valid configs that config kinds damage (one drawn per case)."""


def _base(rng: random.Random) -> dict[str, Any]:
    return BASE_CONFIGS[rng.choice(sorted(BASE_CONFIGS))]()


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)


# ---- random values and places ------------------------------------------------------------------------
def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in nested dicts and lists (containers and leaves)."""
    out = [prefix] if prefix else []
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        out += _paths(value, (*prefix, key))
    return out


def _set(data: Any, path: Sequence[Any], value: Any) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


def _delete(data: Any, path: Sequence[Any]) -> None:
    for key in path[:-1]:
        data = data[key]
    del data[path[-1]]


_SENTINEL = "QNAS_FUZZ_SENTINEL"


def _with_text_at(rng: random.Random, data: Any, text: str) -> str:
    """The YAML of ``data`` with ``text`` (raw YAML) as the value at a random key path."""
    data = copy.deepcopy(data)
    _set(data, rng.choice(_paths(data)), _SENTINEL)
    return _dump(data).replace(_SENTINEL, text, 1)


def _word(rng: random.Random) -> str:
    pool = ["budget", "options", "x", "depths", "image_size", "threads", "kind", "name", "root", "élan", "a b",
            "", "0", "__class__", "seed", "table", "metric"]
    return rng.choice(pool) + ("" if rng.random() < 0.5 else str(rng.randint(0, 99)))


def _scalar(rng: random.Random) -> Any:
    """A random scalar of any YAML type, biased to edge cases."""
    choices: list[Callable[[], Any]] = [
        lambda: rng.choice([0, -1, 1, 2, -(10 ** rng.randint(1, 30)), 10 ** rng.randint(1, 40)]),
        lambda: rng.choice([0.0, -0.5, 1e-300, 1e300, float("inf"), float("-inf"), float("nan"), 3.5]),
        lambda: rng.choice([True, False, None]),
        lambda: rng.choice(["", " ", "abc", "é" * 3, "\t", "1e3", "0x10", "null", "~", "yes", "-", "a\nb",
                            "x" * rng.randint(100, 5000), "\u202e\u0000\u0007"]),
    ]
    return rng.choice(choices)()


def _value(rng: random.Random, depth: int = 0) -> Any:
    """A random YAML value: a scalar, or a small list or mapping of them."""
    roll = rng.random()
    if depth < 2 and roll < 0.2:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if depth < 2 and roll < 0.35:
        return {_word(rng): _value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    return _scalar(rng)


def _big_list(rng: random.Random) -> str:
    """A YAML/JSON flow list of 65 up to 10**6 integers."""
    return _list_text(rng.choice([65, 300, 5_000, 100_000, 1_000_000]))


@functools.lru_cache(maxsize=None)
def _list_text(n: int) -> str:
    return "[" + ", ".join(map(str, range(n))) + "]"


# ---- config kinds -------------------------------------------------------------------------------------
def _config_case(kind: str, text: str | bytes | int, *, table: bytes | int | None = None,
                 extra: tuple[str, ...] = (), files: dict[str, bytes | int] | None = None) -> Case:
    body = text.encode("utf-8") if isinstance(text, str) else text
    table_file = table if table is not None else base_table(".csv").encode()
    return Case(kind, {"exp.yaml": body, "table.csv": table_file, **(files or {})},
                ("validate", f"{DIR}/exp.yaml", *extra),
                (f"{DIR}/exp.yaml", f"{DIR}/table.csv", "--set"))


def _alias_bomb(rng: random.Random) -> str:
    width, levels = rng.randint(3, 12), rng.randint(4, 12)
    names = [f"l{i}" for i in range(levels)]
    parts = [f"&{names[0]} [" + ", ".join(["lol"] * width) + "]"]
    parts += [f"&{names[i]} [" + ", ".join([f"*{names[i - 1]}"] * width) + "]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


def _nested(rng: random.Random) -> str:
    n = rng.choice([65, 100, 1000, 20_000])
    return "[" * n + "]" * n if rng.random() < 0.5 else "{a: " * n + "1" + "}" * n


CONFIG_KINDS: dict[str, Callable[[random.Random], Case]] = {
    "binary": lambda rng: _config_case("binary", bytes(rng.randrange(256) for _ in range(rng.randint(1, 400)))
                                       + b"\x00" + _dump(_base(rng)).encode()[: rng.randint(0, 300)]),
    "non_utf8": lambda rng: _config_case("non_utf8", (lambda t, i: t[:i] + rng.choice(
        [b"\xff", b"\xc3\x28", b"\xe9", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]) + t[i:])(
        _dump(_base(rng)).encode(), rng.randint(0, 200))),
    "alias_bomb": lambda rng: _config_case("alias_bomb", _with_text_at(rng, _base(rng), _alias_bomb(rng))),
    "recursive_alias": lambda rng: _config_case("recursive_alias", _with_text_at(
        rng, _base(rng), rng.choice(["&r [1, *r]", "&r {k: *r}", "&r [[*r]]", "&r {a: [1, {b: *r}]}"]))),
    "deep_nesting": lambda rng: _config_case("deep_nesting", _with_text_at(rng, _base(rng), _nested(rng))),
    "non_finite": lambda rng: _config_case("non_finite", _with_text_at(
        rng, _with_new_option(rng, _base(rng)), rng.choice([".inf", "-.inf", ".nan", ".NaN", "1e999",
                                                              "-1e999", "[1, .inf]", "{x: .nan}"]))),
    "absurd_size": lambda rng: _config_case("absurd_size", _dump(_absurd(rng, _base(rng)))),
    "huge_list": lambda rng: _config_case("huge_list", _with_text_at(rng, _base(rng), _big_list(rng))),
    "huge_integer": lambda rng: _config_case("huge_integer", _with_text_at(
        rng, _base(rng), "1" * rng.choice([20, 400, 4301, 20_000]))),
    "wrong_type": lambda rng: _config_case("wrong_type", _dump(_replaced(rng, _base(rng), _value(rng)))),
    "unknown_key": lambda rng: _config_case("unknown_key", _dump(_added_key(rng, _base(rng)))),
    "missing_key": lambda rng: _config_case("missing_key", _dump(_deleted(rng, _base(rng)))),
    "truncated": lambda rng: _config_case("truncated", (lambda t: t[: rng.randint(0, len(t))])(
        _dump(_base(rng)))),
    "yaml_noise": lambda rng: _config_case("yaml_noise", _noise(rng, _dump(_base(rng)), ":-[]{}&*!|>'\"%@`#,?\t\n")),
    "document_shape": lambda rng: _config_case("document_shape", rng.choice(
        ["", "\n\n", "# only a comment\n", "42\n", "[1, 2]\n", "just text\n", "---\na: 1\n---\nb: 2\n",
         "!!python/object:os.system ls\n", "? [a]\n: 1\n", "1: 2\n", "dataset: !!binary aGVsbG8=\n",
         "null: 1\n", "dataset: 2001-12-14\n"])),
    "oversized": lambda rng: _config_case("oversized", rng.choice([
        _dump(_base(rng)) + "#" + "x" * rng.randint(70_000, 300_000) + "\n", rng.randint(70_000, 10**9)])),
    "bad_override": lambda rng: _config_case("bad_override", _dump(_base(rng)), extra=_bad_override(rng)),
    "unwritable_output": lambda rng: _config_case("unwritable_output", _with_text_at_path(
        _base(rng), ("output", "root"), rng.choice(["/proc/qnas-fuzz/runs", f"{DIR}/file.txt/runs",
                                                        "/dev/null/runs", f"{DIR}/file.txt"])),
        files={"file.txt": b"not a folder\n"}),
    "bad_table_reference": lambda rng: _config_case("bad_table_reference", _dump(base_config()),
                                                    table=_table_case(rng, ".csv").files["table.csv"]),
}


def _with_new_option(rng: random.Random, data: dict[str, Any]) -> dict[str, Any]:
    """Sometimes add a key to a free-form options mapping, so values also land where no model checks them."""
    options = [p for p in _paths(data) if p[-1] == "options" and isinstance(_get(data, p), dict)]
    if options and rng.random() < 0.5:
        _get(data, rng.choice(options))[_word(rng) or "x"] = 1
    return data


def _absurd(rng: random.Random, data: dict[str, Any]) -> dict[str, Any]:
    """A number (a size, count, epoch, budget, ...) set to zero, a negative number or something astronomical."""
    numeric = [p for p in _paths(data) if _is_number(_get(data, p)) or (
        isinstance(_get(data, p), list) and _get(data, p) and all(_is_number(v) for v in _get(data, p)))]
    path = rng.choice(numeric)
    value: Any = rng.choice([0, -1, -(10**6), 10 ** rng.randint(5, 15), 2**63, 10**100, 1e300])
    if isinstance(_get(data, path), list):
        value = [1, value] if rng.random() < 0.5 else [value] * 2
    _set(data, path, value)
    return data


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _replaced(rng: random.Random, data: dict[str, Any], value: Any) -> dict[str, Any]:
    _set(data, rng.choice(_paths(data)), value)
    return data


def _added_key(rng: random.Random, data: dict[str, Any]) -> dict[str, Any]:
    mappings = [p for p in [(), *_paths(data)] if isinstance(_get(data, p), dict)]
    target = _get(data, rng.choice(mappings))
    name = rng.choice([_word(rng), *(k[:-1] + "s" for k in target if isinstance(k, str) and k)])
    target[name] = _value(rng)
    return data


def _deleted(rng: random.Random, data: dict[str, Any]) -> dict[str, Any]:
    _delete(data, rng.choice(_paths(data)))
    return data


def _get(data: Any, path: Sequence[Any]) -> Any:
    for key in path:
        data = data[key]
    return data


def _with_text_at_path(data: dict[str, Any], path: tuple[str, ...], text: str) -> str:
    _set(data, path, text)
    return _dump(data)


def _noise(rng: random.Random, text: str, alphabet: str) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(chars) + 1)
        op = rng.random()
        if op < 0.4 and chars:
            chars[min(i, len(chars) - 1)] = rng.choice(alphabet)
        elif op < 0.7:
            chars.insert(i, rng.choice(alphabet))
        elif chars:
            del chars[min(i, len(chars) - 1)]
    return "".join(chars)


def _bad_override(rng: random.Random) -> tuple[str, ...]:
    key = ".".join(str(k) for k in rng.choice(_paths(_base(rng))))
    value = rng.choice([".inf", ".nan", "-1e999", str(10**30), _big_list(rng),
                        _alias_bomb(rng), "&r [*r]", _nested(rng), "[1,", "{", "'unterminated", "1" * 5000,
                        "[a, b]", "{x: 1}", "", "null"])
    text = rng.choice([f"{key}={value}", f"{key}", f"={value}", f"{key}..x={value}", f"{_word(rng)}.{key}={value}"])
    return ("--set", text)


# ---- table kinds --------------------------------------------------------------------------------------
def _table_case(rng: random.Random, suffix: str | None = None) -> Case:
    """One damaged table of a random kind (also used by the config kind that references a table)."""
    kind = rng.choice(sorted(TABLE_KINDS))
    return TABLE_KINDS[kind](rng) if suffix is None else _table_mutation(kind, rng, suffix)


def _check_case(kind: str, suffix: str, body: bytes | int) -> Case:
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
    return _check_case(kind, suffix, _TABLE_MUTATIONS[kind](rng, suffix))


def _encode(text: str) -> bytes:
    return text.encode("utf-8")


_TABLE_MUTATIONS: dict[str, Callable[[random.Random, str], bytes | int]] = {
    "binary": lambda rng, s: bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))) + b"\x00"
    + _encode(base_table(s))[: rng.randint(0, 500)],
    "non_utf8": lambda rng, s: (lambda t, i: t[:i] + rng.choice([b"\xff", b"\xe9", b"\xc3\x28"]) + t[i:])(
        _encode(base_table(s)), rng.randint(0, 800)),
    "truncated": lambda rng, s: (lambda t: t[: rng.randint(0, len(t))])(_encode(base_table(s))),
    "noise": lambda rng, s: _encode(_noise(rng, base_table(s), ',"#:\n{}[]\\x0.-e')),
    "non_finite_stat": lambda rng, s: _encode(
        _csv_cells(rng, _set_cell(rng, _NON_FINITE_CSV, _STATS)) if s == ".csv" else
        _json_literal(rng.choice(_STATS), rng.choice(["NaN", "Infinity", "-Infinity", "1e999", "-1e400"]))),
    "non_finite_header": lambda rng, s: _encode(
        (_csv_header if s == ".csv" else _json_header)(rng, ["nan", "inf", float("nan"), float("-inf"), "1e999"],
                                                       _NUMBER_HEADERS)),
    "absurd_size": lambda rng, s: _encode(
        _csv_cells(rng, _set_cell(rng, [10**12, -5, 0, 10**30, "9" * 5000, 2**63], _INTS + ["count"]))
        if s == ".csv" else _json_entry(rng, [10**12, -5, 0, 10**30, 2**63, 1e308], _INTS + ["count"])),
    "wrong_type": lambda rng, s: _encode(
        _csv_cells(rng, _set_cell(rng, ["", "abc", "1.5", "true", "0x10", "é", '"']))
        if s == ".csv" else _json_entry(rng, ["", "abc", 1.5, True, None, [], {}, [1, [2]]], _ALL_COLUMNS)),
    "columns": lambda rng, s: _encode(_columns(rng, s)),
    "header": lambda rng, s: _encode(_header(rng, s)),
    "rows": lambda rng, s: _encode(_rows(rng, s)),
    "deep_nesting": lambda rng, s: _encode(
        _csv_header(rng, ["[" * 100_000 + "]" * 100_000, '{"4": ' * 5000 + "8" + "}" * 5000], ["bits_measured_as"])
        if s == ".csv" else _json_literal(rng.choice(["notes", "mean_ms", "op"]),
                                          (lambda n: "[" * n + "]" * n)(rng.choice([65, 1000, 100_000])))),
    "huge_field": lambda rng, s: _encode(
        _csv_cells(rng, _set_cell(rng, ['"' + "x" * 200_000 + '"', "y" * 200_000])) if s == ".csv" else
        _json_entry(rng, ["x" * 200_000], ["op", "act"])),
    "oversized": lambda rng, s: rng.randint(32 * 2**20 + 1, 2**34),
    "structure": lambda rng, s: _encode(rng.choice(
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


# ---- CLI kinds ----------------------------------------------------------------------------------------
_BAD_NUMBERS = ["0", "-1", "-100", "abc", "1.5", "", "1e3", "0x10", "--", "9" * 5000]


def _flag_case(rng: random.Random) -> Case:
    command, flags = rng.choice([
        (("latency", "profile", "--space", "mbv3", "--backend", "torch-fp32", "--out", f"{DIR}/t.csv"),
         ["--threads", "--batch", "--runs", "--passes", "--calibration"]),
        (("export", f"{DIR}/run"), ["--rank"]),
        (("latency", "recalibrate", f"{DIR}/t.csv", "--space", "mbv3"), ["--calibration"]),
    ])
    flag = rng.choice(flags)
    value = rng.choice(_BAD_NUMBERS)
    return Case("bad_number_flag", {}, (*command, f"{flag}={value}"), (flag,))


def _space_options_case(rng: random.Random) -> Case:
    options = copy.deepcopy(SPACE_OPTIONS)
    key = rng.choice(sorted(options))
    text = rng.choice([
        "{", "[1, 2]", "null", '"text"', "[" * 100_000, '{"a": ' * 10_000, "NaN", "1" * 5000,
        json.dumps({**options, key: rng.choice([float("nan"), float("inf"), 10**6, -1, 0, 10**30, "x", None,
                                                 [], list(range(10**4))])}),
        json.dumps({**options, _word(rng) or "x": 1}),
    ])
    base = _check_case("space_options", ".csv", _encode(base_table(".csv")))
    argv = list(base.argv)
    argv[argv.index("--space-options") + 1] = text
    return Case("space_options", base.files, tuple(argv), ("--space-options", "--space", *base.names))


CLI_KINDS: dict[str, Callable[[random.Random], Case]] = {"bad_number_flag": _flag_case,
                                                         "space_options": _space_options_case}

# ---- damaged run folders ------------------------------------------------------------------------------
def _run_config() -> dict[str, Any]:
    """The config of the fake run: no file references, a supernet section (so ``qnas export`` reads on)."""
    data = base_config()
    del data["latency"]
    data["supernet"] = {"warmup_epochs": 0, "epochs": 1}
    data["search"]["objectives"] = [{"metric": "size_kb"}, {"metric": "bitops"}]
    return data


@functools.lru_cache(maxsize=None)
def _run_files() -> dict[str, str]:
    """A run folder as an interrupted ``qnas run`` leaves it (without running one): its files as text."""
    from search_spaces import get_space

    space = get_space("mbv3", **SPACE_OPTIONS)
    records = [{"key": g.key, "genome": g.to_dict(), "metrics": {"size_kb": 1.0 + i, "bitops": 9.0 - i,
                                                                  "params": 5000.0}, "sources": {}, "seconds": 0.1,
                "batch": 0, "finished_at": "2025-01-31T12:00:00+00:00"}
               for i, g in enumerate([space.smallest(), space.largest()])]
    return {"config.yaml": _dump(_run_config()),
            "manifest.json": json.dumps({"seed": 0, "status": "interrupted", "command": ["qnas", "run"],
                                         "versions": {}, "space": {"name": "mbv3"}, "resumes": []}, indent=2),
            "trials.jsonl": "".join(json.dumps(r) + "\n" for r in records),
            "pareto.json": json.dumps({"name": "fuzz", "front": [{k: r[k] for k in ("key", "genome", "metrics")}
                                                                 for r in records]}, indent=2)}


def _run_case(kind: str, damaged: str, body: bytes, command: tuple[str, ...]) -> Case:
    files: dict[str, bytes | int] = {f"run/{name}": text.encode() for name, text in _run_files().items()}
    files[f"run/{damaged}"] = body
    return Case(kind, files, (*command[:1], *(("--resume",) if command[0] == "run" else ()), f"{DIR}/run",
                              *command[1:]), (f"{DIR}/run",))


def _json_damage(rng: random.Random, text: str, *, syntactic: bool, deep: bool = True) -> bytes:
    """``text`` (JSON) truncated, made binary or mis-encoded, or (``deep``) deeply nested; unless ``syntactic``,
    also a value of another type at a random key path, or noise."""
    data = text.encode()
    damages: list[Callable[[], bytes]] = [
        lambda: data[: rng.randrange(len(data))],
        lambda: data[: rng.randrange(len(data))] + b"\x00" + data[rng.randrange(len(data)):],
        lambda: data[: rng.randrange(len(data))] + rng.choice([b"\xff", b"\xe9"]) + data[rng.randrange(len(data)):],
    ]
    if deep:
        damages.append(lambda: b"[" * rng.choice([65, 10_000, 1_000_000]))
    if not syntactic:
        damages += [lambda: _encode(json.dumps(_replaced(rng, json.loads(text), _value(rng)), allow_nan=True)),
                    lambda: _encode(_noise(rng, text, '{}[]",:0.-e\n'))]
    return rng.choice(damages)()


def _manifest_damage(rng: random.Random) -> bytes:
    """A manifest that is surely unusable: syntactically broken, or a key code reads holding another type."""
    if rng.random() < 0.5:
        return _json_damage(rng, _run_files()["manifest.json"], syntactic=True)
    from nas.rundir import MANIFEST_TYPES

    data = json.loads(_run_files()["manifest.json"])
    key = rng.choice(sorted(MANIFEST_TYPES))
    data[key] = rng.choice([v for v in (1, "text", [1], {"a": 1}, None, True)
                            if not isinstance(v, MANIFEST_TYPES[key])])
    return _encode(json.dumps(data))


def _journal_damage(rng: random.Random) -> bytes:
    lines = _run_files()["trials.jsonl"].splitlines(keepends=True)
    i = rng.randrange(len(lines))
    record = json.loads(lines[i])
    roll = rng.random()
    if roll < 0.5:
        record[rng.choice(sorted(record))] = _value(rng)
        lines[i] = json.dumps(record, allow_nan=True) + "\n"
    elif roll < 0.75:
        record["metrics"][rng.choice(sorted(record["metrics"]))] = _value(rng)
        lines[i] = json.dumps(record, allow_nan=True) + "\n"
    else:  # deep lines are the separate kind deep_journal_line
        return _json_damage(rng, "".join(lines), syntactic=True, deep=False)
    return _encode("".join(lines))


RUN_KINDS: dict[str, Callable[[random.Random], Case]] = {
    "damaged_config": lambda rng: _run_case("damaged_config", "config.yaml", _config_body(rng),
                                            rng.choice([("pareto",), ("export",)])),
    "damaged_manifest": lambda rng: _run_case("damaged_manifest", "manifest.json", _manifest_damage(rng), ("run",)),
    "damaged_journal": lambda rng: _run_case("damaged_journal", "trials.jsonl", _journal_damage(rng), ("pareto",)),
    "deep_journal_line": lambda rng: _run_case("deep_journal_line", "trials.jsonl", _encode(
        _run_files()["trials.jsonl"] + "[" * rng.choice([1000, 100_000]) + "]\n" + _run_files()["trials.jsonl"]),
                                               ("pareto",)),
    "damaged_pareto": lambda rng: _run_case("damaged_pareto", "pareto.json", _json_damage(
        rng, _run_files()["pareto.json"], syntactic=False), ("export",)),
}


def _config_body(rng: random.Random) -> bytes:
    """A damaged config from one of the config kinds that damage the file itself (not flags or other files)."""
    kind = rng.choice(sorted(set(CONFIG_KINDS) - {"bad_override", "bad_table_reference", "unwritable_output"}))
    body = CONFIG_KINDS[kind](rng).files["exp.yaml"]
    return body if isinstance(body, bytes) else b"\x00" * min(body, 100_000)


FAMILIES: dict[str, dict[str, Callable[[random.Random], Case]]] = {
    "config": CONFIG_KINDS, "table": TABLE_KINDS, "cli": CLI_KINDS, "run": RUN_KINDS}
"""Family -> kind -> generator."""




@contextlib.contextmanager
def warmed_up() -> Iterator[None]:
    """Validate every base config and run one case of every kind, untimed, then hold the heap frozen.

    First calls import torch, scikit-learn, pymoo and torch_geometric and read datasets, which is not what
    the time limit is about. Freezing keeps those objects out of garbage collection: a full collection,
    due every few hundred cases of a long in-process run, would otherwise be timed against whichever case
    it falls in (a ``qnas`` process handles one input and never gets there). Unfrozen on exit."""
    for name, make in BASE_CONFIGS.items():
        run_case(_config_case(f"warm-up/{name}", _dump(make())))
    for family, kinds in FAMILIES.items():
        for kind in kinds:
            run_case(generate(family, kind, random.Random(0)))
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def generate(family: str, kind: str, rng: random.Random) -> Case:
    """One case of ``kind`` (the case's kind is prefixed with the family, e.g. ``table/non_utf8``)."""
    case = FAMILIES[family][kind](rng)
    return Case(f"{family}/{kind}", case.files, case.argv, case.names)


# ---- running a case ----------------------------------------------------------------------------------
def _write(folder: Path, files: dict[str, bytes | int]) -> None:
    for name, body in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(body, int):
            with open(path, "wb") as handle:
                handle.truncate(body)  # sparse: the size is what is being tested
        else:
            path.write_bytes(body.replace(DIR.encode(), str(folder).encode()))


def judge(case: Case, exit_code: int | None, stderr: str, seconds: float, names: Sequence[str]) -> str:
    """Why the outcome breaks the promise, or "" when it keeps it."""
    if "Traceback" in stderr:
        return "traceback on stderr"
    if seconds > TIME_LIMIT_S:
        return f"took {seconds:.2f} s (limit {TIME_LIMIT_S} s)"
    if exit_code == 0:
        return ""
    if exit_code != 2:
        return f"exit code {exit_code}"
    lines = stderr.splitlines()
    if len(lines) != 1:
        return f"{len(lines)} lines on stderr"
    if not lines[0].startswith("error: "):
        return "stderr does not start with 'error: '"
    if not any(name in lines[0] for name in names):
        return f"the error does not name the input ({', '.join(names)})"
    return ""


def run_case(case: Case) -> Outcome:
    """Write the case's files into a fresh folder and run ``nas.cli.main`` on its arguments in this process."""
    from nas.cli import main

    with tempfile.TemporaryDirectory(prefix="qnas-fuzz-") as tmp:
        folder = Path(tmp)
        _write(folder, case.files)
        argv = [a.replace(DIR, tmp) for a in case.argv]
        names = tuple(n.replace(DIR, tmp) for n in case.names)
        err, out = io.StringIO(), io.StringIO()
        start, cpu = time.perf_counter(), time.process_time()
        code: int | None
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                code = main(argv)
        except BaseException:  # noqa: BLE001 - an escaping exception is exactly what is being looked for
            code = None
            err.write(traceback.format_exc())
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    stderr = err.getvalue()
    problem = judge(case, code, stderr, seconds, names)
    if code is None and not problem:
        problem = "an exception escaped main()"
    return Outcome(case.kind, code, stderr, seconds, cpu, problem)
