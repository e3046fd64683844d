"""Latency tables of transformer spaces on this machine: profile the blocks, time whole subnets, serve a run.

:func:`profile_transformer_space` builds every distinct block of a :class:`~search_spaces.TransformerSpace`
(bits mapped the way the backend runs them, :func:`~predictors.latency.transformer_table.transformer_bits_measured_as`)
as a static module with seeded random weights (:mod:`supernets.transformer`), turns it into what the
backend times (its registration's ``transformer_model``; ``onnxruntime-int8``:
:func:`~supernets.transformer.export.transformer_ort_int8` with ``strict=False``, calibrated on random inputs of
the block's shape; ``onnxruntime-fp32``: the float graph), times all of them through the backend's
``make_transformer_runner`` interleaved (batch 1 by default, 1 thread, thread CPU-time clock,
:func:`supernets.timing.time_interleaved`),
takes the per-call overhead (:func:`supernets.timing.measure_overhead`) off every entry, and fits the CNN
tables' calibration (:func:`predictors.latency.fit_calibration`) on ``n_calibration`` whole subnets timed
end to end (:func:`measure_transformer_subnets`: subnets extracted from a
:class:`~supernets.transformer.supernet.TransformerSupernet`, exported the same way). The backends are the
registered ones that declare transformer support (:func:`supernets.backends.transformer_backends`).

The rest is what :mod:`nas.latency_stage` calls for a transformer space: loading a table file, its
coverage, the cached profile, the predicting evaluator and the end-to-end timing of the final front.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from predictors.latency import TableHeader, fit_calibration
from predictors.latency.transformer_table import (TRANSFORMER_FORMAT, TransformerEntry, TransformerLatencyPredictor,
                                                  TransformerLatencyTable, distinct_transformer_blocks,
                                                  transformer_bits_measured_as)
from search_spaces import Genome, InputError, SearchSpace
from search_spaces.transformer import TransformerBlock, TransformerSpace
from supernets import timing
from supernets.backends import LATENCY_BACKENDS, LatencyBackend, get_latency_backend, transformer_backends
from supernets.timing import Timing

__all__ = ["TRANSFORMER_BACKENDS", "is_transformer", "block_module", "block_input", "block_models",
           "block_modules", "subnet_modules", "time_transformer_models", "measure_transformer_blocks",
           "measure_transformer_subnets", "subnet_input", "profile_transformer_space", "cached_transformer_table",
           "check_transformer_latency", "TransformerTableEvaluator"]


def __getattr__(name: str) -> tuple[str, ...]:
    """``TRANSFORMER_BACKENDS``: the backends transformer blocks are profiled on, i.e. the registered ones whose
    registration declares ``make_transformer_runner`` (read when asked: a plugin's backend counts)."""
    if name == "TRANSFORMER_BACKENDS":
        return tuple(_transformer_names())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _transformer_names() -> list[str]:
    """The backends that time transformer blocks, INT8 ones first (what a deployed transformer runs), each
    group in registration order."""
    return sorted(transformer_backends(), key=lambda name: get_latency_backend(name).dtype != "int8")

N_CALIBRATION = 20
"""Whole subnets the calibration is fitted on: twice the CNN tables' 10, as a transformer subnet builds fast
and the ratio measured / block sum varies more from subnet to subnet (and with the random weights) than a
CNN's, so 10 subnets left the fit a few % off (figures: BENCHMARKS.md, design choices)."""
CALIBRATION_SEED = 10_007


def is_transformer(space: Any) -> bool:
    return isinstance(space, TransformerSpace)


def _sig(x: float) -> float:
    return float(f"{x:.6g}")


def _refusal(backend: str) -> str | None:
    """Why ``backend`` cannot time transformer blocks (None: it can)."""
    names = _transformer_names()
    if backend in names:
        return None
    listed = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else "".join(names) or "no backend"
    why = ("its registration declares no make_transformer_runner" if backend in LATENCY_BACKENDS else
           "no such backend")
    return f"transformer blocks are timed on {listed}, not {backend!r} ({why})"


def check_transformer_backend(backend: str, *, source: str | None = None, field: str = "backend") -> None:
    """Refuse a backend that does not time transformer blocks, listing the registered ones that do."""
    why = _refusal(backend)
    if why is not None:
        raise InputError(why, source=source, field=field)


def _transformer_backend(backend: str) -> LatencyBackend:
    check_transformer_backend(backend)
    return get_latency_backend(backend)


# ---- blocks as models ------------------------------------------------------------------------------
def block_module(block: TransformerBlock, space: TransformerSpace, *, seed: int = 0) -> Any:
    """A float static module of ``block`` with seeded random weights (what a subnet's block is, unquantized)."""
    import torch

    from supernets.transformer import Attention, ClassifierHead, Mlp, PatchEmbedding, TokenEmbedding

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if block.op == "embed":
            if block.front == "lm":
                module = TokenEmbedding(block.inner, block.width, block.seq_len)
            else:
                module = PatchEmbedding(block.inner, block.width, space.patch_size, block.seq_len,
                                        space.pooling == "cls")
            torch.nn.init.normal_(module.pos, std=0.02)
        elif block.op == "attention":
            module = Attention(block.width, block.heads, block.inner // block.heads, causal=block.causal)
        elif block.op == "mlp":
            module = Mlp(block.width, block.inner)
        else:
            module = ClassifierHead(block.width, block.inner, front=block.front, pooling=space.pooling)
    return module.eval()


def block_input(block: TransformerBlock, space: TransformerSpace, *, batch: int = 1, seed: int = 0) -> Any:
    """A seeded random input of the block: token ids ``(B, T)``, images ``(B, C, H, W)`` or ``(B, T, d)`` floats."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    if block.op == "embed":
        return subnet_input(space, batch=batch, seed=seed)
    return torch.randn(batch, block.seq_len, block.width, generator=gen)


def subnet_input(space: TransformerSpace, *, batch: int = 1, seed: int = 0) -> Any:
    """What a subnet of ``space`` reads: token ids ``(B, T)`` for ``lm``, images ``(B, C, H, W)`` for ``vit``."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    if space.front == "lm":
        return torch.randint(0, space.vocab_size, (batch, space.seq_len), generator=gen)
    return torch.randn(batch, space.in_channels, space.image_size, space.image_size, generator=gen)


def block_modules(blocks: Sequence[TransformerBlock], space: TransformerSpace, *, batch: int = 1, seed: int = 0,
                  calib_batches: int = 2) -> list[tuple[Any, list[Any]]]:
    """(float module, calibration inputs) of every block, seeded; the first input is the one timed."""
    out = []
    for i, block in enumerate(blocks):
        calib = [block_input(block, space, batch=batch, seed=seed + 1000 * i + j) for j in range(calib_batches)]
        out.append((block_module(block, space, seed=seed + i), calib))
    return out


def subnet_modules(space: TransformerSpace, genomes: Sequence[Genome], *, batch: int = 1, seed: int = 0,
                   modules: Sequence[Any] | None = None) -> list[tuple[Any, list[Any]]]:
    """(float module, calibration inputs) of every subnet: ``modules`` (float extracted subnets) or, by default,
    subnets extracted from a :class:`TransformerSupernet` with seeded random weights (quantizers initialised on a
    random batch, then stripped: the float model ORT INT8 quantizes, as ``qnas export --format int8`` does)."""
    from supernets.static import strip_fake_quant

    calib = [subnet_input(space, batch=batch, seed=seed), subnet_input(space, batch=batch, seed=seed + 1)]
    if modules is None:
        from supernets.transformer.supernet import TransformerSupernet

        net = TransformerSupernet(space, seed=seed)
        net.init_quantizers(subnet_input(space, batch=8, seed=seed + 2))
        modules = [strip_fake_quant(net.extract(g).cpu()) for g in genomes]
    return [(m, calib) for m in modules]


def _built(backend: LatencyBackend, model: Any, calib: Sequence[Any]) -> Any:
    """What ``backend`` times for the float module (its ``transformer_model``; the module itself without one)."""
    return backend.transformer_model(model, calib) if backend.transformer_model is not None else model


def block_models(blocks: Sequence[TransformerBlock], space: TransformerSpace, backend: str, *, batch: int = 1,
                 seed: int = 0, calib_batches: int = 2) -> list[tuple[Any, Any]]:
    """(model as ``backend`` times it, timing input) of every block: on an ONNX backend the ONNX graph
    (quantized on ``onnxruntime-int8``, on random calibration inputs)."""
    b = _transformer_backend(backend)
    return [(_built(b, m, calib), calib[0])
            for m, calib in block_modules(blocks, space, batch=batch, seed=seed, calib_batches=calib_batches)]


def subnet_models(space: TransformerSpace, genomes: Sequence[Genome], backend: str, *, batch: int = 1, seed: int = 0,
                  modules: Sequence[Any] | None = None) -> list[tuple[Any, Any]]:
    """(model as ``backend`` times it, input) of every subnet of :func:`subnet_modules` (ONNX backends: the graph)."""
    b = _transformer_backend(backend)
    return [(_built(b, m, calib), calib[0])
            for m, calib in subnet_modules(space, genomes, batch=batch, seed=seed, modules=modules)]


def time_transformer_models(items: Sequence[tuple[Any, Sequence[Any]]], backend: str,
                            protocol: timing.Protocol) -> list[Timing]:
    """Interleaved timing of (float module, calibration inputs) pairs on ``backend``, as the CNN tables time:
    each turned into what the backend times first (e.g. exported to ONNX), then its runner built and every
    runner timed inside the protocol's pinning (:func:`supernets.timing.time_interleaved`)."""
    b = _transformer_backend(backend)
    built = [(_built(b, model, calib), calib) for model, calib in items]
    with timing.pinned(protocol):
        runners = [b.make_transformer_runner(model, calib, threads=protocol.threads) for model, calib in built]
        return timing.time_interleaved(runners, runs=protocol.runs, passes=protocol.passes, warmup=protocol.warmup,
                                       clock=protocol.clock_name)


def measure_transformer_blocks(blocks: Sequence[TransformerBlock], space: TransformerSpace, backend: str, *,
                               batch: int = 1, seed: int = 0,
                               protocol: timing.Protocol = timing.Protocol()) -> list[Timing]:
    """Build, export and time every block (overhead not taken off)."""
    check_transformer_backend(backend)
    return time_transformer_models(block_modules(blocks, space, batch=batch, seed=seed), backend, protocol)


def measure_transformer_subnets(space: TransformerSpace, genomes: Sequence[Genome], backend: str, *, threads: int = 1,
                                batch: int = 1, runs: int = 50, passes: int = 10, warmup: int = 2, seed: int = 0,
                                pin: bool = True, modules: Sequence[Any] | None = None) -> list[Timing]:
    """End-to-end latency of whole transformer subnets on ``backend`` (interleaved, the tables' protocol)."""
    from nas.profiling import default_cpus

    check_transformer_backend(backend)
    protocol = timing.Protocol(threads, runs, passes, warmup, default_cpus(threads) if pin else None)
    return time_transformer_models(subnet_modules(space, genomes, batch=batch, seed=seed, modules=modules), backend,
                                   protocol)


# ---- profiling -------------------------------------------------------------------------------------
def profile_transformer_space(space: TransformerSpace, backend: str = "onnxruntime-int8", *,
                              out_path: str | Path | None = None, threads: int = 1, batch: int = 1, runs: int = 50,
                              passes: int = 10, warmup: int = 2, n_calibration: int = N_CALIBRATION, seed: int = 0,
                              pin: bool = True, log: Any = None) -> TransformerLatencyTable:
    """Time every distinct block of ``space`` on ``backend`` here; overhead off, calibration fitted on
    ``n_calibration`` whole subnets (0: none, the table predicts ``overhead + Σ blocks``). Written to
    ``out_path`` when given."""
    from nas.profiling import calibration_genomes, default_cpus

    check_transformer_backend(backend)
    started = time.monotonic()
    dtype = timing.backend_dtype(backend)
    mapping = transformer_bits_measured_as(space, dtype)
    blocks = distinct_transformer_blocks(space, mapping)
    protocol = timing.Protocol(threads, runs, passes, warmup, default_cpus(threads) if pin else None)
    if log:
        log(f"timing {len(blocks)} transformer blocks on {backend}")
    timings = measure_transformer_blocks(blocks, space, backend, batch=batch, seed=seed, protocol=protocol)
    overhead = timing.measure_overhead(backend, protocol)
    entries = [TransformerEntry(b, _sig(max(t.mean_ms - overhead, 0.0)), _sig(t.std_ms), t.count)
               for b, t in zip(blocks, timings)]
    header = TableHeader(device=timing.device_name(), backend=backend, space=space.name, format=TRANSFORMER_FORMAT,
                         dtype=dtype, threads=threads, batch=batch, clock=protocol.clock_name,
                         per_call_overhead_ms=_sig(overhead),
                         date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         space_fingerprint=space.fingerprint(),
                         space_options=json.dumps(space.options(), sort_keys=True), bits_measured_as=mapping)
    table = TransformerLatencyTable(header, entries)
    if n_calibration > 0:
        genomes = calibration_genomes(space, n_calibration, seed=seed + CALIBRATION_SEED)
        measured = measure_transformer_subnets(space, genomes, backend, threads=threads, batch=batch, runs=runs,
                                               passes=passes, warmup=warmup, seed=seed, pin=pin)
        table = calibrate_transformer_table(table, space, genomes, [t.mean_ms for t in measured])
    table = table.with_header(notes=_notes(table, runs, passes, time.monotonic() - started))
    if out_path is not None:
        table.save(out_path)
    return table


def calibrate_transformer_table(table: TransformerLatencyTable, space: TransformerSpace, genomes: Sequence[Genome],
                                measured_ms: Sequence[float]) -> TransformerLatencyTable:
    """The table with ``measured ≈ scale · (overhead + Σ blocks) + offset`` fitted (the CNN tables' fit)."""
    raw_table = table.with_header(calibration_scale=1.0, calibration_offset_ms=0.0, calibration_subnets=0)
    predictor = TransformerLatencyPredictor(raw_table, space)
    raw = [predictor.predict(g).raw_ms for g in genomes]
    cal = fit_calibration(raw, list(measured_ms))
    return table.with_header(calibration_scale=_sig(cal.scale), calibration_offset_ms=_sig(cal.offset_ms),
                             calibration_subnets=cal.n)


def _notes(table: TransformerLatencyTable, runs: int, passes: int, seconds: float) -> str:
    h = table.header
    target = 8 if h.dtype == "int8" else 32
    mapped = ", ".join(str(k) for k in sorted(h.bits_measured_as))
    onnx = get_latency_backend(h.backend).onnx_quantization
    qdq = ", ORT INT8 QDQ of MatMul/Gemm/Gather" if onnx == "qdq-int8" else ""
    model = f"ONNX model (float in and out{qdq})" if onnx else f"model as {h.backend} runs it"
    return (f"transformer blocks profiled on this machine by nas.transformer_latency; {len(table)} blocks, each its "
            f"own {model}; {runs} timed runs per block over {passes} interleaved passes (mean of pass medians), "
            f"per-call overhead taken off every entry; {h.clock} clock; bits {mapped} timed as {target}-bit; "
            f"calibration on {h.calibration_subnets} whole subnets; built in {seconds:.0f} s")


def cached_transformer_table(space: TransformerSpace, backend: str, *, threads: int = 1, batch: int = 1,
                             cache_dir: str | Path, runs: int = 50, passes: int = 10,
                             refresh_calibration: bool = False, log: Any = None) -> tuple[TransformerLatencyTable, Path,
                                                                                          bool]:
    """(table, its cache path, whether it was cached): profiled on first use, then read from the cache;
    ``refresh_calibration`` refits a cached table's calibration on :data:`N_CALIBRATION` subnets measured now."""
    from nas.profiling import calibration_genomes, cached_table_path

    check_transformer_backend(backend, field="latency.profile.backend")
    path = cached_table_path(space, backend, threads=threads, batch=batch, cache_dir=cache_dir)
    if path.is_file():
        table = TransformerLatencyTable.load(path, space=space)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            table.check_target(backend=backend, device=timing.device_name(), threads=threads, batch=batch,
                               source=str(path))
        if refresh_calibration:
            genomes = calibration_genomes(space, N_CALIBRATION, seed=CALIBRATION_SEED)
            measured = measure_transformer_subnets(space, genomes, backend, threads=threads, batch=batch, runs=runs,
                                                   passes=passes)
            table = calibrate_transformer_table(table, space, genomes, [t.mean_ms for t in measured])
        return table, path, True
    path.parent.mkdir(parents=True, exist_ok=True)
    return (profile_transformer_space(space, backend, out_path=path, threads=threads, batch=batch, runs=runs,
                                      passes=passes, log=log), path, False)


class TransformerTableEvaluator:
    """``latency_ms`` (predicted) of transformer subnets from one table; ``latency_ms_fallback`` is 1 where a
    block without a row was estimated (:class:`~predictors.latency.transformer_table.TransformerFallback`;
    ``strict``: such a block is an error naming its key)."""

    def __init__(self, space: TransformerSpace, table: TransformerLatencyTable, metric: str, source: str, *,
                 strict: bool = False) -> None:
        self.space, self.metric = space, metric
        self.predictor = TransformerLatencyPredictor(table, space, fallback=not strict, source=source)

    @property
    def metrics(self) -> dict[str, str]:
        return {self.metric: "predicted", f"{self.metric}_fallback": "predicted"}

    def evaluate(self, genomes: Sequence[Genome]) -> list[dict[str, float]]:
        out = []
        for genome in genomes:
            estimate = self.predictor.predict(genome)
            out.append({self.metric: float(estimate.ms), f"{self.metric}_fallback": float(estimate.used_fallback)})
        return out


def check_transformer_latency(loaded: Any, field: str, metric: str, spec: Any, space: TransformerSpace,
                              load: Any) -> str:
    """Check one ``latency:`` table of a transformer run before any work; its one-line note.

    A strict table file must cover every block of the space; a non-strict one lacking blocks needs a row
    of each op to estimate them from (:class:`~predictors.latency.transformer_table.TransformerFallback`).
    A profile must use a backend that times transformer blocks (:func:`supernets.backends.transformer_backends`)."""
    if spec.table is not None:
        table = load()
        missing, needed = table.missing(space), len(distinct_transformer_blocks(space, table.header.bits_measured_as))
        h = table.header
        if not missing:
            return f"{metric}: {spec.table.name} ({h.backend} on {h.device}, all {needed} transformer blocks)"
        ops = {e.block.op for e in table.entries.values()}
        unfit = [k for k in missing if k.split("-", 1)[0] not in ops]
        if spec.strict or unfit:
            why = ("the strict table lacks" if spec.strict else
                   f"no row of op {unfit[0].split('-', 1)[0]!r} to estimate it from; the table lacks")
            raise loaded.error(field, f"{spec.table}: {why} {len(missing)} of the {needed} transformer blocks "
                                      f"(first: {(unfit or missing)[0]}); profile the space (latency: {{profile: "
                                      "{backend: onnxruntime-int8}})")
        return (f"{metric}: {spec.table.name} ({h.backend} on {h.device}, {needed - len(missing)} of {needed} "
                f"transformer blocks; the {len(missing)} others estimated by the fallback, flagged "
                f"{metric}_fallback)")
    p = spec.profile
    why = _refusal(p.backend)
    if why is not None:
        raise loaded.error(field, why)
    return (f"{metric}: transformer blocks profiled on this machine ({p.backend}, {p.threads} thread(s), batch "
            f"{p.batch}); cached after the first run")
