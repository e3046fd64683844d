"""One process per run folder (every kind), released by the kernel when its holder dies; no journal through a link."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nas.journal import Journal, read_journal
from nas.runlock import LOCK, run_lock
from nas.runner import resume_run
from search_spaces.atomic import append_jsonl
from search_spaces.errors import InputError

ROOT = Path(__file__).resolve().parents[2]

HOLDER = textwrap.dedent("""
    import sys, time
    from nas.runlock import run_lock
    with run_lock(sys.argv[1]):
        print("HELD", flush=True)
        time.sleep(300)
""")


def test_a_second_process_is_refused_until_the_holder_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "HELD"
        with pytest.raises(InputError, match="another qnas process is running this run folder") as info:
            with run_lock(tmp_path):
                pass
        assert info.value.source == str(tmp_path)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        holder.stdout.close()
    with run_lock(tmp_path) as path:  # a SIGKILLed holder leaves no stale lock
        assert path == tmp_path / LOCK and path.read_text().strip() == str(os.getpid())


def test_resume_of_any_kind_takes_the_lock_before_reading_anything(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("kind: lpgnas\n")  # not even valid: the lock comes first
    with run_lock(run):
        with pytest.raises(InputError, match="another qnas process"):
            resume_run(run)
    with pytest.raises(InputError, match="config.yaml"):  # without a holder, the config is read (and refused)
        resume_run(run)


def test_journals_and_partial_records_are_never_written_through_a_symlink(tmp_path):
    target = tmp_path / "elsewhere.jsonl"
    target.write_text("")
    for name in ("trials.jsonl", "partial.jsonl"):
        (tmp_path / name).symlink_to(target)
    with pytest.raises(InputError, match="symbolic link"):
        Journal(tmp_path / "trials.jsonl")
    with pytest.raises(InputError, match="symbolic link"):
        read_journal(tmp_path / "trials.jsonl")
    with pytest.raises(InputError, match="symbolic link") as info:
        append_jsonl(tmp_path / "partial.jsonl", [{"a": 1}])
    assert info.value.source == str(tmp_path / "partial.jsonl")
    assert target.read_text() == ""
    with pytest.raises(InputError, match="symbolic link"):
        with run_lock(_linked_lock(tmp_path)):
            pass


def _linked_lock(tmp_path: Path) -> Path:
    run = tmp_path / "linked"
    run.mkdir()
    (run / LOCK).symlink_to(tmp_path / "elsewhere.jsonl")
    return run
