"""``kind: space-search``: rank candidate search spaces by SpaceEvo's Q-T score, with aging evolution over them.

The dataset is loaded only when the lookup table must be built (then in the run); the procedure is
:mod:`nas.spaceevo.run`. Every scored space is a trial of the run's journal, and the artifacts are those of
every kind (:mod:`nas.spaceevo.trials`): the front maximises the Q-T score's term under each latency constraint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from nas.config import ExperimentConfig, LoadedConfig
from nas.experiment import Experiment, Reporter
from nas.journal import read_journal
from nas.rundir import JOURNAL
from nas.spaceevo.run import SpaceSearchConfig
from search_spaces import InputError

from .base import ExperimentKind, KindOutcome, register_kind

__all__ = ["SpaceSearchExperimentConfig", "SpaceSearchKind"]


class SpaceSearchExperimentConfig(ExperimentConfig):
    """``kind: space-search``: SpaceEvo's search over candidate spaces, its settings in ``space_search`` (no
    ``search_space``: the spaces are what it searches)."""

    space_search: SpaceSearchConfig = Field(description="SpaceEvo settings: macro-architecture, lookup table, Q-T "
                                                        "score, evolution")


@register_kind
class SpaceSearchKind(ExperimentKind):
    """SpaceEvo's space search (see the module docstring)."""

    name = "space-search"
    config_model = SpaceSearchExperimentConfig
    description = "rank candidate search spaces by Q-T score (SpaceEvo)"

    def prepare(self, loaded: LoadedConfig, reporter: Reporter, placement: Any, launch: Any) -> Experiment:
        from supernets.data import dataset_kind, load_dataset

        section = loaded.config.dataset
        try:
            kind = dataset_kind(section.name)
        except InputError as err:
            raise loaded.error("dataset.name", err.detail) from None
        if kind != "image":
            raise loaded.error("dataset.name", f"space search ranks image-model spaces; {section.name!r} is a "
                                               f"{kind} dataset")

        def load() -> Any:
            try:
                return load_dataset(section.name, root=section.root, seed=loaded.config.seed, **section.options)
            except InputError as err:
                raise loaded.error("dataset", err.detail) from None

        return Experiment(loaded, None, {}, f"{section.name} (loaded if the lookup table is built)", load, (), (), 0,
                          placement=placement, launch=launch)

    def summary(self, exp: Experiment) -> list[tuple[str, str]]:
        config = exp.loaded.config
        s = config.space_search
        lut = (f"{s.lut.path}" if s.lut.path else
               f"build the lookup table ({s.lut.backend}, teacher {s.lut.teacher_epochs} epochs, {s.lut.rows} rows)")
        return self.head_rows(exp) + [
            ("kind", f"space-search: {self.description}"), ("dataset", exp.dataset), ("macro", s.macro),
            ("lookup table", lut),
            ("Q-T score", f"constraints {s.qt.latency_constraints_ms} ms, N {s.qt.n_subnets}, top-{s.qt.top_k}, "
                          f"t {s.qt.t:g}, a {s.qt.a:g}"),
            ("evolution", f"population {s.evolution.population}, sample {s.evolution.sample}, "
                          f"{s.evolution.total} spaces scored"),
            ("output", f"{config.output.root}/{config.name}-<timestamp>/")]

    def run(self, exp: Experiment, run_dir: Path, reporter: Reporter, *, resume: bool,
            handle: Any = None) -> KindOutcome:
        from nas.spaceevo.run import run_space_search

        config = exp.loaded.config
        try:
            found = run_space_search(config.space_search, run_dir=run_dir, seed=config.seed, data=exp.data,
                                     log=reporter.info, journal=handle)
        except InputError as err:
            if err.source is not None or not (err.field or "").startswith("space_search"):
                raise
            raise exp.loaded.error(err.field, err.detail) from None
        search = found.search
        return None, {"evaluations": len(search.trials), "front_size": len(search.front),
                      "hypervolume": search.hypervolume, "stop_reason": search.stop_reason}

    def front_definition(self, loaded: LoadedConfig) -> tuple[Sequence[Any], Sequence[Any]]:
        from nas.spaceevo.trials import objectives

        return objectives(loaded.config.space_search.qt.latency_constraints_ms), ()

    def show(self, run_dir: Path, loaded: LoadedConfig, out: Any, show_front: Callable[[Path], None]) -> None:
        """The best spaces by Q-T score (every scored space is in trials.jsonl), then the front."""
        from nas.spaceevo.table import ranking_table
        from nas.spaceevo.trials import score_of

        config = loaded.config
        limits = config.space_search.qt.latency_constraints_ms
        records = {r["key"]: r for r in read_journal(run_dir / JOURNAL).records}.values()
        ranking = sorted((score_of(r, limits) for r in records), key=lambda s: (-s.score, s.candidate))
        top = config.space_search.top
        out.print(ranking_table(ranking[:top], config.space_search.qt.settings(config.seed),
                                f"best {min(len(ranking), top)} of {len(ranking)} spaces by Q-T score (all in "
                                "trials.jsonl, ranked in report.md)"))
        show_front(run_dir)

    def space_info(self, exp: Experiment) -> dict[str, Any]:
        return {"macro": exp.loaded.config.space_search.macro, "dataset": exp.loaded.config.dataset.name}
