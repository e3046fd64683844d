"""Supernet benchmark: inherited vs standalone accuracy, training cost, evaluation throughput.

1. Trains a quantized supernet (or reuses its checkpoint), picks subnets spread over the space by
   MACs, evaluates each at W8A8 and W4A4 with inherited weights (BN recalibrated), trains each from
   scratch (quantization-aware, same schedule and epochs) and reports the accuracy gaps and the
   Kendall tau between the two rankings.
2. Times one training step of the largest subnet inside the supernet against the same static
   network, 1 thread, interleaved: in float, and W8A8 fake-quantized against the static network under
   PyTorch's own QAT (torch.ao FX) — ``--cost-only`` runs just this part.
3. Reports subnet evaluations per second (BN recalibration + validation).
4. FP32 vs real INT8 latency (torch x86 and ONNX Runtime) of the largest and smallest W8A8 subnets,
   batch 1 and 64, 1 thread, interleaved passes.

Usage:  python experiments/benchmarks/supernet_benchmark.py --dataset mnist [--quick] [--epochs N --workers 2]
Results: a printed table and experiments/benchmarks/results/supernet_<dataset>.json (``_e<N>`` with
         ``--epochs``: a longer or shorter schedule than the preset, for the gap-vs-schedule comparison;
         ``supernet_<dataset>_cost.json`` with ``--cost-only``)
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from inherited_standalone import at_bits, spread_subnets, standalone_accuracy
from subnet_pool import SAME_DATA
from scipy.stats import kendalltau

from search_spaces import SearchSpace, get_space
from supernets.data import load_dataset
from supernets.evaluate import SubnetEvaluator
from supernets.fit import fit_supernet
from supernets.static_net import StaticNet
from supernets.supernet import QuantSupernet
from supernets.training import SupernetConfig

RESULTS = Path(__file__).parent / "results"

PRESETS = {
    "mnist": dict(space=dict(in_channels=1, image_size=28, stem_channels=16, stem_stride=2,
                             stage_channels=[16, 24, 40], stage_strides=[1, 2, 2], stage_se=[False, True, True],
                             stage_act=["relu", "hswish", "hswish"], depths=[1, 2, 3], kernels=[3, 5],
                             expands=[2, 4, 6], head_channels=128, w_bits=[4, 8], a_bits=[4, 8]),
                  train=dict(warmup_epochs=2, epochs=8, batch_size=128, lr=0.08, bn_calib_samples=500)),
    "cifar10": dict(space=dict(in_channels=3, image_size=32, stem_channels=16, stem_stride=2,
                               stage_channels=[24, 32, 48, 64], stage_strides=[1, 2, 2, 1],
                               stage_se=[False, False, True, True], stage_act=["relu", "relu", "hswish", "hswish"],
                               depths=[1, 2, 3], kernels=[3, 5], expands=[3, 4, 6], head_channels=256,
                               w_bits=[4, 6, 8], a_bits=[4, 6, 8]),
                    train=dict(warmup_epochs=2, epochs=8, batch_size=128, lr=0.08, bn_calib_samples=500)),
}


def time_step(fn, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def static_qat_net(static: nn.Module, example: torch.Tensor) -> nn.Module:
    """The static network prepared for PyTorch's own QAT (torch.ao FX, x86 W8A8 fake-quant with observers):
    what quantization-aware training of that one network costs without a supernet."""
    import warnings

    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    with warnings.catch_warnings():  # torch.ao announces its move to torchao
        warnings.simplefilter("ignore")
        return prepare_qat_fx(copy.deepcopy(static), get_default_qat_qconfig_mapping("x86"), (example,)).train()


def training_cost(space: SearchSpace, data, batch: int, repeats: int) -> dict:
    """Seconds per fwd+bwd step: largest subnet in the supernet vs the same static network, in float and
    under W8A8 quantization-aware training (interleaved, medians)."""
    torch.set_num_threads(1)
    net = QuantSupernet(space, image_size=data.image_size).train()
    static = StaticNet(space.blocks(space.largest())).train()
    x, y = data.train_x[:batch], data.train_y[:batch]
    static_qat = static_qat_net(static, x[:2])
    steps = {
        "supernet_fp": lambda: F.cross_entropy(net.run(x, space.largest(), quantize=False), y).backward(),
        "supernet_w8a8": lambda: F.cross_entropy(net.run(x, space.largest()), y).backward(),
        "static_fp": lambda: F.cross_entropy(static(x), y).backward(),
        "static_qat_w8a8": lambda: F.cross_entropy(static_qat(x), y).backward(),
    }
    for fn in steps.values():
        fn()
    times = {k: [] for k in steps}
    for _ in range(repeats):  # interleaved passes
        for k, fn in steps.items():
            times[k].append(time_step(fn, 1))
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {**{f"{k}_s": v for k, v in med.items()}, "ratio_fp": med["supernet_fp"] / med["static_fp"],
            "ratio_w8a8": med["supernet_w8a8"] / med["static_qat_w8a8"],
            "ratio_w8a8_vs_static_fp": med["supernet_w8a8"] / med["static_fp"], "batch": batch,
            "static_qat": "torch.ao.quantization prepare_qat_fx, x86 default QAT qconfig (per-channel weights)"}


def deploy_latency(space: SearchSpace, batches: tuple[int, ...], runs: int, passes: int) -> list[dict]:
    """End-to-end latency of the largest and smallest subnets (W8A8) per backend and batch (1 thread)."""
    from nas.profiling import measure_subnets

    pair = {"largest": at_bits(space, space.largest(), 8), "smallest": at_bits(space, space.smallest(), 8)}
    rows = []
    for batch in batches:
        for backend in ("torch-fp32", "torch-int8", "onnxruntime-fp32", "onnxruntime-int8"):
            timings = measure_subnets(space, list(pair.values()), backend, batch=batch, runs=runs, passes=passes)
            for (name, genome), t in zip(pair.items(), timings):
                rows.append({"subnet": name, "key": genome.key, "batch": batch, "backend": backend,
                             "mean_ms": t.mean_ms, "std_ms": t.std_ms})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(PRESETS), default="mnist")
    parser.add_argument("--subnets", type=int, default=12)
    parser.add_argument("--quick", action="store_true", help="tiny budget for a smoke run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training (timings use 1)")
    parser.add_argument("--train-only", action="store_true",
                        help="train (or finish training) the supernet checkpoint and stop (for the other benchmarks)")
    parser.add_argument("--max-train", type=int, default=None, help="cap the training images (default: all)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="elastic epochs after the warm-up (default: the preset's); results get an _e<N> suffix")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes for the standalone trainings (1 torch thread each)")
    parser.add_argument("--skip-deploy", action="store_true", help="leave out the training-cost and latency parts")
    parser.add_argument("--bits", type=int, nargs="+", default=None,
                        help="searchable weight and activation bit-widths instead of the preset's (e.g. 3 4 6 8); "
                             "results and checkpoint get a _b<bits> suffix")
    parser.add_argument("--cost-only", action="store_true", help="only time the training steps (part 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    preset = PRESETS[args.dataset]
    train = dict(preset["train"])
    if args.epochs is not None:
        train.update(epochs=args.epochs)
    if args.quick:
        train.update(warmup_epochs=1, epochs=1)
    cfg = SupernetConfig(**train)
    data = load_dataset(args.dataset, max_train=1000 if args.quick else args.max_train,
                        **SAME_DATA.get(args.dataset, {}))
    space_options = dict(preset["space"])
    bits = None if args.bits is None else sorted(set(args.bits))
    if bits is not None:
        space_options.update(w_bits=bits, a_bits=bits)
    space = get_space("mbv3", **space_options)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.cost_only:
        cost = training_cost(space, data, batch=cfg.batch_size, repeats=3 if args.quick else 15)
        out = RESULTS / f"supernet_{args.dataset}{'_quick' if args.quick else ''}_cost.json"
        out.write_text(json.dumps({"dataset": args.dataset, "space": space.options(), "training_cost": cost},
                                  indent=2))
        print_cost(cost)
        print(f"wrote {out}")
        return
    suffix = (("_quick" if args.quick else "") + ("" if args.epochs is None else f"_e{args.epochs}")
              + ("" if bits is None else "_b" + "".join(map(str, bits))))
    ckpt = RESULTS / f"supernet_{args.dataset}{suffix}.pt"
    start = time.perf_counter()
    trainer = fit_supernet(space, data, cfg, checkpoint=ckpt, progress=False)
    supernet_seconds = time.perf_counter() - start
    if args.train_only:
        last = trainer.history[-1] if trainer.history else None
        print(f"supernet {ckpt} trained in {supernet_seconds:.0f}s" + (f"; last epoch: {last}" if last else ""))
        return
    ev = SubnetEvaluator(trainer.net, data.train_x[: cfg.bn_calib_samples], data.test_x, data.test_y)
    picks = [(bits, at_bits(space, arch, bits))
             for arch in spread_subnets(space, 3 if args.quick else args.subnets, seed=1) for bits in (8, 4)]
    genomes = [g for _, g in picks]
    inherited, eval_seconds = [], []
    for genome in genomes:
        t0 = time.perf_counter()
        inherited.append(ev.accuracy(genome))
        eval_seconds.append(time.perf_counter() - t0)
    if args.workers > 1:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(standalone_accuracy, space, g, data, cfg, 1) for g in genomes]
            scratch = [f.result() for f in futures]
    else:
        scratch = [standalone_accuracy(space, g, data, cfg) for g in genomes]
    rows = []
    for (bits, genome), inh, eval_s, (acc, scratch_s) in zip(picks, inherited, eval_seconds, scratch):
        rows.append({"key": genome.key, "bits": bits, "mmacs": space.costs(genome).macs / 1e6,
                     "inherited": inh, "standalone": acc, "gap_pp": 100 * (acc - inh),
                     "eval_seconds": eval_s, "standalone_train_seconds": scratch_s})
        print(f"W{bits}A{bits} {genome.key} {rows[-1]['mmacs']:6.2f} MMACs  inherited {inh:.4f}  "
              f"standalone {acc:.4f}  gap {rows[-1]['gap_pp']:+.2f} pp", flush=True)
    summary = summarise(rows)
    cost = None if args.skip_deploy else training_cost(space, data, batch=cfg.batch_size, repeats=3 if args.quick else 7)
    latency = [] if args.skip_deploy else deploy_latency(space, (1, 64), runs=10 if args.quick else 40,
                                                         passes=5 if args.quick else 10)
    result = {"dataset": args.dataset, "max_train": args.max_train, "train_images": len(data.train_x),
              "space": space.options(), "config": cfg.model_dump(), "rows": rows,
              "summary": summary, "training_cost": cost, "latency": latency, "supernet_train_seconds": supernet_seconds,
              "evals_per_second": 1 / float(np.mean([r["eval_seconds"] for r in rows])),
              "history": [h.__dict__ for h in trainer.history], "quick": args.quick}
    out = RESULTS / f"supernet_{args.dataset}{suffix}.json"
    out.write_text(json.dumps(result, indent=2))
    print_table(summary, cost, result)
    print(f"subnet evaluations per second: {result['evals_per_second']:.2f}; "
          f"supernet training {result['supernet_train_seconds']:.0f}s")
    print_latency(latency)
    print(f"wrote {out}")


def summarise(rows: list[dict]) -> dict:
    out = {}
    for bits in (8, 4):
        sel = [r for r in rows if r["bits"] == bits]
        gaps = np.array([r["gap_pp"] for r in sel])
        tau = kendalltau([r["inherited"] for r in sel], [r["standalone"] for r in sel]).statistic
        out[f"W{bits}A{bits}"] = {"n": len(sel), "mean_gap_pp": float(gaps.mean()),
                                  "mean_abs_gap_pp": float(np.abs(gaps).mean()), "max_gap_pp": float(gaps.max()),
                                  "kendall_tau": float(tau),
                                  "mean_inherited": float(np.mean([r["inherited"] for r in sel])),
                                  "mean_standalone": float(np.mean([r["standalone"] for r in sel]))}
    return out


def print_table(summary: dict, cost: dict, result: dict) -> None:
    print("\nsetting  n  mean inherited  mean standalone  mean gap (pp)  max gap (pp)  Kendall tau")
    for name, s in summary.items():
        print(f"{name:7s} {s['n']:2d}  {s['mean_inherited']:14.4f}  {s['mean_standalone']:15.4f}  "
              f"{s['mean_gap_pp']:+13.2f}  {s['max_gap_pp']:+12.2f}  {s['kendall_tau']:11.3f}")
    if cost is not None:
        print_cost(cost)


def print_cost(cost: dict) -> None:
    print(f"\ntraining step (batch {cost['batch']}, 1 thread): supernet FP {cost['supernet_fp_s']:.3f}s, "
          f"static FP {cost['static_fp_s']:.3f}s -> ratio {cost['ratio_fp']:.2f}x; supernet W8A8 "
          f"{cost['supernet_w8a8_s']:.3f}s, static W8A8 QAT (torch.ao) {cost['static_qat_w8a8_s']:.3f}s -> "
          f"ratio {cost['ratio_w8a8']:.2f}x (target ≤ 1.5x)")


def print_latency(rows: list[dict]) -> None:
    if not rows:
        return
    print("\nsubnet    batch  " + "  ".join(f"{b:>18s}" for b in ("torch-fp32", "torch-int8", "onnxruntime-fp32",
                                                                      "onnxruntime-int8")) + "   (ms, 1 thread)")
    for name in ("largest", "smallest"):
        for batch in sorted({r["batch"] for r in rows}):
            sel = {r["backend"]: r for r in rows if r["subnet"] == name and r["batch"] == batch}
            print(f"{name:9s} {batch:5d}  " + "  ".join(f"{sel[b]['mean_ms']:12.3f} ±{sel[b]['std_ms']:5.2f}"
                                                        for b in ("torch-fp32", "torch-int8", "onnxruntime-fp32",
                                                                  "onnxruntime-int8")))


if __name__ == "__main__":
    main()
