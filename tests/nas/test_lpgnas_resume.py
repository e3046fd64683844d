"""LPGNAS crash safety: every finished search and retraining is in ``jobs.jsonl`` at once; a run killed with
SIGKILL mid-job resumes without recomputing a finished job and ends with the uninterrupted run's records."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import supernets.gnn
from nas.lpgnas import JOBS_FILE, LpgnasConfig, run_lpgnas
from search_spaces import InputError
from search_spaces.testing import TINY_GNN, tiny_gnn
from supernets.data import load_dataset

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
CONFIG = LpgnasConfig(lambdas=[0.0, 0.05], search_epochs=5, warmup_epochs=2, retrain_epochs=6, seeds=3,
                      search_restarts=2, select_seeds=1, select_by="accuracy")
CHILD = textwrap.dedent("""
    import json, sys, time
    import torch
    import supernets.gnn
    from nas.lpgnas import LpgnasConfig, run_lpgnas
    from search_spaces import get_space
    from supernets.data import load_dataset

    torch.set_num_threads(1)
    config, options, run_dir, stop_at = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    original, calls = supernets.gnn.retrain, []

    def retrain(*args, **kwargs):  # the retraining after the first stop_at ones hangs: the parent kills it
        calls.append(1)
        if len(calls) > stop_at:
            print("READY", flush=True)
            time.sleep(600)
        return original(*args, **kwargs)

    supernets.gnn.retrain = retrain
    run_lpgnas(LpgnasConfig.model_validate_json(config), get_space("gnn", **options), load_dataset("cora"),
               run_dir, seed=3, progress=False)
