"""The pieces every generator shares: a case, its outcome, and random values put at random key paths."""

from __future__ import annotations

import copy
import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

__all__ = ["Case", "Outcome", "TIME_LIMIT_S", "DIR", "SPACE_OPTIONS", "dump_yaml", "encode", "key_paths", "set_at",
           "get_at", "delete_at", "with_text_at", "random_word", "random_scalar", "random_value", "big_list",
           "list_text", "noise", "replaced", "is_number"]

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


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)


def encode(text: str) -> bytes:
    return text.encode("utf-8")


# ---- random values and places ------------------------------------------------------------------------
def key_paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in nested dicts and lists (containers and leaves)."""
    out = [prefix] if prefix else []
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        out += key_paths(value, (*prefix, key))
    return out


def set_at(data: Any, path: Sequence[Any], value: Any) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


def delete_at(data: Any, path: Sequence[Any]) -> None:
    for key in path[:-1]:
        data = data[key]
    del data[path[-1]]


_SENTINEL = "QNAS_FUZZ_SENTINEL"


def with_text_at(rng: random.Random, data: Any, text: str) -> str:
    """The YAML of ``data`` with ``text`` (raw YAML) as the value at a random key path."""
    data = copy.deepcopy(data)
    set_at(data, rng.choice(key_paths(data)), _SENTINEL)
    return dump_yaml(data).replace(_SENTINEL, text, 1)


def random_word(rng: random.Random) -> str:
    pool = ["budget", "options", "x", "depths", "image_size", "threads", "kind", "name", "root", "élan", "a b",
            "", "0", "__class__", "seed", "table", "metric"]
    return rng.choice(pool) + ("" if rng.random() < 0.5 else str(rng.randint(0, 99)))


def random_scalar(rng: random.Random) -> Any:
    """A random scalar of any YAML type, biased to edge cases."""
    choices: list[Callable[[], Any]] = [
        lambda: rng.choice([0, -1, 1, 2, -(10 ** rng.randint(1, 30)), 10 ** rng.randint(1, 40)]),
        lambda: rng.choice([0.0, -0.5, 1e-300, 1e300, float("inf"), float("-inf"), float("nan"), 3.5]),
        lambda: rng.choice([True, False, None]),
        lambda: rng.choice(["", " ", "abc", "é" * 3, "\t", "1e3", "0x10", "null", "~", "yes", "-", "a\nb",
                            "x" * rng.randint(100, 5000), "\u202e\u0000\u0007"]),
    ]
    return rng.choice(choices)()


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """A random YAML value: a scalar, or a small list or mapping of them."""
    roll = rng.random()
    if depth < 2 and roll < 0.2:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if depth < 2 and roll < 0.35:
        return {random_word(rng): random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    return random_scalar(rng)


def big_list(rng: random.Random) -> str:
    """A YAML/JSON flow list of 65 up to 10**6 integers."""
    return list_text(rng.choice([65, 300, 5_000, 100_000, 1_000_000]))


@functools.lru_cache(maxsize=None)
def list_text(n: int) -> str:
    return "[" + ", ".join(map(str, range(n))) + "]"


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def replaced(rng: random.Random, data: dict[str, Any], value: Any) -> dict[str, Any]:
    set_at(data, rng.choice(key_paths(data)), value)
    return data


def get_at(data: Any, path: Sequence[Any]) -> Any:
    for key in path:
        data = data[key]
    return data


def noise(rng: random.Random, text: str, alphabet: str) -> str:
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
