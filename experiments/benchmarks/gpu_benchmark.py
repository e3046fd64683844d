"""GPU benchmark: supernet step cost, CIFAR-10 supernet training in minutes, subnet evaluations per second.

Parts (numbered as in the issue; each rewrites the results JSON when it ends, and progress lines are
printed as they happen, so a run cut short still tells what it measured):

1. Step cost: one training step (forward, backward, SGD) of the supernet's largest subnet, W8A8
   fake-quantized, against the same network as a static module (extracted from the supernet) under
   the same precision with the same LSQ fake quantization (the like-for-like QAT reference), and both
   in plain float; images/s and the supernet/static ratio (target <= 1.5x). Eager here; torch.compile'd
   variants run last, in a child process with a time limit, failures reported, never fatal.
2. CIFAR-10 (full, 50k train) on one device: a ``resnet`` supernet (4/6/8-bit weights and activations)
   trained within ``--minutes`` of wall time: the epochs are sized from a measured probe of the warm-up
   and sandwich epochs; then W8A8 test accuracy of the largest and the smallest subnet (targets 92% / 85%).
3. Inherited vs standalone on CIFAR-10 (full), after part 2 and with its supernet: ``--standalone-subnets``
   architectures spread over the space by MACs, each at W8A8 and W4A4: inherited test accuracy (BN
   recalibrated), then each trained from scratch with QAT (only that subnet, the same recipe, on the supernet's
   schedule: shortened, or fewer subnets, when the time left is short; skipped when none fits),
   ``--standalone-at-once`` at a time (a thread and a CUDA stream each; on the CPU one after another), with the
   images/s gain of training them at once measured on a short probe; per bit-width the mean and max gap
   (standalone - inherited, pp) and Kendall tau of the two rankings (targets: gap <= 1 pp W8A8 / 2 pp W4A4,
   tau >= 0.6). It gets the time parts 1 and 2 leave: run it with a smaller ``--minutes`` or a larger
   ``--total-minutes``.
4. Subnet evaluations per second (BN recalibration + 10k images) on the device, and on the CPU for
   ``--cpu-compare`` subnets.

The whole run respects ``--total-minutes`` (default 8.75): training gets what the other parts leave.
Needs only torch, numpy, PIL (JPEG decoding) and this repository's search_spaces/ and supernets/.

Usage:
    python experiments/benchmarks/gpu_benchmark.py --data DIR            # DIR holds cifar10_jpeg.npz
    python experiments/benchmarks/gpu_benchmark.py --device cpu --smoke --data ../shared/data   # < 1 minute
Results: a printed table and experiments/benchmarks/results/gpu_benchmark.json (``--out`` to change;
``--smoke`` writes gpu_benchmark_smoke.json).
"""

from __future__ import annotations

import time

START = time.monotonic()  # before the heavy imports: the deadline counts them too

import argparse  # noqa: E402
import copy  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, when run as a script

from search_spaces import Genome, SearchSpace, get_space  # noqa: E402
from supernets.data import ImageSplits, load_dataset  # noqa: E402
from supernets.device import Placement, resolve_placement  # noqa: E402
from supernets.evaluate import SubnetEvaluator  # noqa: E402
from supernets.quant import QuantMode, compile_fake_quant  # noqa: E402
from supernets.static import attach_lsq  # noqa: E402
from supernets.supernet import QuantSupernet  # noqa: E402
from supernets.training import SupernetTrainer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder: the shared benchmark module
from inherited_standalone import (at_bits, kendall_tau, spread_subnets, standalone_test_accuracy,  # noqa: E402
                                  standalone_trainer)

RESULTS = Path(__file__).parent / "results"

# A once-for-all ResNet for 32x32 inputs: stride-1 stem, four stages (the last at 4x4), bottlenecks whose
# middle width is 0.5-1x the stage width, depth 1-2 per stage, widths 0.5-1x, 4/6/8-bit weights and
# activations: the largest subnet is about ResNet-18's size, the smallest a few percent of it.
SPACE = dict(in_channels=3, num_classes=10, image_size=32, stem_channels=64, stem_stride=1,
             stage_channels=[64, 128, 256, 512], stage_strides=[1, 2, 2, 2], depths=[1, 2],
             expands=[0.5, 0.75, 1.0], width_mults=[0.5, 0.75, 1.0], kernel=3, w_bits=[4, 6, 8], a_bits=[4, 6, 8])
SMOKE_SPACE = SPACE | dict(stem_channels=8, stem_stride=2, stage_channels=[8, 16], stage_strides=[1, 2],
                           expands=[0.5, 1.0], width_mults=[0.5, 1.0], w_bits=[4, 8], a_bits=[4, 8])
# Every SupernetConfig field, so the trainer also runs where pydantic is not installed.
RECIPE = dict(warmup_epochs=1, epochs=1, qat_start=0, batch_size=512, lr=0.2, momentum=0.9, weight_decay=5e-4,
              label_smoothing=0.1, random_subnets=1, distillation="inplace", grad_clip=5.0, quant_lr_scale=0.02,
              wdr_weight=0.0, augment=True, bn_calib_samples=2000, eval_batch_size=1000, seed=0, optimizer="sgd",
              student_weight=1.0, student_gradients="sum")
SMOKE_RECIPE = dict(bn_calib_samples=64, eval_batch_size=128)
W8 = QuantMode(8, "channel", True)  # the supernet's weight mode at 8 bits (per-channel, symmetric)
A8 = QuantMode(8, "tensor", False)  # its activation mode (per-tensor, asymmetric)


# --------------------------------------------------------------------------------------------- helpers
def say(msg: str) -> None:
    """A progress line with the elapsed time, flushed at once (a partial log must still be readable)."""
    print(f"[{elapsed():6.1f}s] {msg}", flush=True)


def elapsed() -> float:
    return time.monotonic() - START


