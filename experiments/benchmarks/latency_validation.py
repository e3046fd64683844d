"""Validation benchmark of latency tables: predicted vs measured end-to-end latency of random subnets.

For each space and backend: profile a fresh table on this machine (timed), draw N random subnets
(distinct from the calibration subnets), measure them end to end (batch 1, 1 thread, interleaved,
>= 2 passes; 10 short passes by default) and compare with the table's prediction. Reports % within ±5% / ±10%, MAPE, Spearman ρ,
the uncalibrated block sum's MAPE, the pass-to-pass noise floor of the measurements themselves, and
the drift since the table was built (the 10 calibration subnets re-measured beside the validation ones).

    .venv/bin/python experiments/benchmarks/latency_validation.py            # full: 100 subnets per space
    .venv/bin/python experiments/benchmarks/latency_validation.py --quick    # 20 subnets, fewer runs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from nas.profiling import calibration_genomes, measure_subnets, profile_space
from predictors.latency import LatencyPredictor, fit_calibration
from search_spaces import Genome, SearchSpace, get_space
from supernets import timing

HERE = Path(__file__).resolve().parent
SPACES: dict[str, dict[str, Any]] = {
    "mbv3": dict(image_size=32, stem_channels=16, stage_channels=[16, 24, 40, 64], stage_strides=[1, 2, 2, 2],
                 stage_se=[False, True, False, True], stage_act=["relu", "relu", "hswish", "hswish"],
                 head_channels=256),
    "resnet": dict(image_size=32, stem_channels=32, stage_channels=[32, 64, 128, 256]),
}
TARGETS = {"torch-fp32": 99.0, "onnxruntime-fp32": 99.0, "onnxruntime-int8": 99.0, "torch-int8": 95.0}


def validation_genomes(space: SearchSpace, n: int, seed: int) -> list[Genome]:
    """``n`` distinct random subnets, none of them a calibration subnet (those use another seed)."""
    exclude = set(calibration_genomes(space, 10, seed=10_007))
    rng, out = np.random.default_rng(seed), []
    while len(out) < n:
        g = space.sample(rng)
        if g not in exclude and g not in out:
            out.append(g)
    return out


def metrics(pred: np.ndarray, meas: np.ndarray) -> dict[str, float]:
    err = (pred - meas) / meas
    return {"within_5": float(np.mean(np.abs(err) <= 0.05) * 100), "within_10": float(np.mean(np.abs(err) <= 0.10) * 100),
            "mape": float(np.mean(np.abs(err)) * 100), "bias": float(np.mean(err) * 100),
            "spearman": float(spearmanr(pred, meas).statistic)}


def noise_floor(pass_ms: np.ndarray) -> dict[str, float]:
    """How far the even and the odd passes of the same measurement disagree (the ceiling on accuracy)."""
    a, b = pass_ms[:, 0::2].mean(axis=1), pass_ms[:, 1::2].mean(axis=1)
    rel = np.abs(a - b) / ((a + b) / 2)
    return {"median": float(np.median(rel) * 100), "within_5": float(np.mean(rel <= 0.05) * 100),
            "within_10": float(np.mean(rel <= 0.10) * 100), "mape": float(np.mean(rel) * 100)}


def run_one(space_name: str, backend: str, args: argparse.Namespace) -> dict[str, Any]:
    space = get_space(space_name, **SPACES[space_name])
    start = time.monotonic()
    table = profile_space(space, backend, out_path=args.tables / f"{space_name}-{backend}.csv", runs=args.runs,
                          passes=args.passes, n_calibration=10, resume=False, progress=not args.no_progress,
                          realtime=args.realtime)
    build_s = time.monotonic() - start
    genomes, calib = validation_genomes(space, args.n, seed=args.seed), calibration_genomes(space, 10, seed=10_007)
    start = time.monotonic()
    timings = measure_subnets(space, genomes + calib, backend, runs=args.runs, passes=args.passes, seed=args.seed,
                              realtime=args.realtime)
    timings, calib_timings = timings[:len(genomes)], timings[len(genomes):]
    measure_s = time.monotonic() - start
    predictor = LatencyPredictor(table, strict=True)
    pred = predictor.predict_genomes(space, genomes).ms
    calib_pred = predictor.predict_genomes(space, calib).ms
    calib_meas = np.array([t.mean_ms for t in calib_timings])
    drift = float(np.mean(calib_meas / calib_pred - 1) * 100)
    # Diagnostic only: the same calibration refitted on the calibration subnets re-measured in this session
    # separates the table's own error from the machine's drift since the table was built.
    calib_raw = [predictor.predict(space.blocks(g)).raw_ms for g in calib]
    session = fit_calibration(calib_raw, calib_meas)
    raw = np.array([predictor.predict(space.blocks(g)).raw_ms for g in genomes])
    meas = np.array([t.mean_ms for t in timings])
    h = table.header
    return {"space": space_name, "backend": backend, "n": len(genomes), **metrics(pred, meas),
            "raw_sum": {k: v for k, v in metrics(raw, meas).items() if k in ("mape", "bias", "spearman")},
            "noise": noise_floor(np.array([t.pass_ms for t in timings])),
            "calibration_subnets_bias": drift,
            "session_calibrated": metrics(np.asarray(session.apply(raw)), meas),
            "target_within_10": TARGETS[backend], "table_entries": len(table), "table_build_s": round(build_s, 1),
            "measure_s": round(measure_s, 1), "calibration": {"scale": h.calibration_scale,
                                                              "offset_ms": h.calibration_offset_ms},
            "overhead_ms": h.per_call_overhead_ms, "measured_ms_range": [float(meas.min()), float(meas.max())],
            "subnets": [{"genome": g.key, "pred_ms": float(p), "measured_ms": float(m)}
                        for g, p, m in zip(genomes, pred, meas)]}


def print_table(results: list[dict[str, Any]]) -> None:
    cols = ("space", "backend", "n", "±5%", "±10%", "target", "MAPE", "bias", "ρ", "raw MAPE", "noise ±5%",
            "noise ±10%", "noise med", "cal. drift", "same-session ±10%", "ms range", "entries", "build s")
    print(" | ".join(cols))
    for r in results:
        lo, hi = r["measured_ms_range"]
        print(" | ".join([r["space"], r["backend"], str(r["n"]), f"{r['within_5']:.0f}%", f"{r['within_10']:.0f}%",
                          f"{r['target_within_10']:.0f}%", f"{r['mape']:.1f}%", f"{r['bias']:+.1f}%", f"{r['spearman']:.3f}",
                          f"{r['raw_sum']['mape']:.1f}%", f"{r['noise']['within_5']:.0f}%",
                          f"{r['noise']['within_10']:.0f}%", f"{r['noise']['median']:.1f}%",
                          f"{r['calibration_subnets_bias']:+.1f}%", f"{r['session_calibrated']['within_10']:.0f}%",
                          f"{lo:.2f}-{hi:.2f}",
                          str(r["table_entries"]), f"{r['table_build_s']:.0f}"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 subnets, 20 runs each")
    parser.add_argument("--spaces", nargs="+", default=list(SPACES), choices=list(SPACES))
    parser.add_argument("--backends", nargs="+", default=list(timing.BACKENDS), choices=list(timing.BACKENDS))
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--passes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latency_validation.json")
    parser.add_argument("--tables", type=Path, default=HERE / "results" / "latency_tables")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--no-realtime", dest="realtime", action="store_false",
                        help="time at normal priority (default: SCHED_FIFO while timing, see "
                             "experiments/latency_tables/README.md)")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.runs = min(args.n, 20), min(args.runs, 20)
    results = []
    for space_name in args.spaces:
        for backend in args.backends:
            results.append(run_one(space_name, backend, args))
            print_table(results[-1:])
            sys.stdout.flush()
    print()
    print_table(results)
    write_results(args, results, spaces=SPACES)
    return 0


def write_results(args: argparse.Namespace, results: list[dict[str, Any]], **settings: Any) -> None:
    """``args.out``: the machine, the date, the timing settings and ``results``, written atomically."""
    report = {"device": timing.device_name(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "settings": {"threads": 1, "batch": 1, "runs": args.runs, "passes": args.passes, "n": args.n,
                           "clock": timing.default_clock(1), "realtime": args.realtime, "quick": args.quick,
                           **settings, "load_average_at_end": os.getloadavg()[0]},
              "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
