"""Search benchmark: hypervolume vs true evaluations for random, NSGA-II, Optuna TPE and predictor-in-the-loop.

Objectives: measured accuracy (a trained supernet) vs INT8 latency (a latency table of this
machine). True accuracies are recorded once in a JSON-lines pool and replayed (``subnet_pool.py``):
every searcher and seed sees the same measurement for the same genome, and a genome measured for one
searcher costs nothing for the next. Reports, per searcher over seeds, the evaluations needed to
reach 95% of the reference hypervolume (that of the union front of every run), the final
hypervolume, the search loop's own overhead per candidate, and predictor throughput.

Usage:  python experiments/benchmarks/search_benchmark.py --checkpoint results/supernet_cifar10.pt
Results: a printed table, results/search_<dataset>.json and results/search_<dataset>.png
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from nas.evaluators import AnalyticEvaluator, CompositeEvaluator
from nas.objectives import Objective, objective_matrix
from nas.pareto import front_indices, hypervolume, normalization_from_extremes
from nas.search import run_search
from nas.searchers import SearchContext, get_searcher
from predictors.accuracy import make_predictor
from predictors.latency import LatencyPredictor
from subnet_pool import MeasuredPool

RESULTS = Path(__file__).parent / "results"
OBJECTIVES = (Objective("accuracy", "max"), Objective("latency_ms", "min"))
SEARCHERS = {
    "random": {"batch_size": 10},
    "nsga2": {"population_size": 20},
    "optuna-tpe": {"batch_size": 10, "n_startup_trials": 10},
    "predictor-nsga2": {"n_startup_trials": 16, "batch_size": 8, "population_size": 40, "generations": 25},
}


class PoolAccuracy:
    """Measured accuracy, replayed from (and recorded into) the pool."""

    bounds = {"accuracy": (0.0, 1.0)}
    metrics = {"accuracy": "measured"}

    def __init__(self, pool: MeasuredPool) -> None:
        self.pool = pool

    def evaluate(self, genomes):
        return [{"accuracy": a} for a in self.pool.accuracies(genomes)]


class TableLatency:
    metrics = {"latency_ms": "predicted"}

    def __init__(self, space, table) -> None:
        self.space, self.predictor = space, LatencyPredictor(table)

    def evaluate(self, genomes):
        return [{"latency_ms": float(v)} for v in self.predictor.predict_genomes(self.space, list(genomes)).ms]


def run_one(name: str, seed: int, space, pool: MeasuredPool, cheap, evaluator, budget: int, norm) -> dict:
    context = SearchContext(cheap=cheap) if name == "predictor-nsga2" else None
    searcher = get_searcher(name, space, OBJECTIVES, seed=seed, context=context, **SEARCHERS[name])
    measured_before = len(pool.seconds)
    start = time.perf_counter()
    result = run_search(space, evaluator, searcher, objectives=OBJECTIVES, budget=budget, normalization=norm)
    seconds = time.perf_counter() - start
    new = pool.seconds[measured_before:]
    return {"searcher": name, "seed": seed, "seconds": seconds, "measure_seconds": float(sum(new)),
            "curve": [(p.evaluations, p.hypervolume) for p in result.history],
            "points": [[t.metrics["accuracy"], t.metrics["latency_ms"]] for t in result.trials]}


def reach(curve: Sequence[tuple[int, float]], target: float) -> float:
    return next((float(e) for e, hv in curve if hv >= target), float("inf"))


def summarise(runs: list[dict], norm) -> tuple[float, dict]:
    points = np.array([p for r in runs for p in r["points"]])
    rows = [{"accuracy": a, "latency_ms": lat} for a, lat in points]
    F = objective_matrix(rows, OBJECTIVES)
    reference = hypervolume(F[front_indices(F, np.zeros(len(F)))], norm)
    table = {}
    for name in SEARCHERS:
        mine = [r for r in runs if r["searcher"] == name]
        needed = [reach(r["curve"], 0.95 * reference) for r in mine]
        final = [r["curve"][-1][1] for r in mine]
        overhead = [(r["seconds"] - r["measure_seconds"]) / max(1, r["curve"][-1][0]) for r in mine]
        table[name] = {"evals_to_95pct_median": float(np.median(needed)), "evals_to_95pct": needed,
                       "final_hv_mean": float(np.mean(final)), "final_hv_std": float(np.std(final)),
                       "overhead_ms_per_candidate": 1000 * float(np.median(overhead))}
    return reference, table


class _Timed:
    """Wraps an object and adds the seconds spent in the named methods to ``spent``."""

    def __init__(self, inner, methods: Sequence[str], spent: list[float]) -> None:
        self._inner, self._methods, self._spent = inner, set(methods), spent

    def __getattr__(self, name):
        value = getattr(self._inner, name)
        if name not in self._methods:
            return value

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return value(*args, **kwargs)
            finally:
                self._spent[0] += time.perf_counter() - start
        return timed


def loop_overhead(space, evaluator, budget: int = 2000, seed: int = 0) -> dict:
    """The search loop's own cost per candidate: wall time minus time inside the evaluator and the searcher
    (random searcher, cheap evaluator, so the loop's bookkeeping is what is left)."""
    spent, objectives = [0.0], (Objective("latency_ms", "min"), Objective("size_kb", "min"))
    searcher = _Timed(get_searcher("random", space, objectives, seed=seed, batch_size=50), ("ask", "tell"), spent)
    timed_eval = _Timed(evaluator, ("evaluate",), spent)
    start = time.perf_counter()
    result = run_search(space, timed_eval, searcher, objectives=objectives, budget=budget)
    total = time.perf_counter() - start
    n = len(result.trials)
    return {"candidates": n, "total_ms_per_candidate": 1000 * total / n,
            "loop_ms_per_candidate": 1000 * (total - spent[0]) / n}


def predictor_throughput(space, pool: MeasuredPool, seed: int) -> dict:
    rows = list(pool.rows.values())[:100]
    genomes, y = [space.from_dict(r["genome"]) for r in rows], [r["acc_q"] for r in rows]
    pred = make_predictor(space, "auto", seed=seed).fit(genomes, y)
    rng = np.random.default_rng(seed)
    cands = [space.sample(rng) for _ in range(10000)]
    start = time.perf_counter()
    pred.predict(cands)
    return {"candidates_per_second": 10000 / (time.perf_counter() - start), "model": pred.report()["model"]}


def plot(runs: list[dict], reference: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in SEARCHERS:
        mine = [r for r in runs if r["searcher"] == name]
        grid = np.arange(1, max(r["curve"][-1][0] for r in mine) + 1)
        values = [np.interp(grid, *zip(*r["curve"])) for r in mine]
        ax.plot(grid, np.mean(values, axis=0), label=name)
    ax.axhline(0.95 * reference, color="grey", ls="--", label="95% of reference")
    ax.set_xlabel("true evaluations")
    ax.set_ylabel("hypervolume (accuracy vs INT8 latency)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def ratio_fields(table_rows: dict, budget: int) -> dict:
    """Predictor-in-the-loop / NSGA-II evaluations to 95% of the reference hypervolume. When NSGA-II never got
    there within the budget, only an upper bound is known: (predictor's evaluations) / budget."""
    mine, theirs = (table_rows[n]["evals_to_95pct_median"] for n in ("predictor-nsga2", "nsga2"))
    if math.isfinite(theirs):
        return {"predictor_vs_nsga2_evals_ratio": mine / theirs, "ratio_text": f"{mine / theirs:.2f}"}
    bound = mine / budget
    return {"predictor_vs_nsga2_evals_ratio": None, "ratio_upper_bound": bound,
            "ratio_text": f"< {bound:.2f} (NSGA-II did not reach it within {budget} evaluations)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--backend", default="onnxruntime-int8")
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--eval-samples", type=int, default=500, help="validation images per measurement")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resummarise", action="store_true",
                        help="recompute the ratio fields of results/search_<dataset>.json from its recorded runs")
    args = parser.parse_args()
    out = RESULTS / f"search_{args.dataset}.json"
    if args.resummarise:
        result = json.loads(out.read_text())
        result.pop("predictor_vs_nsga2_evals_ratio", None)
        result.update(ratio_fields(result["searchers"], result["budget"]))
        out.write_text(json.dumps(result, indent=1))
        print(f"predictor-in-the-loop / NSGA-II evaluations to 95%: {result['ratio_text']}")
        return
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    from nas.profiling import cached_table

    pool = MeasuredPool(args.checkpoint, args.dataset, RESULTS / f"pool_{args.dataset}_e{args.eval_samples}.jsonl",
                        eval_samples=args.eval_samples)
    space = pool.space
    table = cached_table(space, args.backend, progress=False)
    cheap = CompositeEvaluator([AnalyticEvaluator(space), TableLatency(space, table)])
    evaluator = CompositeEvaluator([AnalyticEvaluator(space), TableLatency(space, table), PoolAccuracy(pool)])
    norm = normalization_from_extremes(space, evaluator, OBJECTIVES)
    runs = []
    for seed in range(args.seeds):
        for name in SEARCHERS:
            runs.append(run_one(name, seed, space, pool, cheap, evaluator, args.budget, norm))
            r = runs[-1]
            print(f"{name:16s} seed {seed}: hv {r['curve'][-1][1]:.4f} after {r['curve'][-1][0]} evaluations "
                  f"({r['seconds']:.0f}s, {len(pool.rows)} distinct measurements so far)", flush=True)
    reference, table_rows = summarise(runs, norm)
    throughput = predictor_throughput(space, pool, 0)
    overhead = loop_overhead(space, cheap)
    plot(runs, reference, RESULTS / f"search_{args.dataset}.png")
    ratio = ratio_fields(table_rows, args.budget)
    result = {"dataset": args.dataset, "budget": args.budget, "eval_samples": args.eval_samples, "seeds": args.seeds,
              "reference_hv": reference, "searchers": table_rows, **ratio, "predictor": throughput,
              "loop_overhead": overhead, "distinct_measurements": len(pool.rows), "runs": runs}
    out.write_text(json.dumps(result, indent=1))
    print(f"\nreference hypervolume {reference:.4f}\nsearcher          evals to 95% (median)  final HV  overhead ms/cand")
    for name, row in table_rows.items():
        print(f"{name:16s}  {row['evals_to_95pct_median']:21.0f}  {row['final_hv_mean']:.4f}±"
              f"{row['final_hv_std']:.4f}  {row['overhead_ms_per_candidate']:10.2f}")
    print(f"predictor-in-the-loop / NSGA-II evaluations to 95%: {ratio['ratio_text']}; predictor throughput "
          f"{throughput['candidates_per_second']:.0f} candidates/s; search loop overhead "
          f"{overhead['loop_ms_per_candidate']:.3f} ms/candidate (random searcher, table latency)")
    print("(overhead ms/cand above: wall time per candidate outside the accuracy measurements, i.e. including "
          "each searcher's own modelling)")


if __name__ == "__main__":
    main()
