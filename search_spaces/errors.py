"""Errors caused by user input.

Every package raises these for bad configs, tables, checkpoints, datasets and genomes; the ``qnas``
command line prints them as one line without a traceback (unless ``--debug``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path

__all__ = ["QnasError", "InputError", "nearest", "shown"]


class QnasError(Exception):
    """Base class of every error that the user can fix (bad input, missing files, ...)."""


class InputError(QnasError, ValueError):
    """Bad user input; the message names where (file, line, field) and what was expected.

    Args:
        message: what is wrong and what was expected.
        source: the file (or other named input) the bad value came from.
        field: dotted key path, column or gene name of the bad value.
        line: 1-based line number inside ``source`` when known.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | Path | None = None,
        field: str | None = None,
        line: int | None = None,
    ) -> None:
        self.source = None if source is None else str(source)
        self.field = field
        self.line = line
        self.detail = message
        where = self.source or ""
        if line is not None:
            where = f"{where}:{line}" if where else f"line {line}"
        shown_field = field if field is None or len(field) <= 100 else field[:97] + "..."  # a key may be huge
        parts = [p for p in (where, shown_field) if p]
        super().__init__(": ".join([*parts, message]))


def nearest(name: str, candidates: Iterable[str]) -> str:
    """A ``"; did you mean 'x'?"`` hint for ``name`` (empty when nothing is close)."""
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else ""


def shown(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: a bad value echoed in a message may be megabytes long."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
