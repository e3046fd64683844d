"""Template-path validation: a latency table built the way a user builds one for another device, against the
table ``qnas latency profile`` measures directly, both scored on the same random subnets timed end to end.

The template path, per space (ONNX Runtime INT8, this CPU, 1 thread, batch 1):

1. ``qnas latency template --backend-hint int8 --models onnx`` writes the block and subnet models;
2. ``experiments/latency_tables/time_onnx_models.py`` times them **in a separate process that only sees the
   folder** (onnxruntime and numpy, no qnas: the stand-in for a device's runtime) and fills both CSV files;
3. ``qnas latency calibrate`` fits the per-call overhead and calibration on the filled ``subnets.csv``.

The direct path is ``profile_space`` (what ``qnas latency profile`` runs). Then N validation subnets (none a
calibration subnet) and the 10 calibration subnets are measured end to end here, and each table's
predictions are scored with ``latency_validation.py``'s metrics (share within ±5 % / ±10 %, MAPE, bias,
Spearman ρ), its drift since its calibration, and the agreement of the two tables' block entries.

    .venv/bin/python experiments/benchmarks/template_validation.py            # 100 subnets per space
    .venv/bin/python experiments/benchmarks/template_validation.py --quick    # 20 subnets, 20 runs
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from latency_validation import SPACES, metrics, noise_floor, validation_genomes, write_results

from nas.latency_template import write_template
from nas.profiling import calibration_genomes, measure_subnets, profile_space
from predictors.latency import (LatencyPredictor, LatencyTable, calibrate_from_timings, fit_calibration, read_timings,
                                table_coverage)
from search_spaces import Genome, SearchSpace, get_space
from supernets import timing

HERE = Path(__file__).resolve().parent
TIMER = HERE.parent / "latency_tables" / "time_onnx_models.py"
BACKEND = "onnxruntime-int8"
TARGET_WITHIN_10 = 95.0


def template_table(space: SearchSpace, folder: Path, args: argparse.Namespace) -> tuple[LatencyTable, dict[str, float]]:
    """The table of the template path: export, time in a separate process, fill, calibrate."""
    start = time.monotonic()
    write_template(space, folder, hint="int8", models="onnx", device=timing.device_name(), backend=BACKEND,
                   progress=False)
    export_s = time.monotonic() - start
    start = time.monotonic()
    command = [sys.executable, str(TIMER), str(folder), "--runs", str(args.runs), "--passes", str(args.passes)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command + (["--realtime"] if args.realtime else []), check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    timing_s = time.monotonic() - start
    table = LatencyTable.load(folder / "blocks.csv", space=space)
    coverage = table_coverage(table, space)
    if not coverage.complete:
        raise RuntimeError(f"the filled template lacks blocks: {coverage.summary()}")
    table, _ = calibrate_from_timings(table, space, read_timings(folder / "subnets.csv", space))
    table.save(folder / "blocks.csv")
    return table, {"export_s": round(export_s, 1), "timing_s": round(timing_s, 1)}


def score(table: LatencyTable, space: SearchSpace, genomes: list[Genome], meas: np.ndarray, calib: list[Genome],
          calib_meas: np.ndarray) -> dict[str, Any]:
    """One table's predictions against the measurements (the metrics of ``latency_validation.run_one``)."""
    predictor = LatencyPredictor(table, strict=True)
    pred = predictor.predict_genomes(space, genomes).ms
    calib_pred = predictor.predict_genomes(space, calib).ms
    raw = np.array([predictor.predict(space.blocks(g)).raw_ms for g in genomes])
    calib_raw = [predictor.predict(space.blocks(g)).raw_ms for g in calib]
    session = fit_calibration(calib_raw, calib_meas)  # diagnostic: the table's own error without the drift
    h = table.header
    return {**metrics(pred, meas),
            "raw_sum": {k: v for k, v in metrics(raw, meas).items() if k in ("mape", "bias", "spearman")},
            "calibration_subnets_bias": float(np.mean(calib_meas / calib_pred - 1) * 100),
            "session_calibrated": metrics(np.asarray(session.apply(raw)), meas),
            "calibration": {"scale": h.calibration_scale, "offset_ms": h.calibration_offset_ms,
                            "overhead_ms": h.per_call_overhead_ms},
            "table_entries": len(table), "pred_ms": [float(p) for p in pred]}


