"""Malformed configs, latency tables and flags, and a harness that runs them through the ``qnas`` CLI.

Why here: the property test (``tests/test_bad_input.py``, driven by hypothesis) and the benchmark
(``experiments/benchmarks/fuzz_inputs.py``, driven by a seeded ``random.Random``) must try the same
inputs, so every generator takes a ``random.Random`` and returns a :class:`Case`. A case is handled
when ``qnas`` exits 0 (the input happened to be valid) or exits 2 with exactly one stderr line
``error: ...`` that names the input (file or flag), without a traceback and within
:data:`TIME_LIMIT_S` seconds (:func:`run_case`).

Families (:data:`FAMILIES`): ``config`` (``qnas validate`` of a damaged experiment YAML, drawn from
four valid ones, the search one referencing a latency table), ``table`` (``qnas latency check`` of a
damaged CSV or JSON table), ``cli`` (bad numeric flags and ``--space-options``) and ``run`` (``qnas
pareto``, ``export`` or ``run --resume`` of a run folder with one damaged file). Each kind names one
class of bad input. Layout: ``values`` (cases, outcomes, random values at random key paths), ``tables``,
``configs`` and ``runs`` (the generators of each family), and here the harness.
"""

from __future__ import annotations

import contextlib
import gc
import io
import random
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .configs import BASE_CONFIGS, CONFIG_KINDS, base_config, config_case
from .runs import CLI_KINDS, RUN_KINDS
from .tables import TABLE_KINDS, base_table
from .values import DIR, SPACE_OPTIONS, TIME_LIMIT_S, Case, Outcome, dump_yaml

__all__ = ["Case", "Outcome", "FAMILIES", "TIME_LIMIT_S", "SPACE_OPTIONS", "base_config", "base_table", "run_case",
           "generate", "warmed_up"]

FAMILIES: dict[str, dict[str, Callable[[random.Random], Case]]] = {
    "config": CONFIG_KINDS, "table": TABLE_KINDS, "cli": CLI_KINDS, "run": RUN_KINDS}
"""Family -> kind -> generator."""


@contextlib.contextmanager
def warmed_up() -> Iterator[None]:
    """Validate every base config and run one case of every kind, untimed, then hold the heap frozen.

    First calls import torch, scikit-learn, pymoo and torch_geometric and read datasets, which is not what
    the time limit is about. Freezing keeps those objects out of garbage collection: a full collection,
    due every few hundred cases of a long in-process run, would otherwise be timed against whichever case
    it falls in (a ``qnas`` process handles one input and never gets there). Unfrozen on exit."""
    for name, make in BASE_CONFIGS.items():
        run_case(config_case(f"warm-up/{name}", dump_yaml(make())))
    for family, kinds in FAMILIES.items():
        for kind in kinds:
            run_case(generate(family, kind, random.Random(0)))
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def generate(family: str, kind: str, rng: random.Random) -> Case:
    """One case of ``kind`` (the case's kind is prefixed with the family, e.g. ``table/non_utf8``)."""
    case = FAMILIES[family][kind](rng)
    return Case(f"{family}/{kind}", case.files, case.argv, case.names)


# ---- running a case ----------------------------------------------------------------------------------
def _write(folder: Path, files: dict[str, bytes | int]) -> None:
    for name, body in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(body, int):
            with open(path, "wb") as handle:
                handle.truncate(body)  # sparse: the size is what is being tested
        else:
            path.write_bytes(body.replace(DIR.encode(), str(folder).encode()))


def judge(case: Case, exit_code: int | None, stderr: str, seconds: float, names: Sequence[str]) -> str:
    """Why the outcome breaks the promise, or "" when it keeps it."""
    if "Traceback" in stderr:
        return "traceback on stderr"
    if seconds > TIME_LIMIT_S:
        return f"took {seconds:.2f} s (limit {TIME_LIMIT_S} s)"
    if exit_code == 0:
        return ""
    if exit_code != 2:
        return f"exit code {exit_code}"
    lines = stderr.splitlines()
    if len(lines) != 1:
        return f"{len(lines)} lines on stderr"
    if not lines[0].startswith("error: "):
        return "stderr does not start with 'error: '"
    if not any(name in lines[0] for name in names):
        return f"the error does not name the input ({', '.join(names)})"
    return ""


def run_case(case: Case) -> Outcome:
    """Write the case's files into a fresh folder and run ``nas.cli.main`` on its arguments in this process."""
    from nas.cli import main

    with tempfile.TemporaryDirectory(prefix="qnas-fuzz-") as tmp:
        folder = Path(tmp)
        _write(folder, case.files)
        argv = [a.replace(DIR, tmp) for a in case.argv]
        names = tuple(n.replace(DIR, tmp) for n in case.names)
        err, out = io.StringIO(), io.StringIO()
        start, cpu = time.perf_counter(), time.process_time()
        code: int | None
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                code = main(argv)
        except BaseException:  # noqa: BLE001 - an escaping exception is exactly what is being looked for
            code = None
            err.write(traceback.format_exc())
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    stderr = err.getvalue()
    problem = judge(case, code, stderr, seconds, names)
    if code is None and not problem:
        problem = "an exception escaped main()"
    return Outcome(case.kind, code, stderr, seconds, cpu, problem)
