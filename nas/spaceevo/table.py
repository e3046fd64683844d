"""The ranked spaces as a rich table, for ``qnas qt-score`` and ``qnas pareto`` of a space-search run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nas.spaceevo.qt_score import QtScore, QtSettings

__all__ = ["ranking_table"]


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
