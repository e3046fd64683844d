"""Transformer benchmark: the ``transformer`` space's supernet on a character LM and on a small ViT.

1. LM on Tiny Shakespeare (characters, 64-character windows): trains the supernet, then the largest subnet
   at uniform W8A8 alone from scratch (same schedule and epochs). Reports the validation loss (nats per
   character) of that subnet inherited from the supernet and standalone, each also after ONNX Runtime INT8
   export (QDQ, evaluated on the same windows). Then the front: ``--archs`` random architectures plus the
   largest and smallest, each timed once as an ORT INT8 model (batch 1, 1 thread; ORT runs 8-bit kernels,
   so the latency of an architecture does not depend on its searched bits), and measured in the supernet at
   uniform W8A8, uniform W4A8 and a few mixed bit assignments (W4 on the MLP, on QKV, on the attention).
   Pareto fronts of val_loss against latency and against size (``space.costs``), and the val_loss
   differences between the fronts at equal latency / size. Then searched fronts: NSGA-II with the same budget
   of measured candidates over the whole space (bits searched with the architecture) and over the space with
   every bit-width pinned to uniform W8A8 / W4A8, for val_loss against latency (a transformer block table of
   this machine; the latency fronts' architectures then timed end to end) and against size; the joint front's
   val_loss minus each uniform front's at equal cost.
2. ViT on the CIFAR-10 subset: trains a small ViT supernet, then 8 subnets (largest, smallest, 6 random)
   at uniform W8A8 standalone; test accuracy inherited vs standalone per subnet and the mean gap.
3. Latency tables of transformer blocks: not run here (recorded as not run); the subnets are timed end to end.

The JSON is rewritten after every part (and after each training), so a run cut short keeps what it measured.

Usage:  QNAS_DATA=../shared/data python experiments/benchmarks/transformer_benchmark.py [--quick] [--parts lm vit]
Results: a printed table and experiments/benchmarks/results/transformer_benchmark.json
         (``_quick`` with ``--quick``; ``_lm_e<N>`` with ``--lm-epochs N``, a longer or shorter LM schedule;
         ``_sw<W>`` with ``--student-weight W``; ``_s<N>`` with ``--seed N``)
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from search_spaces import Genome, get_space
from search_spaces.transformer import LINEAR_GROUPS
from supernets.config import SupernetConfig
from supernets.data import load_dataset
from supernets.evaluate import SubnetEvaluator
from supernets.families import build_supernet
from supernets.training import SupernetTrainer

RESULTS = Path(__file__).parent / "results"
NANOGPT_VAL_LOSS = 1.4697  # nanoGPT shakespeare_char: 6 layers, 384 wide, context 256, trained on a GPU

LATENCY_TABLES_NOT_RUN = ("not run: this benchmark times whole subnets on ORT INT8 and neither builds nor checks "
                          "latency tables of transformer blocks (transformer_latency_validation.py does)")

# Bit assignments per architecture: weight bits per linear group (activations stay 8-bit).
BIT_RULES = {
    "W8A8": dict.fromkeys(LINEAR_GROUPS, 8),
    "W4A8": dict.fromkeys(LINEAR_GROUPS, 4),
    "mixed W4 fc1+fc2": {"qkv": 8, "proj": 8, "fc1": 4, "fc2": 4},
    "mixed W4 qkv": {"qkv": 4, "proj": 8, "fc1": 8, "fc2": 8},
    "mixed W4 qkv+proj": {"qkv": 4, "proj": 4, "fc1": 8, "fc2": 8},
}
FAMILIES = {"uniform W8A8": ["W8A8"], "uniform W4A8": ["W4A8"],
            "mixed": [r for r in BIT_RULES if r.startswith("mixed")]}

PRESETS = {
    "full": {
        "lm": dict(space=dict(front="lm", vocab_size=65, seq_len=64, depths=[2, 3], widths=[48, 64], heads=[1, 2],
                              mlp_ratios=[2, 4], w_bits=[4, 8], a_bits=[8]),
                   data=dict(seq_len=64, max_train=3072, max_val=400),
                   train=dict(warmup_epochs=2, epochs=6, batch_size=64, optimizer="adamw", lr=3e-3,
                              weight_decay=0.05, label_smoothing=0.0, random_subnets=1, student_weight=0.25,
                              bn_calib_samples=64, eval_batch_size=100),
                   archs=24, latency=dict(runs=30, passes=6), search=dict(budget=96, population_size=16)),
        "vit": dict(space=dict(front="vit", image_size=32, in_channels=3, patch_size=8, num_classes=10,
                               pooling="cls", depths=[2, 3], widths=[48, 64], heads=[1, 2], mlp_ratios=[2, 3],
                               w_bits=[4, 8], a_bits=[8]),
                    data=dict(variant="subset", max_train=10_000, max_val=500, max_test=2000),
                    train=dict(warmup_epochs=2, epochs=8, batch_size=64, optimizer="adamw", lr=3e-3,
                               weight_decay=0.05, label_smoothing=0.1, random_subnets=1, student_weight=0.25,
                               bn_calib_samples=64, eval_batch_size=250),
                    subnets=8),
    },
}


def _smaller(preset: dict, **changes: dict) -> dict:
    """``preset`` with some entries of its sections (space, data, train, ...) replaced."""
    out = copy.deepcopy(preset)
    for section, values in changes.items():
        out[section] = out[section] | values if isinstance(out[section], dict) else values
    return out


PRESETS["quick"] = {  # a smoke run: the same settings, tiny sizes
    "lm": _smaller(PRESETS["full"]["lm"], space=dict(depths=[1, 2], widths=[32, 48]),
                   data=dict(max_train=256, max_val=64), train=dict(warmup_epochs=1, epochs=1, eval_batch_size=64),
                   archs=4, latency=dict(runs=5, passes=2), search=dict(budget=8, population_size=4)),
    "vit": _smaller(PRESETS["full"]["vit"], space=dict(depths=[1, 2], widths=[32, 48]),
                    data=dict(max_train=256, max_val=100, max_test=200),
                    train=dict(warmup_epochs=1, epochs=1, eval_batch_size=100), subnets=3),
}


# ---- genomes ------------------------------------------------------------------------------------
def with_bits(space, genome: Genome, rule: str) -> Genome:
    """The architecture of ``genome`` with ``BIT_RULES[rule]``'s weight bits per group and 8-bit activations."""
    values = {}
    for gene in space.genes:
        name = gene.name
        if name.endswith(".w_bits"):
            values[name] = BIT_RULES[rule][name.split(".")[1]]
        elif name.endswith(".a_bits"):
            values[name] = 8
    return space.canonical(genome.with_values(values))


