"""Build SpaceEvo's lookup table: teacher -> block-wise NSR distillation -> INT8 latency of every sub-stage.

The NSR part lives in :mod:`supernets.spaceevo` (torch); this module adds the latency part, which uses
the latency-table profiler's timing protocol (:func:`supernets.timing.measure_blocks`: real INT8
backend, real boundary dtypes, one pinned thread, interleaved passes, per-call overhead subtracted)
and also writes the timed blocks as an ordinary latency table (``<lut>.blocks.csv``). Finished
combinations are appended to ``<lut>.partial.jsonl``, so an interrupted build resumes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from search_spaces import BlockSpec
from search_spaces.atomic import append_jsonl, read_partial_records
from search_spaces.meta import MACROS, all_combos, stage_input_sizes

from .lut import LutEntry, QtLut, combo_name

__all__ = ["LutBuildSettings", "build_lut", "measure_specs"]

Log = Callable[[str], None] | None


@dataclass(frozen=True)
class LutBuildSettings:
    """Teacher, distillation and timing budget of one lookup-table build."""

    teacher_epochs: int = 10
    distill_steps: int = 40
    rows: int = 24
    n_features: int = 2048
    n_eval: int = 256
    backend: str = "onnxruntime-int8"
    runs: int = 20
    passes: int = 4
    seed: int = 0


def measure_specs(specs: list[BlockSpec], backend: str, *, runs: int, passes: int, seed: int = 0,
                  chunk: int = 32, log: Log = None) -> tuple[dict[str, float], float, Any]:
    """Time distinct blocks on ``backend`` here: (key -> ms, per-call overhead ms, LatencyTable of them)."""
    from predictors.latency import Entry, LatencyTable, TableHeader
    from supernets import timing

    from ..profiling import default_cpus

    protocol = timing.Protocol(1, runs, passes, 2, default_cpus(1))
    timings: dict[str, Any] = {}
    for start in range(0, len(specs), chunk):
        part = specs[start:start + chunk]
        timings.update({b.key(): t for b, t in zip(part, timing.measure_blocks(part, backend, seed=seed + start,
                                                                                protocol=protocol))})
        if log:
            log(f"timed {min(start + chunk, len(specs))}/{len(specs)} blocks on {backend}")
    overhead = timing.measure_overhead(backend, protocol)
    header = TableHeader(device=timing.device_name(), backend=backend, space="spaceevo-lut",
                         dtype=timing.backend_dtype(backend), clock=protocol.clock_name, per_call_overhead_ms=overhead,
                         date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         notes="blocks of the SpaceEvo lookup-table sub-stages (first block reads teacher channels)")
    table = LatencyTable(header, [Entry(b, t.mean_ms, t.std_ms, t.count) for b, t in
                                  ((b, timings[b.key()]) for b in specs)])
    return {k: t.mean_ms for k, t in timings.items()}, overhead, table


def _load_partial(path: Path, meta: dict[str, Any]) -> dict[tuple, list[dict]]:
    """NSR rows of the combinations an interrupted build with the same settings finished."""
    done = {}
    for rec in read_partial_records(path, meta)[0]:
        try:
            done[tuple(rec["combo"])] = rec["rows"]
        except (KeyError, TypeError):
            continue
    return done


def _distill_all(macro: str, data: Any, settings: LutBuildSettings, partial: Path, teacher: Any,
                 log: Log) -> dict[tuple, list[dict]]:
    """NSR rows of every combination (resuming from ``partial``)."""
    from supernets.spaceevo.nsr import DistillSettings, distill_combo
    from supernets.spaceevo.teacher import features_for

    meta = {"macro": macro, "dataset": data.name, **asdict(settings)}
    done = _load_partial(partial, meta)
    if not partial.exists():
        append_jsonl(partial, [meta])
    train = features_for(teacher, data.train_x[: settings.n_features])
    held = features_for(teacher, data.val_x[: settings.n_eval])
    cfg = DistillSettings(steps=settings.distill_steps, rows=settings.rows, seed=settings.seed)
    arch = MACROS[macro]
    for combo in all_combos(macro):
        if combo in done:
            continue
        start, (s, b, w) = time.perf_counter(), combo
        rows = distill_combo(arch, s, b, w, (train[s], held[s]), (train[s + 1], held[s + 1]), cfg)
        done[combo] = [{"config": r.substage.key, "nsr": r.nsr, "macs": r.macs, "params": r.params,
                        "blocks": [replace(x, slot="").to_dict() for x in r.blocks]} for r in rows]
        append_jsonl(partial, [{"combo": list(combo), "rows": done[combo]}])
        if log:
            best = min(r.nsr for r in rows)
            log(f"distilled {combo_name(combo)}: best NSR {best:.3f} ({time.perf_counter() - start:.0f}s)")
    return done


def build_lut(macro: str, data: Any, *, out_path: str | Path, teacher_checkpoint: str | Path,
              settings: LutBuildSettings = LutBuildSettings(), log: Log = print) -> QtLut:
    """Train (or load) the teacher, distil every combination, time every sub-stage, write the table."""
    from supernets.spaceevo.teacher import TeacherConfig, train_teacher, teacher_specs

    out_path = Path(out_path)
    teacher, teacher_acc = train_teacher(macro, data, TeacherConfig(epochs=settings.teacher_epochs,
                                                                    seed=settings.seed),
                                         checkpoint=teacher_checkpoint, log=log)
    if log:
        log(f"teacher: val accuracy {teacher_acc:.3f} ({teacher_checkpoint})")
    partial = out_path.with_name(out_path.name + ".partial.jsonl")
    rows = _distill_all(macro, data, settings, partial, teacher, log)
    t_specs = teacher_specs(MACROS[macro], in_channels=data.in_channels, num_classes=data.num_classes,
                            image_size=data.image_size)
    fixed = [replace(t_specs[0], w_bits=8, a_bits=8, slot=""), replace(t_specs[-1], w_bits=8, a_bits=8, slot="")]
    specs = {b.key(): b for b in fixed}
    for combo_rows in rows.values():
        for row in combo_rows:
            for raw in row["blocks"]:
                spec = BlockSpec(**raw)
                specs.setdefault(spec.key(), spec)
    ms, overhead, table = measure_specs(list(specs.values()), settings.backend, runs=settings.runs,
                                        passes=settings.passes, seed=settings.seed, log=log)
    table.save(out_path.with_name(out_path.stem + ".blocks.csv"))
    entries = {}
    for combo, combo_rows in rows.items():
        lat = [sum(max(0.0, ms[BlockSpec(**raw).key()] - overhead) for raw in r["blocks"]) for r in combo_rows]
        column = {k: np.array([r[k] for r in combo_rows]) for k in ("nsr", "macs", "params")}
        entries[combo] = LutEntry(combo, tuple(r["config"] for r in combo_rows), column["nsr"], np.array(lat),
                                  column["macs"], column["params"])
    fixed_ms = sum(ms[b.key()] for b in fixed) - overhead
    info = {"dataset": data.name, "teacher": "float ResNet (bottleneck, expand 1, widest widths, deepest depth)",
            "teacher_val_accuracy": teacher_acc, "per_call_overhead_ms": overhead,
            "stage_input_sizes": list(stage_input_sizes(MACROS[macro], data.image_size)), **asdict(settings)}
    from supernets import timing

    lut = QtLut(macro, settings.backend, timing.device_name(), float(fixed_ms), entries, info)
    lut.save(out_path)
    partial.unlink(missing_ok=True)
    return lut
