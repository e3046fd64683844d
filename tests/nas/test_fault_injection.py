"""Fault injection: SIGKILL a whole run at random instants of every phase, resume each time, lose nothing.

:func:`nas.fault_injection.kill_and_resume` kills ``qnas run`` a seeded-random delay after each phase starts
(supernet training, sensitivity measurement, the search, the export), resumes, and finally lets it finish.
Checked: ``pareto.csv`` equals an uninterrupted run's byte for byte, every candidate is in the journal exactly
once, no measurement that had reached the journal was made again, and each kill lost at most the evaluation
in flight (the local evaluator is sequential).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nas.fault_injection import TINY_RUN, Kill, kill_and_resume
from nas.runner import start_run

ROOT = Path(__file__).resolve().parents[2]
KILLS = (Kill("training", 1.5), Kill("sensitivity", 0.8), Kill("search", 2.0), Kill("export", 1.5))


@pytest.mark.slow
def test_killed_at_random_instants_of_every_phase_the_run_ends_as_if_uninterrupted(tmp_path):
    config = tmp_path / "faults.yaml"
    config.write_text(yaml.safe_dump(TINY_RUN | {"output": {"export_top": 2, "root": str(tmp_path / "runs")}}))
    reference = start_run(config, out=tmp_path / "reference").run_dir
    report = kill_and_resume(config, tmp_path / "killed", KILLS, seed=7, cwd=ROOT)
    budget = TINY_RUN["search"]["budget"]
    assert report.finished and report.final_journal == report.distinct_in_journal == budget
    assert (tmp_path / "killed" / "pareto.csv").read_text() == (reference / "pareto.csv").read_text()
    assert report.repeated_completed == 0, "a measurement that had reached the journal was made again"
    assert all(kill.lost_in_flight <= 1 for kill in report.kills), report.kills