def entry_agreement(template: LatencyTable, profiled: LatencyTable) -> dict[str, float]:
    """How far the template path's block entries are from the directly profiled ones (same keys)."""
    keys = sorted(set(template.entries) & set(profiled.entries))
    rel = np.array([template.entries[k].mean_ms / profiled.entries[k].mean_ms - 1 for k in keys])
    return {"blocks": len(keys), "median_abs_diff": float(np.median(np.abs(rel)) * 100),
            "mean_diff": float(np.mean(rel) * 100), "within_10": float(np.mean(np.abs(rel) <= 0.10) * 100)}


def run_one(space_name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    space = get_space(space_name, **SPACES[space_name])
    template, costs = template_table(space, workdir / space_name, args)
    start = time.monotonic()
    profiled = profile_space(space, BACKEND, out_path=workdir / f"{space_name}-profiled.csv", runs=args.runs,
                             passes=args.passes, n_calibration=10, resume=False, progress=False,
                             realtime=args.realtime)
    build_s = time.monotonic() - start
    genomes, calib = validation_genomes(space, args.n, seed=args.seed), calibration_genomes(space, 10, seed=10_007)
    start = time.monotonic()
    timings = measure_subnets(space, genomes + calib, BACKEND, runs=args.runs, passes=args.passes, seed=args.seed,
                              realtime=args.realtime)
    measure_s = time.monotonic() - start
    meas = np.array([t.mean_ms for t in timings[:len(genomes)]])
    calib_meas = np.array([t.mean_ms for t in timings[len(genomes):]])
    scored = {label: score(table, space, genomes, meas, calib, calib_meas)
              for label, table in (("template", template), ("profiled", profiled))}
    preds = {label: s.pop("pred_ms") for label, s in scored.items()}
    return {"space": space_name, "backend": BACKEND, "n": len(genomes), "target_within_10": TARGET_WITHIN_10,
            "template": {**scored["template"], **costs}, "profiled": {**scored["profiled"],
                                                                        "table_build_s": round(build_s, 1)},
            "entries_vs_profiled": entry_agreement(template, profiled),
            "noise": noise_floor(np.array([t.pass_ms for t in timings[:len(genomes)]])),
            "measure_s": round(measure_s, 1), "measured_ms_range": [float(meas.min()), float(meas.max())],
            "subnets": [{"genome": g.key, "measured_ms": float(m), "template_ms": t, "profiled_ms": p}
                        for g, m, t, p in zip(genomes, meas, preds["template"], preds["profiled"])]}


def print_table(results: list[dict[str, Any]]) -> None:
    cols = ("space", "table", "n", "±5%", "±10%", "target", "MAPE", "bias", "ρ", "raw MAPE", "cal. drift",
            "same-session ±10%", "entries", "entries vs profiled", "noise ±10%", "ms range")
    print(" | ".join(cols))
    for r in results:
        lo, hi = r["measured_ms_range"]
        agree = r["entries_vs_profiled"]
        for label in ("template", "profiled"):
            s = r[label]
            print(" | ".join([r["space"], label, str(r["n"]), f"{s['within_5']:.0f}%", f"{s['within_10']:.0f}%",
                              f"{r['target_within_10']:.0f}%" if label == "template" else "-", f"{s['mape']:.1f}%",
                              f"{s['bias']:+.1f}%", f"{s['spearman']:.3f}", f"{s['raw_sum']['mape']:.1f}%",
                              f"{s['calibration_subnets_bias']:+.1f}%", f"{s['session_calibrated']['within_10']:.0f}%",
                              str(s["table_entries"]),
                              f"median {agree['median_abs_diff']:.1f}%" if label == "template" else "-",
                              f"{r['noise']['within_10']:.0f}%", f"{lo:.2f}-{hi:.2f}"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 subnets, 20 runs each")
    parser.add_argument("--spaces", nargs="+", default=list(SPACES), choices=list(SPACES))
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--passes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "template_validation.json")
    parser.add_argument("--keep", type=Path, help="keep the template folders and tables here (default: a temp folder)")
    parser.add_argument("--no-realtime", dest="realtime", action="store_false",
                        help="time at normal priority (default: SCHED_FIFO while timing, as latency_validation.py)")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.runs = min(args.n, 20), min(args.runs, 20)
    results, load_at_start = [], os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="qnas-template-validation-") as tmp:
        workdir = args.keep or Path(tmp)
        for space_name in args.spaces:
            results.append(run_one(space_name, args, workdir))
            print_table(results[-1:])
            sys.stdout.flush()
    print()
    print_table(results)
    write_results(args, results, spaces={s: SPACES[s] for s in args.spaces}, cpus=os.cpu_count(),
                  load_average_at_start=load_at_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
