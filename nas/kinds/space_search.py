"""``kind: space-search``: rank candidate search spaces by SpaceEvo's Q-T score, with aging evolution over them.

The dataset is loaded only when the lookup table must be built (then in the run); the procedure and its
artifacts (``ranking.csv/json``, ``spaces.jsonl``, ``qt_scores.png``) are :mod:`nas.spaceevo.run`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nas.config import LoadedConfig
from nas.experiment import Experiment, Reporter
from search_spaces import InputError

from .base import ExperimentKind, KindOutcome, register_kind

__all__ = ["SpaceSearchKind"]


@register_kind
class SpaceSearchKind(ExperimentKind):
    """SpaceEvo's space search (see the module docstring)."""

    name = "space-search"
    needs = ("space_search",)
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
            run_space_search(config.space_search, run_dir=run_dir, seed=config.seed, data=exp.data,
                             log=reporter.info)
        except InputError as err:
            if err.source is not None or not (err.field or "").startswith("space_search"):
                raise
            raise exp.loaded.error(err.field, err.detail) from None
        return None, {}

    def front_definition(self, loaded: LoadedConfig) -> Any:
        raise InputError("a space-search run ranks search spaces and has no Pareto front; see its ranking.csv "
                         "and report.md", source=loaded.source, field="kind")

    def show(self, run_dir: Path, loaded: LoadedConfig, out: Any, show_front: Callable[[Path], None]) -> None:
        """The best spaces by Q-T score (all in ranking.csv)."""
        from nas.spaceevo.qt_score import QtScore
        from nas.spaceevo.table import ranking_table

        config = loaded.config
        ranking = [QtScore.from_dict(r) for r in json.loads((run_dir / "ranking.json").read_text())["ranking"]]
        qt = config.space_search.qt.settings(config.seed)
        top = config.space_search.top
        out.print(ranking_table(
            ranking[:top], qt, f"best {min(len(ranking), top)} of {len(ranking)} spaces by Q-T score (all in "
                               "ranking.csv)"))

    def space_info(self, exp: Experiment) -> dict[str, Any]:
        return {"macro": exp.loaded.config.space_search.macro, "dataset": exp.loaded.config.dataset.name}
