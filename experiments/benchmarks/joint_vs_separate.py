"""Joint search vs the bit-allocation baselines users run instead, on one trained supernet.

At three size and three latency budgets (quantiles of random subnets of the space), the best candidate of:
(a) uniform W8A8 of the best architecture (the first stage of (c): architecture search at 8 bits),
(b) HAWQ-V3's ILP on the largest subnet (``ilp-bits``; one candidate per budget, no seed dependence),
(c) architecture search at W8A8, then ILP bits on its ``top_k`` best architectures (``nas-then-ilp``),
(d) joint search (``predictor-nsga2``) with as many measured candidates as (c) used,
(e) the same joint search told what (c) is told: its accuracy predictor takes the Hessian sensitivity of each
    genome as a feature (``predictors.quant_sensitivity``), and it never lowers a bit that no cheap objective
    gains by (``search.options.raise_free_bits``; ``--no-free-bits`` leaves that out, for an ablation).
(c), (d) and (e) run once per budget kind (objectives accuracy and that metric) and seed; each budget's answer is
the candidate of highest validation accuracy among those meeting it, reported on the test images. Every
search uses the same predictor-in-the-loop searcher (for (c) on the space with the bits pinned at 8), so
what differs between (c) and (d) is only whether bits are searched with the architecture. The ILP minimises the Hessian
sensitivity (``supernets.hessian``). Also: Spearman between the Hessian costs, ZeroQ's KL and the measured
accuracy drop of lowering each quantization gene of the largest subnet alone.

Accuracies are recorded in JSON-lines pools (``subnet_pool.py``) and replayed across methods and seeds.

Usage:  python experiments/benchmarks/joint_vs_separate.py --checkpoint results/supernet_cifar10_e3_b3468.pt
Results: a printed table and results/joint_vs_separate_<dataset><--tag>.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from nas.evaluators import AnalyticEvaluator, CompositeEvaluator
from nas.objectives import Constraint, Objective
from nas.search import run_search
from nas.searchers import SearchContext, get_searcher
from predictors.accuracy import HessianSensitivity, QuantSensitivity
from predictors.accuracy.hessian import variant_spearman
from search_spaces import InputError
from search_benchmark import PoolAccuracy, TableLatency
from subnet_pool import MeasuredPool
from supernets.hessian import measure_hessian_sensitivity
from supernets.sensitivity import measure_quant_sensitivity

RESULTS = Path(__file__).parent / "results"
QUANTILES = {"size_kb": (0.3, 0.6, 0.9), "latency_ms": (0.25, 0.5, 0.75), "bitops": (0.3, 0.6, 0.9)}
STARTUP, ROUND = 16, 8  # predictor-nsga2 settings of every search
JOINT = {"d": "d_joint", "e": "e_joint_informed"}  # the joint searches, each compared with (c)
METHODS = ("a_w8a8", "c_nas_then_ilp", *JOINT.values())  # the searched methods ((b) is one ILP)


def budgets_of(space, cheap, metric: str, n: int = 2000) -> list[Constraint]:
    """``metric <= q`` at the kind's quantiles of ``n`` random subnets (3 significant digits)."""
    rng = np.random.default_rng(123)
    values = [r[metric] for r in cheap.evaluate([space.sample(rng) for _ in range(n)])]
    return [Constraint(metric, "<=", float(f"{np.quantile(values, q):.3g}")) for q in QUANTILES[metric]]


def sensitivities(pool: MeasuredPool, stem: str, samples: int, results: Path
                  ) -> tuple[HessianSensitivity, QuantSensitivity, dict]:
    """The Hessian and KL tables of the supernet (cached in results/ next to the pools) and their cost in s."""
    space, data, seconds = pool.space, pool.data, {}
    calib, x, y = data.train_x[:256], data.val_x[:256], data.val_y[:256]
    path = results / f"hessian_{stem}_s{samples}.json"
    if path.exists():
        hessian = HessianSensitivity.load(path, space)
    else:
        start = time.perf_counter()
        m = measure_hessian_sensitivity(pool.net, calib, x, y, samples=samples)
        seconds["hessian"] = time.perf_counter() - start
        hessian = HessianSensitivity(space, m.omega, traces=m.traces, samples=samples, images=len(x))
        hessian.save(path)
    path = results / f"kl_{stem}.json"
    if path.exists():
        kl = QuantSensitivity.load(path, space)
    else:
        start = time.perf_counter()
        kl = QuantSensitivity(space, measure_quant_sensitivity(pool.net, calib, x))
        seconds["kl"] = time.perf_counter() - start
        kl.save(path)
    return hessian, kl, seconds


