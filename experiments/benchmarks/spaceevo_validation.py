"""SpaceEvo validation: does the Q-T score rank candidate spaces like the INT8 accuracy they reach?

1. Lookup table on the CIFAR-10 subset: float ResNet teacher, block-wise NSR distillation of W8A8
   student stages for every (stage, block type, window), INT8 latency (ONNX Runtime) of every sub-stage.
2. Aging evolution over candidate spaces (SpaceEvo's settings, Wang et al., ICCV 2023) -> the evolved
   best space.
3. For >= 5 spaces (evolved best, uniform ones, INT8-unfriendly ones): a quantized supernet on a short
   schedule, a latency table profiled here (ONNX Runtime INT8), an NSGA-II search (accuracy vs
   latency), and per latency constraint the best W8A8 accuracy (picked on val, reported on the
   whole 10k test set unless ``--max-test``).
4. Spearman between Q-T score and best accuracy, per constraint and over their mean.
5. This CPU's INT8-friendliness: INT8/FP32 latency ratio per block type and width (ORT and torch).

    .venv/bin/python experiments/benchmarks/spaceevo_validation.py [--quick] [--max-test N] [--keep-friendliness]

Supernets, latency tables and the teacher are cached in .qnas_cache/spaceevo_bench/ and the lookup table in
results/, so a rerun with another ``--max-test`` only repeats the searches and the test evaluations.

Results: a printed table, experiments/benchmarks/results/spaceevo_validation.json (+ _lut.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from nas.objectives import Objective
from nas.profiling import profile_space
from nas.search import run_search
from nas.searchers import get_searcher
from nas.spaceevo import EvolutionSettings, QtLut, QtSettings, aging_evolution, qt_score
from nas.spaceevo.build import LutBuildSettings, build_lut, measure_specs
from predictors.latency import LatencyPredictor
from search_spaces import SearchSpace, get_space
from search_spaces.meta import BLOCK_TYPES, MACROS, parse_candidate, stage_block, stage_input_sizes
from supernets.data import load_dataset

from subnet_pool import SAME_DATA
from supernets.evaluate import SubnetEvaluator
from supernets.fit import fit_supernet
from supernets.training import SupernetConfig

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CACHE = HERE.parents[1] / ".qnas_cache" / "spaceevo_bench"
MACRO = "c10"
UNIFORM = {"MBv1-dual": "c10-0000-1111", "MBv2": "c10-1111-1111", "ResNet": "c10-3333-1111",
           "MBv3+SE (INT8-unfriendly)": "c10-2222-1111", "ResNet+SE (INT8-unfriendly)": "c10-4444-1111"}
"""Uniform spaces validated beside the evolved best (FusedMBConv is left out for time; it seeds the evolution)."""


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def constraints_from_lut(lut: QtLut, spaces: list[str], n: int = 3) -> tuple[float, ...]:
    """Latency constraints at the 25/50/75% quantiles of the pooled subnet latencies of the given spaces."""
    from nas.spaceevo.qt_score import draw_subnets

    lats = np.concatenate([draw_subnets(lut, parse_candidate(s), 20000, np.random.default_rng(0))[1] for s in spaces])
    return tuple(float(f"{q:.3g}") for q in np.quantile(lats, np.linspace(0.25, 0.75, n)))


def train_and_search(candidate: str, data: Any, cfg: SupernetConfig, limits: tuple[float, ...], budget: int,
                     quick: bool, tag: str = "", search_seeds: int = 1) -> dict[str, Any]:
    """Supernet, latency table, NSGA-II search(es); the best val accuracy under each limit and its test accuracy
    (with ``search_seeds`` > 1: the mean over that many independently seeded searches).

    ``tag`` names the cached supernet's schedule; smoke runs (``quick``) keep their own supernets and tables."""
    space = get_space("spaceevo", candidate=candidate)
    trainer = fit_supernet(space, data, cfg, checkpoint=CACHE / f"supernet-{candidate}{tag}.pt", progress=False,
                           log=log)
    t1 = time.perf_counter()
    table_path = CACHE / f"table-{candidate}{'-quick' if quick else ''}-ort-int8.csv"
    if table_path.exists():
        from predictors.latency import LatencyTable
        table = LatencyTable.load(table_path, space=space)
    else:
        table = profile_space(space, "onnxruntime-int8", out_path=table_path, runs=10 if quick else 20,
                              passes=2 if quick else 4, n_calibration=6 if quick else 10, progress=False)
    predictor = LatencyPredictor(table)
    t2 = time.perf_counter()
    ev = SubnetEvaluator(trainer.net.eval(), data.train_x[: cfg.bn_calib_samples], data.val_x, data.val_y,
                         batch_size=256)
    test = SubnetEvaluator(trainer.net, data.train_x[: cfg.bn_calib_samples], data.test_x, data.test_y)
    best: dict[str, Any] = {}
    per_seed = []
    for seed in range(search_seeds):
        trials = _search(space, ev, predictor, budget, seed)
        per_seed.append({})
        for limit in limits:
            ok = [t for t in trials if t["latency_ms"] <= limit]
            if ok:
                top = max(ok, key=lambda t: t["accuracy"])
                per_seed[-1][str(limit)] = {**top, "test_accuracy": test.accuracy(space.from_dict(top["genome"]))}
    for limit in map(str, limits):
        found = [r[limit] for r in per_seed if limit in r]
        # one search: its pick; several: the mean test accuracy of their picks (searches that found nothing
        # under the limit are left out; the count says how many did)
        tests = [t["test_accuracy"] for t in found]
        best[limit] = None if not found else {**max(found, key=lambda t: t["accuracy"]),
                                              "test_accuracy": float(np.mean(tests)), "test_accuracies": tests,
                                              "searches_found": len(found)}
    hist = [h.__dict__ for h in trainer.history]  # its epoch seconds are the training time, also when cached
    return {"candidate": candidate, "describe": space.candidate.describe(), "history": hist, "best": best,
            "n_trials": budget, "search_seeds": search_seeds, "train_s": sum(h.seconds for h in trainer.history),
            "profile_s": t2 - t1, "search_s": time.perf_counter() - t2, "table_blocks": len(table)}


