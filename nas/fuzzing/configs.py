"""Damaged experiment configs, each run through ``qnas validate``; the valid configs they start from."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from typing import Any

from .tables import base_table, table_case
from .values import (
    DIR,
    SPACE_OPTIONS,
    Case,
    big_list,
    delete_at,
    dump_yaml,
    get_at,
    is_number,
    key_paths,
    noise,
    random_value,
    random_word,
    replaced,
    set_at,
    with_text_at,
)

__all__ = ["BASE_CONFIGS", "CONFIG_KINDS", "base_config", "config_case"]


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


def random_base(rng: random.Random) -> dict[str, Any]:
    return BASE_CONFIGS[rng.choice(sorted(BASE_CONFIGS))]()


# ---- config kinds -------------------------------------------------------------------------------------
def config_case(kind: str, text: str | bytes | int, *, table: bytes | int | None = None,
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
    "binary": lambda rng: config_case("binary", bytes(rng.randrange(256) for _ in range(rng.randint(1, 400)))
                                       + b"\x00" + dump_yaml(random_base(rng)).encode()[: rng.randint(0, 300)]),
    "non_utf8": lambda rng: config_case("non_utf8", (lambda t, i: t[:i] + rng.choice(
        [b"\xff", b"\xc3\x28", b"\xe9", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]) + t[i:])(
        dump_yaml(random_base(rng)).encode(), rng.randint(0, 200))),
    "alias_bomb": lambda rng: config_case("alias_bomb", with_text_at(rng, random_base(rng), _alias_bomb(rng))),
    "recursive_alias": lambda rng: config_case("recursive_alias", with_text_at(
        rng, random_base(rng), rng.choice(["&r [1, *r]", "&r {k: *r}", "&r [[*r]]", "&r {a: [1, {b: *r}]}"]))),
    "deep_nesting": lambda rng: config_case("deep_nesting", with_text_at(rng, random_base(rng), _nested(rng))),
    "non_finite": lambda rng: config_case("non_finite", with_text_at(
        rng, _with_new_option(rng, random_base(rng)), rng.choice([".inf", "-.inf", ".nan", ".NaN", "1e999",
                                                              "-1e999", "[1, .inf]", "{x: .nan}"]))),
    "absurd_size": lambda rng: config_case("absurd_size", dump_yaml(_absurd(rng, random_base(rng)))),
    "huge_list": lambda rng: config_case("huge_list", with_text_at(rng, random_base(rng), big_list(rng))),
    "huge_integer": lambda rng: config_case("huge_integer", with_text_at(
        rng, random_base(rng), "1" * rng.choice([20, 400, 4301, 20_000]))),
    "wrong_type": lambda rng: config_case("wrong_type", dump_yaml(replaced(rng, random_base(rng), random_value(rng)))),
    "unknown_key": lambda rng: config_case("unknown_key", dump_yaml(_added_key(rng, random_base(rng)))),
    "missing_key": lambda rng: config_case("missing_key", dump_yaml(_deleted(rng, random_base(rng)))),
    "truncated": lambda rng: config_case("truncated", (lambda t: t[: rng.randint(0, len(t))])(
        dump_yaml(random_base(rng)))),
    "yaml_noise": lambda rng: config_case("yaml_noise", noise(rng, dump_yaml(random_base(rng)),
                                                              ":-[]{}&*!|>'\"%@`#,?\t\n")),
    "document_shape": lambda rng: config_case("document_shape", rng.choice(
        ["", "\n\n", "# only a comment\n", "42\n", "[1, 2]\n", "just text\n", "---\na: 1\n---\nb: 2\n",
         "!!python/object:os.system ls\n", "? [a]\n: 1\n", "1: 2\n", "dataset: !!binary aGVsbG8=\n",
         "null: 1\n", "dataset: 2001-12-14\n"])),
    "oversized": lambda rng: config_case("oversized", rng.choice([
        dump_yaml(random_base(rng)) + "#" + "x" * rng.randint(70_000, 300_000) + "\n", rng.randint(70_000, 10**9)])),
    "bad_override": lambda rng: config_case("bad_override", dump_yaml(random_base(rng)), extra=_bad_override(rng)),
    "unwritable_output": lambda rng: config_case("unwritable_output", _with_text_at_path(
        random_base(rng), ("output", "root"), rng.choice(["/proc/qnas-fuzz/runs", f"{DIR}/file.txt/runs",
                                                        "/dev/null/runs", f"{DIR}/file.txt"])),
        files={"file.txt": b"not a folder\n"}),
    "bad_table_reference": lambda rng: config_case("bad_table_reference", dump_yaml(base_config()),
                                                    table=table_case(rng, ".csv").files["table.csv"]),
}


def _with_new_option(rng: random.Random, data: dict[str, Any]) -> dict[str, Any]:
    """Sometimes add a key to a free-form options mapping, so values also land where no model checks them."""
    options = [p for p in key_paths(data) if p[-1] == "options" and isinstance(get_at(data, p), dict)]
    if options and rng.random() < 0.5:
        get_at(data, rng.choice(options))[random_word(rng) or "x"] = 1
    return data


def _absurd(rng: random.Random, data: dict[str, Any]) -> dict[str, Any]:
    """A number (a size, count, epoch, budget, ...) set to zero, a negative number or something astronomical."""
    numeric = [p for p in key_paths(data) if is_number(get_at(data, p)) or (
        isinstance(get_at(data, p), list) and get_at(data, p) and all(is_number(v) for v in get_at(data, p)))]
    path = rng.choice(numeric)
    value: Any = rng.choice([0, -1, -(10**6), 10 ** rng.randint(5, 15), 2**63, 10**100, 1e300])
    if isinstance(get_at(data, path), list):
        value = [1, value] if rng.random() < 0.5 else [value] * 2
    set_at(data, path, value)
    return data


def _added_key(rng: random.Random, data: dict[str, Any]) -> dict[str, Any]:
    mappings = [p for p in [(), *key_paths(data)] if isinstance(get_at(data, p), dict)]
    target = get_at(data, rng.choice(mappings))
    name = rng.choice([random_word(rng), *(k[:-1] + "s" for k in target if isinstance(k, str) and k)])
    target[name] = random_value(rng)
    return data


def _deleted(rng: random.Random, data: dict[str, Any]) -> dict[str, Any]:
    delete_at(data, rng.choice(key_paths(data)))
    return data


def _with_text_at_path(data: dict[str, Any], path: tuple[str, ...], text: str) -> str:
    set_at(data, path, text)
    return dump_yaml(data)


def _bad_override(rng: random.Random) -> tuple[str, ...]:
    key = ".".join(str(k) for k in rng.choice(key_paths(random_base(rng))))
    value = rng.choice([".inf", ".nan", "-1e999", str(10**30), big_list(rng),
                        _alias_bomb(rng), "&r [*r]", _nested(rng), "[1,", "{", "'unterminated", "1" * 5000,
                        "[a, b]", "{x: 1}", "", "null"])
    text = rng.choice([f"{key}={value}", f"{key}", f"={value}", f"{key}..x={value}",
                       f"{random_word(rng)}.{key}={value}"])
    return ("--set", text)

