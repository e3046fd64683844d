"""``qnas latency template``: what a device qnas cannot run on needs to get a latency table.

The folder written (all at once: an interrupted template leaves nothing behind)::

    blocks.csv           every distinct block of the space; header filled (format, space, fingerprint,
                         options, bit mapping), mean_ms / std_ms / count empty
    subnets.csv          the calibration subnets and the empty model, mean_ms empty
    manifest.json        what each file is: models (key, signature, quantization, inputs, outputs), subnets
    models/<key>.onnx    with --models onnx: each block as it runs inside a network, with its quantization
                         (the key holds the input shape: ...-i{H}x{W}x{C}-...)
    subnets/<name>.onnx  with --models onnx: each calibration subnet whole, and the empty model

Why a template and not only the format: a user with an NPU, DSP or phone cannot list the blocks a
space needs without writing Python against it, nor rebuild each block the way qnas means it. With
the list and the models, they time every file with the device's runtime, fill both CSV files, and
``qnas latency calibrate`` fits the per-call overhead and calibration on the device's own subnets.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from predictors.latency import LatencyTable, SlotPlan, TableHeader, map_bits, write_timings_template
from predictors.latency.formats import SIGNATURE_COLUMNS
from predictors.latency.timings import OVERHEAD_ROW
from search_spaces import BlockSpec, Genome, InputError, SearchSpace
from search_spaces.atomic import atomic_write_text
from supernets.backends import onnx_backend

__all__ = ["HINTS", "MODEL_FORMATS", "TEMPLATE_FORMAT", "Template", "template_blocks", "write_template"]

TEMPLATE_FORMAT = "qnas-latency-template/1"
HINTS: tuple[str, ...] = ("int8", "fp32")
"""``--backend-hint``: the number format every block is timed in (int8: W8A8, as on devices without kernels below
8 bits; fp32: everything float), i.e. the bit mapping of a backend of that dtype. No hint: the blocks at their own
widths."""


@dataclass(frozen=True)
class Template:
    """What was written: the folder, how many blocks and subnets, model files, the bit mapping."""

    folder: Path
    blocks: int
    subnets: int
    models: int
    bits_measured_as: dict[int, int]


def template_blocks(space: SearchSpace, hint: str | None) -> tuple[list[BlockSpec], dict[int, int]]:
    """Every distinct block of ``space`` as the device will time it, and the bit mapping of the hint."""
    from nas.profiling import distinct_blocks

    try:
        if hint is not None:
            return distinct_blocks(space, onnx_backend(hint).name)
        raw = SlotPlan.for_space(space).distinct_blocks()
    except (ValueError, NotImplementedError) as err:  # e.g. a space without CNN blocks
        raise InputError(f"space {space.name!r} has no list of blocks to time ({err})", source="--space") from None
    seen: dict[str, BlockSpec] = {}
    for block in raw:
        seen.setdefault(block.key(), replace(block, slot=""))
    return list(seen.values()), {}


def _dtype(blocks: Sequence[BlockSpec], hint: str | None) -> str:
    if hint is not None:
        return hint
    widths = {(b.w_bits, b.a_bits) for b in blocks}
    return {frozenset({(8, 8)}): "int8", frozenset({(32, 32)}): "fp32"}.get(frozenset(widths), "mixed")


def _check_folder(out: Path) -> None:
    """A template goes into a new or empty folder: it never overwrites the user's files."""
    from nas.rundir import check_output_folder

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError("exists and is not an empty folder; a template goes into a new folder (it never "
                         "overwrites files)", source=out, field="--out")
    try:
        check_output_folder(out)
    except InputError as err:
        raise InputError(err.detail, source=out, field="--out") from None


