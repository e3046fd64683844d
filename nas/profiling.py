"""Build a latency table for a search space on this machine, and measure whole subnets end to end.

``profile_space`` lists every distinct block of the space (every slot x every combination of the
genes that decide it, bits mapped the way the backend can run them), times them in interleaved
chunks with :func:`supernets.timing.measure_blocks` (a pure function, so chunks can be shipped to
Ray workers), appends each finished chunk to ``<out>.partial.jsonl`` so an interrupted run resumes,
measures the per-call overhead and ~10 whole subnets, fits the calibration and writes the table
atomically.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from predictors.latency import Entry, LatencyPredictor, LatencyTable, SlotPlan, TableHeader, fit_calibration, map_bits
from search_spaces import BlockSpec, Genome, SearchSpace
from search_spaces.atomic import append_jsonl, read_partial_records
from supernets import timing
from supernets.backends import LATENCY_BACKENDS
from supernets.timing import Timing

__all__ = ["bits_measured_as", "distinct_blocks", "profile_space", "cached_table", "cached_table_path", "recalibrate",
           "measure_subnet", "measure_subnets", "calibration_genomes", "default_cpus", "DEFAULT_CACHE"]

MeasureFn = Callable[..., list[Timing]]
DEFAULT_CACHE = Path("~/.cache/qnas/latency")


def _sig(x: float) -> float:
    """Six significant digits: nanosecond resolution for table numbers, short and exact in CSV."""
    return float(f"{x:.6g}")


def default_cpus(threads: int) -> tuple[int, ...] | None:
    """The last ``threads`` CPUs this process may use (pinning keeps caches warm and runs comparable)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    return tuple(allowed[-threads:]) if len(allowed) >= threads else None


def bits_measured_as(bits: set[int], backend: str) -> dict[int, int]:
    """How each bit-width is timed: everything as INT8 on INT8 backends (no sub-8-bit kernels on CPUs;
    32-bit blocks too, as the deployed network is fully INT8), everything as FP32 on FP32 backends."""
    target = 8 if timing.backend_dtype(backend) == "int8" else 32
    return {b: target for b in sorted(bits) if b != target}


def distinct_blocks(space: SearchSpace, backend: str) -> tuple[list[BlockSpec], dict[int, int]]:
    """Every distinct block of ``space`` as measured on ``backend`` (bits mapped), and the bit mapping."""
    raw = SlotPlan.for_space(space).distinct_blocks()
    mapping = bits_measured_as({b for blk in raw for b in (blk.w_bits, blk.a_bits)}, backend)
    seen: dict[str, BlockSpec] = {}
    for block in raw:
        mapped = replace(map_bits(block, mapping), slot="")
        seen.setdefault(mapped.key(), mapped)
    return list(seen.values()), mapping


# ---- resumable partial results ------------------------------------------------------------------------
def _partial_path(out_path: Path) -> Path:
    return out_path.with_name(out_path.name + ".partial.jsonl")


def _load_partial(path: Path, meta: dict[str, Any], resume: bool) -> dict[str, Timing]:
    """Finished blocks of an interrupted run with the same settings (a torn last line is ignored)."""
    if not resume:
        path.unlink(missing_ok=True)
        return {}
    records, stale = read_partial_records(path, meta)
    if stale:
        warnings.warn(f"{path}: partial results were made with other settings; starting afresh", stacklevel=3)
    done = {}
    for rec in records:
        try:
            done[rec["key"]] = Timing(rec["mean_ms"], rec["std_ms"], rec["count"], tuple(rec["pass_ms"]))
        except (KeyError, TypeError):
            continue
    return done


@contextmanager
def _progress(enabled: bool, total: int, label: str) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