def distinct_archs(space, n: int, seed: int) -> list[tuple[str, Genome]]:
    """Largest, smallest and ``n`` random distinct architectures, each at uniform W8A8."""
    rng = np.random.default_rng(seed)
    picks = [("largest", with_bits(space, space.largest(), "W8A8")),
             ("smallest", with_bits(space, space.smallest(), "W8A8"))]
    seen = {g.key for _, g in picks}
    for _ in range(200 * max(1, n)):
        if len(picks) >= n + 2:
            break
        g = with_bits(space, space.sample(rng), "W8A8")
        if g.key not in seen:
            seen.add(g.key)
            picks.append((f"random{len(picks) - 1}", g))
    return picks


def arch_summary(space, g: Genome) -> str:
    depth = int(g["depth"])
    layers = " ".join(f"h{g[f'l{i}.heads']}r{g[f'l{i}.mlp_ratio']}" for i in range(1, depth + 1))
    return f"d{depth} w{g['width']} {layers}"


# ---- training -------------------------------------------------------------------------------------
def train(space, data, cfg: SupernetConfig, seed: int, *, image_size: int | None = None,
          standalone: Genome | None = None, label: str = "") -> tuple:
    """Train the supernet (or only ``standalone``) with ``cfg``; (net, per-epoch logs, seconds)."""
    net = build_supernet(space, image_size=image_size, seed=seed)
    trainer = SupernetTrainer(net, data.train_x, data.train_y, data.val_x, data.val_y, cfg, standalone=standalone)
    start, logs = time.perf_counter(), []
    while not trainer.done:
        log = trainer.train_epoch()
        logs.append({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in log.__dict__.items()})
        print(f"  {label} epoch {log.epoch} {log.phase:6s} loss {log.loss:.4f} acc max {log.max_acc:.4f} "
              f"min {log.min_acc:.4f} ({log.seconds:.0f}s)", flush=True)
    return net.eval(), logs, time.perf_counter() - start


def ort_int8_of(ev: SubnetEvaluator, genome: Genome, calib: list[torch.Tensor]):
    from supernets.transformer.export import transformer_ort_int8

    return transformer_ort_int8(ev.extract(genome), calib)


