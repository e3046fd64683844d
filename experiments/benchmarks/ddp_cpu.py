"""Supernet training in several gloo processes on this CPU: training images per second, 1 vs 2 processes.

The same supernet (the quickstart's space on the 8x8 digits, or a 28x28 MNIST one; sandwich rule
with 2 random subnets, QAT from the first sandwich epoch) is trained from scratch at each global
batch size in three settings, interleaved and repeated: one process with one torch thread, two gloo
processes with one thread each (``distributed: {processes: 2}``), and the same with
``sync_batch_norm: false`` (each shard normalised by itself, as plain DDP does: no collective per BN
layer). One process with two threads is not compared: on this shared machine it ran 10x slower than
with one, the oversubscription ``executor.threads`` warns about.

Throughput is global-batch images per second of the sandwich epochs' optimizer steps (rank 0's
``train_seconds``, without its evaluation after each epoch); ``wall_s`` is the whole training,
process start-up and evaluations included. The load average is recorded before and after each
training, because other jobs share the cores.

Usage:  python experiments/benchmarks/ddp_cpu.py [--dataset digits|mnist] [--repeats 2] [--batch-sizes 64 256]
Results: a printed table and experiments/benchmarks/results/ddp_cpu_<dataset>.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from search_spaces import get_space
from supernets.config import SupernetConfig
from supernets.data import load_dataset
from supernets.device import CPU
from supernets.fit import fit_supernet
from supernets.launch import LaunchPlan

RESULTS = Path(__file__).parent / "results"
SPACES = {  # digits: experiments/quickstart.yaml's space; mnist: supernet_benchmark.py's (28x28, 4,096 images)
    "digits": (dict(in_channels=1, num_classes=10, image_size=8, stem_channels=8, stage_channels=[16, 24, 32],
                    stage_strides=[1, 2, 2], stage_se=[False, True, True], stage_act=["relu", "hswish", "hswish"],
                    depths=[1, 2, 3], head_channels=64), {}),
    "mnist": (dict(in_channels=1, image_size=28, stem_channels=16, stem_stride=2, stage_channels=[16, 24, 40],
                   stage_strides=[1, 2, 2], stage_se=[False, True, True], stage_act=["relu", "hswish", "hswish"],
                   depths=[1, 2, 3], kernels=[3, 5], expands=[2, 4, 6], head_channels=128, w_bits=[4, 8],
                   a_bits=[4, 8]), {"max_train": 4096}),
}
SETTINGS = {"1 process": (1, 1, True), "2 processes": (2, 1, True), "2 processes, local BN": (2, 1, False)}


def train_once(dataset: str, processes: int, threads: int, sync_bn: bool, epochs: int, batch_size: int) -> dict:
    """Train the supernet from scratch in one setting; its sandwich-epoch throughput and wall time."""
    options, data_options = SPACES[dataset]
    space, data = get_space("mbv3", **options), load_dataset(dataset, **data_options)
    config = SupernetConfig(warmup_epochs=1, epochs=epochs, batch_size=batch_size, lr=0.05, bn_calib_samples=256,
                            seed=0)
    torch.set_num_threads(threads)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="qnas-ddp-") as tmp:
        start = time.perf_counter()
        launch = (LaunchPlan(processes=processes, backend="gloo", threads=threads, sync_bn=sync_bn)
                  if processes > 1 else None)
        trainer = fit_supernet(space, data, config, checkpoint=Path(tmp) / "s.pt", progress=False, log=None,
                               placement=CPU, launch=launch)
        wall = time.perf_counter() - start
    images = trainer.steps_per_epoch * config.batch_size
    sandwich = [h.train_seconds for h in trainer.history if h.phase != "warmup"]
    return {"processes": processes, "threads": threads, "sync_bn": sync_bn, "batch_size": batch_size, "wall_s": wall,
            "sandwich_train_s": sandwich,
            "images_per_s": images / statistics.mean(sandwich), "images_per_epoch": images,
            "final_loss": trainer.history[-1].loss, "max_acc": trainer.history[-1].max_acc,
            "load_before": load_before, "load_after": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1, help="sandwich epochs (after one float warm-up epoch)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256], help="global batch sizes")
    parser.add_argument("--dataset", choices=sorted(SPACES), default="digits", help="mnist needs QNAS_DATA")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {}
    for repeat in range(args.repeats):
        for batch in args.batch_sizes:
            for name, (processes, threads, sync_bn) in SETTINGS.items():
                r = train_once(args.dataset, processes, threads, sync_bn, args.epochs, batch)
                runs.setdefault(f"batch {batch}, {name}", []).append(r)
                print(f"[{repeat + 1}/{args.repeats}] batch {batch}, {name}: {r['images_per_s']:.0f} images/s, "
                      f"wall {r['wall_s']:.1f} s, load {r['load_before']:.2f} -> {r['load_after']:.2f}", flush=True)
    summary = _summary(runs, args.batch_sizes)
    out = RESULTS / f"ddp_cpu_{args.dataset}.json"
    out.write_text(json.dumps({"space": SPACES[args.dataset][0], "dataset": args.dataset, "data_options":
                               SPACES[args.dataset][1], "random_subnets": 2, "sandwich_epochs": args.epochs,
                               "cpus": len(os.sched_getaffinity(0)), "cpu": CPU.describe()["cpu"],
                               "torch": torch.__version__, "summary": summary, "runs": runs}, indent=2))
    print(f"wrote {out}")


def _summary(runs: dict[str, list[dict]], batch_sizes: list[int]) -> dict[str, dict]:
    """Median images/s per setting, relative to one process at the same batch size; printed as a table."""
    print(f"\n{'setting':34s} {'images/s (median)':>18s} {'vs 1 process':>13s} {'wall s':>7s} {'load':>5s}")
    summary = {}
    for name, rows in runs.items():
        base = next(f"batch {b}, 1 process" for b in batch_sizes if name.startswith(f"batch {b},"))
        ips = statistics.median(r["images_per_s"] for r in rows)
        ratio = ips / statistics.median(r["images_per_s"] for r in runs[base])
        load = statistics.mean((r["load_before"] + r["load_after"]) / 2 for r in rows)
        summary[name] = {"images_per_s": ips, "vs_one_process": ratio, "wall_s": statistics.median(r["wall_s"] for r in rows),
                         "load_average": load}
        print(f"{name:34s} {ips:18.0f} {ratio:12.2f}x {summary[name]['wall_s']:7.1f} {load:5.1f}")
    return summary


if __name__ == "__main__":
    main()
