"""SpaceEvo's quantized-accuracy proxy: block-wise distillation of LSQ-INT8 student stages, NSR loss.

For one (stage, block type, width window) an elastic student stage (every sub-stage of the window:
depth, width, kernel, expand) reads the teacher's previous-stage features and learns to reproduce the
teacher's stage output through a float 1×1 adapter (student width -> teacher width), fake-quantized
W8A8 from the first step (weights per-channel symmetric, activations asymmetric with a learned zero
point; the deployable INT8 scheme here). Training is sandwich-style (largest, smallest, random
sub-stages each step). Then sampled sub-stages are scored by their NSR on held-out features, with BN
recalibrated per sub-stage, which is what the lookup table stores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from search_spaces import BlockSpec, block_costs
from search_spaces.meta import BLOCK_TYPES, MacroArch, stage_block

from ..elastic import act_modes
from ..blocks import build_elastic_block
from ..evaluate import bn_recalibrated
from ..quant import QuantMode

__all__ = ["nsr", "SubStage", "DistillSettings", "NsrRow", "ElasticStage", "sample_substages", "distill_combo"]


def nsr(teacher: Tensor, student: Tensor, *, eps: float = 0.1) -> Tensor:
    """NSR = mean over (b, c) of mean_{h,w}(T - S)^2 / Var_{h,w}(T).

    After ReLU many teacher maps are (nearly) constant for a given image, at 4x4 especially, and a
    zero variance would let a handful of (b, c) pairs dominate the mean; ``eps`` times the mean
    variance is added to every denominator, so such maps count like maps of 10% average variance.
    """
    err = (teacher - student).pow(2).mean(dim=(2, 3))  # (B, C)
    var = teacher.var(dim=(2, 3), unbiased=False)  # (B, C)
    return (err / (var + eps * var.mean().detach() + 1e-12)).mean()


@dataclass(frozen=True)
class SubStage:
    """One sub-stage: depth, width, and (kernel, expand) of each of its blocks."""

    width: int
    kernels: tuple[int, ...]
    expands: tuple[float, ...]

    @property
    def depth(self) -> int:
        return len(self.kernels)

    @property
    def key(self) -> str:
        """Compact text form, e.g. ``d2-w32-k3e4-k5e6``."""
        blocks = "-".join(f"k{k}e{e:g}" for k, e in zip(self.kernels, self.expands))
        return f"d{self.depth}-w{self.width}-{blocks}"


@dataclass(frozen=True)
class DistillSettings:
    """Budget of one combo's distillation (kept small: the lookup table has ~70 combos)."""

    steps: int = 40
    batch_size: int = 32
    lr: float = 3e-3
    random_substages: int = 1
    rows: int = 24
    calib_batches: int = 2
    seed: int = 0


@dataclass(frozen=True)
class NsrRow:
    """A sampled sub-stage: its NSR on held-out teacher features, its blocks and analytic costs."""

    substage: SubStage
    nsr: float
    blocks: tuple[BlockSpec, ...]
    macs: int
    params: int


def stage_specs(arch: MacroArch, stage: int, btype: int, sub: SubStage, *, in_size: int, in_ch: int) -> list[BlockSpec]:
    """The blocks of ``sub`` in ``stage`` (W8A8); the first reads ``in_ch`` teacher channels."""
    out, size, ch = [], in_size, in_ch
    for j, (k, e) in enumerate(zip(sub.kernels, sub.expands)):
        spec = stage_block(BLOCK_TYPES[btype], in_size=size, in_ch=ch, out_ch=sub.width,
                           stride=arch.stages[stage].stride if j == 0 else 1, first=j == 0, kernel=k, expand=e,
                           slot=f"s{stage + 1}.b{j + 1}")
        out.append(spec)
        size, ch = spec.out_size, sub.width
    return out