# ---- Pareto fronts --------------------------------------------------------------------------------
def pareto(points: list[dict], cost: str) -> list[dict]:
    """Points no other point beats on both ``cost`` and val_loss (ascending cost)."""
    front, best = [], math.inf
    for p in sorted(points, key=lambda p: (p[cost], p["val_loss"])):
        if p["val_loss"] < best:
            front.append(p)
            best = p["val_loss"]
    return front


def best_within(front: list[dict], cost: str, budget: float) -> float | None:
    """Lowest val_loss of a front point costing at most ``budget`` (None if none does)."""
    losses = [p["val_loss"] for p in front if p[cost] <= budget * (1 + 1e-9)]
    return min(losses) if losses else None


def front_comparison(points: list[dict], cost: str) -> dict:
    """Fronts per bit family and, at each uniform-W8A8 front point's cost, each family's best val_loss minus
    the W8A8 one (negative: that family reaches a lower loss at that cost)."""
    fronts = {fam: pareto([p for p in points if p["rule"] in rules], cost) for fam, rules in FAMILIES.items()}
    fronts["any bits"] = pareto(points, cost)
    base = fronts["uniform W8A8"]
    deltas = {}
    for fam in ("uniform W4A8", "mixed", "any bits"):
        rows = []
        for p in base:
            other = best_within(fronts[fam], cost, p[cost])
            rows.append({cost: p[cost], "w8a8_val_loss": p["val_loss"], "val_loss": other,
                         "delta": None if other is None else other - p["val_loss"]})
        valid = [r["delta"] for r in rows if r["delta"] is not None]
        deltas[fam] = {"at_w8a8_front": rows, "mean_delta": float(np.mean(valid)) if valid else None,
                       "min_delta": float(np.min(valid)) if valid else None, "n": len(valid)}
    return {"fronts": {fam: [{k: p[k] for k in ("arch", "rule", "val_loss", cost)} for p in f]
                       for fam, f in fronts.items()}, "vs_w8a8": deltas}


# ---- part 1: LM -------------------------------------------------------------------------------------
def run_lm(preset: dict, seed: int, result: dict, save) -> None:
    from supernets.transformer.export import evaluate_onnx, ort_latencies_ms

    data = load_dataset("tinyshakespeare", **preset["data"])
    space = get_space("transformer", **preset["space"])
    cfg = SupernetConfig(**preset["train"], seed=seed)
    part = result["lm"] = {"dataset": "tinyshakespeare", "data": preset["data"], "train_windows": len(data.train_x),
                           "val_windows": len(data.val_x), "space": space.options(), "config": cfg.model_dump(),
                           "nanogpt_reference_val_loss": NANOGPT_VAL_LOSS,
                           "nanogpt_reference_note": "6 layers, 384 wide, context 256, trained on a GPU: "
                                                     "not comparable in size or training budget"}
    calib_x = data.train_x[: cfg.bn_calib_samples]
    ort_calib = [data.train_x[i:i + 32] for i in range(0, 128, 32)]
    largest = with_bits(space, space.largest(), "W8A8")

    print("LM supernet", flush=True)
    net, logs, seconds = train(space, data, cfg, seed, label="supernet")
    part["supernet"] = {"history": logs, "train_seconds": seconds}
    save()
    ev = SubnetEvaluator(net, calib_x, data.val_x, data.val_y, batch_size=cfg.eval_batch_size)
    inherited = ev.measure(largest)
    inherited_ort = evaluate_onnx(ort_int8_of(ev, largest, ort_calib), data.val_x, data.val_y,
                                  batch_size=cfg.eval_batch_size)

    print("LM standalone largest W8A8", flush=True)
    alone_net, alone_logs, alone_seconds = train(space, data, cfg, seed, standalone=largest, label="standalone")
    alone_ev = SubnetEvaluator(alone_net, calib_x, data.val_x, data.val_y, batch_size=cfg.eval_batch_size)
    alone = alone_ev.measure(largest)
    alone_ort = evaluate_onnx(ort_int8_of(alone_ev, largest, ort_calib), data.val_x, data.val_y,
                              batch_size=cfg.eval_batch_size)
    gap = inherited["val_loss"] - alone["val_loss"]
    part["largest_w8a8"] = {
        "key": largest.key, "inherited": inherited, "standalone": alone,
        "inherited_ort_int8": {"val_loss": inherited_ort["loss"], "accuracy": inherited_ort["accuracy"]},
        "standalone_ort_int8": {"val_loss": alone_ort["loss"], "accuracy": alone_ort["accuracy"]},
        "gap_nats": gap, "gap_ort_int8_nats": inherited_ort["loss"] - alone_ort["loss"],
        "target_nats": 0.05, "met": gap <= 0.05,
        "standalone_history": alone_logs, "standalone_train_seconds": alone_seconds}
    save()
    print(f"largest W8A8 val_loss: inherited {inherited['val_loss']:.4f} (ORT INT8 {inherited_ort['loss']:.4f}), "
          f"standalone {alone['val_loss']:.4f} (ORT INT8 {alone_ort['loss']:.4f}), gap {gap:+.4f} nats", flush=True)
    del alone_net, alone_ev

    print("LM front", flush=True)
    start = time.perf_counter()
    archs = distinct_archs(space, preset["archs"], seed + 1)
    protos = [ort_int8_of(ev, g, ort_calib) for _, g in archs]
    latency = ort_latencies_ms(protos, data.val_x[:1], threads=1, **preset["latency"])
    points = []
    for (name, arch), lat in zip(archs, latency):
        for rule in BIT_RULES:
            g = with_bits(space, arch, rule)
            m = ev.measure(g)
            c = space.costs(g)
            points.append({"arch": name, "arch_desc": arch_summary(space, arch), "rule": rule, "key": g.key,
                           "val_loss": m["val_loss"], "accuracy": m["accuracy"], "latency_ms": lat,
                           "size_kb": c.size_bytes / 1024, "mmacs": c.macs / 1e6})
        print(f"  {name:9s} {arch_summary(space, arch):28s} {lat:7.3f} ms  " + "  ".join(
            f"{p['rule']} {p['val_loss']:.4f}" for p in points[-len(BIT_RULES):]), flush=True)
    part["front"] = {"points": points, "latency_protocol": {"threads": 1, "batch": 1, **preset["latency"],
                                                            "model": "ORT INT8 QDQ of the W8A8 subnet"},
                     "latency": front_comparison(points, "latency_ms"), "size": front_comparison(points, "size_kb"),
                     "seconds": time.perf_counter() - start}
    save()
    run_lm_search(space, ev, data, preset, seed, ort_calib, part, save)


