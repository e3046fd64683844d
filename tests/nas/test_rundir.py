"""Run directory and journal: atomic artifact writes, fsync'd journal lines, tolerant journal reading."""

from __future__ import annotations

import json
import os
import stat

import pytest

from search_spaces import atomic
from nas.journal import Journal, read_journal
from nas.rundir import (atomic_write_bytes, atomic_write_json, atomic_write_text, check_run_dir, create_run_dir,
                        new_manifest, read_manifest, update_manifest)
from search_spaces.errors import InputError


def record(i: int) -> dict:
    return {"key": f"{i:016x}", "genome": {"space": "s", "genes": {"a": i}}, "metrics": {"m": float(i)},
            "sources": {"m": "analytic"}, "seconds": 0.001, "batch": i // 2, "finished_at": "t"}


# ---- atomic writes ------------------------------------------------------------------------------
def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "a.json"
    atomic_write_json(path, {"x": 1})
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert os.listdir(path.parent) == ["a.json"]


def test_failed_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "report.md"
    atomic_write_text(path, "old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_bytes(path, b"half-written")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["report.md"]


def test_atomic_files_are_readable_by_others(tmp_path):
    path = tmp_path / "x.txt"
    atomic_write_text(path, "x")
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == 0o666 & ~atomic._UMASK


# ---- run folders and manifest ----------------------------------------------------------------------
def test_run_folders_are_unique_even_within_one_second(tmp_path):
    first, second = create_run_dir(tmp_path, "exp"), create_run_dir(tmp_path, "exp")
    assert first != second and first.name.startswith("exp-") and second.name.startswith(first.name)


def test_out_folder_refuses_to_overwrite_a_run(tmp_path):
    out = create_run_dir(tmp_path, "exp", out=tmp_path / "mine")
    assert out == (tmp_path / "mine").resolve()
    (out / "config.yaml").write_text("x: 1\n")
    with pytest.raises(InputError, match="already holds a run; continue it with `qnas run --resume"):
        create_run_dir(tmp_path, "exp", out=out)


def test_check_run_dir_explains(tmp_path):
    with pytest.raises(InputError, match="run folder not found"):
        check_run_dir(tmp_path / "nope")
    with pytest.raises(InputError, match="not a qnas run folder"):
        check_run_dir(tmp_path)


def test_manifest_records_versions_seed_commit_times(tmp_path):
    update_manifest(tmp_path, **new_manifest(seed=7, space={"name": "mbv3", "fingerprint": "abc"}, command=["qnas"]))
    manifest = update_manifest(tmp_path, status="finished", finished_at="later")
    assert manifest == read_manifest(tmp_path)
    assert manifest["seed"] == 7 and manifest["status"] == "finished" and manifest["started_at"]
    assert {"python", "torch", "numpy", "pymoo", "optuna", "scikit-learn"} <= set(manifest["versions"])
    assert manifest["git_commit"] is None or len(manifest["git_commit"]) == 40
    assert manifest["space"]["fingerprint"] == "abc"


# ---- journal -------------------------------------------------------------------------------------
def test_journal_round_trip_one_line_per_record(tmp_path):
    path = tmp_path / "trials.jsonl"
    with Journal(path) as journal:
        for i in range(3):
            journal.append(record(i))
    assert len(path.read_text().splitlines()) == 3
    contents = read_journal(path)
    assert contents.records == tuple(record(i) for i in range(3)) and contents.dropped is None


def test_journal_lines_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr("nas.journal.os.fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    with Journal(tmp_path / "t.jsonl") as journal:
        journal.append(record(0))
        journal.append(record(1))
    assert len(synced) == 2


def test_truncated_last_line_is_dropped_reported_and_repaired(tmp_path):
    path = tmp_path / "trials.jsonl"
    with Journal(path) as journal:
        journal.append(record(0))
        journal.append(record(1))
    torn = json.dumps(record(2))[:25]
    with open(path, "a") as file:
        file.write(torn)
    contents = read_journal(path)
    assert [r["key"] for r in contents.records] == [record(0)["key"], record(1)["key"]]
    assert contents.dropped is not None and contents.dropped.line == 3
    assert f"{path}:3: dropped a truncated last line" in str(contents.dropped)
    assert path.read_text().endswith(torn)  # reading alone changes nothing
    read_journal(path, repair=True)
    with Journal(path) as journal:
        journal.append(record(3))
    again = read_journal(path)
    assert [r["key"] for r in again.records] == [record(i)["key"] for i in (0, 1, 3)] and again.dropped is None


def test_last_record_without_newline_is_kept_and_newline_restored(tmp_path):
    path = tmp_path / "trials.jsonl"
    path.write_text(json.dumps(record(0)) + "\n" + json.dumps(record(1)))
    contents = read_journal(path, repair=True)
    assert len(contents.records) == 2 and contents.dropped is None
    assert path.read_text().endswith("}\n")


def test_corrupt_line_in_the_middle_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "trials.jsonl"
    path.write_text(json.dumps(record(0)) + "\n{garbage\n" + json.dumps(record(1)) + "\n")
    with pytest.raises(InputError, match=r"trials.jsonl:2: line 2 is not a valid journal record"):
        read_journal(path)


def test_record_missing_keys_is_an_error(tmp_path):
    path = tmp_path / "trials.jsonl"
    path.write_text(json.dumps({"key": "x"}) + "\n" + json.dumps(record(1)) + "\n")
    with pytest.raises(InputError, match="lacks the keys"):
        read_journal(path)
    with pytest.raises(ValueError, match="lacks"):
        Journal(tmp_path / "other.jsonl").append({"key": "x"})


def test_missing_journal_reads_empty_and_blank_lines_are_ignored(tmp_path):
    assert read_journal(tmp_path / "none.jsonl").records == ()
    path = tmp_path / "t.jsonl"
    path.write_text("\n" + json.dumps(record(0)) + "\n\n")
    assert len(read_journal(path).records) == 1


def test_one_writer_per_journal(tmp_path):
    path = tmp_path / "trials.jsonl"
    with Journal(path):
        with pytest.raises(InputError, match="another qnas process is writing"):
            Journal(path)
    with Journal(path) as again:  # released on close
        again.append(record(0))


def test_partial_records_keep_same_settings_skip_torn_lines_and_drop_stale_files(tmp_path):
    from search_spaces.atomic import read_partial_records

    path = tmp_path / "t.partial.jsonl"
    assert read_partial_records(path, {"runs": 5}) == ([], False)
    path.write_text('{"runs": 5}\n{"key": "a"}\n{"key": "b"}\n{"key": "c"', encoding="utf-8")  # torn last line
    assert read_partial_records(path, {"runs": 5}) == ([{"key": "a"}, {"key": "b"}], False)
    assert read_partial_records(path, {"runs": 50}) == ([], True) and not path.exists()
