"""Time deployed modules the way latency tables need: interleaved passes, pinned threads, robust statistics.

:func:`make_runner` turns a float module into a zero-argument call on a registered backend
(:mod:`supernets.backends`); :func:`time_interleaved` times several runners in alternating passes, so
drift on a shared machine hits all of them alike; :func:`measure_blocks` and :func:`measure_nets` are
pure, picklable functions (specs in, timings out) so profiling can be shipped to Ray workers.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from search_spaces import BlockSpec

from .backends import LATENCY_BACKENDS, get_latency_backend
from .blocks import build_block
from .deploy import block_io
from .static_net import StaticNet

__all__ = ["BACKENDS", "Protocol", "Timing", "backend_dtype", "check_backend", "default_clock", "device_name",
           "make_runner", "measure_blocks", "measure_nets", "measure_overhead", "pinned", "time_interleaved"]

Runner = Callable[[], object]


def __getattr__(name: str) -> tuple[str, ...]:
    """``BACKENDS``: the names of the registered latency backends in registration order, read when asked (a
    backend a plugin registers after this module loads is in it)."""
    if name == "BACKENDS":
        return tuple(backend for backend, _ in LATENCY_BACKENDS.items())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Timing:
    """Mean of the per-pass medians, robust spread of single runs, runs timed, each pass's median."""

    mean_ms: float
    std_ms: float  # 1.4826 * MAD of all single runs (robust to scheduler hiccups)
    count: int
    pass_ms: tuple[float, ...]


def check_backend(backend: str, *, source: str | None = None) -> None:
    """Raise :class:`InputError` for an unknown backend name, with the nearest valid one."""
    get_latency_backend(backend, source=source)


def backend_dtype(backend: str) -> str:
    """``"int8"`` or ``"fp32"``."""
    return get_latency_backend(backend).dtype


def device_name() -> str:
    """CPU model and the ISA extensions that decide INT8 speed, for table headers."""
    info = {}
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        info = dict(line.split(":", 1) for line in fh.read().split("\n\n")[0].splitlines() if ":" in line)
    model, flags = info.get("model name\t", "unknown CPU").strip(), info.get("flags\t\t", "").split()
    isa = [f for f in ("avx512_vnni", "avx_vnni", "avx512f", "avx2") if f in flags][:2]
    return f"{model} ({', '.join(isa)})" if isa else model


@dataclass(frozen=True)
class Protocol:
    """How to time (picklable): ``runs`` timed runs in all over ``passes`` interleaved passes, ``warmup``
    untimed runs per pass, ``threads``, ``cpus`` to pin to, ``clock`` (None: :func:`default_clock`),
    ``realtime``: SCHED_FIFO while timing, so other processes cannot evict our caches mid-run."""

    threads: int = 1
    runs: int = 50
    passes: int = 10
    warmup: int = 2
    cpus: tuple[int, ...] | None = None
    clock: str | None = None
    realtime: bool = False

    @property
    def clock_name(self) -> str:
        return self.clock or default_clock(self.threads)


@contextlib.contextmanager
def pinned(protocol: Protocol) -> Iterator[None]:
    """Apply the protocol's threads, CPU pinning and priority to the calling thread; restore them afterwards."""
    old_threads, old_cpus = torch.get_num_threads(), os.sched_getaffinity(0)
    old_policy = (os.sched_getscheduler(0), os.sched_getparam(0))
    torch.set_num_threads(protocol.threads)
    try:
        if protocol.cpus is not None:
            os.sched_setaffinity(0, set(protocol.cpus))
        if protocol.realtime:
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            except OSError as err:
                warnings.warn(f"realtime priority refused ({err}); timing at normal priority", stacklevel=3)
        yield
    finally:
        torch.set_num_threads(old_threads)
        os.sched_setaffinity(0, old_cpus)
        if protocol.realtime:
            os.sched_setscheduler(0, *old_policy)


# ---- runners --------------------------------------------------------------------------------------
def make_runner(model: nn.Module, backend: str, input_shape: Sequence[int], *, threads: int = 1,
                quantized_input: bool = False, quantized_output: bool = False, calib_batches: int = 4,
                seed: int = 0) -> Runner:
    """A zero-argument callable running a *float* module once on ``backend`` (inputs prepared up front)."""
    return get_latency_backend(backend).make_runner(model.eval(), input_shape, threads=threads,
                                                    quantized_input=quantized_input,
                                                    quantized_output=quantized_output, calib_batches=calib_batches,
                                                    seed=seed)


# ---- timing ---------------------------------------------------------------------------------------
CLOCKS = {"thread": time.thread_time_ns, "wall": time.perf_counter_ns}