def measured_drops(test: MeasuredPool, lowest_only: bool) -> tuple[dict, dict]:
    """Accuracy drop (test images) of the largest subnet with one quantization gene lowered, per variant
    (every other choice of each gene, or only its lowest)."""
    space, ref = test.space, test.space.largest()
    base = test.measure(ref)["acc_q"]
    drops = {}
    for gene in (g for g in space.genes if g.kind == "quant"):
        lowered = gene.choices[:1] if lowest_only else [c for c in gene.choices if c != ref[gene.name]]
        drops[gene.name] = {ref[gene.name]: 0.0}
        drops[gene.name].update({c: base - test.measure(ref.with_values({gene.name: c}))["acc_q"] for c in lowered})
    return drops, ref.as_dict()


def agreement(hessian, kl, drops, ref) -> dict:
    """Spearman of the Hessian costs, ZeroQ's KL and the measured drops over single-gene variants, and of the raw
    average Hessian trace of each gene against the drop of its lowest choice."""
    out = {}
    for name, (a, b) in {"hessian_vs_drop": (hessian.values, drops), "kl_vs_drop": (kl.values, drops),
                         "hessian_vs_kl": (hessian.values, kl.values)}.items():
        rho, n = variant_spearman(a, b, ref)
        out[name] = {"spearman": rho, "variants": n}
    genes = [g for g in hessian.traces if g in drops]
    lowest = [drops[g][min(drops[g], key=lambda c: (c == ref[g], c))] for g in genes]
    out["trace_vs_lowest_drop"] = {"spearman": float(spearmanr([hessian.traces[g] for g in genes], lowest).statistic),
                                   "variants": len(genes)}
    return out


def best(trials, budget: Constraint, keep=lambda t: True):
    """The feasible trial of highest validation accuracy (or None)."""
    ok = [t for t in trials if keep(t) and budget.violation(t.metrics[budget.metric]) == 0]
    return max(ok, key=lambda t: t.metrics["accuracy"], default=None)


def run_kind(metric, budgets, seed, space, cheap, evaluator, context, args) -> dict:
    """(a), (c), (d) of one seed at the three budgets of one kind: {method: [trial or None per budget]}."""
    objectives = (Objective("accuracy", "max"), Objective(metric, "min"))
    two = get_searcher("nas-then-ilp", space, objectives, seed=seed, context=context,
                       budgets=[str(b) for b in budgets], inner="predictor-nsga2", nas_trials=args.nas_trials,
                       top_k=args.top_k, inner_options={"n_startup_trials": STARTUP, "batch_size": ROUND})
    sep = run_search(space, evaluator, two, objectives=objectives, budget=args.nas_trials + args.top_k * len(budgets))
    stage1 = {g.key for g, _ in two.first_stage}

    def joint_search(ctx, **options):  # as many measurements as (c) made
        searcher = get_searcher("predictor-nsga2", space, objectives, seed=seed, context=ctx,
                                n_startup_trials=STARTUP, batch_size=ROUND, **options)
        return run_search(space, evaluator, searcher, objectives=objectives, budget=len(sep.trials))

    joint = joint_search(context)
    told = replace(context, model_options={**context.model_options, "sensitivity": context.sensitivity})
    informed = joint_search(told, raise_free_bits=args.free_bits)
    return {"a_w8a8": [best(sep.trials, b, lambda t: t.key in stage1) for b in budgets],
            "c_nas_then_ilp": [best(sep.trials, b) for b in budgets],
            "d_joint": [best(joint.trials, b) for b in budgets],
            "e_joint_informed": [best(informed.trials, b) for b in budgets],
            "measured": {"c_nas_then_ilp": len(sep.trials), "d_joint": len(joint.trials),
                         "e_joint_informed": len(informed.trials)}}


