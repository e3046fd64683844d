"""Atomic file writes shared by every package: readers never see a half-written file.

A temporary file in the target's folder is written, fsync'd, given the usual permissions (mkstemp
makes private 0600 files; artifacts are meant to be shared) and moved over the target with
``os.replace``. On any error the temporary file is removed and the old target is left intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_with", "read_partial_records"]

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


def read_partial_records(path: str | Path, meta: dict) -> tuple[list[dict], bool]:
    """The records of a resumable JSON-lines file whose first line is ``meta`` (the settings they were made
    with): ``(records, stale)``. A file made with other settings is deleted (``stale`` True); a torn or
    malformed line (a crash mid-append) is skipped."""
    path = Path(path)
    if not path.exists():
        return [], False
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        same = bool(lines) and json.loads(lines[0]) == meta
    except ValueError:
        same = False
    if not same:
        path.unlink()
        return [], bool(lines)
    records = []
    for line in lines[1:]:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records, False