# ---- part 1b: searched fronts, joint bits vs uniform bits ---------------------------------------------
SEARCHES = {"joint": None, "uniform W8A8": "W8A8", "uniform W4A8": "W4A8"}


def pinned_bits(space, rule: str) -> dict:
    """Every weight-bits gene at ``BIT_RULES[rule]``'s bits of its group, every activation-bits gene at 8."""
    return {g.name: (BIT_RULES[rule][g.name.split(".")[1]] if g.name.endswith(".w_bits") else 8)
            for g in space.genes if g.name.endswith((".w_bits", ".a_bits"))}


def run_lm_search(space, ev: SubnetEvaluator, data, preset: dict, seed: int, ort_calib: list, part: dict,
                  save) -> None:
    """NSGA-II over the whole space (bits searched with the architecture) and over the space with every
    quantization gene pinned to uniform W8A8 / W4A8, the same budget of measured candidates each, for
    (val_loss, latency_ms from a transformer block table of this machine) and for (val_loss, size_kb). The
    latency fronts' architectures are then timed end to end on ORT INT8."""
    from nas.objectives import Objective
    from nas.search import run_search
    from nas.searchers import get_searcher
    from nas.transformer_latency import TransformerTableEvaluator, profile_transformer_space
    from search_spaces.pinned import PinnedSpace
    from supernets.transformer.export import ort_latencies_ms

    settings = preset["search"]
    start = time.perf_counter()
    table = profile_transformer_space(space, "onnxruntime-int8", threads=1, **preset["latency"])
    latency = TransformerTableEvaluator(space, table, "latency_ms", "benchmark table")
    cache: dict[str, float] = {}

    class Measured:
        metrics = {"val_loss": "measured", "size_kb": "analytic", **latency.metrics}

        def evaluate(self, genomes):
            rows = []
            for g, lat in zip(genomes, latency.evaluate(genomes)):
                if g.key not in cache:
                    cache[g.key] = ev.measure(g)["val_loss"]
                rows.append({"val_loss": cache[g.key], "size_kb": space.costs(g).size_bytes / 1024, **lat})
            return rows

    out = part["search"] = {"budget": settings["budget"], "population_size": settings["population_size"],
                            "searcher": "nsga2", "latency_table_blocks": len(table), "fronts": {}}
    for cost in ("latency_ms", "size_kb"):
        objectives = (Objective("val_loss", "min"), Objective(cost, "min"))
        for name, rule in SEARCHES.items():
            searched = space if rule is None else PinnedSpace(space, pinned_bits(space, rule))
            searcher = get_searcher("nsga2", searched, objectives, seed=seed,
                                    population_size=settings["population_size"])
            result = run_search(searched, Measured(), searcher, objectives=objectives, budget=settings["budget"])
            out["fronts"][f"{name} / {cost}"] = [
                {"key": t.genome.key, "arch": arch_summary(space, t.genome), "val_loss": t.metrics["val_loss"],
                 cost: t.metrics[cost], "genome": t.genome} for t in result.front]
            print(f"  searched {name:13s} vs {cost:10s}: {len(result.front)} front points of "
                  f"{len(result.trials)} measured", flush=True)
    # Time every latency-front architecture end to end (ORT runs every bit-width as 8: one model per architecture).
    archs: dict[str, Genome] = {}
    for name in SEARCHES:
        for p in out["fronts"][f"{name} / latency_ms"]:
            archs.setdefault(p["arch"], with_bits(space, p["genome"], "W8A8"))
    measured = ort_latencies_ms([ort_int8_of(ev, g, ort_calib) for g in archs.values()], data.val_x[:1], threads=1,
                                **preset["latency"])
    by_arch = dict(zip(archs, measured))
    for name in SEARCHES:
        for p in out["fronts"][f"{name} / latency_ms"]:
            p["latency_measured_ms"] = by_arch[p["arch"]]
    for fronts in out["fronts"].values():
        for p in fronts:
            del p["genome"]
    out["vs_uniform"] = {
        cost: {base: searched_delta(out["fronts"][f"joint / {cost}"], out["fronts"][f"{base} / {cost}"], key)
               for base in ("uniform W8A8", "uniform W4A8")}
        for cost, key in (("latency_ms", "latency_measured_ms"), ("size_kb", "size_kb"))}
    out["seconds"] = time.perf_counter() - start
    save()