def sample_substages(arch: MacroArch, stage: int, btype: int, window: int, n: int,
                     rng: np.random.Generator) -> list[SubStage]:
    """Largest, smallest, then uniformly drawn distinct sub-stages (``n`` in all when that many exist)."""
    t, widths = BLOCK_TYPES[btype], arch.stages[stage].widths(window)
    d_max, d_min = max(arch.depths), min(arch.depths)
    found = {s.key: s for s in (SubStage(widths[-1], (t.kernels[-1],) * d_max, (t.expands[-1],) * d_max),
                                SubStage(widths[0], (t.kernels[0],) * d_min, (t.expands[0],) * d_min))}
    for _ in range(50 * n):
        if len(found) >= n:
            break
        d = int(rng.choice(arch.depths))
        sub = SubStage(int(rng.choice(widths)), tuple(int(rng.choice(t.kernels)) for _ in range(d)),
                       tuple(float(rng.choice(t.expands)) for _ in range(d)))
        found.setdefault(sub.key, sub)
    return list(found.values())[:n]


class ElasticStage(nn.Module):
    """Elastic W8A8 blocks of one stage plus a float 1×1 adapter to the teacher's width."""

    def __init__(self, largest: Sequence[BlockSpec], teacher_width: int) -> None:
        super().__init__()
        w_modes, a_modes = [QuantMode(8, "channel", True)], act_modes([8])
        self.blocks = nn.ModuleList(build_elastic_block(b, w_modes, a_modes) for b in largest)
        self.adapter = nn.Conv2d(largest[-1].out_ch, teacher_width, 1)

    def forward(self, x: Tensor, specs: Sequence[BlockSpec]) -> Tensor:  # (B, C_in, H, W) -> (B, C_T, H/s, W/s)
        for block, spec in zip(self.blocks, specs):
            x = block(x, spec)
        w = self.adapter.weight[:, : x.shape[1]]  # (C_T, width, 1, 1)
        return nn.functional.conv2d(x, w, self.adapter.bias)


def _train(stage: ElasticStage, specs_of: dict, subs: list[SubStage], x: Tensor, t: Tensor,
           cfg: DistillSettings, rng: np.random.Generator) -> None:
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(stage.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, cfg.steps))
    stage.train()
    for _ in range(cfg.steps):
        idx = torch.randint(0, len(x), (cfg.batch_size,), generator=gen)
        picked = subs[:2] + [subs[int(i)] for i in rng.integers(0, len(subs), cfg.random_substages)]
        opt.zero_grad(set_to_none=True)
        for sub in picked:
            nsr(t[idx], stage(x[idx], specs_of[sub.key])).backward()
        nn.utils.clip_grad_norm_(stage.parameters(), 1.0)
        opt.step()
        sched.step()


def distill_combo(arch: MacroArch, stage_idx: int, btype: int, window: int, feats_in: tuple[Tensor, Tensor],
                  feats_out: tuple[Tensor, Tensor], settings: DistillSettings = DistillSettings()) -> list[NsrRow]:
    """Distil one (stage, block type, window) and score ``settings.rows`` sampled sub-stages.

    ``feats_in``/``feats_out``: (train, held-out) teacher features entering and leaving the stage.
    """
    rng = np.random.default_rng([settings.seed, stage_idx, btype, window])
    x_train, x_eval = feats_in
    t_train, t_eval = feats_out
    in_size, in_ch = x_train.shape[-1], x_train.shape[1]
    pool = sample_substages(arch, stage_idx, btype, window, max(settings.rows, 64), rng)
    specs_of = {s.key: stage_specs(arch, stage_idx, btype, s, in_size=in_size, in_ch=in_ch) for s in pool}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        stage = ElasticStage(specs_of[pool[0].key], t_train.shape[1])
    _train(stage, specs_of, pool, x_train, t_train, settings, rng)
    calib = [x_train[i * settings.batch_size:(i + 1) * settings.batch_size] for i in range(settings.calib_batches)]
    rows = []
    for sub in pool[: settings.rows]:
        specs = specs_of[sub.key]
        with torch.no_grad(), bn_recalibrated(stage, calib, run=lambda xb, s=specs: stage(xb, s)):
            loss = float(nsr(t_eval, stage(x_eval, specs)))
        costs = [block_costs(b) for b in specs]
        rows.append(NsrRow(sub, loss if math.isfinite(loss) else float("inf"), tuple(specs),
                           sum(c.macs for c in costs), sum(c.params for c in costs)))
    return rows
