"""Fuzzed inputs: how many malformed configs, latency tables and flags ``qnas`` handles as promised.

Handled means: exit 0 (the input happened to be valid) or exit 2 with exactly one stderr line
``error: ...`` naming the input, no traceback, within ``nas.fuzzing.TIME_LIMIT_S`` (target: 100 %).
The cases come from ``nas.fuzzing`` (the generators ``tests/test_bad_input.py`` draws from), spread
evenly over every kind with a seeded ``random.Random``, and run through ``nas.cli.main`` in this
process. ``nas.fuzzing.warmed_up`` runs every base config and one case per kind first, untimed (imports
of torch, scikit-learn and pymoo), and keeps those long-lived objects out of garbage collection.

Usage:
    .venv/bin/python experiments/benchmarks/fuzz_inputs.py [--n 2000] [--seed 0]
Results: a printed table (tried / handled / exit 0 / median and slowest wall ms, slowest CPU ms per kind;
a wall time far above the CPU time means the machine was busy) and
experiments/benchmarks/results/fuzz_inputs.json (with up to 20 unhandled cases, if any).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from nas.fuzzing import FAMILIES, TIME_LIMIT_S, Outcome, generate, run_case, warmed_up

RESULTS = Path(__file__).resolve().parent / "results" / "fuzz_inputs.json"


def run(n: int, seed: int) -> tuple[dict[str, list[Outcome]], float]:
    """``n`` cases spread evenly over every (family, kind), and the wall time of the timed part."""
    kinds = [(family, kind) for family, members in FAMILIES.items() for kind in members]
    rng = random.Random(seed)
    outcomes: dict[str, list[Outcome]] = defaultdict(list)
    with warmed_up():  # first-call imports and dataset reads are not input handling
        start = time.perf_counter()
        for i in range(n):
            family, kind = kinds[i % len(kinds)]
            outcome = run_case(generate(family, kind, rng))
            outcomes[outcome.kind].append(outcome)
        return outcomes, time.perf_counter() - start


def summarise(outcomes: dict[str, list[Outcome]]) -> list[dict[str, Any]]:
    """One row per kind: tried, handled, valid (exit 0), median and slowest wall milliseconds, slowest CPU ms."""
    rows = []
    for kind, runs in outcomes.items():
        seconds = sorted(o.seconds for o in runs)
        rows.append({"kind": kind, "tried": len(runs), "handled": sum(o.handled for o in runs),
                     "valid": sum(o.exit_code == 0 for o in runs), "median_ms": 1000 * seconds[len(seconds) // 2],
                     "slowest_ms": 1000 * seconds[-1], "slowest_cpu_ms": 1000 * max(o.cpu_seconds for o in runs)})
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'kind':<28} {'tried':>6} {'handled':>8} {'exit 0':>7} {'median ms':>10} {'slowest ms':>11} "
          f"{'(cpu ms)':>9}")
    for r in rows:
        print(f"{r['kind']:<28} {r['tried']:>6} {r['handled']:>8} {r['valid']:>7} {r['median_ms']:>10.1f} "
              f"{r['slowest_ms']:>11.1f} {r['slowest_cpu_ms']:>9.1f}")
    tried, handled = sum(r["tried"] for r in rows), sum(r["handled"] for r in rows)
    print(f"{'all':<28} {tried:>6} {handled:>8} {sum(r['valid'] for r in rows):>7} {'':>10} "
          f"{max(r['slowest_ms'] for r in rows):>11.1f} {max(r['slowest_cpu_ms'] for r in rows):>9.1f}")
    print(f"handled: {handled} of {tried} = {100 * handled / tried:.1f} % (target 100 %)")
    for family in FAMILIES:
        mine = [r for r in rows if r["kind"].startswith(family + "/")]
        ok, n = sum(r["handled"] for r in mine), sum(r["tried"] for r in mine)
        print(f"  {family}: {ok} of {n} = {100 * ok / max(n, 1):.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="cases in all, spread evenly over the kinds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.environ.setdefault("QNAS_DATA", str(Path(__file__).resolve().parents[3] / "shared" / "data"))
    load = os.getloadavg()
    outcomes, seconds = run(args.n, args.seed)
    rows = summarise(outcomes)
    print_table(rows)
    failures = [{"kind": o.kind, "exit_code": o.exit_code, "problem": o.problem, "seconds": o.seconds,
                 "stderr": o.stderr[-2000:]} for runs in outcomes.values() for o in runs if not o.handled]
    tried = sum(r["tried"] for r in rows)
    handled = sum(r["handled"] for r in rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "n": tried, "seed": args.seed, "handled": handled, "handled_share": handled / tried,
        "time_limit_s": TIME_LIMIT_S, "seconds": seconds, "python": platform.python_version(),
        "load_average_at_start": load,
        "kinds": rows, "unhandled_examples": failures[:20]}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
