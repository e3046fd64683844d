"""``qnas latency template|calibrate|recalibrate`` for transformer spaces: tables of a device qnas cannot run on.

The transformer twin of :mod:`nas.latency_template` (same folder layout, same subnet timings file, same fit)::

    blocks.csv           every distinct transformer block (embed, attention, MLP, head) in the transformer table
                         format (``qnas-transformer-latency-table/1``); header filled (space, fingerprint, options,
                         bit mapping), mean_ms / std_ms / count empty
    subnets.csv          the calibration subnets and the empty model, mean_ms empty (``qnas-subnet-timings/1``)
    manifest.json        what each file is: models (key, signature, quantization, inputs, outputs), subnets
    models/<key>.onnx    with --models onnx: each block as ``qnas latency profile`` times it
                         (:func:`nas.transformer_latency.block_models`: ORT INT8 QDQ for an int8 hint, float
                         for fp32; float in and out, token ids int64 for the ``lm`` embedding)
    subnets/<name>.onnx  with --models onnx: each calibration subnet whole (:func:`subnet_models`), and the
                         empty model (its time is the per-call overhead)

A transformer block's model exists only as the ORT INT8 QDQ graph or the float graph, so ``--models onnx``
needs ``--backend-hint int8`` or ``fp32``; without a hint the CSV files list the blocks at their own bit-widths.

The user fills ``mean_ms, std_ms, count`` of blocks.csv with each block model's time as measured (per-call
overhead included) and ``mean_ms`` of subnets.csv. :func:`calibrate_transformer_from_timings` then does what
a table profiled here holds: the overhead (the empty model's time) taken off every row, ``raw = overhead +
Σ rows`` of a subnet, and ``measured ≈ scale · raw + offset`` fitted on the subnets
(:func:`predictors.latency.fit_calibration`, the CNN tables' fit). As a transformer table's rows always have
the header's ``per_call_overhead_ms`` taken off, a refit first adds the previous overhead back, so
``calibrate`` can run again on its own output.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from predictors.latency import TableHeader, fit_calibration
from predictors.latency.calibration import Calibration
from predictors.latency.timings import OVERHEAD_ROW, SubnetTimings, write_timings_template
from predictors.latency.transformer_table import (SIGNATURE, STATS, TRANSFORMER_COLUMNS, TRANSFORMER_FORMAT,
                                                  TransformerEntry, TransformerLatencyPredictor,
                                                  TransformerLatencyTable, bits_text, distinct_transformer_blocks,
                                                  transformer_bits_measured_as)
from search_spaces import Genome, InputError, SearchSpace
from search_spaces.atomic import atomic_write_text
from search_spaces.transformer import TransformerBlock
from supernets.backends import LatencyBackend, onnx_backend

from .latency_template import TEMPLATE_FORMAT, Template, _check_folder, staged_folder
from .transformer_latency import CALIBRATION_SEED, N_CALIBRATION, check_transformer_backend

__all__ = ["hint_backend", "template_transformer_blocks", "write_transformer_template",
           "calibrate_transformer_from_timings", "recalibrate_transformer", "check_filled"]

_NOTE = "per-call overhead and calibration fitted by qnas latency calibrate"


def _sig(x: float) -> float:
    return float(f"{x:.6g}")


# ---- the template ----------------------------------------------------------------------------------
def hint_backend(hint: str) -> LatencyBackend:
    """``--backend-hint`` (a number format) -> the backend whose models the template writes: the first registered
    one of that dtype that times transformer blocks as ONNX graphs (``onnx_quantization``; built in: ORT). The
    bit mapping follows the hint: int8 maps every bit-width to 8 (:func:`transformer_bits_measured_as`, as ORT
    INT8 runs them), fp32 every one to 32."""
    return onnx_backend(hint, transformer=True)


def template_transformer_blocks(space: SearchSpace, hint: str | None) -> tuple[list[TransformerBlock],
                                                                                 dict[int, int]]:
    """Every distinct block of the transformer ``space`` as the device will time it, and the hint's bit mapping
    (no hint: the blocks at their own bit-widths, no mapping)."""
    mapping = transformer_bits_measured_as(space, hint) if hint is not None else {}
    return sorted(distinct_transformer_blocks(space, mapping), key=lambda b: b.key()), mapping


def _dtype(blocks: Sequence[TransformerBlock], hint: str | None) -> str:
    if hint is not None:
        return hint
    widths = {pair for b in blocks for pair in b.bits}
    return {frozenset({(8, 8)}): "int8", frozenset({(32, 32)}): "fp32"}.get(frozenset(widths), "mixed")


def _signature(block: TransformerBlock) -> dict[str, str]:
    """The block's signature cells exactly as blocks.csv writes them (to find its row)."""
    cells = [block.op, block.front, block.seq_len, block.width, block.inner, block.heads, bits_text(block.bits)]
    return {c: str(v) for c, v in zip(SIGNATURE, cells)}


