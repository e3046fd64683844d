"""How much of a measured subnet accuracy is the choice of BN-calibration images?

Every subnet evaluation recalibrates BN on ``bn_calib_samples`` training images. Which images is a
noise source no accuracy predictor can learn: it caps the Kendall τ any predictor can reach against
such labels. For each calibration size, the same subnets are measured with BN calibrated on two
disjoint draws of training images (on all the test images), and the two rankings compared.

Usage:  python experiments/benchmarks/calibration_noise.py --checkpoint experiments/benchmarks/results/supernet_cifar10_b3468.pt
Results: a printed table and experiments/benchmarks/results/calibration_noise_<checkpoint tag>.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau

from subnet_pool import MeasuredPool
from supernets.evaluate import SubnetEvaluator

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--subnets", type=int, default=24)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024], help="calibration images")
    parser.add_argument("--eval-samples", type=int, default=10000, help="test images per measurement")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tag = Path(args.checkpoint).stem.removeprefix("supernet_")
    # the predictor benchmark's held-out subnets (draw[400:]), so its 10k-test-image pool already holds the
    # first 256-image measurement of each
    pool = MeasuredPool(args.checkpoint, args.dataset, RESULTS / f"pool_{tag}_test{args.eval_samples}.jsonl",
                        eval_samples=args.eval_samples, split="test")
    genomes = pool.draw(600, seed=0)[400:400 + args.subnets]
    x, y = pool.data.test_x[:args.eval_samples], pool.data.test_y[:args.eval_samples]
    rows = []
    for size in args.sizes:
        if 2 * size > len(pool.data.train_x):
            parser.error(f"--sizes {size}: two disjoint draws need {2 * size} training images")
        start = time.perf_counter()
        first = (np.array(pool.accuracies(genomes)) if size == pool.calib else
                 np.array([SubnetEvaluator(pool.net, pool.data.train_x[:size], x, y).accuracy(g) for g in genomes]))
        other = SubnetEvaluator(pool.net, pool.data.train_x[size:2 * size], x, y)
        second = np.array([other.accuracy(g) for g in genomes])
        diff = first - second
        rows.append({"calibration_images": size, "subnets": len(genomes), "kendall_tau": float(kendalltau(first, second)[0]),
                     "mean_abs_difference": float(np.abs(diff).mean()), "difference_std": float(diff.std()),
                     "accuracy_std": float(first.std()), "seconds": time.perf_counter() - start,
                     "first": first.tolist(), "second": second.tolist()})
        print(f"{size:5d} calibration images: tau {rows[-1]['kendall_tau']:.3f}  mean |difference| "
              f"{100 * rows[-1]['mean_abs_difference']:.2f} pp  (accuracy std {100 * first.std():.2f} pp)", flush=True)
    out = RESULTS / f"calibration_noise_{tag}.json"
    out.write_text(json.dumps({"checkpoint": args.checkpoint, "eval_samples": args.eval_samples, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
