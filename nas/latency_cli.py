"""``qnas latency``: build latency tables (here, or for any device), check their coverage, fit their calibration.

    qnas latency profile --space mbv3 --space-options '{"image_size": 32}' \\
        --backend onnxruntime-int8 --threads 1 --batch 1 --out tables/mbv3-ort-int8.csv
    qnas latency template --space mbv3 --space-options '{"image_size": 32}' --backend-hint int8 \\
        --models onnx --device "Acme NPU-2" --backend acme-sdk --out npu/
    qnas latency calibrate npu/blocks.csv --timings npu/subnets.csv
    qnas latency check tables/mbv3-ort-int8.csv --space mbv3 --space-options '{"image_size": 32}' [--strict]
    qnas latency recalibrate tables/mbv3-ort-int8.csv --space mbv3 --space-options '{"image_size": 32}'

``add_latency_command(subparsers)`` adds the command to the main ``qnas`` parser; every leaf parser
sets ``func(args) -> int``. ``python -m nas.latency_cli ...`` runs it standalone.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.commands import Parser, non_negative_int, positive_int
from predictors.latency import LatencyTable
from predictors.latency.table import header_space
from predictors.latency.coverage import DEFAULT_SAMPLES
from search_spaces import InputError, QnasError, SearchSpace, list_spaces
from search_spaces.inputs import dotted, find_bad_number, parse_json
from search_spaces.registry import space_from_options
from supernets.backends import LATENCY_BACKENDS
from supernets.timing import check_backend, device_name

__all__ = ["add_latency_command", "main"]


def _space(args: argparse.Namespace) -> SearchSpace:
    """The space of ``--space`` and ``--space-options``; errors name the flag and the option."""
    options: Any = parse_json(args.space_options or "{}", source="--space-options")
    if not isinstance(options, dict):
        raise InputError("expected a JSON object of space options", source="--space-options")
    bad = find_bad_number(options)
    if bad is not None:
        raise InputError(f"got {bad[1]!r}; expected a finite number of magnitude at most 2**53",
                         source="--space-options", field=dotted(bad[0]))
    try:
        return space_from_options(args.space, options)
    except InputError as err:
        field = err.field or ""
        if field.startswith("search_space.options."):
            raise InputError(err.detail, source="--space-options",
                             field=field.removeprefix("search_space.options.")) from None
        raise InputError(err.detail, source="--space") from None


def _writable(path: str, flag: str) -> None:
    """Refuse an output file whose folder cannot be written, before any measuring."""
    from nas.rundir import check_output_folder

    try:
        check_output_folder(Path(path).expanduser().resolve().parent)
    except InputError as err:
        raise InputError(err.detail, source=path, field=flag) from None


def run_profile(args: argparse.Namespace) -> int:
    """Profile every distinct block of the space and write the calibrated table."""
    from .profiling import profile_space
    from .transformer_latency import is_transformer

    _writable(args.out, "--out")
    space = _space(args)
    if is_transformer(space):
        return _profile_transformer(space, args)
    table = profile_space(space, args.backend, out_path=args.out, threads=args.threads, batch=args.batch,
                          runs=args.runs, passes=args.passes, n_calibration=args.calibration or 10,
                          resume=not args.no_resume, progress=not args.no_progress, seed=args.seed,
                          pin=not args.no_pin, realtime=args.realtime)
    h = table.header
    print(f"wrote {args.out}: {len(table)} blocks, {h.backend} on {h.device}, overhead "
          f"{h.per_call_overhead_ms * 1000:.1f} us/call, calibration ms = {h.calibration_scale:.4g} * raw "
          f"{h.calibration_offset_ms:+.4g}")
    return 0


def _profile_transformer(space: SearchSpace, args: argparse.Namespace) -> int:
    """A table of the space's transformer blocks (embed, attention, MLP, head), on a backend that times them."""
    from .transformer_latency import N_CALIBRATION, check_transformer_backend, profile_transformer_space

    check_transformer_backend(args.backend, field="--backend")
    table = profile_transformer_space(space, args.backend, out_path=args.out, threads=args.threads, batch=args.batch,
                                      runs=args.runs, passes=args.passes,
                                      n_calibration=args.calibration or N_CALIBRATION, seed=args.seed, pin=not args.no_pin, log=None if args.no_progress else print)
    h = table.header
    print(f"wrote {args.out}: {len(table)} transformer blocks, {h.backend} on {h.device}, overhead "
          f"{h.per_call_overhead_ms * 1000:.1f} us/call, calibration ms = {h.calibration_scale:.4g} * raw "
          f"{h.calibration_offset_ms:+.4g}")
    return 0


