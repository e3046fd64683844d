"""``qnas qt-score CONFIG --spaces S1 S2 ...``: rank given candidate spaces by SpaceEvo's Q-T score.

CONFIG is a ``kind: space-search`` experiment (its ``space_search.qt`` settings and lookup table are
used; ``--lut`` points at another table). Prints a table and writes ``ranking.csv``, ``ranking.json``
and ``qt_scores.png`` into ``--out`` (default: the current folder)::

    qnas qt-score experiments/spaceevo_cifar10.yaml --spaces c10-1111-1111 c10-2222-1111 --lut lut.json
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from nas.cli import register_command
from search_spaces import InputError

if TYPE_CHECKING:
    from nas.spaceevo.qt_score import QtScore, QtSettings

__all__ = ["ranking_table"]


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
    from nas.spaceevo.run import load_lut, load_space_search_config, rank_spaces, write_ranking

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


def ranking_table(ranking: Sequence[QtScore], qt: QtSettings, title: str) -> Any:
    """A rich table of ranked spaces: score, score and feasible fraction per constraint, stages (also for
    ``qnas run`` of a ``kind: space-search`` experiment)."""
    from rich.table import Table

    from search_spaces.meta import parse_candidate

    table = Table(title=title, title_justify="left")
    for name in ["#", "space", "Q-T score", *(f"@{t:g} ms" for t in qt.constraints_ms),
                 *(f"p@{t:g}" for t in qt.constraints_ms), "stages"]:
        table.add_column(name, justify="left" if name in ("space", "stages") else "right")
    for i, s in enumerate(ranking, start=1):
        table.add_row(str(i), s.candidate, f"{s.score:.4f}", *(f"{v:.4f}" for v in s.per_constraint),
                      *(f"{v:.3f}" for v in s.feasible), parse_candidate(s.candidate).describe())
    return table
