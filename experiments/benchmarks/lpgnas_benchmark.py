"""LPGNAS benchmark on Cora and CiteSeer: hand-designed baselines against the searched designs.

For each dataset, in one process, same data, same retraining code and seeds:

- FP32 GCN (2 layers, 16 hidden, ReLU) and FP32 GAT (8 heads × 8 hidden, ELU, dropout 0.6, lr 0.005),
- uniform W8A8 and W4A8 GCN (coefficients at the activation bits), quantization-aware trained,
  each retrained over ``--seeds`` seeds (test accuracy at the best validation epoch; mean ± population std),
- LPGNAS: ``experiments/lpgnas_<dataset>.yaml`` run as shipped once per ``--run-seeds`` top-level seed (through
  :func:`nas.lpgnas.run_lpgnas`, so each run folder has the usual artifacts). What a user of the example gets
  is one such run, so each λ is reported as the mean ± sample std *over the runs* of the run's figure (its
  kept design's mean test accuracy over the retraining seeds), with the size ratio to the FP32 GCN likewise.
  ``--from-runs`` summarises finished ``qnas run`` folders of the example instead.

Size and BitOps are analytic (``search_spaces.gnn``). Targets checked: an LPGNAS λ whose design is ≥ 8× smaller
than the FP32 GCN in every run and at least as accurate on average (as the GCN measured here, and the literature
81.5 / 70.3); every run ≤ 10 minutes.

Usage:  python experiments/benchmarks/lpgnas_benchmark.py [--quick] [--datasets cora citeseer] [--run-seeds 0 20 40]
        python experiments/benchmarks/lpgnas_benchmark.py --from-runs RUN_DIR...
Results: a printed table, experiments/benchmarks/results/lpgnas.json (lpgnas_quick.json with --quick) and
         the LPGNAS run folders under experiments/benchmarks/results/lpgnas_runs/<dataset>/seed-<seed>/.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import yaml

from nas.journal import read_journal
from nas.lpgnas import lpgnas_config, run_lpgnas
from search_spaces import Genome, get_space
from search_spaces.gnn import GnnSpace
from supernets.data import load_dataset
from supernets.gnn import RetrainSettings, prepare_graph, retrain_seeds

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).parent / "results"
LITERATURE_GCN = {"cora": 81.5, "citeseer": 70.3}
BASELINES = {  # name -> (layer genes, retraining overrides)
    "FP32 GCN": (dict(op="gcn", hidden=16, act="relu", w_bits=32, a_bits=32, c_bits=32), {}),
    "FP32 GAT": (dict(op="gat", hidden=64, heads=8, act="elu", w_bits=32, a_bits=32, c_bits=32),
                 dict(dropout=0.6, lr=0.005)),
    "W8A8 GCN": (dict(op="gcn", hidden=16, act="relu", w_bits=8, a_bits=8, c_bits=8), {}),
    "W4A8 GCN": (dict(op="gcn", hidden=16, act="relu", w_bits=4, a_bits=8, c_bits=8), {}),
}


def baseline_genome(space: GnnSpace, genes: dict[str, Any]) -> Genome:
    """The same layer genes in every layer (the classifier layer has no hidden/act/heads: one GAT head)."""
    defaults = {"aggr": "add", "skip": "none", "heads": 1}
    return space.make({g.name: genes.get(g.name.split(".")[1], defaults.get(g.name.split(".")[1]))
                       for g in space.genes})


def run_baselines(space: GnnSpace, graph: Any, base: RetrainSettings, seeds: list[int]) -> list[dict[str, Any]]:
    rows = []
    for name, (genes, overrides) in BASELINES.items():
        genome = baseline_genome(space, genes)
        start = time.perf_counter()
        outcomes = retrain_seeds(space, genome, graph, RetrainSettings(**{**vars(base), **overrides}), seeds)
        accs = [100 * o.test_accuracy for o in outcomes]
        costs = space.costs(genome)
        rows.append({"model": name, "accuracy": statistics.fmean(accs), "accuracy_std": statistics.pstdev(accs),
                     "size_kb": costs.size_kb, "bitops": costs.bitops, "seconds": time.perf_counter() - start,
                     "test_accuracies": accs, "genome": genome.to_dict()})
        print(f"  {name}: {rows[-1]['accuracy']:.2f} ± {rows[-1]['accuracy_std']:.2f} %", flush=True)
    return rows


def run_dataset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    experiment = yaml.safe_load((ROOT / "experiments" / f"lpgnas_{name}.yaml").read_text())
    section = dict(experiment["lpgnas"])
    if args.seeds is not None:
        section["seeds"] = args.seeds
    if args.quick:
        section.update(seeds=2, search_epochs=30, warmup_epochs=10, retrain_epochs=60, lambdas=section["lambdas"][:2])
    for key in ("select_seeds", "final_select_seeds"):  # fewer retraining seeds: the selection's are among them
        if section.get(key):
            section[key] = min(section[key], section.get("seeds", 10))
    config = lpgnas_config(section)
    space = get_space("gnn", **experiment["search_space"]["options"])
    data = load_dataset(name)
    graph = prepare_graph(data, normalize_features=config.normalize_features)
    seeds = [experiment.get("seed", 0) + k for k in range(config.seeds)]
    print(f"{name}: baselines ({len(seeds)} seeds)", flush=True)
    # The hand-designed baselines live in the space's default widths and heads (the 8-head GAT needs widths
    # divisible by 8, which the Cora example gives up for its 12-wide choice); same data and costs.
    baseline_space = get_space("gnn", **{k: v for k, v in experiment["search_space"]["options"].items()
                                         if k not in ("hidden", "heads")})
    previous = _previous_baselines(name, len(seeds)) if args.reuse_baselines or args.from_runs else None
    if previous is not None:
        print(f"  reused from {RESULTS / 'lpgnas.json'}: " + ", ".join(
            f"{r['model']} {r['accuracy']:.2f} %" for r in previous), flush=True)
    baselines = previous or run_baselines(baseline_space, graph, config.retrain_settings(), seeds)
    if args.from_runs:
        runs = [read_example_run(Path(d)) for d in args.from_runs]
        runs = [r for r in runs if r["dataset"] == name]
    else:
        runs = [run_example(name, config, space, data, seed, args) for seed in args.run_seeds]
    searched = across_runs(runs, baselines[0]["size_kb"])
    return {"dataset": name, "description": data.description, "rows": baselines + searched, "runs": runs,
            "workers": config.workers, "config": config.model_dump(mode="json"), "space": space.options(),
            "targets": check_targets(name, baselines, searched, max(r["wall_seconds"] for r in runs))}


def run_example(name: str, config: Any, space: GnnSpace, data: Any, seed: int,
                args: argparse.Namespace) -> dict[str, Any]:
    """One run of the example config with top-level ``seed``: its searches and retrainings take the seeds from
    ``seed`` on (``nas.lpgnas._search_seeds``), so runs whose seeds are further apart than that share none."""
    runs_dir = args.runs_dir or RESULTS / ("lpgnas_runs_quick" if args.quick else "lpgnas_runs")
    run_dir = runs_dir / name / f"seed-{seed}"
    if not args.resume:
        shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run: the benchmark times every λ
    resumed = run_dir.is_dir() and any(run_dir.iterdir())
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"{name}: LPGNAS seed {seed}, λ = {config.lambdas}", flush=True)
    start = time.perf_counter()
    records = run_lpgnas(config, space, data, run_dir, seed=seed)
    summary = run_summary(name, seed, records, time.perf_counter() - start, str(run_dir))
    return {**summary, "resumed": resumed}  # a resumed run's wall time leaves out the jobs it reused


def read_example_run(run_dir: Path) -> dict[str, Any]:
    """The summary of a finished ``qnas run experiments/lpgnas_<dataset>.yaml`` folder (wall time from its
    manifest: started_at to finished_at, so a resumed run's includes the time it was stopped)."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    if manifest.get("status") != "finished":
        raise SystemExit(f"{run_dir}: the run has not finished (status {manifest.get('status')!r})")
    wall = (datetime.fromisoformat(manifest["finished_at"]) - datetime.fromisoformat(manifest["started_at"]))
    records = list(read_journal(run_dir / "trials.jsonl").records)
    return run_summary(config["dataset"]["name"], config["seed"], records, wall.total_seconds(), str(run_dir))


def run_summary(name: str, seed: int, records: list[dict[str, Any]], wall: float, run_dir: str) -> dict[str, Any]:
    """Per λ: the kept design's accuracy over its retraining seeds, size, BitOps and which search it came from
    (every restart's figures stay in the run folder's trials.jsonl)."""
    designs = [{"lambda": r["metrics"]["lambda"], "key": r["key"], **{k: r["metrics"][k] for k in (
        "accuracy", "accuracy_std", "size_kb", "bitops", "search_seconds", "retrain_seconds", "selection_seconds")},
        "test_accuracies": r["details"]["test_accuracies"], "genome": r["genome"]["genes"],
        "searches": len(r["details"]["restarts"]),
        "kept_search": next(({k: x.get(k) for k in ("lambda", "seed", "selection_val_accuracy", "selection_seeds")}
                             for x in r["details"]["restarts"] if x["chosen"]), None)}
        for r in sorted(records, key=lambda r: r["metrics"]["lambda"])]
    return {"dataset": name, "seed": seed, "run_dir": run_dir, "wall_seconds": wall,
            "task_seconds": sum(r["seconds"] for r in records), "designs": designs}


def across_runs(runs: list[dict[str, Any]], gcn_kb: float) -> list[dict[str, Any]]:
    """One row per λ: the mean and sample std over the runs of each run's accuracy (its design's mean over
    retraining seeds), of the size ratio to the FP32 GCN and of the run's wall time."""
    rows = []
    for lam in sorted({d["lambda"] for run in runs for d in run["designs"]}):
        kept = [(run, d) for run in runs for d in run["designs"] if d["lambda"] == lam]
        acc, ratio = [d["accuracy"] for _, d in kept], [gcn_kb / d["size_kb"] for _, d in kept]
        rows.append({"model": f"LPGNAS λ={lam:g}", "lambda": lam, "runs": len(kept),
                     "accuracy": statistics.fmean(acc), "accuracy_std": _std(acc),
                     "size_kb": statistics.fmean(d["size_kb"] for _, d in kept),
                     "ratio": statistics.fmean(ratio), "ratio_std": _std(ratio),
                     "bitops": statistics.fmean(d["bitops"] for _, d in kept),
                     "seconds": statistics.fmean(run["wall_seconds"] for run, _ in kept),
                     "per_run": [{"seed": run["seed"], "accuracy": d["accuracy"], "accuracy_std": d["accuracy_std"],
                                  "size_kb": d["size_kb"], "ratio": gcn_kb / d["size_kb"], "key": d["key"],
                                  "wall_seconds": run["wall_seconds"]} for run, d in kept]})
    return rows


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _previous_baselines(name: str, n_seeds: int) -> list[dict[str, Any]] | None:
    """The baseline rows of ``name`` in the last full lpgnas.json, if they were retrained over as many seeds
    (they are seeded, so a rerun repeats them exactly)."""
    path = RESULTS / "lpgnas.json"
    entries = json.loads(path.read_text())["datasets"] if path.exists() else []
    rows = next((d["rows"] for d in entries if d["dataset"] == name), [])
    rows = [r for r in rows if r["model"] in BASELINES and len(r["test_accuracies"]) == n_seeds]
    return rows if len(rows) == len(BASELINES) else None


def check_targets(name: str, baselines: list[dict[str, Any]], searched: list[dict[str, Any]],
                  seconds: float) -> dict[str, Any]:
    """Which λ's designs are ≥ 8× smaller than the FP32 GCN in every run, and at least as accurate on average."""
    gcn = baselines[0]
    small = [r for r in searched if min(p["ratio"] for p in r["per_run"]) >= 8]
    best_small = max(small, key=lambda r: r["accuracy"], default=None)
    return {"fp32_gcn_accuracy": gcn["accuracy"], "literature_gcn_accuracy": LITERATURE_GCN[name],
            "best_8x_smaller": None if best_small is None else best_small["model"],
            "best_8x_smaller_accuracy": None if best_small is None else best_small["accuracy"],
            "accuracy_vs_measured_fp32_gcn": bool(best_small and best_small["accuracy"] >= gcn["accuracy"]),
            "accuracy_vs_literature": bool(best_small and best_small["accuracy"] >= LITERATURE_GCN[name]),
            "slowest_run_seconds": seconds, "within_10_minutes": seconds <= 600}


def print_table(result: dict[str, Any]) -> None:
    gcn_kb = result["rows"][0]["size_kb"]
    runs = result["runs"]
    print(f"\n{result['dataset']}  (test accuracy %; baselines: mean ± std over retraining seeds; LPGNAS: mean ± "
          f"sample std over {len(runs)} example runs, seeds {[r['seed'] for r in runs]}; size and BitOps analytic)")
    print(f"{'model':<18} {'accuracy':>15} {'size KB':>9} {'BitOps':>10} {'× smaller':>13} {'seconds':>8}")
    for r in result["rows"]:
        ratio = (f"{r['ratio']:>6.1f} ± {r['ratio_std']:<4.1f}" if "ratio" in r else f"{gcn_kb / r['size_kb']:>13.1f}")
        print(f"{r['model']:<18} {r['accuracy']:>7.2f} ± {r['accuracy_std']:<5.2f} {r['size_kb']:>9.2f} "
              f"{r['bitops']:>10.3g} {ratio:>13} {r['seconds']:>8.0f}")
        for p in r.get("per_run", []):
            print(f"    seed {p['seed']:<4} {p['accuracy']:>7.2f} ± {p['accuracy_std']:<5.2f} {p['size_kb']:>9.2f} "
                  f"{'':>10} {p['ratio']:>13.1f} {p['wall_seconds']:>8.0f}")
    t = result["targets"]
    print(f"targets: best design ≥8× smaller in every run {t['best_8x_smaller']} ({t['best_8x_smaller_accuracy']}); "
          f"≥ measured FP32 GCN: {t['accuracy_vs_measured_fp32_gcn']}; "
          f"≥ literature {t['literature_gcn_accuracy']}: "
          f"{t['accuracy_vs_literature']}; slowest run {t['slowest_run_seconds']:.0f} s (≤ 600 s: "
          f"{t['within_10_minutes']}) on {result['workers']} worker process(es)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["cora", "citeseer"], choices=["cora", "citeseer"])
    parser.add_argument("--seeds", type=int, default=None, help="retraining seeds (default: the configs' 10)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is often shared)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, 2 λ, short schedules")
    parser.add_argument("--run-seeds", nargs="+", type=int, default=[0, 20, 40],
                        help="top-level seeds of the example runs (apart by more than the restarts and retraining "
                             "seeds, so that no two runs share a search or retraining)")
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="run folders: RUNS_DIR/<dataset>/seed-<seed> (default: results/lpgnas_runs)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run folders instead of starting them afresh (their jobs.jsonl is reused)")
    parser.add_argument("--from-runs", nargs="+", metavar="RUN_DIR",
                        help="summarise finished `qnas run experiments/lpgnas_<dataset>.yaml` folders instead of "
                             "running (baselines from the last lpgnas.json)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default: results/lpgnas.json, lpgnas_quick.json with --quick)")
    parser.add_argument("--reuse-baselines", action="store_true",
                        help="take the hand-designed baselines from the last lpgnas.json (seeded: same numbers)")
    args = parser.parse_args(argv)
    if args.from_runs:  # the datasets of the given runs
        args.datasets = sorted({yaml.safe_load((Path(d) / "config.yaml").read_text())["dataset"]["name"]
                                for d in args.from_runs})
    torch.set_num_threads(args.threads)
    start, cpu = time.perf_counter(), time.process_time()
    results = [run_dataset(name, args) for name in args.datasets]
    for result in results:
        print_table(result)
    out = args.out or RESULTS / ("lpgnas_quick.json" if args.quick else "lpgnas.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    # a run of some datasets keeps the others' latest results (each entry records its own timings)
    kept = [d for d in (json.loads(out.read_text())["datasets"] if out.exists() else [])
            if d["dataset"] not in args.datasets]
    out.write_text(json.dumps({
        "datasets": kept + results, "datasets_run": args.datasets,  # the seconds below are this run's
        "wall_seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
        "threads": args.threads, "torch": torch.__version__, "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(), "command": sys.argv}, indent=2) + "\n")
    print(f"\nwrote {out}; total {time.perf_counter() - start:.0f} s wall")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
