"""Plots of a search: ``pareto.png`` (every pair of objectives) and ``hypervolume.png``.

Why the object-oriented Agg API (``Figure`` + ``FigureCanvasAgg``) rather than pyplot: no global
backend switch, no figure registry leaking memory over long runs, and it works on headless machines.
PNG bytes go through :func:`nas.rundir.atomic_write_bytes` like every other artifact.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from itertools import combinations
from pathlib import Path

import numpy as np

from nas.rundir import atomic_write_bytes
from nas.search import HypervolumePoint, SearchResult, Trial

__all__ = ["plot_pareto", "plot_hypervolume", "save_figure"]


def _figure(n_panels: int) -> tuple[object, list[object]]:
    from matplotlib.figure import Figure

    cols = min(3, n_panels)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(4.8 * cols, 4.0 * rows), layout="constrained")
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n_panels)]
    return fig, axes


def save_figure(fig: object, path: str | Path) -> None:
    """Render ``fig`` to PNG and write it atomically (a kill mid-write leaves the old plot or none)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # attaches an Agg canvas to the figure
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)  # type: ignore[attr-defined]
    atomic_write_bytes(path, buffer.getvalue())


def _log_if_wide(ax: object, values: np.ndarray, axis: str) -> None:
    finite = values[np.isfinite(values)]
    if len(finite) and finite.min() > 0 and finite.max() / finite.min() > 100:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")  # type: ignore[attr-defined]


def plot_pareto(result: SearchResult, path: str | Path, *, title: str = "", errors: Mapping[str, str] | None = None,
                label: Callable[[Trial], str] | None = None) -> None:
    """Scatter of all candidates with the feasible front highlighted, one panel per pair of objectives.

    ``errors``: ``{objective: metric}`` drawn as error bars on that objective (e.g. ``accuracy_std`` over
    seeds); ``label``: text written beside every candidate (e.g. the cost weight λ it was searched with).
    """
    names = [o.metric for o in result.objectives]
    values = np.array([[t.metrics[m] for m in names] for t in result.trials], dtype=float).reshape(-1, len(names))
    spread = {k: np.array([t.metrics.get(m, np.nan) for t in result.trials], dtype=float)
              for k, m in (errors or {}).items() if k in names}
    front_keys = {t.key for t in result.front}
    on_front = np.array([t.key in front_keys for t in result.trials], dtype=bool)
    feasible = np.array([all(c.violation(t.metrics[c.metric]) == 0 for c in result.constraints)
                         for t in result.trials], dtype=bool)
    pairs = list(combinations(range(len(names)), 2)) or [(-1, 0)]
    fig, axes = _figure(len(pairs))
    for ax, (i, j) in zip(axes, pairs):
        x = np.arange(len(values)) if i < 0 else values[:, i]
        y = values[:, j]
        if (~feasible).any():  # (an empty group would still get a legend entry)
            ax.scatter(x[~feasible], y[~feasible], s=10, c="0.75", marker="x", label="violates constraints")
        if (feasible & ~on_front).any():
            ax.scatter(x[feasible & ~on_front], y[feasible & ~on_front], s=12, c="tab:blue", alpha=0.5,
                       label="feasible")
        order = np.argsort(x[on_front], kind="stable")
        ax.plot(x[on_front][order], y[on_front][order], "o-", c="tab:red", ms=5, lw=1, label="Pareto front")
        xerr = spread.get(names[i]) if i >= 0 else None
        if xerr is not None or names[j] in spread:
            ax.errorbar(x, y, xerr=xerr, yerr=spread.get(names[j]), fmt="none", ecolor="0.5", capsize=3, lw=0.8)
        for k, trial in enumerate(result.trials if label else ()):
            ax.annotate(label(trial), (x[k], y[k]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("evaluation" if i < 0 else f"{names[i]} ({result.objectives[i].direction})")
        ax.set_ylabel(f"{names[j]} ({result.objectives[j].direction})")
        if i >= 0:
            _log_if_wide(ax, x, "x")
        _log_if_wide(ax, y, "y")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title or f"{len(result.trials)} candidates, {len(result.front)} on the front")
    save_figure(fig, path)


def plot_hypervolume(history: Sequence[HypervolumePoint], path: str | Path, *, title: str = "") -> None:
    """Hypervolume of the feasible front against the number of distinct candidates evaluated."""
    fig, (ax,) = _figure(1)
    x = [p.evaluations for p in history]
    y = [p.hypervolume for p in history]
    ax.plot(x, y, "o-", ms=3, c="tab:green")
    ax.set_xlabel("distinct candidates evaluated")
    ax.set_ylabel("hypervolume (normalised box)")
    ax.grid(True, alpha=0.3)
    fig.suptitle(title or "hypervolume after every batch")
    save_figure(fig, path)