class _Metrics:
    """accuracy (W8A8, inside the supernet) and latency_ms (the profiled ORT INT8 table)."""

    def __init__(self, space: SearchSpace, ev: SubnetEvaluator, predictor: LatencyPredictor) -> None:
        self.space, self.ev, self.predictor = space, ev, predictor
        self.metrics = {"accuracy": "measured", "latency_ms": "predicted"}
        self.bounds = {"accuracy": (0.0, 1.0)}

    def evaluate(self, genomes: list) -> list[dict[str, float]]:
        lat = self.predictor.predict_genomes(self.space, list(genomes)).ms
        return [{"accuracy": self.ev.accuracy(g), "latency_ms": float(ms)} for g, ms in zip(genomes, lat)]


def _search(space: SearchSpace, ev: SubnetEvaluator, predictor: LatencyPredictor, budget: int,
            seed: int = 0) -> list[dict]:
    objectives = [Objective("accuracy", "max"), Objective("latency_ms", "min")]
    searcher = get_searcher("nsga2", space, objectives, seed=seed, population_size=16)
    result = run_search(space, _Metrics(space, ev, predictor), searcher, objectives=objectives, budget=budget)
    return [{"key": t.key, "genome": t.genome.to_dict(), **t.metrics} for t in result.trials]


def friendliness(quick: bool) -> list[dict[str, Any]]:
    """INT8/FP32 latency per block type, stage and width (kernel 3, middle expand), ORT and torch."""
    arch, sizes = MACROS[MACRO], stage_input_sizes(MACROS[MACRO], 32)
    specs, rows = [], []
    for t, btype in enumerate(BLOCK_TYPES):
        for s, stage in enumerate(arch.stages):
            for width in (stage.channels[0], stage.channels[-1]):
                spec = stage_block(btype, in_size=sizes[s], in_ch=width, out_ch=width, stride=1, first=False,
                                   kernel=3, expand=btype.expands[len(btype.expands) // 2])
                specs.append(spec)
                rows.append({"block": btype.name, "op": spec.op, "stage": s + 1, "width": width, "key": spec.key()})
    runs, passes = (4, 2) if quick else (30, 6)
    for backend in ("onnxruntime-fp32", "onnxruntime-int8", "torch-fp32", "torch-int8"):
        bits = 8 if backend.endswith("int8") else 32
        from dataclasses import replace
        ms, overhead, _ = measure_specs([replace(b, w_bits=bits, a_bits=bits) for b in specs], backend, runs=runs,
                                        passes=passes)
        for row, spec in zip(rows, specs):
            row[backend] = ms[replace(spec, w_bits=bits, a_bits=bits).key()] - overhead
    for row in rows:
        row["ort_ratio"] = row["onnxruntime-int8"] / row["onnxruntime-fp32"]
        row["torch_ratio"] = row["torch-int8"] / row["torch-fp32"]
    return rows


def correlations(scores: dict[str, Any], runs: list[dict], limits: tuple[float, ...]) -> dict[str, Any]:
    """Spearman of Q-T score vs best test accuracy, per constraint and over the constraints' mean."""
    out: dict[str, Any] = {}
    acc = {r["candidate"]: [(r["best"][str(t)] or {}).get("test_accuracy", 0.0) for t in limits] for r in runs}
    names = list(acc)
    for k, limit in enumerate(limits):
        rho = spearmanr([scores[c]["per_constraint"][k] for c in names], [acc[c][k] for c in names])[0]
        out[f"T={limit}ms"] = float(rho)
    out["overall"] = float(spearmanr([scores[c]["score"] for c in names], [np.mean(acc[c]) for c in names])[0])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget for a smoke run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-test", type=int, default=None,
                        help="test images for the reported accuracies (default: all 10k; 2000 images leave a 1.1 pp "
                             "binomial error, about the spread between spaces)")
    parser.add_argument("--epochs", type=int, default=7,
                        help="elastic supernet epochs after the 2 warm-up ones (QAT from the middle on); other than 7, "
                             "results and supernet checkpoints get an _e<N> suffix")
    parser.add_argument("--only", nargs="+", default=None, metavar="LABEL",
                        help="train and search only these spaces (e.g. 'MBv2' 'ResNet') and write no results: "
                             "for filling the supernet cache from several processes before one full run; give "
                             "each process different spaces (checkpoints are not locked)")
    parser.add_argument("--search-seeds", type=int, default=1,
                        help="independently seeded searches per space; the accuracy under a constraint is the mean "
                             "of their picks (one 32-evaluation search is noisy); above 1, results get an _s<N> suffix")
    parser.add_argument("--keep-friendliness", action="store_true",
                        help="reuse the INT8-friendliness table of the previous results file instead of re-timing it")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    q = args.quick
    CACHE.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = load_dataset("cifar10", max_train=256 if q else 3000, max_test=256 if q else args.max_test,
                        **SAME_DATA["cifar10"])
    log(f"data: {data.description}")
    lut_settings = LutBuildSettings(teacher_epochs=1 if q else 15, distill_steps=2 if q else 50, rows=4 if q else 20,
                                    n_features=128 if q else 1536, n_eval=64 if q else 128, runs=4 if q else 20,
                                    passes=2 if q else 4)
    base = "_quick" if q else ""  # the lookup table, teacher and friendliness table serve every schedule
    schedule = "" if args.epochs == 7 or q else f"_e{args.epochs}"
    suffix = base + schedule + (f"_s{args.search_seeds}" if args.search_seeds > 1 else "")
    tag = (base + schedule).replace("_", "-")  # supernet checkpoints: a smoke run never meets a full run's cache
    partial = args.only is not None
    lut_path = RESULTS / f"spaceevo_validation{base}_lut.json"
    lut = QtLut.load(lut_path) if lut_path.exists() else build_lut(
        MACRO, data, out_path=lut_path, teacher_checkpoint=CACHE / f"teacher{base}.pt", settings=lut_settings,
        log=log)
    lut_s = time.perf_counter() - started
    limits = constraints_from_lut(lut, list(UNIFORM.values()))
    qt = QtSettings(constraints_ms=limits, n_subnets=20000 if q else 100_000)
    evo = EvolutionSettings(population=30, sample=8, total=150) if q else EvolutionSettings()  # SpaceEvo's
    t0 = time.perf_counter()
    evolved = aging_evolution(lut, MACRO, qt, evo)
    evo_s = time.perf_counter() - t0
    log(f"constraints {limits} ms; evolved best {evolved.best.candidate} score {evolved.best.score:.4f} "
        f"({evo.total} spaces in {evo_s:.0f}s)")
    best = next(r for r in evolved.ranking if r.candidate not in UNIFORM.values())
    spaces = {"evolved best": best.candidate, **(dict(list(UNIFORM.items())[:1]) if q else UNIFORM)}
    scores = {c: qt_score(lut, parse_candidate(c), qt).to_dict() for c in spaces.values()}
    cfg = SupernetConfig(warmup_epochs=1 if q else 2, epochs=1 if q else args.epochs,
                         qat_start=0 if q else (args.epochs + 1) // 2, batch_size=64,
                         lr=0.08, random_subnets=1, bn_calib_samples=256, seed=0)
    previous = RESULTS / f"spaceevo_validation{base}.json"  # the friendliness table does not depend on the schedule
    kept = (json.loads(previous.read_text()).get("friendliness")
            if args.keep_friendliness and not partial and previous.exists() else None)
    if partial:
        friendly = []  # not part of a partial run
    elif kept:
        friendly = kept
        log(f"INT8-friendliness table reused from {previous.name}")
    else:
        friendly = friendliness(q)
        log("INT8-friendliness table done")
    runs: list[dict] = []
    for label, cand in spaces.items():
        if partial and label not in args.only and cand not in args.only:
            continue
        log(f"== {label}: {cand} (Q-T score {scores[cand]['score']:.4f})")
        runs.append({"label": label, **train_and_search(cand, data, cfg, limits, 8 if q else 32, q, tag,
                                                              args.search_seeds)})
        if partial:
            continue
        _save(suffix, _result(q, data, lut, lut_s, evolved, evo_s, evo, qt, limits, scores, runs, cfg, started, friendly))
    if partial:
        log(f"--only: trained and searched {[r['label'] for r in runs]}; no results written")
        return
    result = _result(q, data, lut, lut_s, evolved, evo_s, evo, qt, limits, scores, runs, cfg, started, friendly)
    _save(suffix, result)
    print_tables(result)


def _result(q, data, lut, lut_s, evolved, evo_s, evo, qt, limits, scores, runs, cfg, started, friendly) -> dict:
    return {"quick": q, "dataset": "cifar10 JPEG subset", "test_images": len(data.test_x), "macro": MACRO, "lut_info": dict(lut.info),
            "lut_fixed_ms": lut.fixed_ms, "lut_seconds": lut_s, "evolution": {
                "settings": evo.__dict__, "seconds": evo_s, "top10": [s.to_dict() for s in evolved.ranking[:10]]},
            "qt_settings": {**qt.__dict__, "constraints_ms": list(limits)}, "scores": scores, "runs": runs,
            "supernet_config": cfg.model_dump(),
            "spearman": correlations(scores, runs, limits) if len(runs) > 2 else {},
            "friendliness": friendly, "total_seconds": time.perf_counter() - started}


def _save(suffix: str, result: dict) -> None:
    from nas.rundir import atomic_write_json

    atomic_write_json(RESULTS / f"spaceevo_validation{suffix}.json", result)


def print_tables(result: dict) -> None:
    limits = result["qt_settings"]["constraints_ms"]
    print(f"\nQ-T score vs best W8A8 test accuracy under each ORT INT8 latency constraint {limits} ms")
    print(f"{'space':<30}{'candidate':<16}{'Q-T':>8}" + "".join(f"{'acc@' + str(t):>12}" for t in limits))
    for run in result["runs"]:
        accs = [(run["best"][str(t)] or {}).get("test_accuracy", float("nan")) for t in limits]
        print(f"{run['label']:<30}{run['candidate']:<16}{result['scores'][run['candidate']]['score']:>8.4f}"
              + "".join(f"{a:>12.4f}" for a in accs))
    print("Spearman:", json.dumps(result["spearman"]))
    if result["friendliness"]:
        print(f"\n{'block':<14}{'stage':>6}{'width':>6}{'ORT int8/fp32':>15}{'torch int8/fp32':>17}")
        for row in result["friendliness"]:
            print(f"{row['block']:<14}{row['stage']:>6}{row['width']:>6}{row['ort_ratio']:>15.2f}"
                  f"{row['torch_ratio']:>17.2f}")


if __name__ == "__main__":
    sys.exit(main())
