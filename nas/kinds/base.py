"""What an experiment kind is: the one place that knows its config, checks, procedure, summary and front.

The runner, the CLI, the config loader (:func:`load_experiment`) and ``qnas pareto`` know kinds only through
:data:`KINDS`; a new kind (a transformer search, say) is one module here with a registered
:class:`ExperimentKind` and its config model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from nas.config import ConfigData, ExperimentConfig, LoadedConfig, read_config, validate_config
from nas.config_errors import short_repr
from nas.experiment import Experiment, Reporter
from nas.journal import Journal
from nas.rundir import JOURNAL
from nas.search import SearchResult
from search_spaces import InputError
from search_spaces.registries import Registry

__all__ = ["KINDS", "ExperimentKind", "KindOutcome", "get_kind", "kind_of", "load_experiment", "register_kind"]

KindOutcome = tuple[SearchResult | None, dict[str, Any]]
"""What a run of a kind returns: its search result (None for kinds with their own artifacts) and the fields
the manifest's final update records (evaluations, front size, ...)."""


class ExperimentKind(ABC):
    """One experiment kind. Subclasses set ``name``, ``description`` and ``config_model`` and implement the
    abstract methods."""

    name: ClassVar[str]
    description: ClassVar[str]
    config_model: ClassVar[type[ExperimentConfig]]
    """The kind's config: :class:`~nas.config.ExperimentConfig` (what every kind has) plus the kind's own
    sections, a section it cannot run without as a field without default, an optional one defaulting to null."""
    trains_in_processes: ClassVar[bool] = False
    """Whether its supernet training can use ``distributed.processes`` > 1."""

    @abstractmethod
    def prepare(self, loaded: LoadedConfig, reporter: Reporter, placement: Any, launch: Any) -> Experiment:
        """Build and cross-check everything the run needs; every problem an InputError naming the config line."""

    @abstractmethod
    def summary(self, exp: Experiment) -> list[tuple[str, str]]:
        """``(label, text)`` rows of what a run will do (``qnas validate``, the report)."""

    def acquire(self, run_dir: Path) -> AbstractContextManager[Any]:
        """What the run must hold before it starts: by default its journal, ``trials.jsonl``, which refuses a
        second writer; entered before the manifest says ``running``, its value is the ``handle`` :meth:`run` gets."""
        return Journal(run_dir / JOURNAL)

    @abstractmethod
    def run(self, exp: Experiment, run_dir: Path, reporter: Reporter, *, resume: bool, handle: Any) -> KindOutcome:
        """Run (or, with ``resume``, continue) in ``run_dir``; the runner holds the lock and keeps the manifest's
        status (running, then finished, failed or interrupted)."""

    def check_resume(self, loaded: LoadedConfig, run_dir: Path) -> None:
        """Refuse a resume before any work when the folder cannot continue this config (default: no check)."""

    def front_definition(self, loaded: LoadedConfig) -> tuple[Sequence[Any], Sequence[Any]]:
        """The objectives and constraints the run's Pareto front is defined by (``qnas pareto``)."""
        raise InputError(f"a {self.name} run has no Pareto front; see its report.md", source=loaded.source,
                         field="kind")

    def show(self, run_dir: Path, loaded: LoadedConfig, out: Any, show_front: Callable[[Path], None]) -> None:
        """Print a finished run's outcome on the rich console ``out`` (``qnas run``): by default its Pareto front."""
        show_front(run_dir)

    def space_info(self, exp: Experiment) -> dict[str, Any]:
        """The manifest's ``space``: what the run searched."""
        space = exp.space
        assert space is not None
        return {"name": space.name, "options": space.options(), "fingerprint": space.fingerprint(),
                "cardinality": str(space.cardinality()), "dataset": exp.loaded.config.dataset.name}

    @classmethod
    def sections(cls) -> dict[str, bool]:
        """The kind's own config sections (those :class:`~nas.config.ExperimentConfig` lacks) -> whether each is
        required."""
        common = ExperimentConfig.model_fields
        return {name: field.is_required() for name, field in cls.config_model.model_fields.items()
                if name not in common}

    def head_rows(self, exp: Experiment) -> list[tuple[str, str]]:
        """The summary's first rows, the same for every kind."""
        config = exp.loaded.config
        return [("config", str(exp.loaded.source)), ("name", f"{config.name} (seed {config.seed})")]


KINDS: Registry[ExperimentKind] = Registry("experiment kind", field="kind")
K = TypeVar("K", bound=type[ExperimentKind])


def register_kind(cls: K) -> K:
    """Class decorator: register one instance of the kind under its ``name``."""
    KINDS.register(cls.name, cls())
    return cls


def get_kind(name: str, *, source: Any = None) -> ExperimentKind:
    """The registered kind ``name`` (an unknown one is one InputError naming ``kind``)."""
    return KINDS.get(name, source=source)


def kind_of(raw: ConfigData) -> ExperimentKind:
    """The registered kind a config read by :func:`~nas.config.read_config` names (its ``kind``, by default
    :class:`~nas.config.ExperimentConfig`'s); an unknown one is one InputError naming ``kind`` and the nearest."""
    name = raw.data.get("kind", ExperimentConfig.model_fields["kind"].default)
    if not isinstance(name, str):
        raise raw.error("kind", f"got {short_repr(name)}; expected a valid string")
    try:
        return KINDS.get(name)
    except InputError as err:
        raise raw.error("kind", err.detail) from None


def load_experiment(path: str | Path, overrides: Sequence[str] = (), *, check_files: bool = True) -> LoadedConfig:
    """Read a config, look its kind up and validate it against the kind's model: what every command reads a
    config with. Every problem is one InputError naming the file line or ``--set``.

    A section the kind needs but the config lacks (or leaves null) is named with the kind, after any other
    error. Another kind's section is refused by name, not as an unknown key, once the rest is valid; left
    null (as the config.yaml of runs made before kinds owned their models repeats every section) it is
    dropped."""
    raw = read_config(path, overrides)
    kind = kind_of(raw)
    own = kind.sections()
    foreign = sorted({s for other in KINDS.names() for s in KINDS.get(other).sections()} - set(own))
    absent = {s: f"missing required section for kind: {kind.name}" for s, required in own.items() if required}
    data = {key: value for key, value in raw.data.items() if key not in foreign}
    loaded = validate_config(replace(raw, data=data), kind.config_model, absent=absent, check_files=check_files)
    for section in foreign:
        if raw.data.get(section) is not None:
            raise raw.error(section, f"section {section!r} is not used by kind: {kind.name}; remove it")
    return loaded
