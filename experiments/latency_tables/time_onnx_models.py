"""Stand-in for a device's runtime: time the ONNX models of a ``qnas latency template`` folder with ONNX
Runtime, and fill the folder's blocks.csv and subnets.csv.

It reads only the folder (manifest.json, models/, subnets/ and the two CSV files) and imports onnxruntime
and numpy, nothing of qnas: the way a vendor SDK's benchmark tool (TFLite's benchmark_model, QNN's
qnn-net-run, trtexec) would be scripted for an NPU, a DSP or a phone. Replace ``Runtime`` with yours.
The protocol is ``qnas latency profile``'s: one thread pinned to the last CPU, that thread's CPU time
as the clock, the runs spread over interleaved passes (each with untimed warm-up runs), the mean of
the per-pass medians; the empty model gets eight times the runs (its time is tiny and noisy).

    python experiments/latency_tables/time_onnx_models.py tpl/ --runs 50 --passes 10
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

STATS = ("mean_ms", "std_ms", "count")


class Runtime:
    """One model loaded for timing: ``run()`` executes it once on a prepared input."""

    def __init__(self, path: Path, inputs: Sequence[dict], threads: int, seed: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(seed)
        self.feed = {i["name"]: rng.integers(0, 256, i["shape"], dtype=np.uint8) if i["dtype"] == "uint8" else
                     rng.standard_normal(i["shape"]).astype(i["dtype"]) for i in inputs}

    def run(self) -> None:
        self.session.run(None, self.feed)


def time_interleaved(runners: Sequence[Callable[[], None]], runs: int, passes: int, warmup: int
                     ) -> list[tuple[float, float, int]]:
    """(mean of pass medians, 1.4826 x MAD of all runs, runs) in ms per runner; every other pass reversed."""
    per_pass = max(1, math.ceil(runs / passes))
    samples: list[list[np.ndarray]] = [[] for _ in runners]
    for p in range(passes):
        for i in (range(len(runners)) if p % 2 == 0 else reversed(range(len(runners)))):
            for _ in range(warmup):
                runners[i]()
            out = np.empty(per_pass)
            for k in range(per_pass):
                start = time.thread_time_ns()
                runners[i]()
                out[k] = time.thread_time_ns() - start
            samples[i].append(out / 1e6)
    results = []
    for passes_ms in samples:
        values = np.concatenate(passes_ms)
        mad = float(np.median(np.abs(values - np.median(values))))
        results.append((float(np.mean([np.median(s) for s in passes_ms])), 1.4826 * mad, int(values.size)))
    return results


def time_models(folder: Path, items: Sequence[dict], args: argparse.Namespace, *, runs: int, warmup: int
                ) -> dict[str, tuple[float, float, int]]:
    """Time the models of ``items`` (manifest entries) in interleaved chunks; keyed by their file."""
    out: dict[str, tuple[float, float, int]] = {}
    for start in range(0, len(items), args.chunk):
        chunk = items[start:start + args.chunk]
        runtimes = [Runtime(folder / item["file"], item["inputs"], args.threads, start + i)
                    for i, item in enumerate(chunk)]
        timings = time_interleaved([r.run for r in runtimes], runs, args.passes, warmup)
        out.update({item["file"]: t for item, t in zip(chunk, timings)})
        print(f"  {start + len(chunk)}/{len(items)} models timed", file=sys.stderr)
    return out


def fill_csv(path: Path, fill: Callable[[dict[str, str]], dict[str, str] | None]) -> int:
    """Rewrite the data rows of a CSV with ``# header`` lines, cells changed by ``fill(row)``; other lines kept."""
    lines, columns, filled = path.read_text(encoding="utf-8").splitlines(keepends=True), None, 0
    for i, line in enumerate(lines):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cells = next(csv.reader([line]))
        if columns is None:
            columns = [c.strip() for c in cells]
            continue
        changes = fill(dict(zip(columns, (c.strip() for c in cells))))
        if changes:
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerow([changes.get(c, v) for c, v in zip(columns, cells)])
            lines[i], filled = buf.getvalue(), filled + 1
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, path)
    return filled


def _ms(x: float) -> str:
    return f"{x:.6g}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a folder written by qnas latency template --models onnx")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per model in all")
    parser.add_argument("--passes", type=int, default=10, help="interleaved passes the runs are spread over")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per model and pass")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=16, help="models timed interleaved together")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to the last CPU")
    parser.add_argument("--realtime", action="store_true", help="SCHED_FIFO while timing (root or CAP_SYS_NICE)")
    args = parser.parse_args(argv)
    manifest = json.loads((args.folder / "manifest.json").read_text(encoding="utf-8"))
    if not manifest.get("blocks"):
        parser.error(f"{args.folder}: no models in manifest.json (write the template with --models onnx)")
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    if args.realtime:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        except OSError as err:
            print(f"realtime priority refused ({err}); timing at normal priority", file=sys.stderr)
    blocks = time_models(args.folder, manifest["blocks"], args, runs=args.runs, warmup=args.warmup)
    by_signature = {tuple(b["signature"].items()): blocks[b["file"]] for b in manifest["blocks"]}
    columns = list(manifest["blocks"][0]["signature"])

    def fill_block(row: dict[str, str]) -> dict[str, str] | None:
        found = by_signature.get(tuple((c, row.get(c, "")) for c in columns))
        return None if found is None else {"mean_ms": _ms(found[0]), "std_ms": _ms(found[1]), "count": str(found[2])}

    n_blocks = fill_csv(args.folder / "blocks.csv", fill_block)
    overhead = [s for s in manifest["subnets"] if s["genes"] is None]
    nets = [s for s in manifest["subnets"] if s["genes"] is not None]
    subnets = time_models(args.folder, overhead, args, runs=8 * args.runs, warmup=10)
    subnets.update(time_models(args.folder, nets, args, runs=args.runs, warmup=args.warmup))
    by_name = {s["name"]: subnets[s["file"]][0] for s in manifest["subnets"]}
    n_subnets = fill_csv(args.folder / "subnets.csv",
                         lambda row: {"mean_ms": _ms(by_name[row["name"]])} if row.get("name") in by_name else None)
    print(f"filled {n_blocks} rows of blocks.csv and {n_subnets} of subnets.csv in {args.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