def make_config(smoke: bool, **overrides: object) -> object:
    """The training config: pydantic's SupernetConfig when available, else the same fields as attributes."""
    fields = RECIPE | (SMOKE_RECIPE if smoke else {}) | overrides
    try:
        from supernets.config import SupernetConfig
    except ImportError:
        return SimpleNamespace(**fields, model_dump=lambda: dict(fields))
    return SupernetConfig(**fields)


def synchronize(placement: Placement) -> None:
    if placement.is_cuda:
        torch.cuda.synchronize(placement.device)


def write_json(path: Path, result: dict) -> None:
    """Atomically (a killed run leaves the previous complete file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str))
    os.replace(tmp, path)


def failure(err: BaseException) -> dict:
    return {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:400] if str(err) else ''}",
            "traceback": traceback.format_exc(limit=6)}


# ------------------------------------------------------------------------------------ part 1: step cost
class FixedSubnet(nn.Module):
    """One subnet of a supernet as a module (its block specs fixed), so it can be compiled as a graph."""

    def __init__(self, net: QuantSupernet, genome: Genome, *, quantize: bool) -> None:
        super().__init__()
        self.net, self.specs = net, net.specs(genome, quantize=quantize)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, classes)
        return self.net._forward(x, self.specs)


def step_models(space: SearchSpace, placement: Placement, x: torch.Tensor) -> dict[str, nn.Module]:
    """The four networks of part 1: supernet largest subnet and its static twin, each W8A8 and float.

    One forward each on ``x`` initialises the LSQ steps from data before anything is timed or compiled.
    """
    largest = at_bits(space, space.largest(), 8)
    nets = {}
    for name, quantize in (("w8a8", True), ("fp", False)):
        net = placement.put_module(QuantSupernet(space, image_size=space.image_size, seed=0)).train()
        static = placement.put_module(net.extract(largest, quantize=False).train())
        if quantize:
            attach_lsq(static, w_mode=W8, a_mode=A8)
        nets[f"supernet_{name}"] = FixedSubnet(net, largest, quantize=quantize)
        nets[f"static_{name}"] = static
    with torch.no_grad(), placement.autocast():
        for model in nets.values():
            model(x)
    return nets


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, placement: Placement) -> Callable[[], None]:
    """One SGD step of ``model`` on (x, y): forward under the placement's autocast, loss in fp32."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with placement.autocast():
            logits = model(x)  # (B, classes)
        F.cross_entropy(logits.float(), y).backward()
        opt.step()

    return step


def time_interleaved(steps: dict[str, Callable[[], None]], placement: Placement, *, repeats: int,
                     inner: int) -> dict[str, float]:
    """Median seconds per call of each step, the steps interleaved so drifting clocks hit all alike."""
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(repeats):
        for name, fn in steps.items():
            synchronize(placement)
            t = time.perf_counter()
            for _ in range(inner):
                fn()
            synchronize(placement)
            times[name].append((time.perf_counter() - t) / inner)
    return {k: float(np.median(v)) for k, v in times.items()}


def batch_for(space: SearchSpace, placement: Placement, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, space.in_channels, space.image_size, space.image_size, generator=g)  # (B, C, H, W)
    return placement.put(x), placement.put(torch.randint(0, space.num_classes, (batch,), generator=g))


def step_cost(space: SearchSpace, placement: Placement, *, batch: int, repeats: int, inner: int) -> dict:
    """Part 1, eager: seconds per training step of each network, images/s and the ratios."""
    x, y = batch_for(space, placement, batch)
    steps = {name: train_step(m, x, y, placement) for name, m in step_models(space, placement, x).items()}
    for fn in steps.values():  # warm-up: allocator, cuDNN heuristics
        fn()
    med = time_interleaved(steps, placement, repeats=repeats, inner=inner)
    return summarise_steps(med, batch) | {"batch": batch, "mode": "eager"}


def summarise_steps(med: dict[str, float], batch: int) -> dict:
    out: dict = {f"{k}_s": v for k, v in med.items()} | {f"{k}_images_per_s": batch / v for k, v in med.items()}
    pairs = {"ratio_w8a8": ("supernet_w8a8", "static_w8a8"), "ratio_fp": ("supernet_fp", "static_fp"),
             "qat_overhead_static": ("static_w8a8", "static_fp")}
    for key, (a, b) in pairs.items():
        if a in med and b in med:
            out[key] = med[a] / med[b]
    return out


COMPILE_VARIANTS = ("static_w8a8", "supernet_w8a8", "supernet_w8a8_kernels", "static_fp", "supernet_fp")


def compile_child(spec: dict) -> None:
    """Part 1, compiled (runs in a child process): each variant's compile time and step time, saved as it goes."""
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    placement = resolve_placement(**spec["device"])
    space = get_space("resnet", **spec["space"])
    x, y = batch_for(space, placement, spec["batch"])
    models = step_models(space, placement, x)
    out: dict = {}
    for variant in COMPILE_VARIANTS:
        base = variant.removesuffix("_kernels")
        try:
            if variant.endswith("_kernels"):  # what `device.compile` does in training: fake-quant kernels only
                model = copy.deepcopy(models[base])
                compile_fake_quant(model, lambda kernel: torch.compile(kernel, dynamic=True))
            else:
                model = torch.compile(models[base])
            step = train_step(model, x, y, placement)
            t = time.perf_counter()
            step()
            step()
            synchronize(placement)
            compile_s = time.perf_counter() - t
            sec = time_interleaved({variant: step}, placement, repeats=spec["repeats"], inner=spec["inner"])[variant]
            out[variant] = {"compile_s": compile_s, "step_s": sec, "images_per_s": spec["batch"] / sec}
            print(f"  compiled {variant}: first steps {compile_s:.1f}s, then {1000 * sec:.1f} ms/step", flush=True)
        except Exception as err:  # noqa: BLE001 - reported, not fatal
            out[variant] = failure(err)
            print(f"  compiled {variant}: FAILED {out[variant]['error']}", flush=True)
        Path(spec["out"]).write_text(json.dumps(out))


