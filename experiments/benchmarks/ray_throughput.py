"""Ray executor benchmark: evaluations/s local vs Ray (1 and 2 workers), Ray's overhead per call, and scaling.

Two supernets: ``digits-tiny`` (8x8 images, trained here in seconds; an evaluation is a few ms, so
Ray's overhead dominates) and ``mnist-quick`` (the 28x28 MobileNetV3-style supernet of
``supernet_benchmark.py --quick``; BN recalibration on 256 images + 500 validation images per
evaluation, the regime of real searches). For each: the same seeded genomes in batches
(like a searcher's population) through the local executor (1 and 2 torch threads) and a private Ray
on this machine with 1 and 2 workers of 1 thread each; a warm-up batch first, untimed, then the modes
interleaved for ``--rounds`` rounds, keeping each mode's best round (the machine is shared with other
jobs). Results must be identical across executors (checked). Ray's overheads: round trips of an empty
actor call, an empty task, and an ``evaluate`` call with no genome on a real worker; from the latter
and one evaluation's time, a projection of evaluations/s with more workers (one per core elsewhere).

Usage (Ray starts here: run it inside a loopback-only network namespace):
    unshare -n sh -c 'ip link set lo up && exec .venv/bin/python experiments/benchmarks/ray_throughput.py'
Results: a printed table and experiments/benchmarks/results/ray_throughput.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.executors import LocalExecutor
from nas.executors.ray_env import RaySession
from nas.executors.ray_executor import RayEvaluator
from nas.executors.supernet import SupernetAccuracyFactory
from search_spaces import Genome, SearchSpace, get_space
from supernets.checkpoint import load_supernet
from supernets.data import load_dataset
from supernets.timing import device_name
from supernets.evaluate import SubnetEvaluator

RESULTS = Path(__file__).parent / "results"
os.environ.setdefault("QNAS_DATA", str(Path(__file__).resolve().parents[3] / "shared" / "data"))  # as the Makefile
TINY_SPACE = {"in_channels": 1, "image_size": 8, "stem_channels": 8, "stage_channels": [16, 24],
              "stage_strides": [1, 2], "stage_se": [False, True], "stage_act": ["relu", "hswish"], "depths": [1, 2],
              "kernels": [3, 5], "expands": [2, 4], "head_channels": 32, "w_bits": [4, 8], "a_bits": [4, 8]}
SCENARIOS = {
    "digits-tiny": {"checkpoint": None, "dataset": "digits", "options": {"max_train": 256}, "calib": 128,
                    "val": None, "genomes": 64, "batch": 16},
    "mnist-quick": {"checkpoint": RESULTS / "supernet_mnist_quick.pt", "dataset": "mnist", "options": {},
                    "calib": 256, "val": 500, "genomes": 16, "batch": 8},
}


def tiny_checkpoint(folder: Path) -> Path:
    """Train the tiny digits supernet (one float and one sandwich epoch, seconds)."""
    from supernets.config import SupernetConfig
    from supernets.fit import fit_supernet

    path = folder / "digits_tiny.pt"
    data = load_dataset("digits", seed=0, max_train=256)
    config = SupernetConfig(warmup_epochs=1, epochs=1, batch_size=64, bn_calib_samples=128, random_subnets=1)
    fit_supernet(get_space("mbv3", **TINY_SPACE), data, config, checkpoint=path, progress=False, log=None)
    return path


def build(scenario: dict[str, Any], folder: Path) -> tuple[SearchSpace, SupernetAccuracyFactory, dict[str, Any]]:
    """The scenario's space, accuracy factory (weights + data) and a description."""
    path = scenario["checkpoint"] or tiny_checkpoint(folder)
    net, state = load_supernet(path)
    data = load_dataset(scenario["dataset"], seed=0, **scenario["options"])
    val = scenario["val"] or len(data.val_x)
    subnets = SubnetEvaluator(net.eval(), data.train_x[: scenario["calib"]], data.val_x[:val], data.val_y[:val])
    info = {"checkpoint": Path(path).name, "dataset": scenario["dataset"], "image_size": net.image_size,
            "supernet_params": sum(p.numel() for p in net.parameters()), "bn_calib_images": scenario["calib"],
            "val_images": val, "payload_mb": round(_payload_mb(subnets), 2)}
    return net.space, SupernetAccuracyFactory.from_subnets(subnets), info