""")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def cora(cache):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QNAS_CACHE", str(cache))
        return load_dataset("cora")


@pytest.fixture(scope="module")
def reference(cora, tmp_path_factory):
    """The uninterrupted run."""
    run_dir = tmp_path_factory.mktemp("reference")
    run_lpgnas(CONFIG, tiny_gnn(), cora, run_dir, seed=3, progress=False)
    return run_dir


def without_times(value):
    """``value`` without wall times (the only thing a rerun of a seeded job changes)."""
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items()
                if k not in ("finished_at", "seconds") and not k.endswith("_seconds")}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def job_names(path):
    """The jobs of a job journal, without the settings fingerprint: ('search/lambda=0.05/seed=3', ...)."""
    return [r["key"].rsplit("/", 1)[0] for r in lines(path)]


def count_jobs(monkeypatch):
    """Record every search and retraining that is actually run."""
    ran = []
    search, retrain = supernets.gnn.search, supernets.gnn.retrain
    monkeypatch.setattr(supernets.gnn, "search", lambda *a, **k: ran.append(f"search/lambda={k['lam']!r}/seed="
                                                                            f"{k['seed']}") or search(*a, **k))
    monkeypatch.setattr(supernets.gnn, "retrain", lambda space, genome, *a, **k: ran.append(
        f"retrain/{genome.key}/seed={k['seed']}") or retrain(space, genome, *a, **k))
    return ran


def assert_same_as(run_dir, reference):
    assert without_times(lines(run_dir / "trials.jsonl")) == without_times(lines(reference / "trials.jsonl"))
    assert without_times(json.loads((run_dir / "pareto.json").read_text())) == without_times(
        json.loads((reference / "pareto.json").read_text()))
    assert (run_dir / "pareto.csv").read_text().splitlines()[1:] and [
        row.split(",")[:6] for row in (run_dir / "pareto.csv").read_text().splitlines()] == [
        row.split(",")[:6] for row in (reference / "pareto.csv").read_text().splitlines()]
    for curve in (reference / "searches").iterdir():
        assert (run_dir / "searches" / curve.name).read_text() == curve.read_text()


def test_every_job_is_journaled_once(reference):
    names = job_names(reference / JOBS_FILE)
    searches = [n for n in names if n.startswith("search/")]
    assert len(names) == len(set(names)) and len(searches) == 4  # 2 λ × 2 restarts, then the retrainings
    records = lines(reference / "trials.jsonl")
    for record in records:  # the kept design's seeds 3, 4, 5 are journaled jobs
        for seed in record["details"]["seeds"]:
            assert f"retrain/{record['key']}/seed={seed}" in names


def test_sigkill_mid_job_then_resume_recomputes_nothing_finished(cache, cora, reference, tmp_path, monkeypatch):
    run_dir, stop_at = tmp_path / "killed", 3
    env = {**os.environ, "QNAS_CACHE": str(cache)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, CONFIG.model_dump_json(), json.dumps(TINY_GNN),
                             str(run_dir), str(stop_at)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=env)
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    line = proc.stdout.readline().strip() if ready else ""
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert line == "READY", proc.stderr.read()
    proc.stdout.close(), proc.stderr.close()
    finished = job_names(run_dir / JOBS_FILE)
    assert len(finished) == 4 + stop_at and not (run_dir / "trials.jsonl").read_text()

    ran = count_jobs(monkeypatch)
    run_lpgnas(CONFIG, tiny_gnn(), cora, run_dir, seed=3, progress=False)
    assert ran and not set(ran) & set(finished)  # nothing finished was run again
    assert sorted(finished + ran) == sorted(job_names(reference / JOBS_FILE)) == sorted(job_names(run_dir / JOBS_FILE))
    assert_same_as(run_dir, reference)


def test_an_error_mid_run_keeps_the_finished_jobs(cora, reference, tmp_path, monkeypatch):
    """A failed job (here a stand-in error on the 5th retraining) stops the run; the rerun reuses the rest."""
    retrain, calls = supernets.gnn.retrain, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("stand-in failure")
        return retrain(*args, **kwargs)

    monkeypatch.setattr(supernets.gnn, "retrain", failing)
    with pytest.raises(RuntimeError, match="stand-in"):
        run_lpgnas(CONFIG, tiny_gnn(), cora, tmp_path, seed=3, progress=False)
    finished = job_names(tmp_path / JOBS_FILE)
    assert 4 < len(finished) < len(job_names(reference / JOBS_FILE))
    monkeypatch.setattr(supernets.gnn, "retrain", retrain)
    ran = count_jobs(monkeypatch)
    run_lpgnas(CONFIG, tiny_gnn(), cora, tmp_path, seed=3, progress=False)
    assert not set(ran) & set(finished) and len(ran) + len(finished) == len(job_names(reference / JOBS_FILE))
    assert_same_as(tmp_path, reference)


def test_ctrl_c_stops_at_once_and_the_rerun_continues(cora, reference, tmp_path, monkeypatch):
    search, calls = supernets.gnn.search, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return search(*args, **kwargs)

    monkeypatch.setattr(supernets.gnn, "search", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_lpgnas(CONFIG, tiny_gnn(), cora, tmp_path, seed=3, progress=False)
    expected = job_names(reference / JOBS_FILE)
    assert len(calls) == 3 and job_names(tmp_path / JOBS_FILE) == expected[:2]  # nothing ran after Ctrl-C
    monkeypatch.setattr(supernets.gnn, "search", search)
    ran = count_jobs(monkeypatch)
    run_lpgnas(CONFIG, tiny_gnn(), cora, tmp_path, seed=3, progress=False)
    assert ran == expected[2:]
    assert_same_as(tmp_path, reference)


def test_jobs_of_other_settings_are_not_reused(cora, reference, tmp_path, monkeypatch):
    (tmp_path / JOBS_FILE).write_bytes((reference / JOBS_FILE).read_bytes())
    ran = count_jobs(monkeypatch)
    longer = CONFIG.model_copy(update={"retrain_epochs": 7})
    run_lpgnas(longer, tiny_gnn(), cora, tmp_path, seed=3, progress=False)
    assert ran and all(name.startswith("retrain/") for name in ran)  # the searches are the same, reused


def test_a_torn_last_job_line_is_dropped_and_rerun(cora, reference, tmp_path, monkeypatch, capsys):
    text = (reference / JOBS_FILE).read_text()
    cut = text.rstrip("\n").rfind("\n") + 1
    (tmp_path / JOBS_FILE).write_text(text[:cut] + text[cut:cut + 40])  # the last line half written
    ran = count_jobs(monkeypatch)
    run_lpgnas(CONFIG, tiny_gnn(), cora, tmp_path, seed=3, progress=True)
    assert ran == [job_names(reference / JOBS_FILE)[-1]]
    assert "dropped a truncated last line" in capsys.readouterr().err
    assert_same_as(tmp_path, reference)


@pytest.mark.parametrize("damage, message", [
    (lambda r: r.pop("outcome"), "line 2 is not a finished LPGNAS job"),
    (lambda r: r.update(job="evaluate"), "unknown job kind 'evaluate'"),
    (lambda r: r["outcome"].update(depth=3), "line 2 is not a finished LPGNAS job"),
])
def test_a_damaged_job_line_names_the_file_and_line(cora, reference, tmp_path, damage, message):
    records = lines(reference / JOBS_FILE)[:3]
    damage(records[1])
    (tmp_path / JOBS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(InputError, match=message) as err:
        run_lpgnas(CONFIG, tiny_gnn(), cora, tmp_path, seed=3, progress=False)
    assert err.value.line == 2 and err.value.source == str(tmp_path / JOBS_FILE)


def test_a_corrupt_job_line_before_the_end_is_an_error(cora, reference, tmp_path):
    text = (reference / JOBS_FILE).read_text().splitlines(keepends=True)
    (tmp_path / JOBS_FILE).write_text(text[0] + "{not json\n" + text[1])
    with pytest.raises(InputError, match="line 2") as err:
        run_lpgnas(CONFIG, tiny_gnn(), cora, tmp_path, seed=3, progress=False)
    assert str(tmp_path / JOBS_FILE) in str(err.value)
