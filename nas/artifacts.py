"""The files every experiment kind writes for its front, in one call: one artifact path for all kinds.

``pareto.csv`` / ``pareto.json`` (:mod:`nas.report`), ``hypervolume.csv``, and ``pareto.png`` /
``hypervolume.png`` (:mod:`nas.plots`). Each kind adds its own ``report.md`` sections through
:func:`nas.report.write_report`, and anything only it has (exported subnets, LPGNAS's searches).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from nas.plots import plot_hypervolume, plot_pareto
from nas.report import write_hypervolume_csv, write_pareto_csv, write_pareto_json
from nas.search import SearchResult, Trial

__all__ = ["write_front_files"]


def write_front_files(run_dir: str | Path, result: SearchResult, *, title: str, hypervolume_title: str,
                      pareto_fields: Mapping[str, Any] | None = None, errors: Mapping[str, str] | None = None,
                      label: Callable[[Trial], str] | None = None) -> None:
    """Write the front's files into ``run_dir``; ``pareto_fields`` are extra top-level keys of ``pareto.json``,
    ``errors`` and ``label`` go to :func:`~nas.plots.plot_pareto`."""
    run_dir = Path(run_dir)
    write_pareto_csv(run_dir / "pareto.csv", result)
    write_pareto_json(run_dir / "pareto.json", result, **dict(pareto_fields or {}))
    write_hypervolume_csv(run_dir / "hypervolume.csv", result.history)
    plot_pareto(result, run_dir / "pareto.png", title=title, errors=errors, label=label)
    plot_hypervolume(result.history, run_dir / "hypervolume.png", title=hypervolume_title)
