"""Experiment kinds as plugins: each module registers one :class:`ExperimentKind` (see :mod:`nas.kinds.base`)."""

from __future__ import annotations

from . import lpgnas, search, space_search  # noqa: F401  (registration)
from .base import KINDS, ExperimentKind, KindOutcome, get_kind, kind_of, load_experiment, register_kind

__all__ = ["KINDS", "ExperimentKind", "KindOutcome", "get_kind", "kind_of", "load_experiment", "register_kind"]
