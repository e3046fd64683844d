"""Crash safety, measured: SIGKILL runs at random instants of every phase, resume, and count what was lost.

For each repetition, one uninterrupted reference run, then the same config started and killed ``--kills``
times (cycling through supernet training, sensitivity measurement, search and export, each a random delay
after the phase starts), resumed after every kill, and finished by a last resume. Reported per kill: where
it landed, the journal before and after, measurements lost in flight, and measurements repeated although
already journaled (target 0); per repetition: whether the final pareto.csv equals the reference's.

Usage:  python experiments/benchmarks/fault_injection.py [--repeats 3] [--kills 8] [--config CONFIG.yaml]
Results: a printed table and experiments/benchmarks/results/fault_injection.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import yaml

from nas.fault_injection import PHASES, TINY_RUN, Kill, kill_and_resume
from nas.runner import start_run

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).parent / "results"
MOST_DELAY_S = {"training": 1.5, "sensitivity": 0.8, "search": 2.0, "export": 1.5}


def _config(folder: Path, given: Path | None) -> Path:
    data = yaml.safe_load(given.read_text()) if given else dict(TINY_RUN)
    data["output"] = {**data.get("output", {}), "root": str(folder / "runs")}
    path = folder / "faults.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def repetition(seed: int, kills: int, given: Path | None) -> dict:
    """One reference run and one killed-and-resumed run of the same config; what the kills cost."""
    with tempfile.TemporaryDirectory(prefix="qnas-faults-") as tmp:
        folder = Path(tmp)
        config = _config(folder, given)
        start = time.perf_counter()
        reference = start_run(config, out=folder / "reference").run_dir
        reference_s = time.perf_counter() - start
        plan = [Kill(PHASES[i % len(PHASES)], MOST_DELAY_S[PHASES[i % len(PHASES)]]) for i in range(kills)]
        start = time.perf_counter()
        report = kill_and_resume(config, folder / "killed", plan, seed=seed, cwd=ROOT)
        same = (folder / "killed" / "pareto.csv").read_text() == (reference / "pareto.csv").read_text()
        return {"seed": seed, "reference_s": round(reference_s, 1), "killed_s": round(time.perf_counter() - start, 1),
                "pareto_equal": same, **report.to_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--config", type=Path, help="an experiment YAML (default: nas.fault_injection.TINY_RUN)")
    parser.add_argument("--out", type=Path, default=RESULTS / "fault_injection.json")
    args = parser.parse_args()
    runs = [repetition(seed, args.kills, args.config) for seed in range(args.repeats)]
    print(f"{'seed':>4} {'kill':>4} {'aimed':<12} {'landed':<26} {'journal':>11} {'lost':>5} {'repeated':>8}")
    for run in runs:
        for i, k in enumerate(run["kills"]):
            print(f"{run['seed']:>4} {i:>4} {k['aimed']:<12} {k['landed']:<26} "
                  f"{k['journal_before']:>4} -> {k['journal_after']:<3} {k['lost_in_flight']:>5} {k['repeated_completed']:>8}")
        print(f"seed {run['seed']}: final journal {run['final_journal']} lines ({run['distinct_in_journal']} distinct), "
              f"{run['measured_total']} measurements, {run['repeated_completed']} repeated after being journaled, "
              f"pareto.csv equal to the uninterrupted run: {run['pareto_equal']} ({run['killed_s']} s vs "
              f"{run['reference_s']} s uninterrupted)")
    kills = [k for run in runs for k in run["kills"]]
    summary = {"kills": len(kills), "repeated_completed": sum(r["repeated_completed"] for r in runs),
               "lost_in_flight": sum(k["lost_in_flight"] for k in kills),
               "fronts_equal": sum(r["pareto_equal"] for r in runs), "repeats": len(runs),
               "landed": {p: sum(k["landed"].startswith(p) for k in kills) for p in PHASES}}
    print(f"\n{summary['kills']} kills: {summary['repeated_completed']} completed evaluations repeated, "
          f"{summary['lost_in_flight']} lost in flight; fronts equal in {summary['fronts_equal']}/{len(runs)}; "
          f"landed in {summary['landed']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "summary": summary,
                                    "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
