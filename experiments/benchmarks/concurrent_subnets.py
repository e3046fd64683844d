"""Subnet evaluations per second with several subnets measured at once on one device (``device.subnets_at_once``).

A supernet of the CIFAR-10 benchmark space (MobileNetV3-like, 32x32, 4/8 bits; weights as initialised: the
cost of an evaluation does not depend on them) measures ``--subnets`` random subnets, each over ``--val``
validation images after BN recalibration on 256 training images, fake-quantized, as the search does. Per
setting (``at_once`` subnets concurrently, ``threads`` torch intra-op threads), rounds run interleaved and the
median evaluations/s is reported. On the CPU concurrent subnets compete for the same cores with the intra-op
threads; on CUDA each has its own stream. The device is CUDA when present (bf16 autocast), else the CPU.

Usage:  QNAS_DATA=../shared/data python experiments/benchmarks/concurrent_subnets.py [--rounds 3]
Results: a printed table and experiments/benchmarks/results/concurrent_subnets[_cuda].json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from nas.accuracy import SupernetAccuracyEvaluator
from search_spaces import get_space
from supernets.data import load_dataset
from supernets.device import resolve_placement
from supernets.evaluate import SubnetEvaluator
from supernets.supernet import QuantSupernet

RESULTS = Path(__file__).parent / "results"
SPACE = dict(in_channels=3, num_classes=10, image_size=32, stem_channels=16, stage_channels=[24, 40, 80],
             stage_strides=[2, 2, 2], stage_se=[False, True, True], stage_act=["relu", "hswish", "hswish"],
             depths=[1, 2, 3], kernels=[3, 5], expands=[3, 4, 6], head_channels=256, w_bits=[4, 6, 8],
             a_bits=[4, 6, 8])


def rate(ev: SupernetAccuracyEvaluator, genomes: list) -> float:
    start = time.perf_counter()
    results = ev.evaluate(genomes)
    seconds = time.perf_counter() - start
    assert all("accuracy" in r for r in results)
    return len(genomes) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--subnets", type=int, default=8)
    parser.add_argument("--val", type=int, default=2000, help="validation images per evaluation")
    parser.add_argument("--at-once", type=int, nargs="+", default=None, help="default: 1 2 4 (CPU), 1 2 4 8 (CUDA)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    placement = resolve_placement()
    cuda = placement.is_cuda
    at_once = args.at_once or ([1, 2, 4, 8] if cuda else [1, 2, 4])
    threads = [max(args.threads)] if cuda else args.threads
    torch.manual_seed(0)
    data = load_dataset("cifar10", seed=0, variant="subset", max_train=256).to(placement.device,
                                                                                 channels_last=placement.channels_last)
    space = get_space("mbv3", **SPACE)
    net = QuantSupernet(space, image_size=32)
    placement.put_module(net)
    subnets = SubnetEvaluator(net.eval(), data.train_x[:256], data.val_x[: args.val], data.val_y[: args.val],
                              batch_size=500, placement=placement)
    rng = np.random.default_rng(0)
    genomes = [space.sample(rng) for _ in range(args.subnets)]
    settings = [(k, t) for t in threads for k in at_once]
    evaluators = {k: SupernetAccuracyEvaluator(subnets, at_once=k) for k in at_once}
    reference = evaluators[1].evaluate(genomes)
    for k in at_once[1:]:  # the same figures whatever the concurrency
        got = evaluators[k].evaluate(genomes)
        assert [r["accuracy"] for r in got] == [r["accuracy"] for r in reference], f"at_once {k} differs"
    rates: dict[tuple[int, int], list[float]] = {s: [] for s in settings}
    for _ in range(args.rounds):
        for k, t in settings:
            torch.set_num_threads(t)
            rates[(k, t)].append(rate(evaluators[k], genomes))
    rows = []
    print(f"{'threads':>7} {'at once':>7} {'eval/s':>8} {'vs 1 at once':>12}")
    for k, t in settings:
        median = statistics.median(rates[(k, t)])
        base = statistics.median(rates[(1, t)])
        rows.append({"threads": t, "at_once": k, "evaluations_per_s": median, "speedup": median / base,
                     "rounds": rates[(k, t)]})
        print(f"{t:>7} {k:>7} {median:>8.2f} {median / base:>11.2f}x")
    device = torch.cuda.get_device_name(placement.device) if cuda else platform.processor() or platform.machine()
    out = args.out or RESULTS / f"concurrent_subnets{'_cuda' if cuda else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": device, "placement": placement.describe(), "space": SPACE,
                               "subnets": args.subnets,
                               "val_images": args.val, "rounds": args.rounds, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