def _payload_mb(subnets: SubnetEvaluator) -> float:
    tensors = [*subnets.supernet.state_dict().values(), *subnets.calib, subnets.eval_x, subnets.eval_y]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def genomes_of(space: SearchSpace, n: int, seed: int = 0) -> list[Genome]:
    rng = np.random.default_rng(seed)
    out: dict[str, Genome] = {}
    while len(out) < n:
        g = space.sample(rng)
        out.setdefault(g.key, g)
    return list(out.values())


def timed(evaluator: Any, genomes: list[Genome], batch: int) -> tuple[float, list[float]]:
    """Seconds to evaluate ``genomes`` batch by batch, and the accuracies."""
    results: list[float] = []
    start = time.perf_counter()
    for i in range(0, len(genomes), batch):
        results += [r["accuracy"] for r in evaluator.evaluate(genomes[i:i + batch])]
    return time.perf_counter() - start, results


class _Threads:
    """The local evaluator at a given number of torch threads (set around each call, 1 otherwise)."""

    def __init__(self, evaluator: Any, threads: int) -> None:
        self.evaluator, self.threads = evaluator, threads

    def evaluate(self, genomes: list[Genome]) -> list[dict[str, float]]:
        torch.set_num_threads(self.threads)
        try:
            return self.evaluator.evaluate(genomes)
        finally:
            torch.set_num_threads(1)


class _Echo:
    def ping(self) -> None:
        return None


def _noop() -> None:
    return None


