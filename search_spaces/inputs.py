"""Reading input files safely: every bad file becomes one :class:`InputError`, never a traceback or a hang.

Why one reader for every YAML, JSON and CSV input (configs, latency tables, lookup tables, run files):
such files come from users, spreadsheets and crashed runs. Binary or mis-encoded bytes, oversized
files, YAML alias bombs ("billion laughs"), recursive aliases and deeply nested documents must stop
here, with a message naming the file (and the line and key where known), before recursive library
code (pydantic, ``copy.deepcopy``, tree walks) sees the data and overflows the stack or runs for
hours.

Limits (each error message states the one that was hit):

- :data:`MAX_TEXT_BYTES` per table or run file, :data:`MAX_CONFIG_BYTES` per config;
- :data:`MAX_NESTING` levels of nesting, counted after YAML aliases are expanded;
- :data:`MAX_YAML_NODES` values in a YAML document, counted after aliases are expanded;
- integers of at most :data:`MAX_INT` in magnitude, and no ``.inf``/``.nan`` where a config gives
  numbers (:func:`find_bad_number`).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import InputError

__all__ = ["MAX_TEXT_BYTES", "MAX_CONFIG_BYTES", "MAX_NESTING", "MAX_YAML_NODES", "MAX_INT", "read_text",
           "parse_yaml", "parse_json", "read_json", "find_bad_number", "dotted"]

MAX_TEXT_BYTES = 32 * 2**20
"""Largest latency table, lookup table or run file read (a table of a large space is a few MB)."""
MAX_CONFIG_BYTES = 64 * 2**10
"""Largest experiment config (or ``--set`` value) read: real ones are a few KB, and pure-Python YAML parsing
of more would take seconds before any limit below is reached."""
MAX_NESTING = 64
"""Deepest nesting of lists and mappings accepted (configs are about five levels deep)."""
MAX_YAML_NODES = 2_000
"""Most values (scalars, lists, mappings, keys) in one YAML document, aliases expanded: real configs hold a
few hundred, and pure-Python YAML needs a noticeable fraction of a second per few thousand."""
MAX_INT = 2**53
"""Largest integer magnitude in a config: beyond it floats lose integer precision, and no size is that large."""


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB" if n >= 2**10 else f"{n} bytes"


def read_text(path: str | Path, *, what: str = "file", max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of ``path`` (a leading BOM removed); a missing, oversized, binary or mis-encoded
    file, or one that cannot be read, is an :class:`InputError` naming it."""
    path = Path(path)
    try:
        if path.is_dir():
            raise InputError(f"is a folder; expected a {what}", source=path)
        size = path.stat().st_size
        if size > max_bytes:
            raise InputError(f"is {_size(size)}; a {what} is at most {_size(max_bytes)} (is this the right file?)",
                             source=path)
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{what} not found", source=path) from None
    except OSError as err:
        raise InputError(f"cannot read the {what}: {err.strerror or err}", source=path) from None
    if len(data) > max_bytes:  # grew while we looked (or a special file that reports no size)
        raise InputError(f"is larger than {_size(max_bytes)}; a {what} is at most that", source=path)
    nul = data.find(b"\x00")
    if nul >= 0:
        raise InputError(f"binary data (a NUL byte at offset {nul}); expected a UTF-8 text {what}", source=path,
                         line=data.count(b"\n", 0, nul) + 1)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        byte = data[err.start:err.start + 1].hex()
        raise InputError(f"not UTF-8 text (byte 0x{byte} at offset {err.start}); save the {what} as UTF-8",
                         source=path, line=data.count(b"\n", 0, err.start) + 1) from None


