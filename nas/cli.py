"""The ``qnas`` command line: ``run``, ``validate``, ``pareto`` (and whatever other modules register).

Why this shape: user errors (:class:`QnasError`) print as one ``error: ...`` line and exit 2, with
the traceback only under ``--debug``; anything else is a bug and keeps its traceback. Subcommands
are registered with :func:`~nas.commands.register_command`; a module that adds one (``export``, ``latency``,
``qt-score``) is listed in :data:`COMMAND_MODULES` and registers itself when imported::

    def _configure(parser):                      # add arguments (or nested subparsers)
        parser.add_argument("run_dir")

    @register_command("export", help="export the Pareto subnets of a run", configure=_configure)
    def _export(args) -> int:
        ...

A module that already builds its own parsers (``add_latency_command(subparsers)``) is listed as
``"module:function"`` instead; its leaf parsers set ``func`` (or ``handler``) to ``(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nas import commands
from nas.commands import Command, Parser, RichReporter, non_negative_int, positive_int, register_command
from search_spaces.errors import InputError, QnasError

__all__ = ["COMMAND_MODULES", "Command", "register_command", "build_parser", "RichReporter", "Parser", "positive_int",
           "non_negative_int", "main"]

COMMAND_MODULES: tuple[str, ...] = ("nas.export_cli", "nas.latency_cli:add_latency_command", "nas.qt_cli",
                                    "nas.docs_cli")
"""Imported by :func:`build_parser`: ``"module"`` (registers itself) or ``"module:function"`` (adds parsers)."""

def _stdout() -> Any:
    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def _front_table(objectives: Sequence[Any], constraints: Sequence[Any], rows: Sequence[tuple[str, dict]],
                 title: str) -> Any:
    from rich.table import Table

    from nas.report import fmt

    metrics = [o.metric for o in objectives] + [c.metric for c in constraints
                                                 if c.metric not in {o.metric for o in objectives}]
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("key")
    for metric in metrics:
        direction = next((f" ({o.direction})" for o in objectives if o.metric == metric), "")
        table.add_column(metric + direction, justify="right")
    for i, (key, values) in enumerate(rows, start=1):
        table.add_row(str(i), key, *[fmt(float(values.get(m, float("nan")))) for m in metrics])
    return table


# ---- qnas run ---------------------------------------------------------------------------------
def _configure_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="experiment YAML (optional with --resume: checked against the run)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    parser.add_argument("--out", metavar="DIR", help="run folder (default: OUTPUT_ROOT/NAME-TIMESTAMP)")


@register_command("run", help="run a search from a config (or resume one)", configure=_configure_run)
def _run(args: argparse.Namespace) -> int:
    from nas.runner import resume_run, start_run

    reporter = RichReporter(quiet=args.quiet)
    if args.resume is not None:
        if args.out is not None:
            raise InputError("--out cannot be combined with --resume (the run folder is RUN_DIR)")
        outcome = resume_run(args.resume, config_path=args.config, overrides=args.overrides, reporter=reporter)
    elif args.config is None:
        raise InputError("give a CONFIG file to start a run, or --resume RUN_DIR to continue one")
    else:
        outcome = start_run(args.config, overrides=args.overrides, out=args.out, reporter=reporter)
    if outcome.follower:  # a torchrun rank other than 0: rank 0 reports the run
        return 0
    result = outcome.result
    if args.quiet:
        print(outcome.run_dir)
        return 0
    if result is None:  # a kind with its own procedure: show what it found
        _show_kind_outcome(outcome.run_dir)
        _stdout().print(f"run folder: {outcome.run_dir} ({outcome.seconds:.1f} s)", markup=False)
        return 0
    out = _stdout()
    rows = [(t.key, dict(t.metrics)) for t in (result.front or result.closest)][:15]
    title = (f"Pareto front: {len(result.front)} of {len(result.trials)} candidates" if result.feasible else
             f"no candidate met the constraints; the {len(rows)} closest")
    out.print(_front_table(result.objectives, result.constraints, rows, title))
    out.print(f"{len(result.trials)} candidates ({result.evaluated} evaluated now, {result.reused} from the journal), "
              f"hypervolume {result.hypervolume:.4f}, {outcome.seconds:.1f} s", markup=False)
    out.print(f"run folder: {outcome.run_dir}", markup=False)
    return 0


# ---- qnas validate ----------------------------------------------------------------------------
def _configure_validate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="experiment YAML")


@register_command("validate", help="check a config and print what a run would do", configure=_configure_validate)
def _validate(args: argparse.Namespace) -> int:
    from nas.distributed import release_cluster
    from nas.kinds import load_experiment
    from nas.runner import check_destination, prepare, summary

    loaded = load_experiment(args.config, args.overrides)
    check_destination(loaded)
    exp = prepare(loaded, RichReporter(quiet=args.quiet))
    try:
        rows = summary(exp)
    finally:
        release_cluster(exp.launch)  # the check of a Ray launcher's cluster connected; validating ends here
    out = _stdout()
    width = max(len(label) for label, _ in rows)
    for label, text in rows:
        out.print(f"{label:<{width}}  {text}", markup=False)
    out.print("config is valid", markup=False)
    return 0


# ---- qnas pareto ------------------------------------------------------------------------------
def _configure_pareto(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run folder (finished or not)")


@register_command("pareto", help="print the Pareto front of a run (from its journal)", configure=_configure_pareto)
def _pareto(args: argparse.Namespace) -> int:
    from nas.kinds import load_experiment
    from nas.journal import read_journal, require_metrics
    from nas.objectives import objective_matrix
    from nas.pareto import front_indices, total_violation
    from nas.rundir import CONFIG, JOURNAL, check_run_dir

    from nas.kinds import get_kind

    run = check_run_dir(args.run_dir)
    loaded = load_experiment(run / CONFIG, check_files=False)
    objectives, constraints = get_kind(loaded.config.kind).front_definition(loaded)
    contents = read_journal(run / JOURNAL)
    if contents.dropped is not None:
        RichReporter().warn(str(contents.dropped))
    require_metrics(run / JOURNAL, contents.records, [m.metric for m in (*objectives, *constraints)])
    records = list({r["key"]: r for r in contents.records}.values())  # one row per candidate
    if not records:
        RichReporter().warn(f"{run / JOURNAL} holds no candidate yet: the run has evaluated none (or was made "
                            "before its kind journaled them; `qnas run --resume` fills it)")
    metrics = [r["metrics"] for r in records]
    violation = total_violation(metrics, constraints)
    front = front_indices(objective_matrix(metrics, objectives), violation)
    shown = list(front) if len(front) or not records else sorted(range(len(records)), key=lambda i: violation[i])[:10]
    title = (f"Pareto front of {run.name}: {len(front)} of {len(records)} candidates" if len(front) or not records
             else "no candidate met the constraints; the closest")
    _stdout().print(_front_table(objectives, constraints, [(records[i]["key"], metrics[i]) for i in shown], title))
    return 0


def _show_kind_outcome(run_dir: Path) -> None:
    """What a kind with its own procedure found (LPGNAS: its front; a space search: its ranked spaces)."""
    from nas.kinds import load_experiment
    from nas.kinds import get_kind
    from nas.rundir import CONFIG

    loaded = load_experiment(run_dir / CONFIG, check_files=False)
    get_kind(loaded.config.kind).show(run_dir, loaded, _stdout(),
                                      lambda run: _pareto(argparse.Namespace(run_dir=str(run))))


# ---- entry point ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The parser with every registered subcommand (importing :data:`COMMAND_MODULES` first)."""
    adders = []
    for entry in COMMAND_MODULES:
        module, _, function = entry.partition(":")
        imported = importlib.import_module(module)
        if function:
            adders.append(getattr(imported, function))
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value by its dotted key, e.g. --set search.budget=50 (repeatable)")
    common.add_argument("--quiet", action="store_true", help="no progress output")
    common.add_argument("--debug", action="store_true", help="show tracebacks of input errors")
    parser = Parser(prog="qnas", description="Joint neural architecture and quantization search.")
    parser.add_argument("--version", action="version", version=f"qnas {_version()}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for command in commands.COMMANDS.values():
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help, parents=[common])
        command.configure(sub)
        sub.set_defaults(handler=command.handler)
    for add in adders:
        add(subparsers)
    return parser


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("qnas")
    except metadata.PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``qnas`` with ``argv`` (default: the process's arguments); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version, usage errors
        return stop.code if isinstance(stop.code, int) else 2
    handler = getattr(args, "func", None) or getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(handler(args) or 0)
    except QnasError as err:
        if getattr(args, "debug", False):
            traceback.print_exc()
        print("error: " + str(err).replace("\r", "\\r").replace("\n", "\\n"), file=sys.stderr)  # one line
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue with `qnas run --resume RUN_DIR`", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