def compiled_step_cost(args: argparse.Namespace, space_options: dict, batch: int, timeout: float) -> dict:
    """Run :func:`compile_child` in a child process with a time limit; whatever it saved comes back."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "compiled.json"
        spec = {"device": device_settings(args), "space": space_options, "batch": batch, "out": str(out),
                "repeats": 3 if args.smoke else 5, "inner": 2 if args.smoke else 5, "threads": args.threads}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--compile-child", json.dumps(spec)]
        status = "finished"
        try:
            proc = subprocess.run(cmd, timeout=timeout, check=False)
            status = "finished" if proc.returncode == 0 else f"exited with code {proc.returncode}"
        except subprocess.TimeoutExpired:
            status = f"stopped after its {timeout:.0f}s time limit"
        result = json.loads(out.read_text()) if out.is_file() else {}
    missing = [v for v in COMPILE_VARIANTS if v not in result]
    return {"status": status, "variants": result, "not_measured": missing}


# ------------------------------------------------------------------------------- part 2: CIFAR-10 training
def load_data(args: argparse.Namespace, placement: Placement) -> tuple[ImageSplits, str]:
    """CIFAR-10 (the full variant; small slices with --smoke) moved to the device once.

    A smoke run without the data falls back to random images, so the script itself can still be checked.
    """
    limits = dict(max_train=256, max_val=64, max_test=128) if args.smoke else {}
    try:
        t = time.perf_counter()
        data = load_dataset("cifar10", root=args.data, variant=None if args.smoke else "full",
                            val_fraction=args.val_fraction, **limits)
        note = f"{data.description} (loaded in {time.perf_counter() - t:.1f}s)"
    except Exception as err:  # noqa: BLE001
        if not args.smoke:
            raise
        data, note = synthetic_data(), f"synthetic random images ({type(err).__name__}: {err})"
    return data.to(placement.device, channels_last=placement.channels_last), note


def synthetic_data() -> ImageSplits:
    g = torch.Generator().manual_seed(0)
    parts = {k: (torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g))
             for k, n in (("train", 1024), ("val", 256), ("test", 512))}
    return ImageSplits("synthetic", *parts["train"], *parts["val"], *parts["test"], num_classes=10, in_channels=3,
                       image_size=32, classes=tuple(map(str, range(10))), description="synthetic")


def make_trainer(space: SearchSpace, data: ImageSplits, placement: Placement, cfg: object,
                 max_images: int | None = None) -> SupernetTrainer:
    net = QuantSupernet(space, image_size=data.image_size, seed=0)
    n = max_images or len(data.train_x)
    return SupernetTrainer(net, data.train_x[:n], data.train_y[:n], data.val_x, data.val_y, cfg, placement=placement)


def probe_epochs(space: SearchSpace, data: ImageSplits, placement: Placement, args: argparse.Namespace) -> dict:
    """Seconds of one full warm-up epoch and one full sandwich (QAT) epoch, extrapolated from a few steps."""
    steps = 2 if args.smoke else 10
    cfg = make_config(args.smoke, batch_size=args.batch_size, lr=args.lr, warmup_epochs=1, epochs=2)
    trainer = make_trainer(space, data, placement, cfg, max_images=steps * args.batch_size)
    epoch_s = [log.seconds for log in (trainer.train_epoch() for _ in range(3))]  # warm-up, qat (first), qat
    t = time.perf_counter()
    trainer.extreme_accuracies(quantize=True)
    synchronize(placement)
    eval_s = time.perf_counter() - t
    full_steps = max(1, len(data.train_x) // args.batch_size)
    per_step = {"warmup": max(1e-6, epoch_s[0] - eval_s) / steps, "qat": max(1e-6, epoch_s[2] - eval_s) / steps}
    return {"steps": steps, "eval_s": eval_s, "step_s": per_step, "steps_per_epoch": full_steps,
            "warmup_epoch_s": full_steps * per_step["warmup"] + eval_s,
            "qat_epoch_s": full_steps * per_step["qat"] + eval_s, "first_qat_epoch_s": epoch_s[1]}


def plan_epochs(probe: dict, budget: float) -> tuple[int, int]:
    """(warm-up epochs, sandwich epochs) that fit ``budget`` seconds with a margin for slower epochs."""
    usable = 0.9 * budget  # step times vary with the sampled subnets; an overrun eats into the compile part
    warmup = 1 if usable < 20 * probe["qat_epoch_s"] else 2
    epochs = int((usable - warmup * probe["warmup_epoch_s"]) // probe["qat_epoch_s"])
    return warmup, max(1, epochs)


def train_cifar(space: SearchSpace, data: ImageSplits, placement: Placement, args: argparse.Namespace,
                budget: float, result: dict) -> SupernetTrainer:
    """Part 2: probe, size the schedule to ``budget`` seconds, train, then W8A8 test accuracies."""
    t = time.perf_counter()
    probe = probe_epochs(space, data, placement, args)
    budget -= time.perf_counter() - t  # the probe comes out of the training budget
    warmup, epochs = plan_epochs(probe, budget)
    say(f"part 2: probe: warm-up epoch {probe['warmup_epoch_s']:.1f}s, sandwich epoch {probe['qat_epoch_s']:.1f}s "
        f"({probe['steps_per_epoch']} steps of {args.batch_size}); training budget {budget:.0f}s -> "
        f"{warmup} warm-up + {epochs} sandwich epochs")
    cfg = make_config(args.smoke, batch_size=args.batch_size, lr=args.lr, warmup_epochs=warmup, epochs=epochs)
    trainer = make_trainer(space, data, placement, cfg)
    part = result["cifar10"] = {"probe": probe, "budget_s": budget, "config": cfg.model_dump(), "history": []}
    t0 = time.perf_counter()
    while not trainer.done:
        log = trainer.train_epoch()
        part["history"].append(dataclasses.asdict(log))
        say(f"part 2: epoch {log.epoch + 1}/{trainer.total_epochs} [{log.phase}] loss {log.loss:.3f} val largest "
            f"{log.max_acc:.4f} smallest {log.min_acc:.4f} ({log.seconds:.1f}s)")
    part["train_s"] = time.perf_counter() - t0
    part["test"] = test_accuracies(trainer, data, placement)
    return trainer


def test_accuracies(trainer: SupernetTrainer, data: ImageSplits, placement: Placement) -> dict:
    """W8A8 test accuracy of the largest and the smallest subnet, in the training precision and in fp32."""
    space, net = trainer.net.space, trainer.net
    calib = data.train_x[: trainer.cfg.bn_calib_samples]
    out = {}
    fp32 = Placement(placement.device, channels_last=placement.channels_last)
    for precision, where in ((placement.precision, placement), ("fp32", fp32)):
        ev = SubnetEvaluator(net, calib, data.test_x, data.test_y, batch_size=1000, placement=where)
        for name, genome in (("largest", space.largest()), ("smallest", space.smallest())):
            out[f"{name}_w8a8_{precision}"] = ev.accuracy(at_bits(space, genome, 8))
    out["test_images"] = len(data.test_y)
    say("part 2: test accuracy W8A8 " + ", ".join(f"{k} {v:.4f}" for k, v in out.items() if k != "test_images")
        + " (targets: largest 0.92, smallest 0.85)")
    return out


# ----------------------------------------------------------------------- part 3: inherited vs standalone
STANDALONE_TARGETS = {8: (1.0, 0.6), 4: (2.0, 0.6)}  # bits: (mean gap standalone - inherited in pp, Kendall tau)


def standalone_jobs(space: SearchSpace, n: int) -> list[tuple[int, Genome]]:
    """(bits, genome) of ``n`` architectures spread over the space by MACs, each at W8A8 and W4A4."""
    return [(bits, at_bits(space, arch, bits)) for arch in spread_subnets(space, n, seed=1) for bits in (8, 4)]


def job_groups(n_jobs: int, at_once: int) -> list[list[int]]:
    """Positions of the jobs (in ascending MACs) in groups of at most ``at_once`` trained together, each group
    spread over the MACs (so every group takes about as long and any prefix of groups covers the space)."""
    count = -(-n_jobs // at_once)
    return [list(range(k, n_jobs, count)) for k in range(count)]


def train_together(trainers: list[SupernetTrainer], placement: Placement, *, concurrent: bool) -> float:
    """Train every trainer to its end, concurrently (a thread and, on CUDA, a stream each, as
    :class:`~supernets.concurrent.ConcurrentSubnets` does) or one after another; wall seconds."""
    from concurrent.futures import ThreadPoolExecutor

    from supernets.concurrent import on_stream

    def train(trainer: SupernetTrainer) -> None:
        while not trainer.done:
            trainer.train_epoch()

    def run(trainer: SupernetTrainer, stream: torch.cuda.Stream | None) -> None:
        on_stream(stream, lambda: train(trainer))

    synchronize(placement)
    t = time.perf_counter()
    if concurrent and len(trainers) > 1:
        streams = [torch.cuda.Stream(placement.device) if placement.is_cuda else None for _ in trainers]
        with ThreadPoolExecutor(len(trainers), thread_name_prefix="qnas-standalone") as pool:
            list(pool.map(run, trainers, streams))  # re-raises a thread's error
    else:
        for trainer in trainers:
            run(trainer, None)
    synchronize(placement)
    return time.perf_counter() - t


def probe_standalone(space: SearchSpace, genomes: list[Genome], data: ImageSplits, placement: Placement,
                     args: argparse.Namespace, at_once: int) -> dict:
    """Seconds of one full epoch of a group of standalone trainings (trained ``at_once`` at a time), extrapolated from
    a few steps; with ``at_once`` > 1 also the same group one after another: the images/s gain of concurrency."""
    steps = 2 if args.smoke else 6
    cfg = make_config(args.smoke, batch_size=args.batch_size, lr=args.lr, warmup_epochs=1, epochs=1)

    def group(max_steps: int) -> list[SupernetTrainer]:
        return [standalone_trainer(space, g, data, cfg, placement=placement, max_images=max_steps * args.batch_size)
                for g in genomes]

    train_together(group(1), placement, concurrent=at_once > 1)  # warm-up: kernels, cuDNN heuristics, allocator
    out: dict = {"steps": steps, "subnets": len(genomes), "at_once": at_once}
    images = len(genomes) * 2 * steps * args.batch_size  # 2 epochs (float warm-up, QAT) of ``steps`` steps each
    trainers = group(steps)
    out["concurrent_s" if at_once > 1 else "one_at_a_time_s"] = train_together(trainers, placement,
                                                                             concurrent=at_once > 1)
    t = time.perf_counter()
    trainers[0].extreme_accuracies(quantize=True)
    synchronize(placement)
    eval_s = time.perf_counter() - t  # one validation pass (BN recalibration + val images) per epoch and subnet
    if at_once > 1:
        out["one_at_a_time_s"] = train_together(group(steps), placement, concurrent=False)
        out["images_per_s_concurrent"] = images / out["concurrent_s"]
        out["gain"] = out["one_at_a_time_s"] / out["concurrent_s"]
    out["images_per_s_one_at_a_time"] = images / out["one_at_a_time_s"]
    wall = out["concurrent_s" if at_once > 1 else "one_at_a_time_s"]
    evals_s = 2 * len(genomes) * eval_s / (at_once if placement.is_cuda else 1)  # overlapped on CUDA streams
    train_s = max(0.2 * wall, wall - evals_s)  # the evaluations do not grow with the epoch
    full_steps = max(1, len(data.train_x) // args.batch_size)
    out |= {"eval_s": eval_s, "steps_per_epoch": full_steps,
            "group_epoch_s": train_s / (2 * steps) * full_steps + len(genomes) * eval_s}
    return out


def plan_standalone(probe: dict, groups: int, supernet: tuple[int, int], budget: float,
                    epochs: int | None) -> tuple[int, int, int] | None:
    """(warm-up epochs, QAT epochs, groups) that fit ``budget`` seconds: the supernet's schedule when it fits
    (or ``epochs`` QAT epochs when set), else shorter, else fewer groups; None when not even one group of
    one warm-up and one QAT epoch fits."""
    usable = 0.85 * budget  # margin: the probe's steps are few
    per_epoch = probe["group_epoch_s"]
    warmup = supernet[0]
    if epochs is None:
        epochs = supernet[1]
        if groups * (warmup + epochs) * per_epoch > usable:
            warmup = 1
            epochs = int(usable // (groups * per_epoch)) - warmup
    if epochs >= 1 and groups * (warmup + epochs) * per_epoch <= usable:
        return warmup, epochs, groups
    warmup, epochs = (warmup, epochs) if epochs >= 1 else (1, 1)
    fit = int(usable // ((warmup + epochs) * per_epoch))
    return (warmup, epochs, fit) if fit >= 1 else None


def inherited_vs_standalone(trainer: SupernetTrainer, data: ImageSplits, placement: Placement,
                            args: argparse.Namespace, budget_end: float, part: dict, save: Callable[[], None]) -> None:
    """Part 3: inherited W8A8 / W4A4 test accuracies of subnets spread over the space, then each subnet trained
    from scratch with QAT on the supernet's schedule, ``--standalone-at-once`` at a time; gaps and Kendall tau.

    ``part`` (the results entry) is filled as it goes and ``save`` writes the JSON after each group, so a run
    cut short keeps what it measured; the trainings stop before ``budget_end`` (seconds since start).
    """
    net, space = trainer.net, trainer.net.space
    jobs = standalone_jobs(space, args.standalone_subnets)
    calib = data.train_x[: trainer.cfg.bn_calib_samples]
    ev = SubnetEvaluator(net, calib, data.test_x, data.test_y, batch_size=1000, placement=placement)
    rows = part["rows"] = []
    t = time.perf_counter()
    for bits, genome in jobs:
        rows.append({"key": genome.key, "bits": bits, "mmacs": space.costs(genome).macs / 1e6,
                     "inherited": ev.accuracy(genome)})
    part["inherited_eval_s"] = time.perf_counter() - t
    say(f"part 3: inherited test accuracy of {len(jobs) // 2} subnets x W8A8/W4A4 in {part['inherited_eval_s']:.1f}s")
    save()
    at_once = max(1, min(args.standalone_at_once, len(jobs)))
    groups = job_groups(len(jobs), at_once)
    if budget_end - elapsed() < (10 if args.smoke else 60):
        part["standalone"] = {"skipped": f"not enough time left before the deadline ({budget_end - elapsed():.0f}s "
                                         "for the standalone trainings): raise --total-minutes or lower --minutes"}
        say(f"part 3: standalone trainings skipped: {part['standalone']['skipped']}")
        return
    probe = probe_standalone(space, [jobs[i][1] for i in groups[0]], data, placement, args, at_once)
    gain = f", {probe['gain']:.2f}x the images/s of one at a time" if "gain" in probe else ""
    say(f"part 3: probe: {len(groups[0])} standalone training(s) {'at once' if at_once > 1 else 'in turn'}: "
        f"{probe['group_epoch_s']:.1f}s per epoch of the group{gain}")
    supernet = (trainer.cfg.warmup_epochs, trainer.cfg.epochs)
    plan = plan_standalone(probe, len(groups), supernet, budget_end - elapsed(), args.standalone_epochs)
    part["standalone"] = {"probe": probe, "at_once": at_once, "groups": len(groups), "supernet_schedule": supernet}
    if plan is None:
        part["standalone"]["skipped"] = (f"not enough time left before the deadline: one group needs about "
                                         f"{2 * probe['group_epoch_s']:.0f}s, {budget_end - elapsed():.0f}s left")
        say(f"part 3: standalone trainings skipped: {part['standalone']['skipped']}")
        return
    warmup, epochs, fit = plan
    same = (warmup, epochs) == supernet
    cfg = make_config(args.smoke, batch_size=args.batch_size, lr=args.lr, warmup_epochs=warmup, epochs=epochs)
    part["standalone"] |= {"schedule": (warmup, epochs), "same_schedule_as_supernet": same,
                           "groups_planned": fit, "config": cfg.model_dump(), "group_s": []}
    say(f"part 3: standalone QAT: {warmup} warm-up + {epochs} QAT epochs "
        f"({'the supernet schedule' if same else f'the supernet had {supernet[0]} + {supernet[1]}'}), "
        f"{fit} of {len(groups)} groups of {at_once} fit")
    for k, positions in enumerate(groups[:fit]):
        estimate = (warmup + epochs) * probe["group_epoch_s"]
        if k and elapsed() + estimate > budget_end:
            part["standalone"]["stopped"] = f"after {k} groups: the next would pass the deadline"
            say(f"part 3: stopped {part['standalone']['stopped']}")
            break
        trainers = [standalone_trainer(space, jobs[i][1], data, cfg, placement=placement) for i in positions]
        wall = train_together(trainers, placement, concurrent=at_once > 1)
        part["standalone"]["group_s"].append(wall)
        for i, tr in zip(positions, trainers):
            acc = standalone_test_accuracy(tr, jobs[i][1], data, placement=placement, batch_size=1000)
            rows[i] |= {"standalone": acc, "gap_pp": 100 * (acc - rows[i]["inherited"]), "group": k}
        del trainers
        say(f"part 3: group {k + 1}/{fit} ({len(positions)} subnets {'at once' if at_once > 1 else 'in turn'}) "
            f"{wall:.1f}s: " + ", ".join(f"W{rows[i]['bits']} {rows[i]['mmacs']:.3g}M {rows[i]['inherited']:.3f}->"
                                         f"{rows[i]['standalone']:.3f}" for i in positions))
        part["summary"] = summarise_gaps(rows, same)
        save()
    part["summary"] = summarise_gaps(rows, same)
    part["standalone"]["train_s"] = float(sum(part["standalone"]["group_s"]))
    images = sum(len(groups[k]) for k in range(len(part["standalone"]["group_s"]))) * (warmup + epochs) * \
        probe["steps_per_epoch"] * args.batch_size
    part["standalone"]["images_per_s"] = images / max(1e-9, part["standalone"]["train_s"])


def summarise_gaps(rows: list[dict], same_schedule: bool) -> dict:
    """Per bit-width: mean and max gap (standalone - inherited, pp), Kendall tau of the two rankings, targets."""
    out = {}
    for bits, (gap_target, tau_target) in STANDALONE_TARGETS.items():
        sel = [r for r in rows if r["bits"] == bits and "standalone" in r]
        if not sel:
            continue
        gaps = np.array([r["gap_pp"] for r in sel])
        tau = kendall_tau([r["inherited"] for r in sel], [r["standalone"] for r in sel])
        out[f"W{bits}A{bits}"] = s = {
            "n": len(sel), "of": sum(r["bits"] == bits for r in rows), "mean_gap_pp": float(gaps.mean()),
            "max_gap_pp": float(gaps.max()), "mean_abs_gap_pp": float(np.abs(gaps).mean()), "kendall_tau": tau,
            "mean_inherited": float(np.mean([r["inherited"] for r in sel])),
            "mean_standalone": float(np.mean([r["standalone"] for r in sel])),
            "target_gap_pp": gap_target, "target_tau": tau_target}
        s["gap_met"] = bool(s["mean_gap_pp"] <= gap_target)
        s["tau_met"] = bool(tau >= tau_target)  # False for nan
        s["comparable"] = bool(same_schedule and s["n"] == s["of"])  # else the figures are indicative only
        s["targets_met"] = bool(s["gap_met"] and s["tau_met"] and s["comparable"])
    return out


# ----------------------------------------------------------------------------- part 4: evaluations / second
CPU_SLOWDOWN_GUESS = 100  # CPU vs GPU seconds per evaluation, assumed only to decide whether the CPU part fits
def eval_throughput(net: QuantSupernet, data: ImageSplits, placement: Placement, *, subnets: int,
                    cpu_compare: int, calib: int, deadline: float) -> dict:
    """Seconds per subnet evaluation (BN recalibration on ``calib`` images + the test set) here and on the CPU."""
    space = net.space
    rng = np.random.default_rng(1)
    genomes = [at_bits(space, space.sample(rng), 8) for _ in range(subnets)]
    out = {"images": len(data.test_y), "calib_images": calib, "subnets": subnets}
    ev = SubnetEvaluator(net, data.train_x[:calib], data.test_x, data.test_y, batch_size=1000, placement=placement)
    ev.accuracy(genomes[0])  # warm-up
    out[str(placement.device)] = timed_evals(ev, genomes, placement)
    out["at_once"] = concurrent_evals(ev, genomes, placement, deadline) if placement.is_cuda else {}
    if cpu_compare and placement.is_cuda:
        n = min(cpu_compare, subnets)
        per = out[str(placement.device)]["seconds_per_eval"]
        if deadline - elapsed() < 30 + CPU_SLOWDOWN_GUESS * n * per:
            out["cpu"] = {"skipped": "not enough time left before the deadline"}
        else:
            cpu_net = copy.deepcopy(net).cpu()
            cpu_ev = SubnetEvaluator(cpu_net, data.train_x[:calib].cpu(), data.test_x.cpu(), data.test_y.cpu(),
                                     batch_size=1000)
            out["cpu"] = timed_evals(cpu_ev, genomes[:n], Placement(torch.device("cpu")))
            out["cpu"]["threads"] = torch.get_num_threads()
            out["speedup"] = out["cpu"]["seconds_per_eval"] / per
    return out


def concurrent_evals(ev: SubnetEvaluator, genomes: list[Genome], placement: Placement, deadline: float) -> dict:
    """Evaluations/s with 2, 4 and 8 subnets measured at once (a supernet copy and a CUDA stream each), and whether
    every accuracy equals the one-at-a-time figure."""
    from supernets.concurrent import ConcurrentSubnets

    alone = [ev.accuracy(g) for g in genomes]
    out = {}
    for k in (2, 4, 8):
        if deadline - elapsed() < 60:
            out[str(k)] = {"skipped": "not enough time left before the deadline"}
            continue
        many = ConcurrentSubnets(ev, k)
        list(many.measure_iter(genomes[:k]))  # warm-up: every replica's kernels and memory
        synchronize(placement)
        t = time.perf_counter()
        found = dict(many.measure_iter(genomes))
        synchronize(placement)
        sec = (time.perf_counter() - t) / len(genomes)
        many.close()
        out[str(k)] = {"seconds_per_eval": sec, "evals_per_s": 1 / sec,
                       "same_accuracies": [found[i]["accuracy"] for i in range(len(genomes))] == alone}
        say(f"part 4: {k} subnets at once: {1 / sec:.2f} evaluations/s")
    return out


def timed_evals(ev: SubnetEvaluator, genomes: list[Genome], placement: Placement) -> dict:
    synchronize(placement)
    t = time.perf_counter()
    accs = [ev.accuracy(g) for g in genomes]
    synchronize(placement)
    sec = (time.perf_counter() - t) / len(genomes)
    return {"seconds_per_eval": sec, "evals_per_s": 1 / sec, "accuracies": accs, "precision": ev.placement.precision}


# ------------------------------------------------------------------------------------------------ driver
def device_settings(args: argparse.Namespace) -> dict:
    return {"type": args.device, "index": args.index, "precision": args.precision}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("QNAS_DATA"), help="folder holding cifar10_jpeg.npz "
                   "(directly or in cifar10_jpeg/); default $QNAS_DATA")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    p.add_argument("--minutes", type=float, default=None, help="most wall time for part 2's training (default 8)")
    p.add_argument("--total-minutes", type=float, default=None,
                   help="deadline for the whole script; training gets what the other parts leave (default 8.75)")
    p.add_argument("--batch-size", type=int, default=None, help="training batch (default 512)")
    p.add_argument("--lr", type=float, default=RECIPE["lr"])
    p.add_argument("--val-fraction", type=float, default=0.02, help="of the 50k train images, kept for validation")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="time torch.compile'd steps too (default: on CUDA only)")
    p.add_argument("--compile-seconds", type=float, default=100, help="time limit of the compile part")
    p.add_argument("--standalone-subnets", type=int, default=None,
                   help="part 3: architectures spread over the space, each at W8A8 and W4A4 (default 12)")
    p.add_argument("--standalone-at-once", type=int, default=None,
                   help="part 3: standalone trainings run concurrently (default 4 on CUDA, 1 on the CPU)")
    p.add_argument("--standalone-epochs", type=int, default=None,
                   help="part 3: QAT epochs of each standalone training (default: the supernet's schedule, "
                        "shortened to fit the time left)")
    p.add_argument("--eval-subnets", type=int, default=None, help="subnets timed in part 4 (default 8)")
    p.add_argument("--cpu-compare", type=int, default=1, help="of those, evaluated on the CPU too (0: none)")
    p.add_argument("--smoke", action="store_true", help="tiny space and data: checks the script in < 1 minute")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 with --smoke, robust on a shared machine)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--compile-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    smoke = args.smoke
    args.minutes = args.minutes if args.minutes is not None else (0.25 if smoke else 8.0)
    args.total_minutes = args.total_minutes if args.total_minutes is not None else (0.9 if smoke else 8.75)
    args.batch_size = args.batch_size or (32 if smoke else RECIPE["batch_size"])
    args.eval_subnets = args.eval_subnets or (2 if smoke else 8)
    args.standalone_subnets = args.standalone_subnets or (2 if smoke else 12)
    if smoke and args.standalone_epochs is None:
        args.standalone_epochs = 1
    args.out = args.out or RESULTS / ("gpu_benchmark_smoke.json" if smoke else "gpu_benchmark.json")
    args.threads = args.threads or (1 if smoke else None)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compile_child:
        return compile_child(json.loads(args.compile_child))
    placement = resolve_placement(**device_settings(args))
    compile_on = placement.is_cuda if args.compile is None else args.compile
    args.standalone_at_once = args.standalone_at_once or (4 if placement.is_cuda else 1)
    deadline = 60 * args.total_minutes
    space_options = SMOKE_SPACE if args.smoke else SPACE
    space = get_space("resnet", **space_options)
    result: dict = {"device": placement.describe(), "args": {k: str(v) for k, v in vars(args).items()},
                    "space": {"name": "resnet", **space.options()}, "smoke": args.smoke}
    say(f"device {result['device']['device']} ({result['device']['name']}), precision {placement.precision}, "
        f"torch {torch.__version__}, deadline {deadline:.0f}s")

    # part 1, eager
    try:
        result["step_cost"] = step_cost(space, placement, batch=args.batch_size, repeats=2 if args.smoke else 7,
                                        inner=1 if args.smoke else 5)
        print_step_cost(result["step_cost"])
    except Exception as err:  # noqa: BLE001
        result["step_cost"] = failure(err)
        say(f"part 1 FAILED: {result['step_cost']['error']}")
    write_json(args.out, result)

    # part 2
    trainer, data = None, None
    try:
        data, note = load_data(args, placement)
        result["data"] = note
        say(f"data: {note}")
        reserve = (25 if args.smoke else 45) + (args.compile_seconds + 10 if compile_on else 0)
        budget = min(60 * args.minutes, deadline - elapsed() - reserve)
        trainer = train_cifar(space, data, placement, args, budget, result)
    except Exception as err:  # noqa: BLE001
        result["cifar10"] = result.get("cifar10", {}) | failure(err)
        say(f"part 2 FAILED: {result['cifar10']['error']}")
    if data is None:  # part 4 still times evaluations, on random images
        data = synthetic_data().to(placement.device, channels_last=placement.channels_last)
    write_json(args.out, result)

    # part 3 (leaves parts 4 and 1-compiled what part 2 left them)
    part = result["inherited_vs_standalone"] = {}
    if trainer is None:
        part["skipped"] = "no trained supernet (part 2 failed)"
        say(f"part 3 skipped: {part['skipped']}")
    else:
        later = (10 if args.smoke else 40) + (args.compile_seconds + 10 if compile_on else 0)
        try:
            inherited_vs_standalone(trainer, data, placement, args, deadline - later, part,
                                    lambda: write_json(args.out, result))
            print_standalone(part)
        except Exception as err:  # noqa: BLE001
            part |= failure(err)
            say(f"part 3 FAILED: {part['error']}")
    write_json(args.out, result)

    # part 4
    try:
        net = trainer.net if trainer is not None else placement.put_module(QuantSupernet(space, image_size=32))
        result["evaluations"] = eval_throughput(net.eval(), data, placement, subnets=args.eval_subnets,
                                                cpu_compare=args.cpu_compare,
                                                calib=(SMOKE_RECIPE if args.smoke else RECIPE)["bn_calib_samples"],
                                                deadline=deadline)
        print_evals(result["evaluations"])
    except Exception as err:  # noqa: BLE001
        result["evaluations"] = failure(err)
        say(f"part 4 FAILED: {result['evaluations']['error']}")
    write_json(args.out, result)

    # part 1, compiled (last: the riskiest, bounded by its own time limit)
    left = deadline - elapsed() - 5
    if compile_on and left > 30:
        say(f"part 1: torch.compile variants, time limit {min(args.compile_seconds, left):.0f}s")
        result["step_cost_compiled"] = compiled_step_cost(args, space_options, args.batch_size,
                                                          timeout=min(args.compile_seconds, left))
        print_compiled(result["step_cost_compiled"], result.get("step_cost", {}))
    elif compile_on:
        result["step_cost_compiled"] = {"status": "skipped: no time left before the deadline"}
    result["total_s"] = elapsed()
    write_json(args.out, result)
    print_summary(result)
    say(f"wrote {args.out}")


# --------------------------------------------------------------------------------------------- reporting
def print_step_cost(c: dict) -> None:
    say(f"part 1 (eager, batch {c['batch']}): ms/step and images/s")
    for k in ("supernet_w8a8", "static_w8a8", "supernet_fp", "static_fp"):
        print(f"    {k:15s} {1000 * c[k + '_s']:9.1f} ms  {c[k + '_images_per_s']:10.0f} img/s", flush=True)
    print(f"    supernet/static W8A8 {c['ratio_w8a8']:.2f}x (target <= 1.5x), float {c['ratio_fp']:.2f}x; "
          f"static QAT/float {c['qat_overhead_static']:.2f}x", flush=True)


def print_standalone(part: dict) -> None:
    for name, s in part.get("summary", {}).items():
        verdict = "targets met" if s["targets_met"] else ("targets not met" if s["comparable"] else
                                                          "not comparable (shorter schedule or missing subnets)")
        say(f"part 3: {name}: {s['n']}/{s['of']} subnets, inherited {s['mean_inherited']:.4f} standalone "
            f"{s['mean_standalone']:.4f}, mean gap {s['mean_gap_pp']:+.2f} pp (target <= {s['target_gap_pp']:.0f}), "
            f"max {s['max_gap_pp']:+.2f} pp, Kendall tau {s['kendall_tau']:.3f} (target >= {s['target_tau']}): "
            + verdict)
    st = part.get("standalone", {})
    probe = st.get("probe", {})
    if "gain" in probe:
        say(f"part 3: {probe['subnets']} standalone trainings at once: {probe['images_per_s_concurrent']:.0f} vs "
            f"{probe['images_per_s_one_at_a_time']:.0f} images/s one at a time ({probe['gain']:.2f}x, probe of "
            f"{probe['steps']} steps per epoch)")
    if "train_s" in st:
        say(f"part 3: standalone trainings {st['train_s']:.0f}s in {len(st['group_s'])} groups of "
            f"{st['at_once']} ({st['images_per_s']:.0f} images/s)")


def print_evals(e: dict) -> None:
    for where, v in e.items():
        if isinstance(v, dict) and "seconds_per_eval" in v:
            say(f"part 4: {where}: {v['evals_per_s']:.2f} subnet evaluations/s ({v['precision']}, BN recalibration "
                f"on {e['calib_images']} + {e['images']} images)")
    if "speedup" in e:
        say(f"part 4: device vs CPU ({e['cpu']['threads']} threads): {e['speedup']:.1f}x")


def print_compiled(c: dict, eager: dict) -> None:
    say(f"part 1 compiled: {c['status']}")
    for name, v in c.get("variants", {}).items():
        base = eager.get(name.removesuffix("_kernels") + "_s")
        if "step_s" in v:
            vs = f" (eager {1000 * base:.1f} ms)" if base else ""
            print(f"    {name:22s} {1000 * v['step_s']:9.1f} ms{vs}, compile {v['compile_s']:.0f}s", flush=True)
        else:
            print(f"    {name:22s} failed: {v.get('error')}", flush=True)
    variants = c.get("variants", {})
    if all("step_s" in variants.get(k, {}) for k in ("supernet_w8a8", "static_w8a8")):
        ratio = variants["supernet_w8a8"]["step_s"] / variants["static_w8a8"]["step_s"]
        print(f"    compiled supernet/static W8A8 {ratio:.2f}x (target <= 1.5x)", flush=True)


def print_summary(r: dict) -> None:
    print("\n==== summary ====", flush=True)
    c = r.get("step_cost", {})
    if "ratio_w8a8" in c:
        print(f"step cost W8A8 supernet/static {c['ratio_w8a8']:.2f}x (target <= 1.5x); "
              f"{c['supernet_w8a8_images_per_s']:.0f} vs {c['static_w8a8_images_per_s']:.0f} img/s")
    t = r.get("cifar10", {}).get("test")
    if t:
        print("CIFAR-10 " + ", ".join(f"{k} {v:.4f}" for k, v in t.items() if k != "test_images")
              + f" after {r['cifar10']['train_s']:.0f}s of training")
    for name, s in r.get("inherited_vs_standalone", {}).get("summary", {}).items():
        print(f"inherited vs standalone {name} ({s['n']}/{s['of']} subnets): mean gap {s['mean_gap_pp']:+.2f} pp, "
              f"max {s['max_gap_pp']:+.2f} pp, Kendall tau {s['kendall_tau']:.3f}; targets "
              + ("met" if s["targets_met"] else "not met" if s["comparable"] else "not comparable"))
    skipped = r.get("inherited_vs_standalone", {}).get("standalone", {}).get("skipped")
    if skipped:
        print(f"inherited vs standalone: standalone trainings skipped: {skipped}")
    e = r.get("evaluations", {})
    for where, v in e.items():
        if isinstance(v, dict) and "evals_per_s" in v:
            print(f"evaluations/s on {where}: {v['evals_per_s']:.2f}")
    print(f"total {r.get('total_s', elapsed()):.0f}s", flush=True)


if __name__ == "__main__":
    main()