def dotted(parts: Sequence[str | int]) -> str:
    """``["a", "b", 0, "c"]`` -> ``"a.b[0].c"`` (how errors name a key path)."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# ---- YAML ----------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _limited_loader() -> type:
    """A SafeLoader that counts every node as composed, aliases expanded, and refuses what exceeds the limits.

    Sizes and heights of finished nodes are memoised, so an alias costs its target's size without being
    walked again (a billion-laughs document is refused after a few hundred nodes); an alias to a node still
    being composed is a recursive alias."""
    import yaml

    class LimitedLoader(yaml.SafeLoader):
        def __init__(self, stream: str, source: str | Path | None) -> None:
            super().__init__(stream)
            self.source = source
            self.path: list[str | int] = []  # key path of the node being composed (for messages)
            self.finished: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, height)
            self.total = 0

        def _fail(self, message: str, mark: Any) -> InputError:
            shown = self.path if len(self.path) <= 8 else [*self.path[:4], "...", *self.path[-2:]]
            return InputError(message, source=self.source, field=dotted(shown) or None,
                              line=None if mark is None else mark.line + 1)

        def _count(self, size: int, mark: Any) -> None:
            self.total += size
            if self.total > MAX_YAML_NODES:
                raise self._fail(f"more than {MAX_YAML_NODES} values, counting each repetition by an alias "
                                 "('*name' repeats what '&name' marks); a config needs far fewer", mark)

        def _deep(self, levels: int, mark: Any) -> None:
            if levels > MAX_NESTING:
                raise self._fail(f"nested more than {MAX_NESTING} levels deep", mark)

        def compose_node(self, parent: Any, index: Any) -> Any:
            named = parent is not None
            if named:
                self.path.append(index if isinstance(index, int) else
                                 str(index.value) if isinstance(index, yaml.ScalarNode) else "<key>")
            try:
                event = self.peek_event()
                if isinstance(event, yaml.AliasEvent):
                    target = self.anchors.get(event.anchor)
                    if target is not None and id(target) not in self.finished:
                        raise self._fail(f"alias *{event.anchor} is used inside its own anchor &{event.anchor} "
                                         "(a recursive alias)", event.start_mark)
                    node = super().compose_node(parent, index)
                    size, height = self.finished[id(node)]
                    self._deep(len(self.path) + height, event.start_mark)
                    self._count(size, event.start_mark)
                    return node
                self._deep(len(self.path) + 1, event.start_mark)
                node = super().compose_node(parent, index)
                self._finish(node)
                return node
            finally:
                if named:
                    self.path.pop()

        def _finish(self, node: Any) -> None:
            """Record a composed node's size and height (its children are finished already)."""
            if isinstance(node, yaml.ScalarNode):
                children: list[Any] = []
            elif isinstance(node, yaml.SequenceNode):
                children = node.value
            else:
                children = [n for pair in node.value for n in pair]
            stats = [self.finished[id(c)] for c in children]
            self.finished[id(node)] = (1 + sum(s for s, _ in stats), 1 + max((h for _, h in stats), default=0))
            self._count(1, node.start_mark)

        def construct_object(self, node: Any, deep: bool = False) -> Any:
            try:
                return super().construct_object(node, deep=deep)
            except (ValueError, OverflowError) as err:  # e.g. an integer of more than 4300 digits
                raise yaml.constructor.ConstructorError(
                    None, None, f"cannot read the value: {str(err).split(';')[0]}", node.start_mark) from None

    return LimitedLoader


_OPEN_RUN = re.compile(r"(?:[\[{]\s*){%d}" % (MAX_NESTING + 1))
"""More opening brackets in a row than the nesting limit allows: refused before parsing, because PyYAML's
scanner looks ahead up to 1024 characters for a key at every open bracket (quadratic in the run)."""


def parse_yaml(text: str, source: str | Path | None = None) -> tuple[Any, Any]:
    """``(data, root node)`` of a single-document YAML text, composed within the limits (the node keeps
    line numbers). Oversized text, bad YAML, an alias bomb, a recursive alias or too deep nesting is an
    InputError."""
    import yaml

    if len(text) > MAX_CONFIG_BYTES:
        raise InputError(f"is {len(text)} characters of YAML; at most {_size(MAX_CONFIG_BYTES)} is read",
                         source=source)
    run = _OPEN_RUN.search(text)
    if run is not None:
        raise InputError(f"nested more than {MAX_NESTING} levels deep", source=source,
                         line=text.count("\n", 0, run.start()) + 1)
    loader = _limited_loader()(text, source)
    try:
        root = loader.get_single_node()
        data = None if root is None else loader.construct_document(root)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        said = [getattr(err, "context", None), getattr(err, "problem", None)]
        problem = "; ".join(p for p in said if p) or str(err).splitlines()[0]
        raise InputError(f"invalid YAML: {problem}", source=source,
                         line=None if mark is None else mark.line + 1) from None
    except RecursionError:  # a guard: the limits above keep composition far from the interpreter's stack limit
        raise InputError(f"nested more than {MAX_NESTING} levels deep", source=source) from None
    finally:
        loader.dispose()
    return data, root


# ---- JSON ----------------------------------------------------------------------------------------
def _depth(data: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, level)
            if level <= MAX_NESTING:
                stack.extend((v, level + 1) for v in value)
    return deepest


def parse_json(text: str, source: str | Path | None = None) -> Any:
    """Parsed JSON; invalid JSON, numbers Python cannot hold and too deep nesting are InputErrors."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"invalid JSON: {err.msg}", source=source, line=err.lineno) from None
    except RecursionError:
        raise InputError(f"nested more than {MAX_NESTING} levels deep", source=source) from None
    except ValueError as err:  # an integer of more than 4300 digits
        raise InputError(f"invalid JSON: {str(err).split(';')[0]}", source=source) from None
    if _depth(data) > MAX_NESTING:
        raise InputError(f"nested more than {MAX_NESTING} levels deep", source=source)
    return data


def read_json(path: str | Path, *, what: str = "JSON file", max_bytes: int = MAX_TEXT_BYTES) -> Any:
    """:func:`read_text` then :func:`parse_json`, errors naming ``path``."""
    return parse_json(read_text(path, what=what, max_bytes=max_bytes), source=path)


# ---- numbers -------------------------------------------------------------------------------------
def find_bad_number(data: Any, path: tuple[str | int, ...] = ()) -> tuple[tuple[str | int, ...], Any] | None:
    """``(key path, value)`` of the first non-finite float or integer beyond :data:`MAX_INT` in nested
    dicts and lists (free-form option mappings reach library code that assumes finite sizes), else None."""
    if isinstance(data, bool):
        return None
    if isinstance(data, float) and not math.isfinite(data):
        return path, data
    if isinstance(data, int) and abs(data) > MAX_INT:
        return path, data
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, (list, tuple)) else ()
    for key, value in items:
        found = find_bad_number(value, (*path, key if isinstance(key, int) and isinstance(data, list) else str(key)))
        if found is not None:
            return found
    return None
