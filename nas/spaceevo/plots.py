"""The space-search plot: per-constraint Q-T scores of the best spaces, and the evolution's progress."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nas.plots import save_figure

from .qt_score import QtScore, QtSettings

__all__ = ["plot_scores"]


def plot_scores(ranking: Sequence[QtScore], qt: QtSettings, path: str | Path, *,
                history: Sequence[QtScore] = ()) -> None:
    """Stacked bars (score_T per constraint) of ``ranking``; beside them, score over evolution steps (the
    object-oriented Agg API, as :mod:`nas.plots`: no global backend switch, no figure registry)."""
    from matplotlib.figure import Figure

    panels = 2 if history else 1
    fig = Figure(figsize=(6.5 * panels, 4.2), layout="tight")
    axes = [fig.add_subplot(1, panels, i + 1) for i in range(panels)]
    ax = axes[0]
    names = [s.candidate for s in ranking]
    bottom = np.zeros(len(ranking))
    for k, limit in enumerate(qt.constraints_ms):
        values = np.array([s.per_constraint[k] for s in ranking])
        ax.barh(names, values, left=bottom, label=f"T = {limit:g} ms")
        bottom += values
    ax.invert_yaxis()
    ax.set_xlabel("Q-T score (sum over latency constraints)")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("best spaces")
    if history:
        ax = axes[1]
        scores = np.array([s.score for s in history])
        ax.scatter(np.arange(len(scores)), scores, s=4, alpha=0.4, label="scored space")
        ax.plot(np.maximum.accumulate(scores), color="C3", label="best so far")
        ax.set_xlabel("spaces scored")
        ax.set_ylabel("Q-T score")
        ax.legend(fontsize=8)
        ax.set_title("aging evolution")
    save_figure(fig, path)
