"""Atomic file writes and durable appends shared by every package: readers never see a half-written file.

A temporary file in the target's folder is written, fsync'd, given the usual permissions (mkstemp
makes private 0600 files; artifacts are meant to be shared) and moved over the target with
``os.replace``. On any error the temporary file is removed and the old target is left intact.

Append-only record files (journals, partial results that let a long job resume) are appended with
:func:`append_jsonl`: flushed and fsync'd before it returns, and never written through a symbolic link.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import InputError
from .inputs import parse_json

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_with", "open_no_follow", "append_jsonl",
           "read_partial_records"]

_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write_with(path: str | Path, write: Callable[[str], None]) -> Path:
    """Atomically create ``path`` with ``write(tmp_path)`` (for writers that need a file name,
    e.g. ``torch.save``); the temporary name keeps ``path``'s suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write_with(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (newlines as given)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def open_no_follow(path: str | Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that refuses a symbolic link at ``path`` with an InputError naming it."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as err:
        if Path(path).is_symlink():
            raise InputError("is a symbolic link; qnas writes record files only in place, never through a link",
                             source=str(path)) from None
        raise InputError(f"cannot open: {err.strerror}", source=str(path)) from None


def append_jsonl(path: str | Path, records: list[dict]) -> None:
    """Append one JSON line per record; on disk (fsync'd) when this returns."""
    fd = open_no_follow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(record) + "\n" for record in records))
        handle.flush()
        os.fsync(handle.fileno())


def read_partial_records(path: str | Path, meta: dict) -> tuple[list[dict], bool]:
    """The records of a resumable JSON-lines file whose first line is ``meta`` (the settings they were made
    with): ``(records, stale)``. A file made with other settings is deleted (``stale`` True); a torn or
    malformed line (a crash mid-append) is skipped."""
    path = Path(path)
    if not path.exists():
        return [], False
    with os.fdopen(open_no_follow(path, os.O_RDONLY), "rb") as handle:
        parsed = [_record(line) for line in handle.read().splitlines()]
    if not parsed or parsed[0] != meta:
        path.unlink()
        return [], bool(parsed)
    return [record for record in parsed[1:] if record is not None], False


def _record(line: bytes) -> dict | None:
    """One JSON-object line, or None for a torn, mis-encoded, malformed or absurdly nested one."""
    try:
        record = parse_json(line.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError and InputError are ValueErrors too
        return None
    return record if isinstance(record, dict) else None