def _is_transformer_table(path: str) -> bool:
    """Whether the file's header names the transformer table format (its first 4 KiB, read leniently: a file
    without line breaks must not be read whole before the table reader refuses its size)."""
    from predictors.latency.transformer_table import TRANSFORMER_FORMAT

    try:
        with open(path, "rb") as file:
            head = file.read(4096).decode("utf-8", errors="replace").splitlines()
    except OSError:
        return False
    return any(line.startswith("# format:") and TRANSFORMER_FORMAT in line for line in head)


def _transformer_coverage(table: Any, space: SearchSpace, about: str, args: argparse.Namespace) -> int:
    """Which of the space's transformer blocks the table lacks (an error with ``--strict``)."""
    from predictors.latency.transformer_table import distinct_transformer_blocks

    h = table.header
    missing = table.missing(space)
    needed = len(distinct_transformer_blocks(space, h.bits_measured_as))
    print(f"{args.table}: {'OK' if not missing else 'incomplete'}, {about}")
    print(f"  blocks present: {needed - len(missing)} of the {needed} the space needs")
    if missing and args.strict:
        raise InputError(f"the table lacks {len(missing)} of the {needed} transformer blocks (first: {missing[0]})",
                         source=args.table, field="entries")
    return 0


def run_check(args: argparse.Namespace) -> int:
    """Load a table strictly and, against a space, report its coverage (exit 2: unusable for the space)."""
    from predictors.latency import table_coverage

    transformer = _is_transformer_table(args.table)
    table_class: Any = LatencyTable
    if transformer:
        from predictors.latency.transformer_table import TransformerLatencyTable as table_class
    space = _space(args) if args.space else None
    table = table_class.load(args.table, space=space)
    if args.backend:
        table.check_target(backend=args.backend, source=args.table)
    h = table.header
    about = (f"{len(table)} {'transformer blocks' if transformer else 'blocks'} for space {h.space!r}, {h.backend} "
             f"({h.dtype or '?'}) on {h.device}, {h.threads} thread(s), batch {h.batch}")
    if space is None:
        print(f"{args.table}: OK, {about} (give --space and --space-options for its coverage)")
        return 0
    if transformer:
        return _transformer_coverage(table, space, about, args)
    coverage = table_coverage(table, space, samples=args.samples)
    print(f"{args.table}: {'OK' if coverage.complete else 'incomplete'}, {about}")
    for line in coverage.lines():
        print(f"  {line}")
    if h.calibration_subnets == 0 and (h.calibration_scale, h.calibration_offset_ms) == (1.0, 0.0):
        print("  note: no calibration yet (scale 1, offset 0, fitted on no subnets): predictions are the raw block "
              "sums; fit it with qnas latency calibrate TABLE --timings subnets.csv")
    if not h.space_fingerprint:
        print("  note: the header has no space_fingerprint, so only the blocks tell which space options it was "
              "made for")
    problem = coverage.problem(strict=args.strict)
    if problem is not None:
        raise InputError(problem, source=args.table, field="entries")
    return 0


def run_template(args: argparse.Namespace) -> int:
    """Write the blocks (and with --models, the models) a table of another device must time."""
    from .latency_template import write_template
    from .transformer_latency import is_transformer

    space = _space(args)
    write, n_calibration, noun = write_template, 10, "blocks"
    if is_transformer(space):
        from .transformer_latency import N_CALIBRATION
        from .transformer_latency_template import write_transformer_template

        write, n_calibration, noun = write_transformer_template, N_CALIBRATION, "transformer blocks"
    done = write(space, args.out, hint=args.backend_hint, models=args.models, device=args.device,
                 backend=args.backend, threads=args.threads, batch=args.batch,
                 n_calibration=args.calibration or n_calibration, seed=args.seed, progress=not args.no_progress)
    mapped = ", ".join(str(b) for b in sorted(done.bits_measured_as))
    bits = f" (bits {mapped} as {next(iter(done.bits_measured_as.values()))}-bit)" if mapped else ""
    models = f", {done.models} ONNX models (models/, subnets/)" if done.models else ""
    print(f"wrote {done.folder}: blocks.csv ({done.blocks} {noun} of space {space.name!r}{bits}), subnets.csv "
          f"({done.subnets} calibration subnets and the empty model){models}, manifest.json")
    what = "model (models/, subnets/)" if done.models else "block and subnet (--models onnx writes them as models)"
    options = f" --space-options '{args.space_options}'" if args.space_options.strip() not in ("", "{}") else ""
    print(f"next: time every {what} on the device, fill mean_ms, std_ms, count in blocks.csv and mean_ms in "
          "subnets.csv, then")
    print(f"  qnas latency calibrate {done.folder}/blocks.csv --timings {done.folder}/subnets.csv")
    print(f"  qnas latency check {done.folder}/blocks.csv --space {space.name}{options} --strict")
    return 0


