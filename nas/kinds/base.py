"""What an experiment kind is: the one place that knows its sections, checks, procedure, summary and front.

The runner, the CLI and ``qnas pareto`` know kinds only through :data:`KINDS`; a new kind (a transformer
search, say) is one module here with a registered :class:`ExperimentKind`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from nas.config import LoadedConfig, load_config
from nas.experiment import Experiment, Reporter
from nas.search import SearchResult
from search_spaces import InputError
from search_spaces.registries import Registry

__all__ = ["KINDS", "ExperimentKind", "KindOutcome", "check_sections", "get_kind", "load_experiment",
           "register_kind"]

KindOutcome = tuple[SearchResult | None, dict[str, Any]]
"""What a run of a kind returns: its search result (None for kinds with their own artifacts) and the fields
the manifest's final update records (evaluations, front size, ...)."""


class ExperimentKind(ABC):
    """One experiment kind. Subclasses set ``name`` and ``description`` and implement the abstract methods."""

    name: ClassVar[str]
    description: ClassVar[str]
    needs: ClassVar[tuple[str, ...]] = ()
    """Config sections the kind cannot run without."""
    uses: ClassVar[tuple[str, ...]] = ()
    """Optional config sections it reads; another kind's section that neither lists is refused."""
    trains_in_processes: ClassVar[bool] = False
    """Whether its supernet training can use ``distributed.processes`` > 1."""

    @abstractmethod
    def prepare(self, loaded: LoadedConfig, reporter: Reporter, placement: Any, launch: Any) -> Experiment:
        """Build and cross-check everything the run needs; every problem an InputError naming the config line."""

    @abstractmethod
    def summary(self, exp: Experiment) -> list[tuple[str, str]]:
        """``(label, text)`` rows of what a run will do (``qnas validate``, the report)."""

    def acquire(self, run_dir: Path) -> AbstractContextManager[Any]:
        """What the run must hold before it starts (e.g. its journal, which refuses a second writer); entered
        before the manifest says ``running``, its value is the ``handle`` :meth:`run` gets."""
        return nullcontext()

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


def check_sections(loaded: LoadedConfig) -> ExperimentKind:
    """The config's kind, once its sections fit it: a section it needs must be there; a section only other kinds
    use is an error naming it, not silence."""
    config = loaded.config
    try:
        kind = KINDS.get(config.kind)
    except InputError as err:
        raise loaded.error("kind", err.detail) from None
    foreign = {s for other in KINDS.names() for s in (*KINDS.get(other).needs, *KINDS.get(other).uses)}
    for section in kind.needs:
        if getattr(config, section) is None:
            raise loaded.error(section, f"missing required section for kind: {kind.name}")
    for section in sorted(foreign - set(kind.needs) - set(kind.uses)):
        if getattr(config, section) is not None:
            raise loaded.error(section, f"section {section!r} is not used by kind: {kind.name}; remove it")
    return kind


def load_experiment(path: str | Path, overrides: Sequence[str] = (), *, check_files: bool = True) -> LoadedConfig:
    """:func:`~nas.config.load_config`, then :func:`check_sections`: what every command reads a config with."""
    loaded = load_config(path, overrides, check_files=check_files)
    check_sections(loaded)
    return loaded
