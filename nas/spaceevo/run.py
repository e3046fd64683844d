"""``kind: space-search`` runs: lookup table (loaded or built) -> aging evolution -> ranked spaces.

Config section (``space_search:`` of an experiment YAML; :class:`SpaceSearchConfig`)::

    space_search:
      macro: c10
      lut: {path: null, teacher_epochs: 10, distill_steps: 40, rows: 24, backend: onnxruntime-int8}
      qt: {latency_constraints_ms: [0.5, 0.7, 0.9], n_subnets: 100000, top_k: 50, t: 0.1, a: 0.01}
      evolution: {population: 500, sample: 125, total: 5000}

Run folder: ``lut.json`` (when built here; ``lut.blocks.csv`` its timed blocks), ``teacher.pt``, and what
every kind writes (:mod:`nas.spaceevo.trials`): ``trials.jsonl`` (every scored space in order, journaled as
it is scored), ``pareto.csv/json/png``, ``hypervolume.csv/png`` and ``report.md``, whose ranking of the
distinct spaces by Q-T score has its own plot, ``qt_scores.png``. A resume scores the same evolution again
(it is seeded) and keeps the journal's lines.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nas.config_paths import ConfigPath, ExistingPath
from nas.journal import Journal, read_journal
from nas.rundir import JOURNAL, atomic_write_json, atomic_write_text, now_iso
from nas.search import SearchResult
from search_spaces import InputError
from search_spaces.errors import nearest
from search_spaces.meta import MACROS, parse_candidate
from supernets.backends import int8_backends

from .evolution import EvolutionSettings, aging_evolution
from .lut import QtLut
from .qt_score import QtScore, QtSettings, qt_score
from .trials import candidate_genome, genome_candidate, search_result, trial_record

__all__ = ["LutConfig", "QtConfig", "EvolutionConfig", "SpaceSearchConfig", "SpaceSearchResult", "run_space_search",
           "load_lut", "rank_spaces", "write_ranking"]

Log = Callable[[str], None] | None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LutConfig(_Section):
    """Where the lookup table comes from: an existing file, or built in the run folder."""

    path: ExistingPath | None = Field(None, description="an existing lookup table (JSON); omitted: build it in "
                                                        "the run")
    teacher_checkpoint: ConfigPath | None = Field(None, description="cached teacher (default: RUN_DIR/teacher.pt)")
    backend: str = Field("onnxruntime-int8", description="an INT8 latency backend (SpaceEvo scores INT8 latency)")
    teacher_epochs: int = Field(10, ge=1, le=10_000, description="epochs of the float teacher the stages are distilled"
                                                                 " from")
    distill_steps: int = Field(40, ge=1, le=1_000_000, description="block-wise distillation steps per sampled "
                                                                   "sub-stage (W8A8)")
    rows: int = Field(24, ge=2, le=10_000, description="sampled sub-stages per (stage, block, window)")
    n_features: int = Field(2048, ge=64, le=10_000_000, description="training images whose teacher features are "
                                                                     "distilled")
    n_eval: int = Field(256, ge=16, le=1_000_000, description="validation images the NSR is measured on")
    runs: int = Field(20, ge=1, le=100_000, description="timed runs per block (INT8 latency)")
    passes: int = Field(4, ge=1, le=10_000, description="interleaved timing passes")

    @field_validator("backend")
    @classmethod
    def _int8_backend(cls, value: str) -> str:
        names = int8_backends()
        if value not in names:
            raise ValueError(f"expected an INT8 latency backend{nearest(value, names)}; one of {names}")
        return value


class QtConfig(_Section):
    """The Q-T score (SpaceEvo, Wang et al., ICCV 2023): constraints, N, top-k, t and a."""

    latency_constraints_ms: list[float] = Field(min_length=1, max_length=64,
                                                description="INT8 latency constraints (ms) the Q-T score rewards low "
                                                            "loss under, one term each")
    n_subnets: int = Field(100_000, ge=1, le=10_000_000, description="subnets sampled per candidate space (N)")
    top_k: int = Field(50, ge=1, le=10_000_000, description="best subnets per constraint whose loss counts (top-k)")
    t: float = Field(0.1, gt=0, description="temperature of the score's loss term (t)")
    a: float = Field(0.01, ge=0, description="weight of the feasible fraction (a)")

    @field_validator("latency_constraints_ms")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if any(v <= 0 for v in value):
            raise ValueError("every latency constraint must be a positive number of milliseconds")
        return value

    def settings(self, seed: int) -> QtSettings:
        return QtSettings(tuple(self.latency_constraints_ms), self.n_subnets, self.top_k, self.t, self.a, seed)


class EvolutionConfig(_Section):
    """Aging evolution over candidate spaces (regularized evolution, Real et al., AAAI 2019)."""

    population: int = Field(500, ge=1, le=100_000, description="spaces alive at a time (aging evolution)")
    sample: int = Field(125, ge=1, le=100_000, description="spaces sampled per tournament; the best is mutated")
    total: int = Field(5000, ge=1, le=1_000_000, description="spaces scored in all, the initial population "
                                                              "included")

    @model_validator(mode="after")
    def _sample_fits(self) -> EvolutionConfig:
        if self.sample > self.population:
            raise ValueError(f"sample ({self.sample}) cannot exceed population ({self.population})")
        return self


class SpaceSearchConfig(_Section):
    """The ``space_search:`` section of a ``kind: space-search`` experiment."""

    macro: str = Field("c10", description="macro-architecture whose stages the candidate spaces fill (c10: 4 stages "
                                          "for 32x32 images)")
    lut: LutConfig = Field(default_factory=LutConfig, description="the Q-T lookup table: an existing JSON, or built in"
                                                                  " the run")
    qt: QtConfig = Field(description="the Q-T score settings")
    evolution: EvolutionConfig = Field(default_factory=EvolutionConfig, description="aging evolution over spaces")
    top: int = Field(10, ge=1, le=10_000, description="spaces shown in the report and the plot")

    @field_validator("macro")
    @classmethod
    def _known_macro(cls, value: str) -> str:
        if value not in MACROS:
            raise ValueError(f"unknown macro-architecture {value!r}{nearest(value, MACROS)} (known: {sorted(MACROS)})")
        return value


@dataclass(frozen=True)
class SpaceSearchResult:
    """What a space search found: distinct spaces best first, and where its artifacts are."""

    ranking: tuple[QtScore, ...]
    scored: int
    lut_path: Path
    run_dir: Path
    seconds: float
    search: SearchResult
    """The scored spaces as trials, their front and hypervolume (:mod:`nas.spaceevo.trials`)."""

    @property
    def best(self) -> QtScore:
        return self.ranking[0]


def load_lut(path: str | Path, macro: str, *, field: str = "space_search.lut.path") -> QtLut:
    """Load a table and refuse one made for another macro-architecture."""
    lut = QtLut.load(path)
    if lut.macro != macro:
        raise InputError(f"the lookup table is for macro {lut.macro!r}, the config asks for {macro!r}",
                         source=str(path), field=field)
    return lut


def _lut_for(config: SpaceSearchConfig, run_dir: Path, data: Any, seed: int, log: Log) -> tuple[QtLut, Path]:
    """The configured table, a table built earlier in this run folder, or a new one built now."""
    if config.lut.path is not None:
        return load_lut(config.lut.path, config.macro), config.lut.path
    path = run_dir / "lut.json"
    if path.exists():
        return load_lut(path, config.macro), path
    if data is None:
        raise InputError("no lookup table: set space_search.lut.path, or give the dataset to build one",
                         field="space_search.lut.path")
    from .build import LutBuildSettings, build_lut

    c = config.lut
    settings = LutBuildSettings(c.teacher_epochs, c.distill_steps, c.rows, c.n_features, c.n_eval, c.backend,
                                c.runs, c.passes, seed)
    data = data() if callable(data) else data
    teacher = c.teacher_checkpoint or run_dir / "teacher.pt"
    lut = build_lut(config.macro, data, out_path=path, teacher_checkpoint=teacher, settings=settings, log=log)
    return lut, path


def run_space_search(config: SpaceSearchConfig, *, run_dir: str | Path, seed: int = 0, data: Any = None,
                     log: Log = print, journal: Journal | None = None) -> SpaceSearchResult:
    """Evolve candidate spaces by Q-T score, journal every scored space and write the run's artifacts.

    ``data``: the dataset (``ImageSplits``, or a zero-argument loader) when the table must be built.
    ``journal``: the run's ``trials.jsonl``, already open (the runner holds it); else opened here. Lines already
    in it are kept: the seeded evolution must score the same spaces in the same order again, or the run is refused.
    """
    start, run_dir = time.perf_counter(), Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lut, lut_path = _lut_for(config, run_dir, data, seed, log)
    e, qt, path = config.evolution, config.qt.settings(seed), run_dir / JOURNAL
    prior = list(read_journal(path, repair=True).records) if path.exists() else []
    records = list(prior)  # the journal's lines, kept here as they are written
    with Journal(path) if journal is None else nullcontext(journal) as out:
        clock = [time.perf_counter()]

        def on_trial(index: int, score: QtScore) -> None:
            candidate, seconds = parse_candidate(score.candidate), time.perf_counter() - clock[0]
            clock[0] += seconds
            if index < len(prior):
                _check_prior(path, index, prior[index], candidate)
            else:
                records.append(trial_record(candidate, score, qt, batch=index // e.population, seconds=seconds,
                                            finished_at=now_iso()))
                out.append(records[-1])

        result = aging_evolution(lut, config.macro, qt, EvolutionSettings(e.population, e.sample, e.total, seed),
                                 on_trial=on_trial)
    reused = len({r["key"] for r in prior[: e.total]})
    search = search_result(records[: e.total], lut, qt, budget=e.total, reused=reused)
    seconds = time.perf_counter() - start
    _write_artifacts(run_dir, config, qt, search, result.ranking, result.history, lut, lut_path, seconds)
    if log:
        log(f"best space {result.best.candidate} (Q-T score {result.best.score:.4f}) of {len(result.ranking)} "
            f"distinct spaces scored, {len(search.front)} on the front of the per-constraint scores; artifacts in "
            f"{run_dir}")
    return SpaceSearchResult(result.ranking, len(result.history), lut_path, run_dir, seconds, search)


def _check_prior(path: Path, index: int, record: Any, candidate: Any) -> None:
    """A journaled line must hold the space the evolution scores at its position."""
    if record.get("key") != candidate_genome(candidate).key:
        raise InputError(f"line {index + 1} holds space {record.get('candidate', '?')}, but the evolution scored "
                         f"{candidate} at that step: the journal was written with another lookup table or settings; "
                         "start a new run", source=path)


def rank_spaces(lut: QtLut, candidates: Sequence[str], qt: QtSettings) -> list[QtScore]:
    """Q-T scores of the given space strings, best first (each string checked, each table entry required)."""
    parsed = [parse_candidate(c, field=f"--spaces[{i}]") for i, c in enumerate(candidates)]
    for cand in parsed:
        if cand.macro != lut.macro:
            raise InputError(f"space {cand} is for macro {cand.macro!r}, the lookup table for {lut.macro!r}",
                             field="--spaces")
    return sorted((qt_score(lut, c, qt) for c in parsed), key=lambda s: (-s.score, s.candidate))


def write_ranking(ranking: Sequence[QtScore], qt: QtSettings, out_dir: str | Path, *, top: int = 10) -> None:
    """``ranking.csv``, ``ranking.json`` and ``qt_scores.png`` in ``out_dir``."""
    out = Path(out_dir)
    limits = [f"{c:g}" for c in qt.constraints_ms]
    head = ["rank", "candidate", "score"] + [f"score@{t}ms" for t in limits] + [f"p@{t}ms" for t in limits]
    lines = [",".join(head)] + [",".join([str(i), s.candidate, f"{s.score:.6g}",
                                          *(f"{v:.6g}" for v in s.per_constraint), *(f"{v:.6g}" for v in s.feasible)])
                                for i, s in enumerate(ranking, start=1)]
    atomic_write_text(out / "ranking.csv", "\n".join(lines) + "\n")
    settings = {k: v for k, v in qt.__dict__.items() if k != "constraints_ms"}
    atomic_write_json(out / "ranking.json", {"constraints_ms": list(qt.constraints_ms), "settings": settings,
                                             "ranking": [s.to_dict() for s in ranking]})
    from .plots import plot_scores

    plot_scores(ranking[:top], qt, out / "qt_scores.png")


def _write_artifacts(run_dir: Path, config: SpaceSearchConfig, qt: QtSettings, search: SearchResult,
                     ranking: Sequence[QtScore], history: Sequence[QtScore], lut: QtLut, lut_path: Path,
                     seconds: float) -> None:
    """What every kind writes (front, hypervolume, report, through :mod:`nas.report` and :mod:`nas.plots`), with
    the ranking by Q-T score as the report's own section and plot."""
    from nas.artifacts import write_front_files
    from nas.report import write_report

    from .plots import plot_scores

    limits = config.qt.latency_constraints_ms
    write_front_files(run_dir, search, title=f"space search ({config.macro}): Q-T score terms per latency constraint",
                      hypervolume_title="space search: hypervolume after each batch",
                      pareto_fields={"macro": config.macro, "lookup_table": str(lut_path),
                                     "space_search": config.model_dump(mode="json"),
                                     "ranking": [{"rank": i, "candidate": s.candidate, "qt_score": s.score}
                                                 for i, s in enumerate(ranking[: config.top], start=1)]})
    plot_scores(ranking[: config.top], qt, run_dir / "qt_scores.png", history=history)
    info = lut.info
    setup = {
        "macro": config.macro,
        "lookup table": f"`{lut_path}` ({len(lut.entries)} entries, {lut.backend} on {lut.device}, fixed part "
                        f"{lut.fixed_ms:.3f} ms)",
        "teacher": f"{info.get('teacher', '?')}, val accuracy {info.get('teacher_val_accuracy', float('nan')):.3f}",
        "Q-T score": f"N = {config.qt.n_subnets}, top-{config.qt.top_k}, t = {config.qt.t}, a = {config.qt.a}, "
                     f"constraints {limits} ms",
        "aging evolution": f"population {config.evolution.population}, sample {config.evolution.sample}, "
                           f"{len(history)} spaces scored ({len(ranking)} distinct) in {seconds:.1f} s"}
    rows = [f"| {i} | `{s.candidate}` | {s.score:.4f} | " + " | ".join(f"{v:.4f}" for v in s.per_constraint)
            + f" | {_stages(s.candidate)} |" for i, s in enumerate(ranking[: config.top], start=1)]
    section = [f"## Best {len(rows)} spaces by Q-T score", "",
               "SpaceEvo's pick is the first; the front above holds the spaces no other beats under every "
               "constraint.", "",
               "| # | space | Q-T score | " + " | ".join(f"@{t:g} ms" for t in limits) + " | stages |",
               "|---|---|---|" + "---|" * len(limits) + "---|", *rows, "", "![Q-T scores](qt_scores.png)", ""]
    write_report(run_dir / "report.md", search, title=f"Space search ({config.macro})", setup=setup,
                 sources=search.trials[0].sources if search.trials else {},
                 sections=section, columns={"space": lambda t: f"`{genome_candidate(t.genome)}`"})


def _stages(candidate: str) -> str:
    """The stages of a space for a Markdown table cell (its ``|`` separators escaped)."""
    return parse_candidate(candidate).describe().replace("|", "\\|")