def _blocks_csv(header: TableHeader, blocks: Sequence[TransformerBlock]) -> str:
    """blocks.csv: the table's header and column row, then one row per block with its statistics empty."""
    import csv
    import io

    buf = io.StringIO()
    buf.write(TransformerLatencyTable(header, []).to_csv())
    writer = csv.writer(buf, lineterminator="\n")
    for block in blocks:
        writer.writerow([*_signature(block).values(), *("" for _ in STATS)])
    return buf.getvalue()


def _notes(hint: str | None, models: str | None) -> str:
    how = "time models/<key>.onnx on the device" if models else "time each block on the device"
    bits = {"int8": "every block as ORT INT8 runs it (bits timed as 8, --backend-hint int8)",
            "fp32": "every block as float (--backend-hint fp32)", None: "blocks at their own bit-widths"}[hint]
    return (f"transformer template written by qnas latency template, {bits}: {how}, fill mean_ms, std_ms, count (ms, "
            "as measured: qnas latency calibrate takes the per-call overhead of subnets.csv off every row), then "
            "fit the calibration with qnas latency calibrate on subnets.csv")


def _io(values: Any, batch: int) -> list[dict[str, Any]]:
    """Inputs or outputs of a graph as the CNN manifest lists them, the dynamic batch axis given its size."""
    from .template_models import io_info

    out = io_info(values)
    for item in out:
        item["shape"] = [batch if not isinstance(d, int) or d <= 0 else d for d in item["shape"]]
    return out


def _describe(proto: Any, space: SearchSpace, batch: int) -> dict[str, Any]:
    inputs = _io(proto.graph.input, batch)
    for item in inputs:
        if item["dtype"].startswith("int"):  # lm token ids
            item["values"] = [0, int(space.vocab_size) - 1]
    return {"inputs": inputs, "outputs": _io(proto.graph.output, batch)}


def write_transformer_template(space: SearchSpace, out: str | Path, *, hint: str | None = None,
                               models: str | None = None, device: str = "unnamed device",
                               backend: str = "device-runtime", threads: int = 1, batch: int = 1,
                               n_calibration: int = N_CALIBRATION, seed: int = 0, progress: bool = True) -> Template:
    """Write the template folder of the transformer ``space`` (see the module docstring); ``models``: ``"onnx"``
    or None for the CSV files alone."""
    from .profiling import _progress, calibration_genomes

    if models is not None and hint is None:
        raise InputError("a transformer block is exported as the ORT INT8 QDQ graph or the float graph only: give "
                         "--backend-hint int8 or fp32 with --models onnx (without --models the CSV files list the "
                         "blocks at their own bit-widths)", source="--models")
    if models not in (None, "onnx"):
        raise InputError(f"transformer models are written as ONNX, not {models!r}", source="--models")
    out = Path(out).expanduser().resolve()
    _check_folder(out)
    blocks, mapping = template_transformer_blocks(space, hint)
    genomes = calibration_genomes(space, n_calibration, seed=seed + CALIBRATION_SEED)  # the subnets profiling uses
    names = [f"subnet-{i:02d}" for i in range(len(genomes))]
    header = TableHeader(device=device, backend=backend, space=space.name, format=TRANSFORMER_FORMAT,
                         dtype=_dtype(blocks, hint), threads=threads, batch=batch,
                         date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         space_fingerprint=space.fingerprint(),
                         space_options=json.dumps(space.options(), sort_keys=True), bits_measured_as=mapping,
                         notes=_notes(hint, models))
    with staged_folder(out) as tmp:
        atomic_write_text(tmp / "blocks.csv", _blocks_csv(header, blocks))
        write_timings_template(tmp / "subnets.csv", space, genomes, names)
        manifest: dict[str, Any] = {
            "format": TEMPLATE_FORMAT, "table_format": TRANSFORMER_FORMAT, "space": space.name,
            "space_fingerprint": space.fingerprint(), "space_options": space.options(), "backend_hint": hint,
            "bits_measured_as": {str(k): v for k, v in mapping.items()}, "batch": batch, "models": models,
            "blocks": [], "subnets": []}
        written = 0
        if models is not None:
            written = _onnx_models(tmp, manifest, space, blocks, list(zip(names, genomes)), hint_backend(hint),
                                   batch, seed, _progress, progress)
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return Template(out, len(blocks), len(genomes), written, mapping)


