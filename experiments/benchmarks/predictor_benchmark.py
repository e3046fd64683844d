"""Accuracy-predictor benchmark on real supernet measurements.

From a trained supernet (``supernet_benchmark.py`` writes one), a pool of random subnets is
measured once (quantized and float accuracy; resumable, see ``subnet_pool.py``). Then:

1. learning curves: held-out Kendall tau and RMSE of every model, ``auto`` and the ensemble, with
   25/50/100/200/400 training samples (200 held-out subnets), as mean ± standard error over ``--repeats``
   random train/held-out splits of the measured subnets (the first is the drawn split);
2. 90% CV+ interval coverage on the held-out subnets (over the same splits);
3. APQ-style transfer vs training from scratch with 25/50/100/200 quantized samples (the transfer
   predictors are pre-trained on float accuracies of 400 other architectures);
4. with ``--truth-images N``: the same predictors scored against held-out subnets measured on N test
   images, where the measurement noise no longer caps the attainable Kendall tau;
5. with ``--labels test --eval-samples 10000``: every label (training and held-out) is the accuracy on all
   10k test images, so held-out tau measures the predictors rather than the label noise (the transfer base's
   float accuracies are measured on the same images; steps 4 and the noise ceiling need measurements on
   other images and are skipped). The noise ceiling (the same subnets measured on as many other images) is
   cached like the pools;
6. with ``--sensitivity``: ZeroQ's per-layer quantization sensitivity is measured on the supernet (256
   validation images; cached as ``sensitivity_<tag>.json``) and every learning curve and the transfer
   comparison are repeated with the summed sensitivity as one more feature.

Usage:  python experiments/benchmarks/predictor_benchmark.py --checkpoint results/supernet_cifar10.pt
Results: a printed table and experiments/benchmarks/results/predictor_<checkpoint name without supernet_>.json
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from predictors.accuracy import TransferPredictor, list_models, make_predictor, ranking_metrics
from subnet_pool import MeasuredPool

METHODS = ("mlp", "residual", "stacked")

RESULTS = Path(__file__).parent / "results"
SIZES = (25, 50, 100, 200, 400)
TRANSFER_SIZES = (25, 50, 100, 200)


def resplits(train: list[dict], test: list[dict], repeats: int, seed: int) -> list[tuple[list[dict], list[dict]]]:
    """The drawn split, then ``repeats - 1`` seeded random re-splits of the same measured rows (same sizes):
    100 held-out subnets give τ and coverage a standard error of ~0.02-0.03 each, so one split misleads."""
    rows, out = train + test, [(train, test)]
    for r in range(1, repeats):
        order = np.random.default_rng([seed, r]).permutation(len(rows))
        out.append(([rows[i] for i in order[len(test):]], [rows[i] for i in order[:len(test)]]))
    return out


def _mean_se(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def learning_curves(space, splits, sizes, seed: int, sensitivity=None) -> list[dict]:
    """Held-out quality of every model at each training size (with the sensitivity feature if given),
    averaged over ``splits`` (mean and standard error; the per-split values are kept)."""
    rows = []
    for model in [*list_models(), "auto", "ensemble"]:
        for n in sizes:
            per_split, seconds = [], []
            for train, test in splits:
                test_g, test_y = [space.from_dict(r["genome"]) for r in test], np.array([r["acc_q"] for r in test])
                start = time.perf_counter()
                pred = make_predictor(space, model, seed=seed, sensitivity=sensitivity).fit(
                    [space.from_dict(r["genome"]) for r in train[:n]], [r["acc_q"] for r in train[:n]])
                seconds.append(time.perf_counter() - start)
                lo, hi = pred.predict_interval(test_g, alpha=0.1)
                per_split.append(ranking_metrics(test_y, pred.predict(test_g), lo, hi))
            row = {"model": model, "n": n, "n_test": per_split[0]["n"], "splits": len(splits),
                   "fit_seconds": float(np.mean(seconds)), "sensitivity": sensitivity is not None}
            for key in ("kendall_tau", "spearman", "rmse", "mape", "coverage", "mean_width"):
                row[key], row[f"{key}_se"] = _mean_se([m[key] for m in per_split])
            row["per_split_kendall_tau"] = [m["kendall_tau"] for m in per_split]
            rows.append(row)
            print(f"  {model:12s} n={n:3d} tau {row['kendall_tau']:.3f}±{row['kendall_tau_se']:.3f} "
                  f"rmse {row['rmse']:.4f} coverage90 {row['coverage']:.3f}±{row['coverage_se']:.3f} "
                  f"({row['fit_seconds']:.2f}s)", flush=True)
    return rows


def transfer_vs_scratch(space, base: list[dict], splits, sizes, seed: int, sensitivity=None) -> list[dict]:
    """Transfer (pre-trained on float accuracies of ``base``) against scratch, on quantized samples, averaged
    over ``splits``; ``gain_<method>`` is the mean paired difference to scratch (same split, same samples)."""
    base_g, base_y = [space.from_dict(r["genome"]) for r in base], [r["acc_fp"] for r in base]
    pretrained = {m: TransferPredictor(space, method=m, seed=seed, sensitivity=sensitivity).pretrain(base_g, base_y)
                  for m in METHODS}
    rows = []
    for n in sizes:
        taus: dict[str, list[float]] = {k: [] for k in ("scratch", *METHODS, "fp_base")}
        for train, test in splits:
            test_g, test_y = [space.from_dict(r["genome"]) for r in test], np.array([r["acc_q"] for r in test])
            g, y = [space.from_dict(r["genome"]) for r in train[:n]], [r["acc_q"] for r in train[:n]]
            scratch = make_predictor(space, seed=seed, sensitivity=sensitivity).fit(g, y)  # the default ensemble
            taus["scratch"].append(ranking_metrics(test_y, scratch.predict(test_g))["kendall_tau"])
            for method, tp in pretrained.items():
                taus[method].append(ranking_metrics(test_y, copy.deepcopy(tp).fit(g, y).predict(test_g))["kendall_tau"])
            taus["fp_base"].append(ranking_metrics(test_y, pretrained["residual"].predict_full_precision(test_g))
                                   ["kendall_tau"])
        row = {"n": n, "splits": len(splits), "sensitivity": sensitivity is not None}
        for key, values in taus.items():
            name = f"{key}_tau" if key in ("scratch", "fp_base") else f"transfer_{key}_tau"
            row[name], row[f"{name}_se"] = _mean_se(values)
        for method in METHODS:
            row[f"gain_{method}"], row[f"gain_{method}_se"] = _mean_se(
                list(np.subtract(taus[method], taus["scratch"])))
        rows.append(row)
        print(f"  n={n:3d} scratch {row['scratch_tau']:.3f}  " + "  ".join(
            f"{m} {row[f'transfer_{m}_tau']:.3f} ({row[f'gain_{m}']:+.3f}±{row[f'gain_{m}_se']:.3f})" for m in METHODS)
            + f"  (float base alone {row['fp_base_tau']:.3f})", flush=True)
    return rows


def sensitivity_table(pool: MeasuredPool, path: Path):
    """ZeroQ per-layer sensitivity of the pool's supernet on 256 validation images, with the contexts of the
    space's declared interactions (cached in ``path``; a cached table without contexts gets them added)."""
    from predictors.accuracy import QuantSensitivity
    from supernets.sensitivity import measure_context_sensitivity, measure_quant_sensitivity

    images = (pool.net, pool.data.train_x[:pool.calib], pool.data.val_x[:256])
    cached = QuantSensitivity.load(path, pool.space) if path.exists() else None
    if cached is not None and (cached.contexts or not pool.space.feature_interactions()):
        return cached, None
    start = time.perf_counter()
    values = cached.values if cached is not None else measure_quant_sensitivity(*images)
    contexts = measure_context_sensitivity(*images)
    seconds = time.perf_counter() - start
    table = QuantSensitivity(pool.space, values, contexts=contexts)
    table.save(path)
    print(f"quantization sensitivity {'contexts ' if cached is not None else ''}measured in {seconds:.0f} s: {path}",
          flush=True)
    return table, seconds


