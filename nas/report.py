"""Run artifacts in plain formats: ``pareto.csv``, ``pareto.json``, ``hypervolume.csv``, ``subnets/``, ``report.md``.

Why these: CSV for spreadsheets and pandas, JSON for programs (the ``export`` command reads it),
Markdown for people. Each says how every metric was obtained (``measured``, ``predicted`` or
``analytic``) so nobody mistakes a predicted front for a measured one. All writes are atomic.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from nas.pareto import spread
from nas.rundir import atomic_write_json, atomic_write_text
from nas.search import HypervolumePoint, SearchResult, Trial
from search_spaces import SearchSpace

__all__ = ["metric_columns", "write_pareto_csv", "write_pareto_json", "write_hypervolume_csv", "export_subnets",
           "write_report", "fmt"]


def fmt(value: float) -> str:
    """Readable number: integers with separators, large values in e-notation, else 4 significant digits."""
    if value != value:  # NaN
        return "nan"
    if abs(value) >= 1e7:
        return f"{value:.3e}"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.4g}"


def metric_columns(result: SearchResult) -> list[str]:
    """Objectives first, then constrained metrics, then every other metric (sorted)."""
    columns = [o.metric for o in result.objectives]
    columns += [c.metric for c in result.constraints if c.metric not in columns]
    seen = set(columns)
    others = sorted({m for t in (*result.trials, *result.front) for m in t.metrics} - seen)
    return list(dict.fromkeys(columns + others))


def _trial_dict(trial: Trial, rank: int) -> dict[str, Any]:
    return {"rank": rank, "key": trial.key, "metrics": dict(trial.metrics), "sources": dict(trial.sources),
            "genome": trial.genome.to_dict(), "batch": trial.batch}


def write_pareto_csv(path: str | Path, result: SearchResult) -> None:
    """The feasible front, ordered by the first objective; ``rank`` is the position along it (1 = best first objective)."""
    columns = metric_columns(result)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["rank", "key", *columns, "genome"])
    for rank, trial in enumerate(result.front, start=1):
        writer.writerow([rank, trial.key, *[repr(trial.metrics.get(m, float("nan"))) for m in columns],
                         json.dumps(trial.genome.to_dict(), separators=(",", ":"))])
    atomic_write_text(path, buffer.getvalue())


def write_pareto_json(path: str | Path, result: SearchResult, **extra: Any) -> None:
    """Front, closest infeasible candidates, objectives, constraints, hypervolume and its box."""
    atomic_write_json(path, {
        **extra,
        "objectives": [{"metric": o.metric, "direction": o.direction} for o in result.objectives],
        "constraints": [str(c) for c in result.constraints],
        "feasible": result.feasible,
        "stop_reason": result.stop_reason,
        "evaluations": len(result.trials),
        "budget": result.budget,
        "hypervolume": result.hypervolume,
        "normalization": result.normalization.to_dict(),
        "front": [_trial_dict(t, i) for i, t in enumerate(result.front, start=1)],
        "closest": [_trial_dict(t, i) for i, t in enumerate(result.closest, start=1)],
    })


def write_hypervolume_csv(path: str | Path, history: Sequence[HypervolumePoint]) -> None:
    """``batch,evaluations,front_size,hypervolume``: one row per batch so far."""
    lines = ["batch,evaluations,front_size,hypervolume"]
    lines += [f"{p.batch},{p.evaluations},{p.front_size},{p.hypervolume!r}" for p in history]
    atomic_write_text(path, "\n".join(lines) + "\n")


def export_subnets(run_dir: str | Path, result: SearchResult, space: SearchSpace, top: int) -> list[Path]:
    """``subnets/<key>/arch.json`` for ``top`` front members spread along the front (extremes included)."""
    written = []
    for index in spread(len(result.front), top):
        trial = result.front[index]
        path = Path(run_dir) / "subnets" / trial.key / "arch.json"
        atomic_write_json(path, {
            **_trial_dict(trial, index + 1),
            "space": {"name": space.name, "options": space.options(), "fingerprint": space.fingerprint()},
            "blocks": space.block_records(trial.genome),
        })
        written.append(path)
    return written


def _table(result: SearchResult, trials: Sequence[Trial], extra: Mapping[str, list[str]] | None = None) -> list[str]:
    columns = metric_columns(result)
    head = ["#", "key", *columns, *(extra or {})]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, trial in enumerate(trials):
        cells = [str(i + 1), f"`{trial.key}`", *[fmt(trial.metrics.get(m, float("nan"))) for m in columns]]
        cells += [values[i] for values in (extra or {}).values()]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _provenance(result: SearchResult, sources: Mapping[str, str]) -> list[str]:
    roles = {o.metric: f"objective ({o.direction})" for o in result.objectives}
    for c in result.constraints:
        roles[c.metric] = ", ".join(filter(None, [roles.get(c.metric, ""), f"constraint `{c}`"]))
    lines = ["| metric | obtained | used as |", "|---|---|---|"]
    lines += [f"| {m} | {s} | {roles.get(m, 'recorded')} |" for m, s in sources.items()]
    kinds = set(sources.values())
    if kinds == {"analytic"}:
        lines += ["", "Every value in this run is **analytic**: computed from the architecture and its bit-widths, "
                  "nothing trained, measured or predicted. **Accuracy is not an objective**: add a `supernet:` section "
                  "to measure it; without it this front is a cost trade-off, not a model selection."]
    return lines


def write_report(path: str | Path, result: SearchResult, *, title: str, setup: Mapping[str, str],
                 sources: Mapping[str, str], exported: Sequence[Path] = (), notes: Sequence[str] = (),
                 sections: Sequence[str] = (), columns: Mapping[str, Callable[[Trial], str]] | None = None) -> None:
    """``report.md``: setup, provenance of every metric, the front (or the closest misses), hypervolume.

    ``columns``: extra ``{heading: text of a trial}`` columns of the front's table (e.g. a readable name)."""
    named = {k: [f(t) for t in (result.front or result.closest)] for k, f in (columns or {}).items()}
    lines = [f"# {title}", "", f"{len(result.trials)} distinct candidates evaluated of a budget of {result.budget} "
             f"in {result.batches} batches ({result.evaluated} in this session, {result.reused} reused from the "
             f"journal). {result.stop_reason[:1].upper()}{result.stop_reason[1:]}.", ""]
    lines += [f"> {note}" for note in notes] + ([""] if notes else [])
    lines += ["## Setup", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in setup.items()] + [""]
    lines += ["## How each metric was obtained", "", *_provenance(result, sources), ""]
    if result.feasible:
        lines += [f"## Pareto front ({len(result.front)} subnets)", "", "Ordered by the first objective.", "",
                  *_table(result, result.front, named), "", "![Pareto front](pareto.png)", ""]
    else:
        violation = {**named, "violated": [", ".join(str(c) for c in result.constraints
                                            if c.violation(t.metrics[c.metric]) > 0) for t in result.closest]}
        lines += ["## No candidate met the constraints", "",
                  "The closest candidates (smallest total violation relative to each bound):", "",
                  *_table(result, result.closest, violation), "", "![Candidates](pareto.png)", ""]
    lines += list(sections)
    norm = result.normalization
    lines += ["## Hypervolume", "", f"Final hypervolume {result.hypervolume:.4f} in a fixed box: objectives scaled "
              f"so that the space's smallest and largest subnets span [0, 1] (ideal {[fmt(v) for v in norm.ideal]}, "
              f"nadir {[fmt(v) for v in norm.nadir]}, in minimisation terms), reference point "
              f"{norm.reference_point.tolist()}; comparable across runs on the same space and objectives. "
              "Per batch: `hypervolume.csv`.", "", "![Hypervolume](hypervolume.png)", ""]
    if exported:
        models = any((p.parent / "model.pt2").exists() for p in exported)
        lines += ["## Exported subnets", "", "Subnets spread along the front: `arch.json` (genome, blocks, metrics)"
                  + (" and `model.pt2` (the standalone fake-quantized model: `torch.export.load(path).module()`)."
                     if models else "; no weights without a supernet."), ""]
        lines += [f"- `{p.parent.parent.name}/{p.parent.name}/{p.name}`" for p in exported] + [""]
    atomic_write_text(path, "\n".join(lines))
