"""Shared test set-up: data folder, headless matplotlib, and a stand-in searcher for the nas tests.

``QNAS_DATA`` defaults to ``../shared/data`` next to the repository (as in the Makefile) and
``MPLBACKEND`` to Agg, both only when unset, so a developer's own settings win.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

os.environ.setdefault("QNAS_DATA", str((ROOT / ".." / "shared" / "data").resolve()))
os.environ.setdefault("MPLBACKEND", "Agg")


class StandInSearcher:
    """Seeded random sampling with the ``nas.searchers`` interface (used until, or beside, the real ones)."""

    expensive = False

    def __init__(self, space, objectives, *, constraints=(), seed=0, storage_dir=None, population_size=10):
        if population_size < 1:
            raise ValueError("population_size must be >= 1")
        self.space, self.objectives, self.constraints = space, list(objectives), list(constraints)
        self.batch_size = population_size
        self.rng = np.random.default_rng(seed)
        self.asked = self.told = 0

    def ask(self):
        self.asked += self.batch_size
        return [self.space.sample(self.rng) for _ in range(self.batch_size)]

    def tell(self, genomes, results):
        assert len(genomes) == len(results)
        self.told += len(genomes)

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state["rng"]


def real_searchers_available() -> bool:
    """Whether the real ``nas.searchers`` package exists in this checkout."""
    return (ROOT / "nas" / "searchers" / "__init__.py").exists() or (ROOT / "nas" / "searchers.py").exists()


def ensure_searchers() -> None:
    """Install the stand-in as ``nas.searchers`` when the real package is not there yet."""
    if "nas.searchers" in sys.modules or real_searchers_available():
        return
    module = types.ModuleType("nas.searchers")
    module.Searcher = StandInSearcher
    module.list_searchers = lambda: ["nsga2", "random"]
    module.searcher_options = lambda name: {"population_size": 10}
    module.searcher_class = lambda name: StandInSearcher

    def get_searcher(name, space, objectives, **kwargs):
        if name not in module.list_searchers():
            raise ValueError(f"unknown searcher {name!r}")
        return StandInSearcher(space, objectives, **kwargs)

    module.get_searcher = get_searcher
    sys.modules["nas.searchers"] = module


# The repository goes first on sys.path: the test folders (no __init__.py) would otherwise shadow the
# editable install's packages as namespace packages.
PRELUDE = (f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(TESTS)!r}]; import conftest; "
           "conftest.ensure_searchers()\n")
BOOT = PRELUDE + "from nas.cli import main; sys.exit(main(sys.argv[1:]))\n"
"""``python -c BOOT ARGS...`` runs ``qnas ARGS...`` in a subprocess, with the stand-in if needed."""


def qnas_command(*args: str) -> list[str]:
    """Command line of a ``qnas`` subprocess (the real entry module once ``nas.searchers`` exists)."""
    if real_searchers_available():
        return [sys.executable, "-m", "nas.cli", *args]
    return [sys.executable, "-c", BOOT, *args]


@pytest.fixture
def searchers():
    """``nas.searchers``, real or stand-in."""
    ensure_searchers()
    return importlib.import_module("nas.searchers")
