"""``qnas qt-score CONFIG --spaces S1 S2 ...``: rank given candidate spaces by SpaceEvo's Q-T score.

CONFIG is a ``kind: space-search`` experiment (its ``space_search.qt`` settings and lookup table are
used; ``--lut`` points at another table). Prints a table and writes ``ranking.csv``, ``ranking.json``
and ``qt_scores.png`` into ``--out`` (default: the current folder)::

    qnas qt-score experiments/spaceevo_cifar10.yaml --spaces c10-1111-1111 c10-2222-1111 --lut lut.json
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nas.commands import register_command
from nas.kinds import load_experiment
from nas.kinds.space_search import SpaceSearchExperimentConfig, SpaceSearchKind
from nas.spaceevo.run import SpaceSearchConfig
from nas.spaceevo.table import ranking_table
from search_spaces import InputError

__all__ = ["SpaceSearchExperiment", "load_space_search_config"]


@dataclass(frozen=True)
class SpaceSearchExperiment:
    """What ``qnas qt-score`` reads from a ``kind: space-search`` experiment YAML."""

    config: SpaceSearchConfig
    name: str
    seed: int
    source: Path


def load_space_search_config(path: str | Path, overrides: Sequence[str] = ()) -> SpaceSearchExperiment:
    """Read a ``kind: space-search`` experiment YAML (``--set`` overrides applied; relative paths resolve
    against the file's folder). Every problem is one :class:`InputError` naming the file and field."""
    loaded = load_experiment(path, overrides)
    config = loaded.config
    if not isinstance(config, SpaceSearchExperimentConfig):  # the Q-T settings and lookup table live in its section
        raise InputError(f"expected an experiment of kind: {SpaceSearchKind.name}, got kind: {config.kind}",
                         source=loaded.source, field="kind")
    return SpaceSearchExperiment(config.space_search, config.name, config.seed, loaded.source)


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="experiment YAML with a space_search: section (kind: space-search)")
    parser.add_argument("--spaces", nargs="+", required=True, metavar="SPACE",
                        help="candidate spaces written MACRO-BLOCKS-WINDOWS, e.g. c10-1111-1111")
    parser.add_argument("--lut", metavar="PATH", help="lookup table (default: space_search.lut.path)")
    parser.add_argument("--out", metavar="DIR", default=".", help="folder for ranking.csv/.json and qt_scores.png")


@register_command("qt-score", help="rank candidate spaces by SpaceEvo's Q-T score", configure=_configure)
def _qt_score(args: argparse.Namespace) -> int:
    from rich.console import Console

    from nas.rundir import check_output_folder
    from nas.spaceevo.run import load_lut, rank_spaces, write_ranking

    exp = load_space_search_config(args.config, args.overrides)
    try:
        check_output_folder(args.out)
    except InputError as err:
        raise InputError(err.detail, source=args.out, field="--out") from None
    path = args.lut or exp.config.lut.path
    if path is None:
        raise InputError("no lookup table: give --lut PATH or set space_search.lut.path (build one with `qnas run`)",
                         source=exp.source, field="space_search.lut.path")
    lut = load_lut(path, exp.config.macro, field="--lut" if args.lut else "space_search.lut.path")
    qt = exp.config.qt.settings(exp.seed)
    ranking = rank_spaces(lut, args.spaces, qt)
    write_ranking(ranking, qt, args.out, top=len(ranking))
    out = Console(highlight=False, width=200)
    out.print(ranking_table(ranking, qt, f"Q-T scores ({lut.backend}, N = {qt.n_subnets}, top-{qt.top_k})"))
    out.print(f"wrote ranking.csv, ranking.json, qt_scores.png in {args.out}", markup=False)
    return 0