def default_clock(threads: int) -> str:
    """``"thread"`` (the calling thread's CPU time) for one thread, else ``"wall"``. On a shared machine
    wall-clock runs get preempted, the longer the likelier (under load, whole nets read far above their
    CPU time while short blocks stay true, which would bias a table against the nets it predicts); one
    thread does all its work in the caller, whose CPU time equals the latency on an idle machine."""
    return "thread" if threads == 1 else "wall"


def _samples(run: Runner, n: int, clock_name: str) -> np.ndarray:
    clock, out = CLOCKS[clock_name], np.empty(n)
    for i in range(n):
        start = clock()
        run()
        out[i] = clock() - start
    return out / 1e6  # ms


def time_interleaved(runners: Sequence[Runner], *, runs: int = 50, passes: int = 10, warmup: int = 2,
                     clock: str = "thread") -> list[Timing]:
    """Time each runner ``runs`` times in all, spread over ``passes`` interleaved passes (each pass: ``warmup``
    untimed runs, then ``ceil(runs / passes)`` timed ones), every other pass in reverse order.

    Many short passes, not two long ones: a shared machine's load drifts over minutes, and a candidate
    timed in one stretch inherits its state (on torch INT8 subnets, ten short passes brought the
    pass-to-pass difference well under two long passes'). ``clock``: see :func:`default_clock`."""
    if clock not in CLOCKS:
        raise ValueError(f"unknown clock {clock!r}; known: {sorted(CLOCKS)}")
    per_pass = max(1, math.ceil(runs / passes))
    samples: list[list[np.ndarray]] = [[] for _ in runners]
    with torch.inference_mode():
        for p in range(passes):
            order = range(len(runners)) if p % 2 == 0 else reversed(range(len(runners)))
            for i in order:
                _samples(runners[i], warmup, clock)
                samples[i].append(_samples(runners[i], per_pass, clock))
    out = []
    for per_pass in samples:
        allv = np.concatenate(per_pass)
        mad = float(np.median(np.abs(allv - np.median(allv))))
        medians = tuple(float(np.median(s)) for s in per_pass)
        out.append(Timing(float(np.mean(medians)), 1.4826 * mad, int(allv.size), medians))
    return out


def measure_overhead(backend: str, protocol: Protocol = Protocol()) -> float:
    """Per-call cost of the harness and the framework on an empty model (ms): one per ``session.run``
    in ORT, one module call in torch. Summing per-block entries counts it once per block."""
    with pinned(protocol):
        runner = make_runner(nn.Identity(), get_latency_backend(backend).overhead_backend or backend,
                             (1, 1, 1, 1), threads=protocol.threads, calib_batches=1)
        return time_interleaved([runner], runs=8 * protocol.runs, passes=protocol.passes, warmup=10,
                                clock=protocol.clock_name)[0].mean_ms


def measure_blocks(specs: Sequence[BlockSpec], backend: str, *, batch: int = 1, seed: int = 0,
                   protocol: Protocol = Protocol()) -> list[Timing]:
    """Build every block (seeded random weights), deploy it with real boundary dtypes, time them interleaved.

    Pure: specs and settings in, timings out; safe to run in another process or on another machine.
    """
    with pinned(protocol):
        runners = []
        for i, spec in enumerate(specs):
            torch.manual_seed(seed + i)
            qin, qout = block_io(spec)
            runners.append(make_runner(build_block(spec), backend, (batch, spec.in_ch, spec.in_size, spec.in_size),
                                       threads=protocol.threads, quantized_input=qin, quantized_output=qout,
                                       seed=seed + i))
        return time_interleaved(runners, runs=protocol.runs, passes=protocol.passes, warmup=protocol.warmup,
                                clock=protocol.clock_name)


def measure_nets(nets: Sequence[Sequence[BlockSpec] | StaticNet], backend: str, *, batch: int = 1, seed: int = 0,
                 protocol: Protocol = Protocol()) -> list[Timing]:
    """Time whole subnets end to end (float in, float out), interleaved. Each item is a list of block specs
    (built with seeded random weights) or an already built float :class:`StaticNet` (e.g. extracted)."""
    with pinned(protocol):
        runners = []
        for i, net in enumerate(nets):
            torch.manual_seed(seed + i)
            model = net if isinstance(net, StaticNet) else StaticNet(net)
            spec0 = model.specs[0]
            shape = (batch, spec0.in_ch, spec0.in_size, spec0.in_size)  # (B, C, H, W)
            runners.append(make_runner(model, backend, shape, threads=protocol.threads, seed=seed + i))
        return time_interleaved(runners, runs=protocol.runs, passes=protocol.passes, warmup=protocol.warmup,
                                clock=protocol.clock_name)
