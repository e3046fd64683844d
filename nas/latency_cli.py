"""``qnas latency``: profile a latency table on this machine, check a table file, refit its calibration.

    qnas latency profile --space mbv3 --space-options '{"image_size": 32}' \\
        --backend onnxruntime-int8 --threads 1 --batch 1 --out tables/mbv3-ort-int8.csv
    qnas latency check tables/mbv3-ort-int8.csv --space mbv3 --space-options '{"image_size": 32}'
    qnas latency recalibrate tables/mbv3-ort-int8.csv --space mbv3 --space-options '{"image_size": 32}'

``add_latency_command(subparsers)`` adds the command to the main ``qnas`` parser; every leaf parser
sets ``func(args) -> int``. ``python -m nas.latency_cli ...`` runs it standalone.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nas.cli import Parser, non_negative_int, positive_int
from predictors.latency import LatencyTable
from search_spaces import InputError, QnasError, SearchSpace, list_spaces
from search_spaces.inputs import dotted, find_bad_number, parse_json
from search_spaces.registry import space_from_options
from supernets.deploy import BACKENDS, check_backend, device_name

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

    _writable(args.out, "--out")
    table = profile_space(_space(args), args.backend, out_path=args.out, threads=args.threads, batch=args.batch,
                          runs=args.runs, passes=args.passes, n_calibration=args.calibration,
                          resume=not args.no_resume, progress=not args.no_progress, seed=args.seed,
                          pin=not args.no_pin, realtime=args.realtime)
    h = table.header
    print(f"wrote {args.out}: {len(table)} blocks, {h.backend} on {h.device}, overhead "
          f"{h.per_call_overhead_ms * 1000:.1f} us/call, calibration ms = {h.calibration_scale:.4g} * raw "
          f"{h.calibration_offset_ms:+.4g}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    """Load a table strictly (and against a space when given) and summarise it."""
    space = _space(args) if args.space else None
    table = LatencyTable.load(args.table, space=space)
    if args.backend:
        table.check_target(backend=args.backend, source=args.table)
    h = table.header
    print(f"{args.table}: OK, {len(table)} blocks for space {h.space!r}, {h.backend} ({h.dtype or '?'}) on "
          f"{h.device}, {h.threads} thread(s), batch {h.batch}")
    return 0


def run_recalibrate(args: argparse.Namespace) -> int:
    """Refit a table's calibration on subnets measured now and rewrite it in place."""
    from .profiling import recalibrate

    space = _space(args)
    table = LatencyTable.load(args.table, space=space)
    _writable(args.table, "TABLE")
    check_backend(table.header.backend, source=args.table)  # only tables of our backends can be re-measured
    table.check_target(device=device_name(), source=args.table)
    new = recalibrate(table, space, n_calibration=args.calibration, realtime=args.realtime)
    new.save(args.table)
    old, h = table.header, new.header
    print(f"{args.table}: calibration {old.calibration_scale:.4g} * raw {old.calibration_offset_ms:+.4g} -> "
          f"{h.calibration_scale:.4g} * raw {h.calibration_offset_ms:+.4g}")
    return 0


def add_latency_command(subparsers: Any) -> None:
    """Add ``latency profile`` and ``latency check`` to an ``argparse`` subparsers object."""
    latency = subparsers.add_parser("latency", help="build or check hardware latency tables")
    sub = latency.add_subparsers(dest="latency_command", required=True)
    prof = sub.add_parser("profile", help="measure every distinct block of a space on this machine")
    prof.add_argument("--space", required=True, help=f"search space ({', '.join(list_spaces())})")
    prof.add_argument("--space-options", default="{}", help="space options as a JSON object")
    prof.add_argument("--backend", required=True, choices=BACKENDS)
    prof.add_argument("--threads", type=positive_int, default=1)
    prof.add_argument("--batch", type=positive_int, default=1)
    prof.add_argument("--out", required=True, help="table file (.csv or .json)")
    prof.add_argument("--runs", type=positive_int, default=50, help="timed runs per block in all (>= 50 advised)")
    prof.add_argument("--passes", type=positive_int, default=10, help="interleaved passes the runs are spread over")
    prof.add_argument("--calibration", type=positive_int, default=10, help="whole subnets measured for the calibration")
    prof.add_argument("--seed", type=non_negative_int, default=0)
    prof.add_argument("--no-resume", action="store_true", help="ignore partial results of an interrupted run")
    prof.add_argument("--no-progress", action="store_true")
    prof.add_argument("--no-pin", action="store_true", help="do not pin the measuring thread to a CPU")
    prof.add_argument("--realtime", action="store_true",
                      help="time at SCHED_FIFO priority (needs root or CAP_SYS_NICE; steadier on shared machines)")
    prof.set_defaults(func=run_profile)
    check = sub.add_parser("check", help="load and validate a latency table")
    check.add_argument("table")
    check.add_argument("--space", help="check the table belongs to this space")
    check.add_argument("--space-options", default="{}")
    check.add_argument("--backend", help="refuse a table measured on another backend")
    check.set_defaults(func=run_check)
    recal = sub.add_parser("recalibrate", help="refit a table's calibration on subnets measured now")
    recal.add_argument("table")
    recal.add_argument("--space", required=True)
    recal.add_argument("--space-options", default="{}")
    recal.add_argument("--calibration", type=positive_int, default=10, help="whole subnets to measure")
    recal.add_argument("--realtime", action="store_true")
    recal.set_defaults(func=run_recalibrate)


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
