"""SpaceEvo: search the search space, ranked by the Q-T score (lookup table, score, aging evolution, runs).

``run_space_search(config, data=..., run_dir=...)`` is the entry point of ``kind: space-search``
experiments; ``qnas qt-score CONFIG --spaces S1 S2 ...`` ranks given spaces.
"""

from .evolution import EvolutionResult, EvolutionSettings, aging_evolution
from .lut import FORMAT, LutEntry, QtLut
from .qt_score import QtScore, QtSettings, qt_score

__all__ = ["FORMAT", "EvolutionResult", "EvolutionSettings", "LutEntry", "QtLut", "QtScore", "QtSettings",
           "aging_evolution", "qt_score"]