def noise_ceiling(again: MeasuredPool, rows: list[dict], n: int = 100) -> dict:
    """How well the measurement ranks subnets against itself: the same subnets measured again (``again``: a
    pool over as many *test* images as the validation measurement used). No predictor can rank held-out
    subnets (by their validation accuracy) better than a second measurement does."""
    sel = rows[:n]
    first = np.array([r["acc_q"] for r in sel])
    second = np.array(again.accuracies(again.space.from_dict(r["genome"]) for r in sel))
    m = ranking_metrics(first, second)
    return {"n": len(sel), "kendall_tau": m["kendall_tau"], "spearman": m.get("spearman"),
            "accuracy_std": float(first.std()), "mean_abs_difference": float(np.mean(np.abs(first - second)))}


def against_truth(space, train: list[dict], test: list[dict], truth: np.ndarray, sizes, seed: int) -> dict:
    """Kendall tau of every model's predictions, and of the validation measurement itself, against ``truth``."""
    genomes, test_g = [space.from_dict(r["genome"]) for r in train], [space.from_dict(r["genome"]) for r in test]
    measured = ranking_metrics(truth, np.array([r["acc_q"] for r in test]))["kendall_tau"]
    rows = []
    for model in [*list_models(), "auto", "ensemble"]:
        for n in sizes:
            pred = make_predictor(space, model, seed=seed).fit(genomes[:n], [r["acc_q"] for r in train[:n]])
            rows.append({"model": model, "n": n, "kendall_tau": ranking_metrics(truth, pred.predict(test_g))["kendall_tau"]})
        print(f"  {model:12s} " + "  ".join(f"n={r['n']} tau {r['kendall_tau']:.3f}" for r in rows[-len(sizes):]),
              flush=True)
    return {"n_test": len(test), "validation_measurement_tau": measured, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-samples", type=int, default=1000, help="validation images per measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small pool for a smoke run")
    parser.add_argument("--truth-images", type=int, default=0,
                        help="also score the predictors against held-out subnets measured on this many test images")
    parser.add_argument("--truth-subnets", type=int, default=100, help="held-out subnets for --truth-images")
    parser.add_argument("--labels", choices=["val", "test"], default="val",
                        help="measure the subnets on the first --eval-samples validation images (default), or test "
                             "images: with all 10000 the label noise is small; no transfer, noise ceiling or truth then")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="training sizes (default 25 50 100 200 400)")
    parser.add_argument("--test-subnets", type=int, default=None, help="held-out subnets (default 200)")
    parser.add_argument("--sensitivity", action="store_true",
                        help="repeat the curves and transfer with ZeroQ's summed per-layer sensitivity as a feature")
    parser.add_argument("--base", type=int, default=None, help="transfer base: float-measured architectures (300)")
    parser.add_argument("--no-transfer", action="store_true", help="skip the transfer comparison (no float base)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="random train/held-out re-splits of the measured subnets to average over (the first is "
                             "the drawn split)")
    parser.add_argument("--calib", type=int, default=256,
                        help="training images BN is recalibrated on per subnet (other than 256: a separate pool)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    tag = Path(args.checkpoint).stem.removeprefix("supernet_")  # the dataset, plus the supernet's variant
    on_test = args.labels == "test"
    label = (f"test{args.eval_samples}" if on_test else f"e{args.eval_samples}") + (
        f"_c{args.calib}" if args.calib != 256 else "")
    pool = MeasuredPool(args.checkpoint, args.dataset, RESULTS / f"pool_{tag}_{label}{suffix}.jsonl",
                        eval_samples=args.eval_samples, split=args.labels, calib=args.calib)
    sizes, tsizes, n_test = ((25, 50), (25,), 60) if args.quick else (SIZES, TRANSFER_SIZES, 200)
    # the genomes are drawn as for the full benchmark, so smaller runs measure (and reuse) a subset of them
    n_pool = max(sizes)
    sizes = tuple(args.sizes or sizes)
    if max(sizes) > n_pool:
        parser.error(f"--sizes: at most {n_pool} training subnets")
    genomes = pool.draw(n_pool + n_test, seed=args.seed)  # training subnets first, then the held-out ones
    n_train, n_test = max(sizes), min(args.test_subnets or n_test, n_test)
    n_base = args.base or (300 if not args.quick else 50)
    print(f"measuring {n_train + n_test} subnets quantized on {args.eval_samples} {args.labels} images (BN on "
          f"{args.calib} training images)" + ("" if args.no_transfer else f" and {n_base} others in float")
          + f" (cached in {pool.path})", flush=True)
    measured = [pool.measure(g) for g in genomes[n_pool:n_pool + n_test] + genomes[:n_train]]
    test, train = measured[:n_test], measured[n_test:]
    rows = train + test
    splits = resplits(train, test, args.repeats, args.seed)
    print(f"learning curves (held-out; mean ± standard error over {len(splits)} splits):", flush=True)
    curves = learning_curves(pool.space, splits, sizes, args.seed)
    table, sensitivity_seconds = (sensitivity_table(pool, RESULTS / f"sensitivity_{tag}{suffix}.json")
                                  if args.sensitivity else (None, None))
    if table is not None:
        print("learning curves with the quantization-sensitivity feature:", flush=True)
        curves += learning_curves(pool.space, splits, sizes, args.seed, sensitivity=table)
    ceiling, truth, base, transfer = None, None, [], None
    if not args.no_transfer:
        base = pool.sample(n_base, seed=args.seed + 1, quant=False, fp=True, exclude=[g.key for g in genomes])
        tsizes = tuple(n for n in tsizes if n <= n_train)
        print("transfer vs scratch:", flush=True)
        transfer = transfer_vs_scratch(pool.space, base, splits, tsizes, args.seed)
    if table is not None and not args.no_transfer:
        print("transfer vs scratch, both with the sensitivity feature:", flush=True)
        transfer += transfer_vs_scratch(pool.space, base, splits, tsizes, args.seed, sensitivity=table)
    if not on_test and args.calib == 256:
        print("measurement noise ceiling (100 test subnets re-measured on test images):", flush=True)
        again = MeasuredPool(args.checkpoint, args.dataset,  # cached: a rerun does not measure them again
                             RESULTS / f"pool_{tag}_test{args.eval_samples}{suffix}.jsonl",
                             eval_samples=args.eval_samples, split="test")
        ceiling = noise_ceiling(again, test)
        print(f"  tau between two measurements {ceiling['kendall_tau']:.3f} (accuracy std "
              f"{ceiling['accuracy_std']:.4f}, mean |difference| {ceiling['mean_abs_difference']:.4f})", flush=True)
    if args.truth_images and not on_test and args.calib == 256:
        held = test[: args.truth_subnets]
        print(f"against {len(held)} held-out subnets measured on {args.truth_images} test images:", flush=True)
        # a second pool over the test images: near-noise-free targets, resumable like the first
        accurate = MeasuredPool(args.checkpoint, args.dataset, RESULTS / f"pool_{tag}_test{args.truth_images}{suffix}.jsonl",
                                eval_samples=args.truth_images, split="test")
        target = np.array(accurate.accuracies(accurate.space.from_dict(r["genome"]) for r in held))
        truth = {"images": args.truth_images, **against_truth(pool.space, train, held, target, sizes, args.seed)}
        print(f"  the {args.eval_samples}-image validation measurement itself: tau "
              f"{truth['validation_measurement_tau']:.3f}", flush=True)
    accs = np.array([r["acc_q"] for r in rows])
    result = {"dataset": args.dataset, "checkpoint": str(args.checkpoint), "pool": len(rows), "base": len(base),
              "eval_samples": args.eval_samples, "labels": args.labels, "calib": args.calib, "repeats": len(splits),
              "n_train": n_train, "n_test": n_test,
              "accuracy_range": [float(accs.min()), float(accs.max())], "accuracy_std": float(accs.std()),
              "seconds_per_measurement": float(np.mean(pool.seconds)) if pool.seconds else None,
              "learning_curves": curves, "transfer": transfer, "noise_ceiling": ceiling, "truth": truth,
              "sensitivity_seconds": sensitivity_seconds, "quick": args.quick}
    out = RESULTS / f"predictor_{tag}{'_' + label if on_test or args.calib != 256 else ''}{suffix}.json"
    out.write_text(json.dumps(result, indent=2))
    best200 = max((r for r in curves if r["n"] == min(200, n_train)), key=lambda r: r["kendall_tau"])
    print(f"\nbest at n={best200['n']}: {best200['model']}{' + sensitivity' if best200['sensitivity'] else ''} "
          f"tau {best200['kendall_tau']:.3f}; "
          f"auto coverage90 at n={n_train}: "
          f"{next(r['coverage'] for r in curves if r['model'] == 'auto' and r['n'] == n_train):.3f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