def _onnx_models(folder: Path, manifest: dict[str, Any], space: SearchSpace, blocks: Sequence[TransformerBlock],
                 subnets: Sequence[tuple[str, Genome]], backend: LatencyBackend, batch: int, seed: int,
                 progress_bar: Any, progress: bool) -> int:
    """``models/<key>.onnx`` per block, ``subnets/<name>.onnx`` per subnet and the empty model; fills the manifest."""
    from .template_models import empty_model
    from .transformer_latency import block_models, subnet_models

    kind = backend.onnx_quantization
    (folder / "models").mkdir()
    (folder / "subnets").mkdir()
    with progress_bar(progress, len(blocks) + len(subnets) + 1, "exporting ONNX models") as advance:
        for i, block in enumerate(blocks):
            ((proto, _),) = block_models([block], space, backend.name, batch=batch, seed=seed + i)
            file = f"models/{block.key()}.onnx"
            (folder / file).write_bytes(proto.SerializeToString())
            manifest["blocks"].append({"key": block.key(), "file": file, "signature": _signature(block),
                                       "quantization": kind, **_describe(proto, space, batch)})
            advance(1)
        empty = empty_model()
        (folder / f"subnets/{OVERHEAD_ROW}.onnx").write_bytes(empty.data)
        manifest["subnets"].append({"name": OVERHEAD_ROW, "file": f"subnets/{OVERHEAD_ROW}.onnx",
                                    "role": "per-call overhead", "genes": None, "quantization": empty.quantization,
                                    "inputs": empty.inputs, "outputs": empty.outputs})
        advance(1)
        nets = subnet_models(space, [g for _, g in subnets], backend.name, batch=batch, seed=seed)
        for (name, genome), (proto, _) in zip(subnets, nets):
            file = f"subnets/{name}.onnx"
            (folder / file).write_bytes(proto.SerializeToString())
            manifest["subnets"].append({"name": name, "file": file, "role": "calibration subnet",
                                        "genes": genome.as_dict(), "quantization": kind,
                                        **_describe(proto, space, batch)})
        advance(len(subnets))
    return len(blocks) + len(subnets) + 1


# ---- calibration -----------------------------------------------------------------------------------
def check_filled(path: str) -> None:
    """A row of blocks.csv not timed yet is one error naming its line, field and model file."""
    from predictors.latency.formats import parse_csv
    from search_spaces.inputs import read_text

    try:
        _, rows = parse_csv(read_text(path, what="latency table"), path, expected=TRANSFORMER_COLUMNS,
                            needs="a transformer latency table needs")
    except (InputError, OSError):
        return  # the loader reports it
    for row, line in rows:
        empty = [c for c in STATS if not str(row[c][0]).strip()]
        if empty:
            cells = {c: str(row[c][0]).strip() for c in SIGNATURE}
            key = (f"{cells['op']}-{cells['front']}-t{cells['seq_len']}-d{cells['width']}-i{cells['inner']}-"
                   f"h{cells['heads']}-{cells['bits']}")
            raise InputError(f"not filled in: time models/{key}.onnx on the device and write its mean_ms, std_ms "
                             "and count", source=path, field=empty[0], line=line)


