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

from nas.fault_injection import Kill, kill_and_resume
from nas.runner import start_run

ROOT = Path(__file__).resolve().parents[2]
BUDGET = 20
CONFIG = {
    "name": "faults", "seed": 3,
    "dataset": {"name": "digits", "options": {"max_train": 256}},
    "search_space": {"name": "mbv3", "options": {
        "in_channels": 1, "image_size": 8, "stem_channels": 8, "stage_channels": [16, 24], "stage_strides": [1, 2],
        "stage_se": [False, True], "stage_act": ["relu", "hswish"], "depths": [1, 2], "kernels": [3, 5],
        "expands": [2, 4], "head_channels": 32, "w_bits": [4, 8], "a_bits": [4, 8]}},
    "supernet": {"warmup_epochs": 1, "epochs": 2, "batch_size": 64, "bn_calib_samples": 128, "random_subnets": 1},
    "predictors": {"quant_sensitivity": True},
    "search": {"algorithm": "predictor-nsga2", "budget": BUDGET,
               "options": {"n_startup_trials": 10, "batch_size": 4, "population_size": 16, "generations": 5},
               "objectives": [{"metric": "accuracy", "direction": "max"}, {"metric": "size_kb", "direction": "min"}]},
    "output": {"export_top": 2},
}
KILLS = (Kill("training", 1.5), Kill("sensitivity", 0.8), Kill("search", 2.0), Kill("export", 1.5))


def write_config(folder: Path) -> Path:
    path = folder / "faults.yaml"
    path.write_text(yaml.safe_dump(CONFIG | {"output": {"export_top": 2, "root": str(folder / "runs")}}))
    return path


@pytest.mark.slow
def test_killed_at_random_instants_of_every_phase_the_run_ends_as_if_uninterrupted(tmp_path):
    config = write_config(tmp_path)
    reference = start_run(config, out=tmp_path / "reference").run_dir
    report = kill_and_resume(config, tmp_path / "killed", KILLS, seed=7, cwd=ROOT)
    assert report.finished and report.final_journal == report.distinct_in_journal == BUDGET
    assert (tmp_path / "killed" / "pareto.csv").read_text() == (reference / "pareto.csv").read_text()
    assert report.repeated_completed == 0, "a measurement that had reached the journal was made again"
    assert all(kill.lost_in_flight <= 1 for kill in report.kills), report.kills