def ilp_on_largest(space, budgets, context, evaluator) -> list:
    """(b): one ILP candidate per budget, or the one-line reason it is infeasible."""
    out = []
    for b in budgets:
        try:
            s = get_searcher("ilp-bits", space, (Objective("accuracy", "max"),), context=context, budgets=[str(b)])
        except InputError as err:
            out.append(str(err))
            continue
        genome = s.ask()[0]
        out.append((genome, evaluator.evaluate([genome])[0]))
    return out


def summarise(rows: list[dict], budgets: dict, ilp: dict, test: MeasuredPool) -> dict:
    table = {}
    for metric, bs in budgets.items():
        for i, b in enumerate(bs):
            entry = {}
            for method in METHODS:
                picks = [r[metric][method][i] for r in rows if metric in r]
                acc = [test.measure(t.genome)["acc_q"] for t in picks if t is not None]
                entry[method] = {"test_mean": float(np.mean(acc)) if acc else None,
                                 "test_std": float(np.std(acc)) if acc else None, "feasible_seeds": len(acc),
                                 "val": [None if t is None else t.metrics["accuracy"] for t in picks],
                                 "picked": [None if t is None else t.key for t in picks]}
            got = ilp[metric][i]
            entry["b_ilp_largest"] = ({"infeasible": got} if isinstance(got, str) else
                                      {"test_mean": test.measure(got[0])["acc_q"], "test_std": 0.0,
                                       "val": got[1]["accuracy"], "picked": got[0].key})
            c = entry["c_nas_then_ilp"]["test_mean"]
            for letter, method in JOINT.items():
                j = entry[method]["test_mean"]
                entry[f"{letter}_minus_c_pp"] = None if c is None or j is None else 100 * (j - c)
            table[str(b)] = entry
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--nas-trials", type=int, default=40, help="measured W8A8 candidates of stage 1 of (c)")
    parser.add_argument("--top-k", type=int, default=3, help="architectures (c) allocates bits for, per budget")
    parser.add_argument("--eval-samples", type=int, default=1000, help="validation images the searches measure on")
    parser.add_argument("--test-samples", type=int, default=10000, help="test images of the reported accuracies")
    parser.add_argument("--hessian-samples", type=int, default=16)
    parser.add_argument("--backend", default="onnxruntime-int8")
    parser.add_argument("--kinds", nargs="+", default=["size_kb", "latency_ms"], choices=sorted(QUANTILES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-free-bits", dest="free_bits", action="store_false",
                        help="(e) without raise_free_bits: the sensitivity feature alone")
    parser.add_argument("--drop-all", dest="drop_lowest", action="store_false",
                        help="measure the accuracy drop of every lower choice (default: each gene's lowest only)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the pools, tables and result")
    parser.add_argument("--tag", default="", help="suffix of the result file (another setting, same pools)")
    parser.add_argument("--spearman-only", action="store_true", help="stop after the sensitivity agreement")
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    from nas.profiling import cached_table

    stem = Path(args.checkpoint).stem
    pool = MeasuredPool(args.checkpoint, args.dataset, args.results / f"pool_jvs_{stem}_e{args.eval_samples}.jsonl",
                        eval_samples=args.eval_samples)
    test = MeasuredPool(args.checkpoint, args.dataset, args.results / f"pool_jvs_{stem}_test{args.test_samples}.jsonl",
                        eval_samples=args.test_samples, split="test")
    space, start = pool.space, time.perf_counter()
    latency = TableLatency(space, cached_table(space, args.backend, progress=False))
    cheap = CompositeEvaluator([AnalyticEvaluator(space), latency])
    evaluator = CompositeEvaluator([AnalyticEvaluator(space), latency, PoolAccuracy(pool)])
    bits_as = {str(k): v for k, v in latency.predictor.table.header.bits_measured_as.items()}
    hessian, kl, sens_seconds = sensitivities(pool, stem, args.hessian_samples, args.results)
    drops, ref = measured_drops(test, args.drop_lowest)
    spearman = agreement(hessian, kl, drops, ref)
    print(f"Spearman over {spearman['hessian_vs_drop']['variants']} single-gene variants: "
          + ", ".join(f"{k} {v['spearman']:.2f}" for k, v in spearman.items()), flush=True)
    if args.spearman_only:
        out = args.results / f"joint_vs_separate_{args.dataset}{args.tag}.json"
        out.write_text(json.dumps({"checkpoint": stem, "test_samples": args.test_samples, "spearman": spearman,
                                   "drop_variants": "lowest choice of each gene" if args.drop_lowest else
                                   "every lower choice", "drops_pp": {g: {str(c): 100 * v for c, v in row.items()}
                                                                      for g, row in drops.items()}}, indent=1))
        print(f"wrote {out}")
        return
    context = SearchContext(cheap=cheap, sensitivity=hessian)
    budgets = {m: budgets_of(space, cheap, m) for m in args.kinds}
    ilp = {m: ilp_on_largest(space, bs, context, evaluator) for m, bs in budgets.items()}
    rows: list[dict] = [{} for _ in range(args.seeds)]
    out = args.results / f"joint_vs_separate_{args.dataset}{args.tag}.json"
    for metric, bs in budgets.items():  # one kind after the other, the JSON rewritten after every search
        for seed in range(args.seeds):
            rows[seed][metric] = run_kind(metric, bs, seed, space, cheap, evaluator, context, args)
            print(f"{metric} seed {seed} done ({time.perf_counter() - start:.0f} s, {len(pool.rows)} distinct "
                  "measurements)", flush=True)
            done = {m: b for m, b in budgets.items() if any(m in r for r in rows)}
            table = summarise(rows, done, ilp, test)
            met = {j: [e[f"{j}_minus_c_pp"] >= 1.0 for e in table.values() if e[f"{j}_minus_c_pp"] is not None]
                   for j in JOINT}
            result = {"dataset": args.dataset, "checkpoint": stem, "seeds_done": {m: sum(m in r for r in rows)
                                                                                   for m in budgets},
                      "nas_trials": args.nas_trials, "top_k": args.top_k, "eval_samples": args.eval_samples,
                      "test_samples": args.test_samples, "hessian_samples": args.hessian_samples,
                      "backend": args.backend, "latency_bits_measured_as": bits_as,
                      "e_settings": {"sensitivity_feature": "hessian", "raise_free_bits": args.free_bits},
                      "budgets": {m: [str(b) for b in bs] for m, bs in budgets.items()}, "spearman": spearman,
                      "drop_variants": "lowest choice of each gene" if args.drop_lowest else "every lower choice",
                      "sensitivity_seconds": sens_seconds, "table": table,
                      "measured": [{m: r[m]["measured"] for m in r} for r in rows],
                      **{f"target_{j}_ge_c_plus_1pp": {"met_at": int(sum(m)), "of": len(m)} for j, m in met.items()},
                      "seconds": time.perf_counter() - start}
            out.write_text(json.dumps(result, indent=1))
    print_table(result["table"])
    for j in JOINT:
        target = result[f"target_{j}_ge_c_plus_1pp"]
        print(f"target ({j}) >= (c) + 1 pp met at {target['met_at']} of {target['of']} budgets")
    print(f"wrote {out}")


def print_table(table: dict) -> None:
    def cell(e: dict) -> str:
        if "infeasible" in e:
            return "infeasible"
        if e.get("test_mean") is None:
            return "none feasible"
        return f"{100 * e['test_mean']:.2f}±{100 * e['test_std']:.2f}"

    def diff(value: float | None) -> str:
        return "" if value is None else f"{value:+.2f}"

    print(f"\n{'budget':24s} {'(a) W8A8':>14s} {'(b) ILP largest':>16s} {'(c) NAS→ILP':>14s} {'(d) joint':>14s} "
          f"{'(e) informed':>14s} {'d−c pp':>7s} {'e−c pp':>7s}")
    for budget, e in table.items():
        print(f"{budget:24s} {cell(e['a_w8a8']):>14s} {cell(e['b_ilp_largest']):>16s} "
              f"{cell(e['c_nas_then_ilp']):>14s} {cell(e['d_joint']):>14s} {cell(e['e_joint_informed']):>14s} "
              f"{diff(e['d_minus_c_pp']):>7s} {diff(e['e_minus_c_pp']):>7s}")


if __name__ == "__main__":
    main()