# ---- profiling ------------------------------------------------------------------------------------
def profile_space(space: SearchSpace, backend: str, *, out_path: str | Path, threads: int = 1, batch: int = 1,
                  runs: int = 50, passes: int = 10, warmup: int = 2, n_calibration: int = 10, resume: bool = True,
                  progress: bool = True, seed: int = 0, chunk_size: int = 16, pin: bool = True,
                  realtime: bool = False, measure_blocks: MeasureFn = timing.measure_blocks) -> LatencyTable:
    """Profile every distinct block of ``space`` on ``backend`` here and write the table to ``out_path``.

    ``runs`` timed runs per block spread over ``passes`` interleaved passes; ``pin`` the measuring thread
    to one CPU; ``realtime``: SCHED_FIFO while timing (see :class:`supernets.timing.Protocol`).
    ``measure_blocks`` (default :func:`supernets.timing.measure_blocks`) times one chunk of specs; pass
    a wrapper to run chunks elsewhere. Returns the calibrated table (also written, CSV or JSON by suffix).
    """
    timing.check_backend(backend)
    out_path, started = Path(out_path), time.monotonic()
    blocks, mapping = distinct_blocks(space, backend)
    protocol = timing.Protocol(threads, runs, passes, warmup, default_cpus(threads) if pin else None,
                               realtime=realtime)
    meta = {"space": space.name, "fingerprint": space.fingerprint(), "backend": backend, "threads": threads,
            "batch": batch, "runs": runs, "passes": passes, "clock": protocol.clock_name}
    partial = _partial_path(out_path)
    with _progress(progress, len(blocks) + n_calibration, f"{space.name} on {backend}") as advance:
        done = _measure_resumably(blocks, partial, meta, resume, advance, chunk_size,
                                  lambda chunk, at: measure_blocks(chunk, backend, batch=batch, seed=seed + at,
                                                                   protocol=protocol))
        header = TableHeader(
            device=timing.device_name(), backend=backend, space=space.name, dtype=timing.backend_dtype(backend),
            threads=threads, batch=batch, clock=protocol.clock_name,
            per_call_overhead_ms=_sig(timing.measure_overhead(backend, protocol)),
            date=datetime.now(timezone.utc).isoformat(timespec="seconds"), space_fingerprint=space.fingerprint(),
            space_options=json.dumps(space.options(), sort_keys=True), bits_measured_as=mapping)
        table = LatencyTable(header, [Entry(b, _sig(t.mean_ms), _sig(t.std_ms), t.count)
                                      for b, t in ((b, done[b.key()]) for b in blocks)])
        if n_calibration > 0:
            table = _calibrate(table, space, backend, n_calibration, seed, batch, protocol)
            advance(n_calibration)
    table = table.with_header(notes=_notes(table, runs, passes, time.monotonic() - started))
    table.save(out_path)
    partial.unlink(missing_ok=True)
    return table


def _measure_resumably(blocks: list[BlockSpec], partial: Path, meta: dict[str, Any], resume: bool,
                       advance: Callable[[int], None], chunk_size: int,
                       measure: Callable[[list[BlockSpec], int], list[Timing]]) -> dict[str, Timing]:
    """Time the blocks not yet in ``partial`` chunk by chunk, appending each finished chunk to it."""
    partial.parent.mkdir(parents=True, exist_ok=True)
    done = _load_partial(partial, meta, resume)
    if not partial.exists():
        append_jsonl(partial, [meta])
    todo = [b for b in blocks if b.key() not in done]
    advance(len(blocks) - len(todo))
    for start in range(0, len(todo), chunk_size):
        chunk = todo[start:start + chunk_size]
        timings = measure(chunk, start)
        append_jsonl(partial, [{"key": b.key(), "mean_ms": t.mean_ms, "std_ms": t.std_ms, "count": t.count,
                           "pass_ms": list(t.pass_ms)} for b, t in zip(chunk, timings)])
        done.update({b.key(): t for b, t in zip(chunk, timings)})
        advance(len(chunk))
    return done


def cached_table(space: SearchSpace, backend: str, *, threads: int = 1, batch: int = 1,
                 cache_dir: str | Path = DEFAULT_CACHE, progress: bool = True, refresh_calibration: bool = False,
                 **profile_kwargs: Any) -> LatencyTable:
    """The table of ``space`` on ``backend`` here: loaded from the cache, or profiled on first use and cached
    (``latency: {profile: {...}}`` in a config; the quickstart's path to real latency from the first run).

    ``refresh_calibration``: a table loaded from the cache gets its calibration refitted on subnets measured
    now (:func:`recalibrate`; seconds). The block entries keep; the machine's speed does not: on a shared
    CPU, torch subnets re-measured minutes after the table was built drift off its calibration, and a
    refit in the same session brings them back (BENCHMARKS.md, ``latency_validation.py``)."""
    path = cached_table_path(space, backend, threads=threads, batch=batch, cache_dir=cache_dir)
    if path.exists():
        table = LatencyTable.load(path, space=space)
        table.check_target(backend=backend, device=timing.device_name(), threads=threads, batch=batch,
                           source=str(path))
        if refresh_calibration:
            table = recalibrate(table, space, **{k: v for k, v in profile_kwargs.items() if k in ("runs", "passes")})
        return table
    return profile_space(space, backend, out_path=path, threads=threads, batch=batch, progress=progress,
                         **profile_kwargs)


