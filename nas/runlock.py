"""One process per run folder: every experiment kind holds ``run.lock`` while it starts, runs or resumes.

Why a lock on the folder, not only on a journal: two ``qnas run --resume`` of the same folder (or a resume
while the first run still trains its supernet) would both write ``supernet.pt``, the manifest and the
artifacts. ``flock`` is released by the kernel when the holder dies, even by SIGKILL, so a crashed run
never leaves a stale lock behind. The lock file is opened without following symbolic links.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from search_spaces.atomic import open_no_follow
from search_spaces.errors import InputError

__all__ = ["LOCK", "run_lock"]

LOCK = "run.lock"


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold the run folder's lock for the block; an InputError when another process holds it."""
    path = Path(run_dir) / LOCK
    fd = open_no_follow(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise InputError("another qnas process is running this run folder; wait for it to finish (or stop it) "
                         "before resuming", source=str(run_dir)) from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)  # releases the flock