def calibrate_transformer_from_timings(table: TransformerLatencyTable, space: SearchSpace, timings: SubnetTimings, *,
                                       table_source: str = "the table") -> tuple[TransformerLatencyTable, Calibration]:
    """The table with the device's per-call overhead taken off its rows and the calibration fitted on its timed
    subnets (``measured ≈ scale · (overhead + Σ rows) + offset``, the CNN tables' fit).

    The rows had the header's previous overhead taken off (0 in a template), so they become
    ``mean_ms + previous − overhead`` (never below 0). Every block of every timed subnet must be in the table.
    """
    h = table.header
    overhead = timings.overhead_ms
    entries = [TransformerEntry(e.block, _sig(max(e.mean_ms + h.per_call_overhead_ms - overhead, 0.0)), e.std_ms,
                                e.count) for e in table.entries.values()]
    raw_table = TransformerLatencyTable(replace(h, per_call_overhead_ms=_sig(overhead), calibration_scale=1.0,
                                                calibration_offset_ms=0.0, calibration_subnets=0), entries)
    predictor = TransformerLatencyPredictor(raw_table, space, source=table_source)
    raw, measured = [], []
    for subnet in timings.subnets:
        blocks = space.transformer_blocks(subnet.genome)
        for block in blocks:
            if raw_table.get(block) is None:
                raise InputError(f"block {raw_table.key_for(block)} of {subnet.name} is not in {table_source}; time "
                                 "and fill it first", source=timings.source, field="genome", line=subnet.line)
        value = predictor.predict_blocks(blocks).raw_ms
        if value <= 0:
            raise InputError(f"the blocks of {subnet.name} and the per-call overhead sum to {value:g} ms in "
                             f"{table_source}: were the blocks and the empty model timed?", source=timings.source,
                             field="mean_ms", line=subnet.line)
        raw.append(value)
        measured.append(subnet.mean_ms)
    cal = fit_calibration(raw, measured)
    note = (f"{_NOTE} on {cal.n} subnets timed end to end ({Path(timings.source).name}, in-sample error "
            f"{cal.mape:.1f}%, the overhead taken off every row)")  # no "; ": notes are split on it
    kept = [n for n in h.notes.split("; ") if n and not n.startswith(_NOTE)]  # a refit replaces its note
    new = raw_table.with_header(calibration_scale=_sig(cal.scale), calibration_offset_ms=_sig(cal.offset_ms),
                                calibration_subnets=cal.n, notes="; ".join([*kept, note]))
    return new, cal


def recalibrate_transformer(table: TransformerLatencyTable, space: SearchSpace, *, n_calibration: int = N_CALIBRATION,
                            seed: int = 0, runs: int = 50, passes: int = 10, warmup: int = 2, pin: bool = True,
                            realtime: bool = False) -> TransformerLatencyTable:
    """The table with its calibration refitted on ``n_calibration`` subnets measured now (its backend, threads
    and batch; the subnets ``qnas latency profile`` fits on): the fix when the machine's speed has drifted."""
    from supernets import timing

    from .profiling import calibration_genomes, default_cpus
    from .transformer_latency import calibrate_transformer_table, subnet_modules, time_transformer_models

    h = table.header
    check_transformer_backend(h.backend, field="backend")
    genomes = calibration_genomes(space, n_calibration, seed=seed + CALIBRATION_SEED)
    protocol = timing.Protocol(h.threads, runs, passes, warmup, default_cpus(h.threads) if pin else None,
                               realtime=realtime)
    measured = time_transformer_models(subnet_modules(space, genomes, batch=h.batch, seed=seed), h.backend, protocol)
    return calibrate_transformer_table(table, space, genomes, [t.mean_ms for t in measured])