def cached_table_path(space: SearchSpace, backend: str, *, threads: int = 1, batch: int = 1,
                      cache_dir: str | Path = DEFAULT_CACHE) -> Path:
    """Where :func:`cached_table` keeps the table of ``space`` on ``backend`` with these settings."""
    name = f"{space.name}-{space.fingerprint()}-{backend}-t{threads}-b{batch}.csv"
    return Path(cache_dir).expanduser() / name


def _calibrate(table: LatencyTable, space: SearchSpace, backend: str, n: int, seed: int, batch: int,
               protocol: timing.Protocol) -> LatencyTable:
    """Fit scale + offset on ``n`` whole subnets (smallest, largest, then random ones) measured here."""
    genomes = calibration_genomes(space, n, seed=seed + 10_007)
    nets = [space.blocks(g) for g in genomes]
    measured = timing.measure_nets(nets, backend, batch=batch, seed=seed, protocol=protocol)
    predictor = LatencyPredictor(table, strict=True)
    raw = [predictor.predict(space.blocks(g)).raw_ms for g in genomes]
    cal = fit_calibration(raw, [t.mean_ms for t in measured])
    return table.with_header(calibration_scale=_sig(cal.scale), calibration_offset_ms=_sig(cal.offset_ms),
                             calibration_subnets=cal.n)


def recalibrate(table: LatencyTable, space: SearchSpace, *, n_calibration: int = 10, seed: int = 0,
                runs: int = 50, passes: int = 10, warmup: int = 2, pin: bool = True,
                realtime: bool = False) -> LatencyTable:
    """The table with its calibration refitted on ``n_calibration`` subnets measured now (its backend, threads
    and batch): the cheap fix when the machine's speed has drifted since the table was built."""
    h = table.header
    protocol = timing.Protocol(h.threads, runs, passes, warmup, default_cpus(h.threads) if pin else None,
                               realtime=realtime)
    return _calibrate(table, space, h.backend, n_calibration, seed, h.batch, protocol)


def calibration_genomes(space: SearchSpace, n: int, *, seed: int) -> list[Genome]:
    """Smallest and largest subnet (they span the range the fit must cover), then distinct random ones."""
    rng = np.random.default_rng(seed)
    genomes = list(dict.fromkeys([space.smallest(), space.largest()]))[:n]
    for _ in range(100 * n):
        if len(genomes) >= n:
            break
        genome = space.sample(rng)
        if genome not in genomes:
            genomes.append(genome)
    return genomes


def _notes(table: LatencyTable, runs: int, passes: int, seconds: float) -> str:
    h = table.header
    edges = LATENCY_BACKENDS.get(h.backend).edges if h.backend in LATENCY_BACKENDS else "float in and out"
    target = 8 if h.dtype == "int8" else 32
    mapped = ", ".join(str(k) for k in sorted(h.bits_measured_as))
    why = "no integer kernels below 8 bits here" if target == 8 else "a float backend"
    bits = f"bits {mapped} timed as {target}-bit ({why})" if mapped else "bits as declared"
    return (f"profiled on this machine by qnas latency profile; {len(table)} blocks timed as inside a network "
            f"({edges}); {runs} timed runs per block over {passes} interleaved passes (mean of pass medians); "
            f"{h.clock} clock; {bits}; calibration on {h.calibration_subnets} whole subnets; built in {seconds:.0f} s")


def measure_subnets(space: SearchSpace, genomes: Sequence[Genome], backend: str, *, threads: int = 1,
                    batch: int = 1, runs: int = 50, passes: int = 10, warmup: int = 2, seed: int = 0,
                    pin: bool = True, realtime: bool = False, clock: str | None = None,
                    modules: Sequence[Any] | None = None) -> list[Timing]:
    """End-to-end latency of whole subnets on ``backend`` (interleaved, same protocol as the tables).
    ``modules``: already built float :class:`supernets.static_net.StaticNet` per genome (e.g. extracted from a
    trained supernet); by default subnets are built with seeded random weights, which time the same."""
    nets: list[Any] = list(modules) if modules is not None else [space.blocks(g) for g in genomes]
    protocol = timing.Protocol(threads, runs, passes, warmup, default_cpus(threads) if pin else None, clock, realtime)
    return timing.measure_nets(nets, backend, batch=batch, seed=seed, protocol=protocol)


def measure_subnet(space: SearchSpace, genome: Genome, backend: str, *, module: Any = None,
                   **kwargs: Any) -> Timing:
    """End-to-end latency of one subnet (keyword arguments as for :func:`measure_subnets`)."""
    return measure_subnets(space, [genome], backend, modules=None if module is None else [module], **kwargs)[0]
