"""The teacher of SpaceEvo's block-wise distillation: a float ResNet trained here, cached as a checkpoint.

Which and why: a bottleneck ResNet with the macro-architecture's stem and strides, every stage at its
widest channel count and deepest depth (expand 1.0, 3×3). SpaceEvo distils from a large ImageNet
network; on two CPU cores a dense-conv ResNet is the strongest teacher that trains in minutes, and its
stage boundaries line up with the student stages (same strides), so every student stage can read the
teacher's previous-stage features and be compared with the teacher's own stage output. The catch
(reported with the benchmark): a ResNet teacher may favour ResNet-like students a little.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from search_spaces import BlockSpec, InputError
from search_spaces.atomic import atomic_write_with
from search_spaces.meta import BLOCK_TYPES, MACROS, MacroArch, stage_block

from ..augment import augment_batch
from ..data import ImageSplits
from ..evaluate import accuracy, batches
from ..static_net import StaticNet

__all__ = ["TeacherConfig", "teacher_specs", "train_teacher", "load_teacher", "stage_features"]

TEACHER_FORMAT = "qnas-spaceevo-teacher/1"
_RESNET = BLOCK_TYPES[3]


@dataclass(frozen=True)
class TeacherConfig:
    """Training schedule of the teacher (SGD, cosine, label smoothing, shift/flip augmentation)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    weight_decay: float = 5e-4
    seed: int = 0


def teacher_specs(arch: MacroArch, *, in_channels: int, num_classes: int, image_size: int) -> list[BlockSpec]:
    """Stem, ``max(depths)`` bottleneck blocks per stage at the widest width, head (float)."""
    size = image_size
    specs = [BlockSpec("conv", size, in_channels, arch.stem_channels, kernel=3, stride=arch.stem_stride,
                       act="relu", slot="stem")]
    size, ch = math.ceil(size / arch.stem_stride), arch.stem_channels
    for i, (stage, width) in enumerate(zip(arch.stages, arch.teacher_widths())):
        for j in range(max(arch.depths)):
            spec = stage_block(_RESNET, in_size=size, in_ch=ch, out_ch=width, stride=stage.stride if j == 0 else 1,
                               first=j == 0, kernel=3, expand=1.0, slot=f"s{i + 1}.b{j + 1}", w_bits=32, a_bits=32)
            specs.append(spec)
            size, ch = spec.out_size, width
    return specs + [BlockSpec("head", size, ch, num_classes, mid_ch=arch.head_channels, act="relu", slot="head")]


def stage_features(teacher: StaticNet, x: Tensor) -> list[Tensor]:
    """Stem output, then every stage's output, for images ``x`` (B, C, H, W) (no grad, eval mode)."""
    feats, current = [], None
    with torch.no_grad():
        for spec, block in zip(teacher.specs, teacher.blocks):
            if spec.slot == "head":
                break
            stage = spec.slot.split(".")[0]
            if current is not None and stage != current:
                feats.append(x)
            x, current = block(x), stage
        feats.append(x)
    return feats


def train_teacher(macro: str, data: ImageSplits, config: TeacherConfig, *, checkpoint: str | Path,
                  log: Callable[[str], None] | None = print) -> tuple[StaticNet, float]:
    """Train the teacher (or load it from ``checkpoint`` when that exists); returns (net, val accuracy)."""
    checkpoint = Path(checkpoint)
    if checkpoint.exists():
        return load_teacher(checkpoint, macro, data)
    specs = teacher_specs(MACROS[macro], in_channels=data.in_channels, num_classes=data.num_classes,
                          image_size=data.image_size)
    gen = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = StaticNet(specs)
    steps = max(1, len(data.train_x) // config.batch_size)
    opt = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=0.9, nesterov=True,
                          weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=config.epochs * steps, pct_start=0.15)
    for epoch in range(config.epochs):
        start, order = time.perf_counter(), torch.randperm(len(data.train_x), generator=gen)
        net.train()
        for step in range(steps):
            idx = order[step * config.batch_size:(step + 1) * config.batch_size]
            loss = F.cross_entropy(net(augment_batch(data.train_x[idx], gen)), data.train_y[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = accuracy(net.eval(), data.val_x, data.val_y)
        if log:
            log(f"teacher epoch {epoch + 1}/{config.epochs}: loss {float(loss.detach()):.3f}, val acc {acc:.3f} "
                f"({time.perf_counter() - start:.0f}s)")
    state = {"format": TEACHER_FORMAT, "macro": macro, "dataset": data.name, "image_size": data.image_size,
             "config": config.__dict__, "val_accuracy": acc, "model": net.state_dict()}
    atomic_write_with(checkpoint, lambda tmp: torch.save(state, tmp))  # a kill mid-write leaves no torn teacher
    return net.eval(), acc


def load_teacher(path: str | Path, macro: str, data: ImageSplits) -> tuple[StaticNet, float]:
    """Load a cached teacher, refusing one made for another macro-architecture or dataset."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != TEACHER_FORMAT:
        raise InputError(f"not a SpaceEvo teacher checkpoint (expected format {TEACHER_FORMAT})", source=str(path))
    for key, want in (("macro", macro), ("dataset", data.name), ("image_size", data.image_size)):
        if state.get(key) != want:
            raise InputError(f"the teacher was trained for {key} {state.get(key)!r}, not {want!r}; delete it to "
                             "retrain", source=str(path), field=key)
    net = StaticNet(teacher_specs(MACROS[macro], in_channels=data.in_channels, num_classes=data.num_classes,
                                  image_size=data.image_size))
    net.load_state_dict(state["model"])
    return net.eval(), float(state["val_accuracy"])


def features_for(teacher: StaticNet, x: Tensor, batch_size: int = 256) -> list[Tensor]:
    """:func:`stage_features` over many images, batch by batch, concatenated per stage boundary."""
    parts = [stage_features(teacher, xb) for xb, _ in batches(x, None, batch_size)]
    return [torch.cat([p[i] for p in parts]) for i in range(len(parts[0]))]
