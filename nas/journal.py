"""``trials.jsonl``: the crash-safe record of every evaluated candidate, one JSON object per line.

Why a journal: a search may run for hours; each line is flushed and ``fsync``'d as it is written, so
a crash (even SIGKILL or a power cut) loses at most the line being written. The reader tolerates
exactly that: a torn *last* line is dropped and reported; damage anywhere else is an error naming
the line, because silently skipping it would re-evaluate (or lose) a candidate. A journal that is a
symbolic link is refused (reading and writing): a run folder's records live in the folder itself.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from search_spaces.atomic import open_no_follow
from search_spaces.errors import InputError

__all__ = ["RECORD_KEYS", "RECORD_TYPES", "Journal", "JournalContents", "DroppedLine", "read_journal",
           "require_metrics"]

RECORD_KEYS = ("key", "genome", "metrics", "sources", "seconds", "batch", "finished_at")


class Journal:
    """Append-only JSONL writer: one line per record, flushed and fsync'd before :meth:`append` returns."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        fd = open_no_follow(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        self._file = os.fdopen(fd, "a", encoding="utf-8")  # closed by close()/__exit__
        try:  # one writer per run: a second `qnas run --resume` on the same folder must not interleave lines
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise InputError("another qnas process is writing this run's journal", source=self.path) from None

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record as one line; it is on disk when this returns."""
        missing = [k for k in RECORD_KEYS if k not in record]
        if missing:
            raise ValueError(f"journal record lacks {missing}")
        self._file.write(json.dumps(record, separators=(",", ":"), allow_nan=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


@dataclass(frozen=True)
class DroppedLine:
    """A torn last line that the reader skipped (a crash mid-write)."""

    path: Path
    line: int
    text: str

    def __str__(self) -> str:
        preview = self.text if len(self.text) <= 60 else self.text[:57] + "..."
        return (f"{self.path}:{self.line}: dropped a truncated last line (a crash mid-write?): {preview!r}; "
                "that candidate will be evaluated again")


@dataclass(frozen=True)
class JournalContents:
    """The complete records of a journal and the torn last line, if any."""

    records: tuple[dict[str, Any], ...]
    dropped: DroppedLine | None = None


RECORD_TYPES: dict[str, tuple[type, ...]] = {"key": (str,), "genome": (dict,), "metrics": (dict,), "sources": (dict,),
                                             "seconds": (int, float), "batch": (int,), "finished_at": (str,)}
"""What each field of a record must be (a damaged record is refused by field, not met later as a TypeError)."""


class _Torn(ValueError):
    """A line that is not JSON at all: what a crash in the middle of writing it leaves behind."""


def _parse(text: str, path: Path, line: int) -> dict[str, Any]:
    """The record on one line; a line that is JSON but not a valid record is damage (InputError), never a tear."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise _Torn(err.msg) from None
    except (RecursionError, ValueError) as err:  # absurdly nested, or an integer of thousands of digits
        raise InputError(f"not a journal record ({type(err).__name__})", source=path, line=line) from None
    if not isinstance(record, dict):
        raise InputError(f"not a journal record: a JSON {type(record).__name__}, not an object", source=path,
                         line=line)
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        raise InputError(f"journal record lacks the keys {missing}", source=path, line=line)
    for key, kinds in RECORD_TYPES.items():
        if not isinstance(record[key], kinds) or isinstance(record[key], bool):
            raise InputError(f"damaged journal record: {key} must be {' or '.join(k.__name__ for k in kinds)}, got "
                             f"{type(record[key]).__name__}", source=path, line=line, field=key)
    for metric, value in record["metrics"].items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"damaged journal record: metric {metric!r} must be a number, got {value!r:.40}",
                             source=path, line=line, field="metrics")
    return record


def require_metrics(path: str | Path, records: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> None:
    """Every record must hold ``metrics`` (a run's objectives and constraints), else an InputError naming it."""
    for line, record in enumerate(records, start=1):
        missing = [m for m in metrics if m not in record["metrics"]]
        if missing:
            raise InputError(f"damaged journal record: no value for {missing[0]!r} (an objective or constraint of "
                             "the run)", source=path, line=line, field="metrics")


def read_journal(path: str | Path, *, repair: bool = False) -> JournalContents:
    """Read every complete record; drop (and with ``repair``, cut off) a torn last line.

    A missing file reads as empty. A line that is not JSON (a tear) is an :class:`InputError` naming
    it unless it is the last; a JSON line that is not a valid record is one wherever it is. ``repair=True`` truncates the file after the last good line (and ends it with a
    newline) so that appending can continue safely.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return JournalContents(())
    with os.fdopen(open_no_follow(path, os.O_RDONLY), "rb") as file:
        raw = file.read()
    chunks = raw.split(b"\n")
    records: list[dict[str, Any]] = []
    good_end, dropped = 0, None
    last = max((i for i, c in enumerate(chunks) if c.strip()), default=-1)
    for i, chunk in enumerate(chunks):
        is_last = i == last
        if chunk.strip():
            try:
                records.append(_parse(chunk.decode("utf-8"), path, i + 1))
            except (_Torn, UnicodeDecodeError) as err:  # a cut multi-byte character is a tear too
                if not is_last:
                    raise InputError(f"line {i + 1} is not a valid journal record ({err}); the file is damaged "
                                     "before its end", source=path, line=i + 1) from None
                dropped = DroppedLine(path, i + 1, chunk.decode("utf-8", errors="replace"))
                break
        good_end += len(chunk) + 1
    if repair:
        _cut(path, raw, min(good_end, len(raw)))
    return JournalContents(tuple(records), dropped)


def _cut(path: Path, raw: bytes, end: int) -> None:
    """Keep ``raw[:end]`` and make sure it ends with a newline (a crash may have lost just the ``\\n``)."""
    keep = raw[:end].rstrip(b"\n")
    keep = keep + b"\n" if keep else b""
    if keep == raw:
        return
    with os.fdopen(open_no_follow(path, os.O_RDWR), "r+b") as file:
        file.truncate(len(keep))
        file.seek(0)
        file.write(keep)
        file.flush()
        os.fsync(file.fileno())
