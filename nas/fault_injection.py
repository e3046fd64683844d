"""Fault injection for whole runs: SIGKILL ``qnas run`` at random instants of its phases, resume, account for work.

Shipped with the package (like the searcher and space conformance suites) because the crash-safety promise
is part of the product: the test suite and ``experiments/benchmarks/fault_injection.py`` both drive it.

A wrapper runs the ``qnas`` CLI with a marker printed as each phase starts (supernet training, quantization
sensitivity, the search, the export of the front) and appends every accuracy it really measures to a log,
tagged with the round (process) it happened in. :func:`kill_and_resume` starts a run, kills it a random delay
after a phase's marker, resumes and kills again, then lets a last resume finish, and reports per kill where
it landed, what the journal held and which measurements were made again.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = ["TINY_RUN", "PHASES", "WRAPPER", "Kill", "KillOutcome", "FaultReport", "kill_and_resume", "journal_keys"]

TINY_RUN = {
    "name": "faults", "seed": 3,
    "dataset": {"name": "digits", "options": {"max_train": 256}},
    "search_space": {"name": "mbv3", "options": {
        "in_channels": 1, "image_size": 8, "stem_channels": 8, "stage_channels": [16, 24], "stage_strides": [1, 2],
        "stage_se": [False, True], "stage_act": ["relu", "hswish"], "depths": [1, 2], "kernels": [3, 5],
        "expands": [2, 4], "head_channels": 32, "w_bits": [4, 8], "a_bits": [4, 8]}},
    "supernet": {"warmup_epochs": 1, "epochs": 2, "batch_size": 64, "bn_calib_samples": 128, "random_subnets": 1},
    "predictors": {"quant_sensitivity": True},
    "search": {"algorithm": "predictor-nsga2", "budget": 20,
               "options": {"n_startup_trials": 10, "batch_size": 4, "population_size": 16, "generations": 5},
               "objectives": [{"metric": "accuracy", "direction": "max"}, {"metric": "size_kb", "direction": "min"}]},
    "output": {"export_top": 2},
}
"""A run with every phase in seconds on a CPU (digits, tiny supernet, sensitivity, predictor in the loop, export)."""

PHASES = ("training", "sensitivity", "search", "export")
"""The markers :data:`WRAPPER` prints, in the order a run reaches them."""

WRAPPER = textwrap.dedent("""
    import os, sys
    import nas.accuracy, nas.kinds.search, nas.stages, supernets.sensitivity
    from search_spaces.atomic import append_jsonl

    def marked(owner, name, phase):
        real = getattr(owner, name)
        def call(*args, **kwargs):
            print("PHASE " + phase, flush=True)
            return real(*args, **kwargs)
        setattr(owner, name, call)

    marked(nas.accuracy, "fit_supernet", "training")
    marked(supernets.sensitivity, "measure_quant_sensitivity", "sensitivity")
    marked(nas.kinds.search, "run_search", "search")
    marked(nas.stages.Stages, "export_models", "export")
    measure = nas.accuracy.SupernetAccuracyEvaluator.evaluate_iter

    def logged(self, genomes):
        for position, metrics in measure(self, genomes):
            append_jsonl(os.environ["QNAS_FAULT_LOG"], [{"round": int(os.environ["QNAS_FAULT_ROUND"]),
                                                         "key": genomes[position].key}])
            yield position, metrics

    nas.accuracy.SupernetAccuracyEvaluator.evaluate_iter = logged
    from nas.cli import main
    sys.exit(main(sys.argv[1:]))
""")
"""``python -c WRAPPER ARGS`` runs ``qnas ARGS`` with phase markers and a log of every measured accuracy."""


@dataclass(frozen=True)
class Kill:
    """Kill ``phase`` (a marker name) plus a delay drawn uniformly from ``[0, most_s]`` seconds."""

    phase: str
    most_s: float


@dataclass(frozen=True)
class KillOutcome:
    """One kill: where it was aimed and where it landed, the journal before and after, the work it lost."""

    aimed: str
    landed: str
    delay_s: float
    journal_before: int
    journal_after: int
    measured: int
    lost_in_flight: int
    repeated_completed: int


@dataclass(frozen=True)
class FaultReport:
    """Every kill, and the finished run's final state."""

    kills: tuple[KillOutcome, ...]
    final_journal: int
    distinct_in_journal: int
    measured_total: int
    repeated_completed: int
    finished: bool

    def to_dict(self) -> dict:
        return {**asdict(self), "kills": [asdict(k) for k in self.kills]}


def journal_keys(run_dir: Path) -> list[str]:
    """Keys of the complete lines of a run's journal (a torn last line is not a record)."""
    path = Path(run_dir) / "trials.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["key"] for line in path.read_text().splitlines() if line.strip().endswith("}")]


def _kill_during(args: Sequence[str], env: dict[str, str], cwd: Path, phase: str, delay: float) -> str:
    """Start ``qnas ARGS``; SIGKILL it ``delay`` s after ``phase`` starts; return the last phase it had begun."""
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=cwd, env=env)
    seen, deadline = "start", time.monotonic() + 900
    try:
        while seen != phase and proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            line = proc.stdout.readline().strip() if ready else ""
            seen = line.removeprefix("PHASE ") if line.startswith("PHASE ") else seen
        time.sleep(delay)
        finished = proc.poll() is not None
        if not finished:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        later = [line.strip().removeprefix("PHASE ") for line in proc.stdout if line.startswith("PHASE ")]
    finally:
        proc.stdout.close()
    landed = later[-1] if later else seen
    return f"{landed} (finished first)" if finished else landed


def _measured(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []


def kill_and_resume(config: Path, run_dir: Path, kills: Sequence[Kill], *, seed: int = 0,
                    cwd: Path | None = None) -> FaultReport:
    """Start ``config`` into ``run_dir``, kill and resume it once per entry of ``kills``, then finish it."""
    rng, log = np.random.default_rng(seed), Path(run_dir).with_name(Path(run_dir).name + ".measured.jsonl")
    log.unlink(missing_ok=True)
    cwd = Path(cwd or Path.cwd())
    outcomes, before_each = [], []
    for round_, kill in enumerate([*kills, None]):
        env = {**os.environ, "QNAS_FAULT_LOG": str(log), "QNAS_FAULT_ROUND": str(round_)}
        args = ["run", str(config), "--out", str(run_dir), "--quiet"] if round_ == 0 else \
               ["run", "--resume", str(run_dir), "--quiet"]
        before = set(journal_keys(run_dir))
        before_each.append(before)
        if kill is None:
            done = subprocess.run([sys.executable, "-c", WRAPPER, *args], cwd=cwd, env=env, capture_output=True,
                                  text=True, timeout=1800)
            if done.returncode != 0:
                raise RuntimeError(f"the last resume failed: {done.stderr.strip()[-2000:]}")
            break
        delay = float(rng.uniform(0.0, kill.most_s))
        landed = _kill_during(args, env, cwd, kill.phase, delay)
        after = set(journal_keys(run_dir))
        mine = [m["key"] for m in _measured(log) if m["round"] == round_]
        outcomes.append(KillOutcome(kill.phase, landed, round(delay, 3), len(before), len(after), len(mine),
                                    len(set(mine) - after), sum(key in before for key in mine)))
    measured, final = _measured(log), journal_keys(run_dir)
    repeated = sum(m["key"] in before_each[m["round"]] for m in measured)  # journaled when its round started
    finished = json.loads((Path(run_dir) / "manifest.json").read_text()).get("status") == "finished"
    return FaultReport(tuple(outcomes), len(final), len(set(final)), len(measured), repeated, finished)