def searched_delta(joint: list[dict], base: list[dict], cost: str) -> dict:
    """At each point of the ``base`` front (its ``cost``), the joint front's best val_loss within that cost minus
    the base point's (negative: joint search reaches a lower loss at equal cost)."""
    joint_front = pareto(joint, cost)
    rows = []
    for p in pareto(base, cost):
        other = best_within(joint_front, cost, p[cost])
        rows.append({cost: p[cost], "base_val_loss": p["val_loss"], "joint_val_loss": other,
                     "delta": None if other is None else other - p["val_loss"]})
    valid = [r["delta"] for r in rows if r["delta"] is not None]
    return {"rows": rows, "mean_delta": float(np.mean(valid)) if valid else None, "n": len(valid),
            "cost": cost}


# ---- part 1c: what keeps the largest LM subnet behind, and what closes the gap ---------------------------
ABLATION = {  # name: (space option changes, supernet config changes), each against the LM preset
    "student weight 1": ({}, {"student_weight": 1.0}),
    "student weight 1, project": ({}, {"student_weight": 1.0, "student_gradients": "project"}),
    "student weight 0.5": ({}, {"student_weight": 0.5}),
    "student weight 0.25": ({}, {"student_weight": 0.25}),
    "student weight 0.25, project": ({}, {"student_weight": 0.25, "student_gradients": "project"}),
    "student weight 0.1": ({}, {"student_weight": 0.1}),
    "weight 1, only bits elastic": ({"depths": [3], "widths": [64], "heads": [2], "mlp_ratios": [4]},
                                    {"student_weight": 1.0}),
    "weight 1, only width elastic": ({"depths": [3], "heads": [2], "mlp_ratios": [4], "w_bits": [8]},
                                     {"student_weight": 1.0}),
    "weight 1, no depth elasticity": ({"depths": [3]}, {"student_weight": 1.0}),
    "weight 1, no width/heads/MLP elasticity": ({"widths": [64], "heads": [2], "mlp_ratios": [4]},
                                                {"student_weight": 1.0}),
}