def write_template(space: SearchSpace, out: str | Path, *, hint: str | None = None, models: str | None = None,
                   device: str = "unnamed device", backend: str = "device-runtime", threads: int = 1, batch: int = 1,
                   n_calibration: int = 10, seed: int = 0, progress: bool = True) -> Template:
    """Write the template folder of ``space`` (see the module docstring); ``models``: a key of
    :data:`MODEL_FORMATS` or None for the CSV files alone."""
    from nas.profiling import calibration_genomes

    out = Path(out).expanduser().resolve()
    _check_folder(out)
    blocks, mapping = template_blocks(space, hint)
    genomes = calibration_genomes(space, n_calibration, seed=seed + 10_007)  # the subnets profiling fits on
    names = [f"subnet-{i:02d}" for i in range(len(genomes))]
    header = TableHeader(device=device, backend=backend, space=space.name, dtype=_dtype(blocks, hint),
                         threads=threads, batch=batch, date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         space_fingerprint=space.fingerprint(),
                         space_options=json.dumps(space.options(), sort_keys=True), bits_measured_as=mapping,
                         notes=_notes(hint, models))
    with staged_folder(out) as tmp:
        LatencyTable(header, [], blocks).save(tmp / "blocks.csv")
        write_timings_template(tmp / "subnets.csv", space, genomes, names)
        manifest: dict[str, Any] = {
            "format": TEMPLATE_FORMAT, "space": space.name, "space_fingerprint": space.fingerprint(),
            "space_options": space.options(), "backend_hint": hint, "bits_measured_as": {str(k): v for k, v in
                                                                                          mapping.items()},
            "batch": batch, "models": models, "blocks": [], "subnets": []}
        written = 0
        if models is not None:
            nets = [[map_bits(b, mapping) for b in space.blocks(g)] for g in genomes]
            written = MODEL_FORMATS[models](tmp, manifest, blocks, list(zip(names, genomes, nets)), batch, seed,
                                            progress)
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return Template(out, len(blocks), len(genomes), written, mapping)


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out`` that becomes ``out`` (empty or absent, checked before) when the block
    ends, and is removed on any error: an interrupted template never leaves a half-written folder."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; a template is an ordinary folder
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _notes(hint: str | None, models: str | None) -> str:
    how = "time models/<key>.onnx on the device" if models else "time each block on the device"
    bits = {"int8": "every block as W8A8 (--backend-hint int8)", "fp32": "every block as float (--backend-hint fp32)",
            None: "blocks at their own bit-widths"}[hint]
    return (f"template written by qnas latency template, {bits}: {how}, fill mean_ms, std_ms, count (ms), then fit "
            "the calibration with qnas latency calibrate on subnets.csv")


# ---- model files ----------------------------------------------------------------------------------
Subnet = tuple[str, Genome, list[BlockSpec]]


def _onnx_models(folder: Path, manifest: dict[str, Any], blocks: Sequence[BlockSpec], subnets: Sequence[Subnet],
                 batch: int, seed: int, progress: bool) -> int:
    """``models/<key>.onnx`` per block, ``subnets/<name>.onnx`` per subnet and the empty model; fills the manifest."""
    from nas.profiling import _progress

    from .template_models import block_model, empty_model, subnet_model

    (folder / "models").mkdir()
    (folder / "subnets").mkdir()
    with _progress(progress, len(blocks) + len(subnets) + 1, "exporting ONNX models") as advance:
        for i, block in enumerate(blocks):
            model = block_model(block, batch=batch, seed=seed + i)
            file = f"models/{block.key()}.onnx"
            (folder / file).write_bytes(model.data)
            manifest["blocks"].append({"key": block.key(), "file": file, "signature": _signature(block),
                                       "quantization": model.quantization, "inputs": model.inputs,
                                       "outputs": model.outputs})
            advance(1)
        entries: list[tuple[str, Callable[[], Any], Genome | None]] = [(OVERHEAD_ROW, empty_model, None)]
        entries += [(name, (lambda s=specs, i=i: subnet_model(s, batch=batch, seed=seed + i)), genome)
                    for i, (name, genome, specs) in enumerate(subnets)]
        for name, build, genome in entries:
            model = build()
            file = f"subnets/{name}.onnx"
            (folder / file).write_bytes(model.data)
            manifest["subnets"].append({"name": name, "file": file, "role": "per-call overhead" if genome is None
                                        else "calibration subnet", "genes": None if genome is None else
                                        genome.as_dict(), "quantization": model.quantization,
                                        "inputs": model.inputs, "outputs": model.outputs})
            advance(1)
    return len(blocks) + len(subnets) + 1


def _signature(block: BlockSpec) -> dict[str, str]:
    """The block's signature cells exactly as blocks.csv writes them (to find its row)."""
    sig = block.signature()
    return {c: str(int(sig[c]) if isinstance(sig[c], bool) else sig[c]) for c in SIGNATURE_COLUMNS}


MODEL_FORMATS: dict[str, Callable[..., int]] = {"onnx": _onnx_models}
"""``--models`` -> writer of the model files (returns how many it wrote)."""