@dataclass(frozen=True)
class _TableKind:
    """What ``calibrate`` and ``recalibrate`` need of one table format (CNN blocks or transformer blocks)."""

    table: Any  # the table class: load, save, header
    calibrate: Callable[..., tuple[Any, Any]]  # (table, space, timings, *, table_source) -> (table, Calibration)
    recalibrate: Callable[..., Any]  # (table, space, *, n_calibration, realtime) -> table
    check_backend: Callable[..., None]  # (backend, *, source): only our backends can be re-measured here
    n_calibration: int  # recalibrate's default number of subnets
    check_filled: Callable[[str], None]  # before reading: rows a device has yet to time
    overhead_note: str  # calibrate: after the per-call overhead
    fitted_note: Callable[[Any], str]  # recalibrate: after the calibration, from the new header


def _table_kind(path: str) -> _TableKind:
    """The table format of the file at ``path`` (its header says; CNN blocks otherwise)."""
    if _is_transformer_table(path):
        from predictors.latency.transformer_table import TransformerLatencyTable

        from .transformer_latency import N_CALIBRATION, check_transformer_backend
        from .transformer_latency_template import (calibrate_transformer_from_timings, check_filled,
                                                   recalibrate_transformer)

        return _TableKind(TransformerLatencyTable, calibrate_transformer_from_timings, recalibrate_transformer,
                          check_transformer_backend, N_CALIBRATION, check_filled, " (taken off every block row)",
                          lambda h: f" (fitted on {h.calibration_subnets} transformer subnets measured now)")
    from predictors.latency import calibrate_from_timings

    from .profiling import recalibrate

    return _TableKind(LatencyTable, calibrate_from_timings, recalibrate, check_backend, 10, lambda _: None, "",
                      lambda _: "")


def run_calibrate(args: argparse.Namespace) -> int:
    """Fit a table's per-call overhead and calibration on subnets timed end to end on its device."""
    from predictors.latency import read_timings

    kind = _table_kind(args.table)
    kind.check_filled(args.table)
    space = _space(args) if args.space else header_space(kind.table.load(args.table).header, args.table)
    table = kind.table.load(args.table, space=space)
    _writable(args.table, "TABLE")
    timings = read_timings(args.timings, space)
    new, cal = kind.calibrate(table, space, timings, table_source=args.table)
    new.save(args.table)
    old, h = table.header, new.header
    print(f"{args.table}: per-call overhead {old.per_call_overhead_ms:g} -> {h.per_call_overhead_ms:g} ms"
          f"{kind.overhead_note}, calibration {old.calibration_scale:.4g} * raw {old.calibration_offset_ms:+.4g} -> "
          f"{h.calibration_scale:.4g} * raw {h.calibration_offset_ms:+.4g} (fitted on {cal.n} subnets of "
          f"{args.timings}, in-sample error {cal.mape:.1f}%)")
    return 0


def run_recalibrate(args: argparse.Namespace) -> int:
    """Refit a table's calibration on subnets measured now and rewrite it in place."""
    space = _space(args)
    kind = _table_kind(args.table)
    table = kind.table.load(args.table, space=space)
    _writable(args.table, "TABLE")
    kind.check_backend(table.header.backend, source=args.table)  # only tables of our backends can be re-measured
    table.check_target(device=device_name(), source=args.table)
    new = kind.recalibrate(table, space, n_calibration=args.calibration or kind.n_calibration,
                           realtime=args.realtime)
    new.save(args.table)
    old, h = table.header, new.header
    print(f"{args.table}: calibration {old.calibration_scale:.4g} * raw {old.calibration_offset_ms:+.4g} -> "
          f"{h.calibration_scale:.4g} * raw {h.calibration_offset_ms:+.4g}{kind.fitted_note(h)}")
    return 0


