"""Bad numeric CLI flags and ``--space-options``, and run folders with one damaged file."""

from __future__ import annotations

import copy
import functools
import json
import random
from collections.abc import Callable
from typing import Any

from .configs import CONFIG_KINDS, base_config
from .tables import base_table, check_case
from .values import DIR, SPACE_OPTIONS, Case, dump_yaml, encode, noise, random_value, random_word, replaced

__all__ = ["CLI_KINDS", "RUN_KINDS"]

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
        json.dumps({**options, random_word(rng) or "x": 1}),
    ])
    base = check_case("space_options", ".csv", encode(base_table(".csv")))
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
    return {"config.yaml": dump_yaml(_run_config()),
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


def json_damage(rng: random.Random, text: str, *, syntactic: bool, deep: bool = True) -> bytes:
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
        damages += [lambda: encode(json.dumps(replaced(rng, json.loads(text), random_value(rng)), allow_nan=True)),
                    lambda: encode(noise(rng, text, '{}[]",:0.-e\n'))]
    return rng.choice(damages)()


def _manifest_damage(rng: random.Random) -> bytes:
    """A manifest that is surely unusable: syntactically broken, or a key code reads holding another type."""
    if rng.random() < 0.5:
        return json_damage(rng, _run_files()["manifest.json"], syntactic=True)
    from nas.rundir import MANIFEST_TYPES

    data = json.loads(_run_files()["manifest.json"])
    key = rng.choice(sorted(MANIFEST_TYPES))
    data[key] = rng.choice([v for v in (1, "text", [1], {"a": 1}, None, True)
                            if not isinstance(v, MANIFEST_TYPES[key])])
    return encode(json.dumps(data))


def _journal_damage(rng: random.Random) -> bytes:
    lines = _run_files()["trials.jsonl"].splitlines(keepends=True)
    i = rng.randrange(len(lines))
    record = json.loads(lines[i])
    roll = rng.random()
    if roll < 0.5:
        record[rng.choice(sorted(record))] = random_value(rng)
        lines[i] = json.dumps(record, allow_nan=True) + "\n"
    elif roll < 0.75:
        record["metrics"][rng.choice(sorted(record["metrics"]))] = random_value(rng)
        lines[i] = json.dumps(record, allow_nan=True) + "\n"
    else:  # deep lines are the separate kind deep_journal_line
        return json_damage(rng, "".join(lines), syntactic=True, deep=False)
    return encode("".join(lines))


RUN_KINDS: dict[str, Callable[[random.Random], Case]] = {
    "damaged_config": lambda rng: _run_case("damaged_config", "config.yaml", _config_body(rng),
                                            rng.choice([("pareto",), ("export",)])),
    "damaged_manifest": lambda rng: _run_case("damaged_manifest", "manifest.json", _manifest_damage(rng), ("run",)),
    "damaged_journal": lambda rng: _run_case("damaged_journal", "trials.jsonl", _journal_damage(rng), ("pareto",)),
    "deep_journal_line": lambda rng: _run_case("deep_journal_line", "trials.jsonl", encode(
        _run_files()["trials.jsonl"] + "[" * rng.choice([1000, 100_000]) + "]\n" + _run_files()["trials.jsonl"]),
                                               ("pareto",)),
    "damaged_pareto": lambda rng: _run_case("damaged_pareto", "pareto.json", json_damage(
        rng, _run_files()["pareto.json"], syntactic=False), ("export",)),
}


def _config_body(rng: random.Random) -> bytes:
    """A damaged config from one of the config kinds that damage the file itself (not flags or other files)."""
    kind = rng.choice(sorted(set(CONFIG_KINDS) - {"bad_override", "bad_table_reference", "unwritable_output"}))
    body = CONFIG_KINDS[kind](rng).files["exp.yaml"]
    return body if isinstance(body, bytes) else b"\x00" * min(body, 100_000)