def run_lm_ablation(preset: dict, seed: int, result: dict, save) -> None:
    """The LM supernet trained under each :data:`ABLATION` setting; the largest (and smallest) subnet's W8A8
    val_loss, against the largest subnet trained alone (the same for every setting: the space's largest)."""
    data = load_dataset("tinyshakespeare", **preset["data"])
    base_space = get_space("transformer", **preset["space"])
    largest = with_bits(base_space, base_space.largest(), "W8A8")
    calib_x = data.train_x[: preset["train"]["bn_calib_samples"]]
    part = result["lm_ablation"] = {"settings": {}}
    cfg = SupernetConfig(**preset["train"], seed=seed)
    alone_net, _, alone_s = train(base_space, data, cfg, seed, standalone=largest, label="standalone")
    alone = SubnetEvaluator(alone_net, calib_x, data.val_x, data.val_y, batch_size=cfg.eval_batch_size)
    part["standalone_val_loss"] = alone.measure(largest)["val_loss"]
    for name, (space_changes, train_changes) in ABLATION.items():
        space = get_space("transformer", **(preset["space"] | space_changes))
        cfg = SupernetConfig(**(preset["train"] | train_changes), seed=seed)
        net, _, seconds = train(space, data, cfg, seed, label=name)
        ev = SubnetEvaluator(net, calib_x, data.val_x, data.val_y, batch_size=cfg.eval_batch_size)
        big = ev.measure(with_bits(space, space.largest(), "W8A8"))["val_loss"]
        small = ev.measure(with_bits(space, space.smallest(), "W8A8"))["val_loss"]
        part["settings"][name] = {"space": space_changes, "config": train_changes, "largest_val_loss": big,
                                  "smallest_val_loss": small, "gap_nats": big - part["standalone_val_loss"],
                                  "train_seconds": seconds}
        print(f"  {name:40s} largest {big:.4f} (gap {big - part['standalone_val_loss']:+.4f})  smallest {small:.4f}",
              flush=True)
        save()


# ---- part 2: ViT ------------------------------------------------------------------------------------
def run_vit(preset: dict, seed: int, result: dict, save) -> None:
    data = load_dataset("cifar10", **preset["data"])
    space = get_space("transformer", **preset["space"])
    cfg = SupernetConfig(**preset["train"], seed=seed)
    part = result["vit"] = {"dataset": "cifar10", "data": preset["data"], "train_images": len(data.train_x),
                            "test_images": len(data.test_x), "space": space.options(), "config": cfg.model_dump()}
    start = time.perf_counter()
    print("ViT supernet", flush=True)
    net, logs, seconds = train(space, data, cfg, seed, image_size=data.image_size, label="supernet")
    part["supernet"] = {"history": logs, "train_seconds": seconds}
    calib_x = data.train_x[: cfg.bn_calib_samples]
    ev = SubnetEvaluator(net, calib_x, data.test_x, data.test_y, batch_size=cfg.eval_batch_size)
    rows = part["rows"] = []
    for name, g in distinct_archs(space, preset["subnets"] - 2, seed + 2):
        inh = ev.accuracy(g)
        alone_net, _, alone_s = train(space, data, cfg, seed, image_size=data.image_size, standalone=g, label=name)
        acc = SubnetEvaluator(alone_net, calib_x, data.test_x, data.test_y, batch_size=cfg.eval_batch_size).accuracy(g)
        c = space.costs(g)
        rows.append({"subnet": name, "arch_desc": arch_summary(space, g), "key": g.key, "mmacs": c.macs / 1e6,
                     "size_kb": c.size_bytes / 1024, "inherited": inh, "standalone": acc, "gap_pp": 100 * (acc - inh),
                     "standalone_train_seconds": alone_s})
        print(f"  {name:9s} {arch_summary(space, g):20s} inherited {inh:.4f} standalone {acc:.4f} "
              f"gap {rows[-1]['gap_pp']:+.2f} pp", flush=True)
        part["mean_gap_pp"] = float(np.mean([r["gap_pp"] for r in rows]))
        save()
    part["seconds"] = time.perf_counter() - start
    save()


