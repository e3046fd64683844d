"""Scored spaces as trials: the journal records, front and artifacts every experiment kind shares.

A space search writes what a CNN search writes, through the same code (:mod:`nas.journal`,
:mod:`nas.report`, :mod:`nas.plots`): every scored space is a journal line of ``trials.jsonl`` (its
genome: block type and width window per stage); its metrics are the Q-T score and, per latency
constraint T, ``qt:Tms`` (the score's term), ``feasible:Tms`` (p) and ``top_loss:Tms`` (L_top). The
front maximises the per-constraint terms: the spaces no other space beats under every constraint. The
space with the highest Q-T score (SpaceEvo's pick) is always on it, since a sum of the terms is
maximised by a Pareto-optimal space. Every ``population`` scored spaces are a batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nas.objectives import Objective, objective_matrix
from nas.pareto import Normalization, front_indices, hypervolume
from nas.search import HypervolumePoint, SearchResult, Trial
from search_spaces import InputError
from search_spaces.genome import Genome
from search_spaces.meta import BLOCK_TYPES, CandidateSpace

from .lut import QtLut
from .qt_score import QtScore, QtSettings

__all__ = ["SOURCE", "objectives", "candidate_genome", "genome_candidate", "trial_record", "score_of",
           "search_result", "normalization"]

SOURCE = "lookup table"
"""How every metric of a scored space was obtained: sampled from the lookup table (measured NSR and latency)."""
_BLOCK_INDEX = {t.name: i for i, t in enumerate(BLOCK_TYPES)}


def _limit(limit_ms: float) -> str:
    return f"{limit_ms:g}ms"


def objectives(constraints_ms: Sequence[float]) -> tuple[Objective, ...]:
    """The front's objectives: the Q-T score's term under each latency constraint, maximised."""
    return tuple(Objective(f"qt:{_limit(t)}", "max") for t in constraints_ms)


def candidate_genome(candidate: CandidateSpace) -> Genome:
    """``s<i>.block`` (the block type's name) and ``s<i>.window`` of every stage."""
    genes: list[tuple[str, Any]] = []
    for stage, block, window in candidate.combos():
        genes += [(f"s{stage + 1}.block", BLOCK_TYPES[block].name), (f"s{stage + 1}.window", int(window))]
    return Genome(f"spaceevo-{candidate.macro}", tuple(genes))


def genome_candidate(genome: Genome, *, source: str | None = None) -> CandidateSpace:
    """Inverse of :func:`candidate_genome` (a journal's genome read back; a foreign one is an InputError)."""
    macro = genome.space.removeprefix("spaceevo-")
    values = genome.as_dict()
    stages = len(values) // 2
    try:
        blocks = tuple(_BLOCK_INDEX[values[f"s{i + 1}.block"]] for i in range(stages))
        windows = tuple(int(values[f"s{i + 1}.window"]) for i in range(stages))
    except (KeyError, TypeError, ValueError):
        raise InputError(f"genome {genome.to_dict()} is not a candidate space (expected s<i>.block, a block type "
                         f"of {sorted(_BLOCK_INDEX)}, and s<i>.window per stage)", source=source,
                         field="genome") from None
    if not genome.space.startswith("spaceevo-") or 2 * stages != len(values):
        raise InputError(f"genome of space {genome.space!r} is not a candidate space of a space search",
                         source=source, field="genome")
    return CandidateSpace(macro, blocks, windows)


def trial_record(candidate: CandidateSpace, score: QtScore, qt: QtSettings, *, batch: int, seconds: float,
                 finished_at: str) -> dict[str, Any]:
    """The journal line of one scored space (the :mod:`nas.journal` keys, plus its ``candidate`` string)."""
    metrics = {"qt_score": score.score}
    for k, limit in enumerate(qt.constraints_ms):
        metrics[f"qt:{_limit(limit)}"] = score.per_constraint[k]
        metrics[f"feasible:{_limit(limit)}"] = score.feasible[k]
        metrics[f"top_loss:{_limit(limit)}"] = score.top_loss[k]
    trial = Trial(candidate_genome(candidate), metrics, dict.fromkeys(metrics, SOURCE), seconds, batch, finished_at)
    return {**trial.to_record(), "candidate": str(candidate)}


def score_of(record: Mapping[str, Any], constraints_ms: Sequence[float]) -> QtScore:
    """The :class:`QtScore` a journal line holds."""
    m = record["metrics"]
    limits = [_limit(t) for t in constraints_ms]
    return QtScore(str(record["candidate"]), float(m["qt_score"]), tuple(float(m[f"qt:{t}"]) for t in limits),
                   tuple(float(m[f"feasible:{t}"]) for t in limits), tuple(float(m[f"top_loss:{t}"]) for t in limits))


def normalization(lut: QtLut, constraints_ms: Sequence[float]) -> Normalization:
    """The hypervolume box: a term is 0 when nothing meets its constraint and at most 1 / (the smallest loss any
    subnet of the table can have: per stage, the smallest NSR of any entry), comparable across runs on one table."""
    stages = sorted({combo[0] for combo in lut.entries})
    smallest = sum(min(float(np.min(e.nsr)) for c, e in lut.entries.items() if c[0] == s) for s in stages)
    best = 1.0 / smallest if smallest > 0 else 1.0
    return Normalization(tuple(-best for _ in constraints_ms), tuple(0.0 for _ in constraints_ms))


def search_result(records: Sequence[Mapping[str, Any]], lut: QtLut, qt: QtSettings, *, budget: int,
                  reused: int) -> SearchResult:
    """The run's :class:`SearchResult` from its journal lines in scoring order (a space scored twice is one trial;
    the hypervolume after every batch)."""
    objs = objectives(qt.constraints_ms)
    norm = normalization(lut, qt.constraints_ms)
    trials: dict[str, Trial] = {}
    history: list[HypervolumePoint] = []
    front_at: np.ndarray = np.zeros(0, dtype=int)  # positions in ``trials`` of the front after the last batch
    batches = sorted({int(r["batch"]) for r in records})
    for batch in batches:
        for r in records:
            if int(r["batch"]) == batch and r["key"] not in trials:
                trials[r["key"]] = Trial(Genome.from_dict(r["genome"]), dict(r["metrics"]), dict(r["sources"]),
                                         float(r["seconds"]), batch, str(r["finished_at"]))
        F = objective_matrix([t.metrics for t in trials.values()], objs)
        front_at = front_indices(F, np.zeros(len(F)))
        history.append(HypervolumePoint(batch, len(trials), len(front_at), hypervolume(F[front_at], norm)))
    every = tuple(trials.values())
    front = sorted((every[i] for i in front_at), key=lambda t: (-t.metrics[objs[0].metric], t.key))
    scored = len(records)
    reason = (f"all {budget} spaces of the budget scored ({len(every)} distinct)" if scored >= budget else
              f"{scored} of {budget} spaces scored")
    return SearchResult(every, tuple(front), (), objs, (), budget, len(every) - reused, reused, len(history),
                        tuple(history), norm, reason)
