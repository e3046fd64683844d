"""Crash safety: a run killed at any point resumes with every candidate exactly once and the same front.

Two crashes are real SIGKILLs of ``qnas run`` subprocesses: one stopped deterministically in the middle
of writing a journal line (a hook writes half a line, then waits to be killed), one killed wherever it
happens to be. No timing is asserted.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import qnas_command
from nas.cli import main
from nas.runner import SilentReporter, resume_run, start_run
from search_spaces.errors import InputError
from search_spaces.testing import TINY_MBV3_DEFAULT_CHOICES

CONFIG = """\
name: crash
seed: 11
dataset: {name: digits}
search_space:
  name: mbv3
  options: """ + json.dumps(TINY_MBV3_DEFAULT_CHOICES) + """
search:
  algorithm: nsga2
  options: {population_size: 8}
  objectives: [{metric: size_kb, direction: min}, {metric: bitops, direction: min}]
  constraints: ["params >= 8000"]
  budget: 40
output: {export_top: 2}
"""

# Runs `qnas ARGS` but, at the CRASH_AT-th journal append, writes half the line, says READY, and waits.
TORN_WRITER = textwrap.dedent("""
    import json, os, sys, time
    import nas.journal as journal_module
    real_append, count = journal_module.Journal.append, [0]
    def append(self, record):
        count[0] += 1
        if count[0] == {crash_at}:
            line = json.dumps(record)
            self._file.write(line[: len(line) // 2]); self._file.flush(); os.fsync(self._file.fileno())
            print("READY", flush=True)
            time.sleep(300)
        real_append(self, record)
    journal_module.Journal.append = append
    from nas.cli import main
    sys.exit(main(sys.argv[1:]))
""")


class Recording(SilentReporter):
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warn(self, text: str) -> None:
        self.warnings.append(text)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "crash.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def reference(config: Path, tmp_path: Path) -> Path:
    """An uninterrupted run of the same config and seed."""
    return start_run(config, out=tmp_path / "reference").run_dir


def journal_keys(run_dir: Path) -> list[str]:
    return [json.loads(line)["key"] for line in (run_dir / "trials.jsonl").read_text().splitlines() if line.strip()]


def front_keys(run_dir: Path) -> list[str]:
    return [row["key"] for row in json.loads((run_dir / "pareto.json").read_text())["front"]]


def assert_complete_and_equal(run_dir: Path, reference: Path, budget: int = 40) -> None:
    keys = journal_keys(run_dir)
    assert len(keys) == len(set(keys)) == budget, "every candidate exactly once"
    assert sorted(keys) == sorted(journal_keys(reference)), "nothing lost"
    assert front_keys(run_dir) == front_keys(reference)
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "finished"


def test_resume_after_truncated_journal_evaluates_nothing_twice(tmp_path, config, reference):
    crashed = tmp_path / "crashed"
    shutil.copytree(reference, crashed)
    for name in ("pareto.json", "pareto.csv", "report.md", "subnets"):
        shutil.rmtree(crashed / name) if (crashed / name).is_dir() else (crashed / name).unlink()
    lines = (crashed / "trials.jsonl").read_text().splitlines(keepends=True)
    (crashed / "trials.jsonl").write_text("".join(lines[:17]) + lines[17][:40])
    reporter = Recording()
    outcome = resume_run(crashed, config_path=config, reporter=reporter)
    assert (outcome.result.reused, outcome.result.evaluated) == (17, 23)
    assert any("trials.jsonl:18: dropped a truncated last line" in w for w in reporter.warnings)
    assert_complete_and_equal(crashed, reference)
    assert {p.name for p in (crashed / "subnets").iterdir()} == {p.name for p in (reference / "subnets").iterdir()}
    resumes = json.loads((crashed / "manifest.json").read_text())["resumes"]
    assert resumes[-1]["journal_records"] == 17 and resumes[-1]["dropped_line"] == 18


def test_resume_of_a_finished_run_evaluates_nothing(reference):
    outcome = resume_run(reference)
    assert (outcome.result.evaluated, outcome.result.reused) == (0, 40)
    assert len(journal_keys(reference)) == 40


def test_resume_refuses_a_different_config_with_a_diff(config, reference):
    with pytest.raises(InputError, match=r"differs from the run's config.yaml .*search.budget: 40 -> 41"):
        resume_run(reference, config_path=config, overrides=["search.budget=41"])
    with pytest.raises(InputError, match=r"seed: 11 -> 12"):
        resume_run(reference, overrides=["seed=12"])


def test_resume_of_a_journal_lacking_an_objective_is_refused_before_any_work(reference):
    lines = (reference / "trials.jsonl").read_text().splitlines(keepends=True)
    record = json.loads(lines[3])
    del record["metrics"]["bitops"]
    (reference / "trials.jsonl").write_text("".join([*lines[:3], json.dumps(record) + "\n", *lines[4:]]))
    with pytest.raises(InputError, match="trials.jsonl:4: metrics: damaged journal record: no value for 'bitops'"):
        resume_run(reference)


def test_resume_of_a_foreign_journal_is_an_error(tmp_path, reference):
    with open(reference / "trials.jsonl", "a") as file:
        metrics = {"size_kb": 1.0, "bitops": 1.0, "params": 9000.0}
        file.write(json.dumps({"key": "0" * 16, "genome": {"space": "resnet", "genes": {}}, "metrics": metrics,
                               "sources": {}, "seconds": 0, "batch": 0, "finished_at": ""}) + "\n")
    with pytest.raises(InputError, match="genome belongs to space 'resnet'"):
        resume_run(reference)


def wait_for_line(proc: subprocess.Popen, timeout: float = 120.0) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        proc.kill()
        pytest.fail("the child never reached the crash point")
    return proc.stdout.readline().strip()


def test_sigkill_mid_journal_write_then_resume(tmp_path, config, reference, capsys):
    run_dir = tmp_path / "killed"
    code = TORN_WRITER.replace("{crash_at}", "19")
    proc = subprocess.Popen([sys.executable, "-c", code, "run", str(config), "--out", str(run_dir), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    line = wait_for_line(proc)
    assert line == "READY", proc.stderr.read() if proc.poll() is not None else line
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    proc.stdout.close(), proc.stderr.close()
    text = (run_dir / "trials.jsonl").read_text()
    assert len(text.splitlines()) == 19 and not text.endswith("\n")  # 18 whole lines + a torn one
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "running"

    assert main(["run", "--resume", str(run_dir)]) == 0
    assert "trials.jsonl:19: dropped a truncated last line" in capsys.readouterr().err
    assert_complete_and_equal(run_dir, reference)


def test_sigkill_wherever_it_lands_then_resume(tmp_path, config):
    run_dir, budget = tmp_path / "killed", 200
    command = qnas_command("run", str(config), "--out", str(run_dir), "--quiet", "--set", f"search.budget={budget}",
                           "--set", "search.options.population_size=10")
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    journal = run_dir / "trials.jsonl"
    while proc.poll() is None and (not journal.exists() or journal.read_bytes().count(b"\n") < 10):
        time.sleep(0.01)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stderr.close()
    assert main(["run", "--resume", str(run_dir), "--quiet"]) == 0
    keys = journal_keys(run_dir)
    assert len(keys) == len(set(keys)) == budget


def test_resume_refuses_while_another_process_writes_the_run(reference):
    from nas.journal import Journal

    before = (reference / "manifest.json").read_text()
    with Journal(reference / "trials.jsonl"):
        with pytest.raises(InputError, match="another qnas process is writing"):
            resume_run(reference)
    assert (reference / "manifest.json").read_text() == before