# ---- report ---------------------------------------------------------------------------------------
def print_report(result: dict) -> None:
    lm = result.get("lm", {})
    if "largest_w8a8" in lm:
        r = lm["largest_w8a8"]
        print("\nLM largest W8A8   val_loss (nats/char)   ORT INT8")
        print(f"inherited         {r['inherited']['val_loss']:20.4f}   {r['inherited_ort_int8']['val_loss']:8.4f}")
        print(f"standalone        {r['standalone']['val_loss']:20.4f}   {r['standalone_ort_int8']['val_loss']:8.4f}")
        print(f"gap (inh - alone) {r['gap_nats']:+20.4f}   {r['gap_ort_int8_nats']:+8.4f}   (target <= 0.05: "
              f"{'met' if r['met'] else 'not met'}); nanoGPT reference {NANOGPT_VAL_LOSS} (not comparable)")
    if "front" in lm:
        for cost in ("latency", "size"):
            comp = lm["front"][cost]
            print(f"\nfronts vs {cost}: " + "; ".join(f"{fam} {len(f)} points" for fam, f in comp["fronts"].items()))
            for fam, d in comp["vs_w8a8"].items():
                if d["mean_delta"] is not None:
                    print(f"  {fam:13s} - W8A8 at equal {cost}: mean {d['mean_delta']:+.4f} nats, "
                          f"best {d['min_delta']:+.4f} ({d['n']} W8A8 front points)")
    if "vs_uniform" in lm.get("search", {}):
        search = lm["search"]
        print(f"\nsearched fronts (nsga2, {search['budget']} measured candidates each): joint bits - uniform bits")
        for cost, bases in search["vs_uniform"].items():
            for base, d in bases.items():
                if d["mean_delta"] is not None:
                    print(f"  vs {base:13s} at equal {d['cost']:19s}: mean {d['mean_delta']:+.4f} nats "
                          f"({d['n']} front points)")
    vit = result.get("vit", {})
    if vit.get("rows"):
        print("\nViT subnet  arch                  inherited  standalone  gap (pp)")
        for r in vit["rows"]:
            print(f"{r['subnet']:10s}  {r['arch_desc']:20s}  {r['inherited']:9.4f}  {r['standalone']:10.4f}  "
                  f"{r['gap_pp']:+8.2f}")
        print(f"mean gap {vit['mean_gap_pp']:+.2f} pp")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget for a smoke run")
    parser.add_argument("--parts", nargs="+", choices=("lm", "vit", "lm-ablation"), default=["lm", "vit"],
                        help="lm-ablation (not run by default): the LM supernet under each student weight, gradient "
                             "rule and elasticity of ABLATION; results get an _ablation suffix")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training (latency uses 1)")
    parser.add_argument("--lm-epochs", type=int, default=None,
                        help="LM sandwich epochs instead of the preset's (the standalone run gets the same); "
                             "results get an _lm_e<N> suffix")
    parser.add_argument("--student-weight", type=float, default=None,
                        help="supernet.student_weight instead of the presets' 0.25 (1: every student's loss counts "
                             "as much as the largest subnet's); results get an _sw<W> suffix")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    presets = copy.deepcopy(PRESETS["quick" if args.quick else "full"])
    if args.lm_epochs is not None:
        presets["lm"]["train"]["epochs"] = args.lm_epochs
    if args.student_weight is not None:
        for part in presets.values():
            part["train"]["student_weight"] = args.student_weight
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = ("_quick" if args.quick else "") + ("" if args.lm_epochs is None else f"_lm_e{args.lm_epochs}")
    suffix += ("" if args.student_weight is None else f"_sw{args.student_weight:g}")
    suffix += ("" if args.seed == 0 else f"_s{args.seed}") + ("_ablation" if args.parts == ["lm-ablation"] else "")
    out = RESULTS / f"transformer_benchmark{suffix}.json"
    result: dict = {"quick": args.quick, "seed": args.seed, "threads": args.threads, "parts": args.parts,
                    "latency_tables": {"run": False, "reason": LATENCY_TABLES_NOT_RUN}}
    if out.exists():  # keep a part measured by an earlier run that this one does not repeat
        old = json.loads(out.read_text())
        for part in ("lm", "vit", "lm_ablation"):
            if part.replace("_", "-") not in args.parts and part in old:
                result[part] = old[part]

    def save() -> None:
        out.write_text(json.dumps(result, indent=2))

    start = time.perf_counter()
    if "lm" in args.parts:
        run_lm(presets["lm"], args.seed, result, save)
    if "lm-ablation" in args.parts:
        run_lm_ablation(presets["lm"], args.seed, result, save)
    if "vit" in args.parts:
        run_vit(presets["vit"], args.seed, result, save)
    result["seconds"] = time.perf_counter() - start
    save()
    print_report(result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
