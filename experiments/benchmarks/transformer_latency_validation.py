"""Validation benchmark of transformer latency tables: predicted vs measured end-to-end ORT INT8 latency.

For the LM space of ``experiments/lm_shakespeare.yaml`` and the ViT space of ``experiments/vit_cifar10.yaml``:
profile a fresh table of transformer blocks on this machine (``nas.transformer_latency``: every distinct
block its own ONNX Runtime INT8 model, per-call overhead taken off, calibration fitted on 20 whole subnets),
then draw N random subnets (distinct from the calibration subnets), extract each from a
``TransformerSupernet`` with random weights, quantize it with ``transformer_ort_int8(strict=False)`` and time it
end to end (batch 1, 1 thread, thread CPU-time clock, interleaved passes) beside the 20 calibration subnets.

Reported per space: % within ±5 % / ±10 %, median and worst absolute relative error, MAPE, bias, Spearman ρ for
three predictions: ``overhead + Σ blocks`` (raw, no calibration), the table's calibration as built, and the
calibration refitted on the 20 calibration subnets re-measured in this session (what a run does at its start
with ``latency.profile.recalibrate: true``, the default); plus the noise floor (even vs odd timing passes of
the same measurement).

    .venv/bin/python experiments/benchmarks/transformer_latency_validation.py            # 100 subnets per space
    .venv/bin/python experiments/benchmarks/transformer_latency_validation.py --quick    # 20 subnets, fewer runs
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

from nas.profiling import calibration_genomes
from nas.transformer_latency import (CALIBRATION_SEED, N_CALIBRATION, measure_transformer_subnets,
                                     profile_transformer_space)
from predictors.latency import fit_calibration
from predictors.latency.transformer_table import TransformerLatencyPredictor
from search_spaces import Genome, SearchSpace, get_space
from supernets import timing

HERE = Path(__file__).resolve().parent
SPACES: dict[str, dict[str, Any]] = {
    "lm": dict(front="lm", vocab_size=65, seq_len=64, depths=[2, 3, 4], widths=[64, 96, 128], heads=[2, 4],
               mlp_ratios=[2, 3, 4], w_bits=[4, 8], a_bits=[8]),  # experiments/lm_shakespeare.yaml
    "vit": dict(front="vit", image_size=32, in_channels=3, patch_size=4, num_classes=10, pooling="cls",
                depths=[2, 3, 4], widths=[64, 96], heads=[2, 3], mlp_ratios=[2, 3], w_bits=[4, 8],
                a_bits=[8]),  # experiments/vit_cifar10.yaml
}
BACKEND = "onnxruntime-int8"
TARGET_WITHIN_10 = 95.0


def validation_genomes(space: SearchSpace, n: int, seed: int) -> list[Genome]:
    """``n`` distinct random subnets, none of them a calibration subnet."""
    exclude = set(calibration_genomes(space, N_CALIBRATION, seed=CALIBRATION_SEED))
    rng, out = np.random.default_rng(seed), []
    while len(out) < n:
        g = space.sample(rng)
        if g not in exclude and g not in out:
            out.append(g)
    return out


def metrics(pred: np.ndarray, meas: np.ndarray) -> dict[str, float]:
    err = (pred - meas) / meas
    return {"within_5": float(np.mean(np.abs(err) <= 0.05) * 100),
            "within_10": float(np.mean(np.abs(err) <= 0.10) * 100),
            "median_abs_err": float(np.median(np.abs(err)) * 100), "worst_abs_err": float(np.max(np.abs(err)) * 100),
            "mape": float(np.mean(np.abs(err)) * 100), "bias": float(np.mean(err) * 100),
            "spearman": float(spearmanr(pred, meas).statistic)}


def noise_floor(pass_ms: np.ndarray) -> dict[str, float]:
    """How far the even and the odd passes of the same measurement disagree (the ceiling on accuracy)."""
    a, b = pass_ms[:, 0::2].mean(axis=1), pass_ms[:, 1::2].mean(axis=1)
    rel = np.abs(a - b) / ((a + b) / 2)
    return {"median": float(np.median(rel) * 100), "within_5": float(np.mean(rel <= 0.05) * 100),
            "within_10": float(np.mean(rel <= 0.10) * 100)}


def run_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    space = get_space("transformer", **SPACES[name])
    start = time.monotonic()
    table = profile_transformer_space(space, BACKEND, out_path=args.tables / f"transformer-{name}-{BACKEND}.csv",
                                      runs=args.runs, passes=args.passes, n_calibration=N_CALIBRATION)
    build_s = time.monotonic() - start
    genomes = validation_genomes(space, args.n, seed=args.seed)
    calib = calibration_genomes(space, N_CALIBRATION, seed=CALIBRATION_SEED)
    start = time.monotonic()
    timings = measure_transformer_subnets(space, genomes + calib, BACKEND, runs=args.runs, passes=args.passes,
                                          seed=args.seed)
    measure_s = time.monotonic() - start
    timings, calib_timings = timings[:len(genomes)], timings[len(genomes):]
    meas = np.array([t.mean_ms for t in timings])
    predictor = TransformerLatencyPredictor(table, space)
    estimates = [predictor.predict(g) for g in genomes]
    pred = np.array([e.ms for e in estimates])
    raw = np.array([e.raw_ms for e in estimates])
    calib_raw = [predictor.predict(g).raw_ms for g in calib]
    session = fit_calibration(calib_raw, [t.mean_ms for t in calib_timings])
    session_pred = np.asarray(session.apply(raw))
    calib_meas = np.array([t.mean_ms for t in calib_timings])
    h = table.header
    return {"space": name, "options": SPACES[name], "backend": BACKEND, "n": len(genomes),
            "table_calibration": metrics(pred, meas), "raw_sum": metrics(raw, meas),
            "session_calibration": metrics(session_pred, meas),
            "noise": noise_floor(np.array([t.pass_ms for t in timings])),
            "target_within_10": TARGET_WITHIN_10, "table_entries": len(table), "table_build_s": round(build_s, 1),
            "measure_s": round(measure_s, 1),
            "calibration": {"scale": h.calibration_scale, "offset_ms": h.calibration_offset_ms,
                            "subnets": h.calibration_subnets},
            "session_calibration_fit": {"scale": session.scale, "offset_ms": session.offset_ms},
            "calibration_subnets_now": metrics(np.asarray(predictor.predict_genomes(calib)), calib_meas),
            "overhead_ms": h.per_call_overhead_ms, "measured_ms_range": [float(meas.min()), float(meas.max())],
            "subnets": [{"genome": g.key, "raw_ms": float(r), "pred_ms": float(p), "session_pred_ms": float(s),
                         "measured_ms": float(m)} for g, r, p, s, m in zip(genomes, raw, pred, session_pred, meas)]}


def print_table(results: list[dict[str, Any]]) -> None:
    cols = ("space", "prediction", "n", "±5%", "±10%", "target", "median |err|", "worst |err|", "MAPE", "bias", "ρ",
            "noise ±10%", "ms range", "entries", "build s")
    print(" | ".join(cols))
    for r in results:
        lo, hi = r["measured_ms_range"]
        for label, key in (("raw overhead+Σ", "raw_sum"), ("table calibration", "table_calibration"),
                           ("session calibration", "session_calibration")):
            m = r[key]
            print(" | ".join([r["space"], label, str(r["n"]), f"{m['within_5']:.0f}%", f"{m['within_10']:.0f}%",
                              f"{r['target_within_10']:.0f}%", f"{m['median_abs_err']:.1f}%",
                              f"{m['worst_abs_err']:.1f}%", f"{m['mape']:.1f}%", f"{m['bias']:+.1f}%",
                              f"{m['spearman']:.3f}", f"{r['noise']['within_10']:.0f}%", f"{lo:.3f}-{hi:.3f}",
                              str(r["table_entries"]), f"{r['table_build_s']:.0f}"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 subnets, 20 runs each")
    parser.add_argument("--spaces", nargs="+", default=list(SPACES), choices=list(SPACES))
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--passes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--tables", type=Path, default=HERE / "results" / "latency_tables")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.runs = min(args.n, 20), min(args.runs, 20)
    if args.out is None:
        suffix = "_quick" if args.quick else ""
        args.out = HERE / "results" / f"transformer_latency_validation{suffix}.json"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    started, results = time.monotonic(), []
    for name in args.spaces:
        results.append(run_one(name, args))
        print_table(results[-1:])
        sys.stdout.flush()
    print()
    print_table(results)
    report = {"device": timing.device_name(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "settings": {"backend": BACKEND, "threads": 1, "batch": 1, "runs": args.runs, "passes": args.passes,
                           "n": args.n, "clock": timing.default_clock(1), "realtime": False, "quick": args.quick,
                           "calibration_subnets": N_CALIBRATION, "seed": args.seed,
                           "export": "transformer_ort_int8(strict=False), MatMul/Gemm/Gather QDQ",
                           "weights": "random (TransformerSupernet seed 0, quantizers initialised on random input)",
                           "load_average_at_end": os.getloadavg()[0],
                           "total_s": round(time.monotonic() - started, 1)},
              "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
