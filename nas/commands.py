"""What a ``qnas`` subcommand is built from: the command registry, the argument parser and types, the reporter.

Apart from :mod:`nas.cli` so that the modules adding subcommands (``nas.export_cli``, ``nas.qt_cli``, ...),
which :mod:`nas.cli` imports by name, need not import it back: no import cycle between the files.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from search_spaces.registries import Registry

__all__ = ["COMMANDS", "Command", "Handler", "register_command", "Parser", "positive_int", "non_negative_int",
           "RichReporter"]

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, one-line help, how it adds its arguments, and what it runs."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    handler: Handler


COMMANDS: Registry[Command] = Registry("qnas subcommand")


def register_command(name: str, *, help: str,
                     configure: Callable[[argparse.ArgumentParser], None]) -> Callable[[Handler], Handler]:
    """Decorator registering ``handler(args) -> exit code`` as ``qnas NAME`` (duplicate names raise)."""

    def wrap(handler: Handler) -> Handler:
        COMMANDS.register(name, Command(name, help, configure, handler))
        return handler

    return wrap


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one ``error: ...`` line (exit 2), like every other bad input."""

    def error(self, message: str) -> Any:  # argparse's signature; never returns
        message = re.sub(r"^argument ([^:]+): ", r"\1: ", message).replace("\n", " ")
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        """argparse turns ``--flag=--`` into an empty list without calling the flag's type: refuse it here."""
        for arg in sys.argv[1:] if args is None else args:
            if re.fullmatch(r"--[\w-]+=--", str(arg)):
                self.error(f"{arg[:-3]}: got '--'; expected a value")
        return super().parse_known_args(args, namespace)


def _int_at_least(minimum: int, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        shown = repr(text) if len(text) <= 40 else repr(text[:37] + "...")
        raise argparse.ArgumentTypeError(f"got {shown}; expected an integer >= {minimum}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"got {value}; expected an integer >= {minimum}")
    return value


def positive_int(text: str) -> int:
    """argparse ``type`` of counts and sizes: an integer >= 1 (zero or negative is a usage error)."""
    return _int_at_least(1, text)


def non_negative_int(text: str) -> int:
    """argparse ``type`` of seeds and offsets: an integer >= 0."""
    return _int_at_least(0, text)


class RichReporter:
    """Spinners and a progress bar on stderr (none with ``--quiet``); warnings always show."""

    def __init__(self, *, quiet: bool = False) -> None:
        from rich.console import Console

        self.quiet = quiet
        self.console = Console(stderr=True, quiet=quiet, highlight=False, soft_wrap=True)
        self.errors = Console(stderr=True, highlight=False, soft_wrap=True)

    @contextmanager
    def step(self, text: str) -> Iterator[None]:
        with self.console.status(text):
            yield

    @contextmanager
    def search_progress(self, budget: int) -> Iterator[Callable[[int, int], None]]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("searching"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=self.console, disable=self.quiet) as bar:
            task = bar.add_task("search", total=budget)
            yield lambda done, total: bar.update(task, completed=done, total=total)

    def info(self, text: str) -> None:
        self.console.print(text, markup=False)

    def warn(self, text: str) -> None:
        self.errors.print(f"warning: {text}", markup=False, style="yellow")