def add_latency_command(subparsers: Any) -> None:
    """Add ``latency profile|check|template|calibrate|recalibrate`` to an ``argparse`` subparsers object."""
    latency = subparsers.add_parser("latency", help="build or check hardware latency tables")
    sub = latency.add_subparsers(dest="latency_command", required=True)
    prof = sub.add_parser("profile", help="measure every distinct block of a space on this machine")
    prof.add_argument("--space", required=True, help=f"search space ({', '.join(list_spaces())})")
    prof.add_argument("--space-options", default="{}", help="space options as a JSON object")
    prof.add_argument("--backend", required=True, choices=[name for name, _ in LATENCY_BACKENDS.items()])
    prof.add_argument("--threads", type=positive_int, default=1)
    prof.add_argument("--batch", type=positive_int, default=1)
    prof.add_argument("--out", required=True, help="table file (.csv or .json)")
    prof.add_argument("--runs", type=positive_int, default=50, help="timed runs per block in all (>= 50 advised)")
    prof.add_argument("--passes", type=positive_int, default=10, help="interleaved passes the runs are spread over")
    prof.add_argument("--calibration", type=positive_int, default=None,
                      help="whole subnets measured for the calibration (default: 10; 20 for transformer spaces)")
    prof.add_argument("--seed", type=non_negative_int, default=0)
    prof.add_argument("--no-resume", action="store_true", help="ignore partial results of an interrupted run")
    prof.add_argument("--no-progress", action="store_true")
    prof.add_argument("--no-pin", action="store_true", help="do not pin the measuring thread to a CPU")
    prof.add_argument("--realtime", action="store_true",
                      help="time at SCHED_FIFO priority (needs root or CAP_SYS_NICE; steadier on shared machines)")
    prof.set_defaults(func=run_profile)
    check = sub.add_parser("check", help="load and validate a latency table; with --space, report its coverage")
    check.add_argument("table")
    check.add_argument("--space", help="check the table belongs to this space and report which blocks it lacks")
    check.add_argument("--space-options", default="{}")
    check.add_argument("--backend", help="refuse a table measured on another backend")
    check.add_argument("--strict", action="store_true", help="exit 2 when any block of the space is missing")
    check.add_argument("--samples", type=positive_int, default=DEFAULT_SAMPLES,
                       help="random subnets drawn for the share that would need the fallback")
    check.set_defaults(func=run_check)
    _add_template(sub)
    cal = sub.add_parser("calibrate", help="fit a table's per-call overhead and calibration on subnets timed end "
                                           "to end on its device (subnets.csv of qnas latency template)")
    cal.add_argument("table")
    cal.add_argument("--timings", required=True, help="subnets.csv with mean_ms filled in")
    cal.add_argument("--space", help="the table's space (default: from its header)")
    cal.add_argument("--space-options", default="{}")
    cal.set_defaults(func=run_calibrate)
    recal = sub.add_parser("recalibrate", help="refit a table's calibration on subnets measured now")
    recal.add_argument("table")
    recal.add_argument("--space", required=True)
    recal.add_argument("--space-options", default="{}")
    recal.add_argument("--calibration", type=positive_int, help="whole subnets to measure (default 10; 20 for a "
                                                                "transformer table)")
    recal.add_argument("--realtime", action="store_true")
    recal.set_defaults(func=run_recalibrate)


def _add_template(sub: Any) -> None:
    from .latency_template import HINTS, MODEL_FORMATS

    tpl = sub.add_parser("template", help="write every block a table must hold (and models to time on the device)")
    tpl.add_argument("--space", required=True, help=f"search space ({', '.join(list_spaces())})")
    tpl.add_argument("--space-options", default="{}", help="space options as a JSON object")
    tpl.add_argument("--backend-hint", choices=list(HINTS),
                     help="int8: every block timed as W8A8 (no kernels below 8 bits); fp32: all float; "
                          "default: blocks at their own bit-widths")
    tpl.add_argument("--models", choices=list(MODEL_FORMATS), help="also write each block and calibration subnet "
                                                                   "as a model file")
    tpl.add_argument("--out", required=True, help="a new (or empty) folder")
    tpl.add_argument("--device", default="unnamed device", help="the table header's device")
    tpl.add_argument("--backend", default="device-runtime", help="the table header's backend (runtime) name")
    tpl.add_argument("--threads", type=positive_int, default=1, help="threads the device runtime will use")
    tpl.add_argument("--batch", type=positive_int, default=1, help="batch size of the models")
    tpl.add_argument("--calibration", type=positive_int, help="whole subnets to time for the calibration (default 10; "
                                                              "20 for a transformer space)")
    tpl.add_argument("--seed", type=non_negative_int, default=0)
    tpl.add_argument("--no-progress", action="store_true")
    tpl.set_defaults(func=run_template)


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: ``python -m nas.latency_cli latency profile ...``."""
    parser = Parser(prog="qnas")
    add_latency_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except QnasError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