def call_overhead(session: RaySession, n: int = 200) -> dict[str, float]:
    """Round trip (ms) of an empty actor call and an empty task, one at a time; tasks pipelined per second."""
    ray = session.ray
    actor = ray.remote(_Echo).options(num_cpus=0.5).remote()
    ray.get(actor.ping.remote())
    start = time.perf_counter()
    for _ in range(n):
        ray.get(actor.ping.remote())
    actor_ms = (time.perf_counter() - start) / n * 1e3
    ray.kill(actor)
    task = ray.remote(_noop).options(num_cpus=0.5)
    ray.get(task.remote())
    start = time.perf_counter()
    for _ in range(n // 2):
        ray.get(task.remote())
    task_ms = (time.perf_counter() - start) / (n // 2) * 1e3
    start = time.perf_counter()
    ray.get([task.remote() for _ in range(n)])
    pipelined = n / (time.perf_counter() - start)
    return {"actor_call_ms": round(actor_ms, 2), "task_ms": round(task_ms, 2), "tasks_pipelined_per_s": round(pipelined)}


def evaluate_call_ms(session: RaySession, evaluator: RayEvaluator, n: int = 50) -> float:
    """Round trip (ms) of an ``evaluate`` call with no genome on a real worker: Ray's cost per call."""
    actor = evaluator._actors[0]
    session.ray.get(actor.evaluate.remote([]))
    start = time.perf_counter()
    for _ in range(n):
        session.ray.get(actor.evaluate.remote([]))
    return (time.perf_counter() - start) / n * 1e3


def modes(session: RaySession, factory: SupernetAccuracyFactory) -> tuple[dict[str, Any], dict[str, float]]:
    """The four evaluators (local 1 and 2 threads, Ray 1 and 2 workers) and the Ray actors' start times."""
    local = LocalExecutor().evaluator(factory)
    out: dict[str, Any] = {"local, 1 thread": _Threads(local, 1), "local, 2 threads": _Threads(local, 2)}
    started: dict[str, float] = {}
    for workers in (1, 2):
        name = f"ray, {workers} worker{'s' if workers > 1 else ''} x 1 thread"
        start = time.perf_counter()
        out[name] = RayEvaluator(factory, session=session, num_workers=workers, threads=1)
        started[name] = round(time.perf_counter() - start, 2)
    return out, started


def scenario_rows(session: RaySession, name: str, scenario: dict[str, Any], folder: Path,
                  rounds: int) -> dict[str, Any]:
    """Every mode on one scenario, interleaved over ``rounds`` (best round kept: the machine is shared)."""
    space, factory, info = build(scenario, folder)
    batch = scenario["batch"]
    pool = genomes_of(space, scenario["genomes"] + batch)
    warmup, genomes = pool[:batch], pool[batch:]
    evaluators, started = modes(session, factory)
    try:
        call_ms = evaluate_call_ms(session, evaluators["ray, 1 worker x 1 thread"])
        for evaluator in evaluators.values():
            evaluator.evaluate(warmup)
        best: dict[str, float] = {m: math.inf for m in evaluators}
        results: dict[str, list[float]] = {}
        for _ in range(rounds):
            for mode, evaluator in evaluators.items():
                seconds, results[mode] = timed(evaluator, genomes, batch)
                best[mode] = min(best[mode], seconds)
    finally:
        for evaluator in evaluators.values():
            getattr(evaluator, "close", lambda: None)()
    reference, base = results["local, 1 thread"], best["local, 1 thread"]
    rows = [{"mode": m, "seconds": round(best[m], 3), "evals_per_s": round(len(genomes) / best[m], 2),
             "speedup_vs_local_1t": round(base / best[m], 2), "identical_to_local_1t": results[m] == reference,
             **({"actor_start_s": started[m]} if m in started else {})} for m in evaluators]
    eval_s = base / len(genomes)
    return {"scenario": name, **info, "genomes": len(genomes), "batch": batch, "rounds": rounds, "rows": rows,
            "eval_s_local_1t": round(eval_s, 4), "ray_evaluate_call_ms": round(call_ms, 2),
            "projection": projection(eval_s, call_ms / 1e3, batch)}


def projection(eval_s: float, call_s: float, batch: int) -> dict[str, float]:
    """Evaluations/s with W one-thread workers (one per core on many machines): one call per worker per
    batch, ceil(batch / W) evaluations each, plus the per-call overhead; no stragglers, no other load."""
    out = {}
    for workers in (1, 2, 4, 8, 16, 32):
        per_batch = math.ceil(batch / workers) * eval_s + call_s
        out[str(workers)] = round(batch / per_batch, 1)
    return out


def table(report: dict[str, Any]) -> str:
    lines = [f"{'scenario':<12} {'mode':<28} {'evals/s':>8} {'speed-up':>8} {'identical':>9} {'actor start':>11}"]
    for s in report["scenarios"]:
        for r in s["rows"]:
            start = f"{r['actor_start_s']:.1f} s" if "actor_start_s" in r else ""
            lines.append(f"{s['scenario']:<12} {r['mode']:<28} {r['evals_per_s']:>8.2f} {r['speedup_vs_local_1t']:>7.2f}x "
                         f"{str(r['identical_to_local_1t']):>9} {start:>11}")
        lines.append(f"{'':<12} one evaluation {s['eval_s_local_1t'] * 1e3:.0f} ms; Ray's cost per evaluate call "
                     f"{s['ray_evaluate_call_ms']:.1f} ms; projected evals/s with W workers (batch {s['batch']}): "
                     + ", ".join(f"W={w}: {v}" for w, v in s["projection"].items()))
    o = report["overhead"]
    lines.append(f"Ray round trips: empty actor call {o['actor_call_ms']} ms, empty task {o['task_ms']} ms, "
                 f"{o['tasks_pipelined_per_s']} pipelined tasks/s; private Ray start {report['ray_start_s']} s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated: " + ", ".join(SCENARIOS))
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; the best is kept")
    parser.add_argument("--out", type=Path, default=RESULTS / "ray_throughput.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    start = time.perf_counter()
    session = RaySession(None, num_cpus=os.cpu_count() or 2)
    ray_start = round(time.perf_counter() - start, 2)
    try:
        overhead = call_overhead(session)
        with tempfile.TemporaryDirectory() as folder:
            scenarios = [scenario_rows(session, name, SCENARIOS[name], Path(folder), args.rounds)
                         for name in args.scenarios.split(",")]
    finally:
        session.close()
    report = {"machine": {"cpus": os.cpu_count(), "device": device_name(), "python": platform.python_version(),
                          "torch": torch.__version__, "ray": session.ray.__version__,
                          "load_average_before": [round(x, 2) for x in load_before],
                          "load_average_after": [round(x, 2) for x in os.getloadavg()],
                          "note": "shared machine: other jobs were running (see the load averages)"},
              "ray_start_s": ray_start, "overhead": overhead, "scenarios": scenarios}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"machine: {os.cpu_count()} CPUs, load average before {load_before[0]:.2f}, after "
          f"{os.getloadavg()[0]:.2f} (shared with other jobs)\nwrote {args.out}")


if __name__ == "__main__":
    main()
