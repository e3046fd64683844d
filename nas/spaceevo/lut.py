"""SpaceEvo's lookup table: per (stage, block type, width window), sampled sub-stages with NSR and costs.

JSON, written atomically, validated on load (every problem names the file and the entry)::

    {"format": "qnas-qt-lut/1", "macro": "c10", "backend": "onnxruntime-int8", "device": "...",
     "fixed_ms": 0.21, "info": {...teacher, dataset, settings...},
     "entries": [{"stage": 0, "block": 1, "window": 0,
                  "rows": [{"config": "d2-w24-k3e4-k5e6", "nsr": 0.41, "latency_ms": 0.12,
                            "macs": 1234567, "params": 4567}, ...]}, ...]}

``stage`` is 0-based, ``block`` the block-type digit, ``window`` the window digit of the candidate
string. ``latency_ms`` is the sub-stage's INT8 latency (block entries minus the per-call overhead);
``fixed_ms`` the stem, head and one call's overhead, so a subnet's latency = Σ stages + fixed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nas.rundir import atomic_write_json
from search_spaces import InputError
from search_spaces.inputs import read_json
from search_spaces.meta import BLOCK_TYPES, MACROS

__all__ = ["FORMAT", "LutEntry", "QtLut", "combo_name"]

FORMAT = "qnas-qt-lut/1"
Combo = tuple[int, int, int]
_ROW_NUMBERS = ("nsr", "latency_ms", "macs", "params")


def combo_name(combo: Combo) -> str:
    """``(stage s2, block MBv3+SE, window 1)`` for messages."""
    stage, block, window = combo
    name = BLOCK_TYPES[block].name if 0 <= block < len(BLOCK_TYPES) else f"#{block}"
    return f"(stage s{stage + 1}, block {name}, window {window})"


@dataclass(frozen=True)
class LutEntry:
    """The sampled sub-stages of one combination, as arrays (what the Q-T score indexes)."""

    combo: Combo
    configs: tuple[str, ...]
    nsr: np.ndarray  # (rows,)
    latency_ms: np.ndarray  # (rows,)
    macs: np.ndarray  # (rows,)
    params: np.ndarray  # (rows,)

    def to_dict(self) -> dict[str, Any]:
        stage, block, window = self.combo
        rows = [{"config": c, "nsr": float(n), "latency_ms": float(t), "macs": int(m), "params": int(p)}
                for c, n, t, m, p in zip(self.configs, self.nsr, self.latency_ms, self.macs, self.params)]
        return {"stage": stage, "block": block, "window": window, "rows": rows}


@dataclass(frozen=True)
class QtLut:
    """A complete or partial lookup table of one macro-architecture on one backend."""

    macro: str
    backend: str
    device: str
    fixed_ms: float
    entries: Mapping[Combo, LutEntry]
    info: Mapping[str, Any] = field(default_factory=dict)

    def missing(self, combos: Iterable[Combo]) -> list[Combo]:
        """The combinations in ``combos`` that the table lacks, in order, without repeats."""
        return [c for c in dict.fromkeys(combos) if c not in self.entries]

    def require(self, combos: Iterable[Combo], *, needed_by: str, source: str | None = None) -> None:
        """Raise :class:`InputError` naming what is missing: a lacking entry is reported, never skipped."""
        missing = self.missing(combos)
        if missing:
            shown = ", ".join(combo_name(c) for c in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise InputError(f"the lookup table lacks {len(missing)} (stage, block, window) entr"
                             f"{'y' if len(missing) == 1 else 'ies'} that {needed_by} needs: {shown}{more}; "
                             "rebuild it (or build the missing entries)", source=source or self.info.get("path"),
                             field="entries")

    def to_dict(self) -> dict[str, Any]:
        info = {k: v for k, v in self.info.items() if k != "path"}
        return {"format": FORMAT, "macro": self.macro, "backend": self.backend, "device": self.device,
                "fixed_ms": self.fixed_ms, "info": info,
                "entries": [self.entries[c].to_dict() for c in sorted(self.entries)]}

    def save(self, path: str | Path) -> Path:
        atomic_write_json(path, self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> QtLut:
        """Read and check a table; any problem is an :class:`InputError` naming the file and the entry."""
        return cls.from_dict(read_json(path, what="lookup table"), source=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, source: str | None = None) -> QtLut:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InputError(f"not a Q-T lookup table (expected \"format\": \"{FORMAT}\")", source=source,
                             field="format")
        for key, kind in (("macro", str), ("backend", str), ("device", str), ("fixed_ms", (int, float)),
                          ("entries", list), ("info", (dict, type(None)))):
            if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
                raise InputError(f"missing or invalid {key!r}", source=source, field=key)
        if not math.isfinite(data["fixed_ms"]) or data["fixed_ms"] < 0:
            raise InputError(f"expected a finite non-negative number, got {data['fixed_ms']!r}", source=source,
                             field="fixed_ms")
        if data["macro"] not in MACROS:
            raise InputError(f"unknown macro-architecture {data['macro']!r} (known: {sorted(MACROS)})",
                             source=source, field="macro")
        entries: dict[Combo, LutEntry] = {}
        for i, raw in enumerate(data["entries"]):
            entry = _parse_entry(raw, data["macro"], source, f"entries[{i}]")
            if entry.combo in entries:
                raise InputError(f"{combo_name(entry.combo)} appears twice", source=source, field=f"entries[{i}]")
            entries[entry.combo] = entry
        info = dict(data.get("info") or {})
        if source is not None:
            info["path"] = source
        return cls(data["macro"], data["backend"], data["device"], float(data["fixed_ms"]), entries, info)


def _parse_entry(raw: Any, macro: str, source: str | None, where: str) -> LutEntry:
    if not isinstance(raw, dict):
        raise InputError("expected an object with stage, block, window and rows", source=source, field=where)
    stages = MACROS[macro].stages
    limits = {"stage": len(stages), "block": len(BLOCK_TYPES)}
    for key in ("stage", "block", "window"):
        value = raw.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InputError(f"expected a non-negative integer {key}", source=source, field=f"{where}.{key}")
        if key in limits and value >= limits[key]:
            raise InputError(f"{key} {value} is out of range 0..{limits[key] - 1}", source=source,
                             field=f"{where}.{key}")
    n_win = stages[raw["stage"]].n_windows
    if raw["window"] >= n_win:
        raise InputError(f"window {raw['window']} is out of range 0..{n_win - 1} for stage s{raw['stage'] + 1}",
                         source=source, field=f"{where}.window")
    rows = raw.get("rows")
    if not isinstance(rows, list) or not rows:
        raise InputError("expected a non-empty list of rows", source=source, field=f"{where}.rows")
    for j, row in enumerate(rows):
        _check_row(row, source, f"{where}.rows[{j}]")
    return LutEntry((raw["stage"], raw["block"], raw["window"]), tuple(str(r["config"]) for r in rows),
                    *(np.array([float(r[k]) for r in rows]) for k in _ROW_NUMBERS))


def _check_row(row: Any, source: str | None, where: str) -> None:
    if not isinstance(row, dict) or not isinstance(row.get("config"), str):
        raise InputError("expected a row with config, nsr, latency_ms, macs, params", source=source, field=where)
    for key in _ROW_NUMBERS:
        value = row.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise InputError(f"expected a finite non-negative number, got {value!r}", source=source,
                             field=f"{where}.{key}")
