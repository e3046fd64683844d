"""Accuracy predictors in a run: config checks, the searcher's context, and the predictor artifacts.

A run with a predictor-guided searcher writes ``predictor_report.json`` (cross-validated and
genuinely held-out quality per round: each round's picks were predicted before being measured)
and a ``report.md`` section. Every run with measured accuracy also writes ``predictor_dataset.csv``
(genome → measured accuracy and how it was measured), which later runs reuse with
``predictors: {dataset: PATH}``. With ``predictors: {quant_sensitivity: true}`` the per-layer
quantization sensitivity is measured on the supernet before the search and written as
``quant_sensitivity.json`` (a resumed run reads it back; another run can name it instead of ``true``).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nas.bit_stage import bit_sensitivity, check_bit_allocation, check_hessian_space, hessian_samples, hessian_table
from nas.config import LoadedConfig
from nas.rundir import atomic_write_json
from nas.search import SearchResult
from search_spaces import SearchSpace
from search_spaces.atomic import append_jsonl, read_partial_records
from search_spaces.errors import nearest

__all__ = ["uses_predictors", "check_predictors", "search_context", "write_predictor_artifacts", "DATASET_CSV"]

DATASET_CSV = "predictor_dataset.csv"
#: Validation images the output divergence of each sensitivity variant is averaged over: the table only
#: ranks layers, and on the CIFAR-10 supernet more images did not make the predictors rank better.
SENSITIVITY_IMAGES = 256
REPORT_JSON = "predictor_report.json"


def uses_predictors(algorithm: str) -> bool:
    """Whether the searcher is model-based (takes a search context)."""
    from nas.searchers import searcher_class

    return "context" in inspect.signature(searcher_class(algorithm).__init__).parameters


def check_predictors(loaded: LoadedConfig, space: SearchSpace) -> None:
    """A ``predictors`` section must matter for the searcher, name known models and load its dataset."""
    check_bit_allocation(loaded, space)
    section, algorithm = loaded.config.predictors, loaded.config.search.algorithm
    if section is None:
        return
    if not uses_predictors(algorithm):
        raise loaded.error("predictors", f"searcher {algorithm!r} does not use predictors, so this section would "
                                         "be ignored; use search.algorithm: predictor-nsga2 or remove it")
    from predictors.accuracy import list_models

    known = [*list_models(), "auto", "ensemble"]
    for field, name in [("predictors.model", section.model)] + [
            (f"predictors.candidates[{i}]", c) for i, c in enumerate(section.candidates)]:
        if name not in known or (field != "predictors.model" and name in ("auto", "ensemble")):
            raise loaded.error(field, f"unknown model {name!r}{nearest(name, known)} (known: {', '.join(known)})")
    prior_rows(loaded, space)
    if section.quant_sensitivity in (True, "hessian") and loaded.config.supernet is None:
        word = "true" if section.quant_sensitivity is True else "hessian"
        raise loaded.error("predictors.quant_sensitivity", f"{word} measures the sensitivity on the supernet, but this "
                                                           "config has no supernet section; give the path of a "
                                                           "saved sensitivity table or remove it")
    if section.quant_sensitivity == "hessian":
        check_hessian_space(loaded, space, "predictors.quant_sensitivity", instead="true")
    if isinstance(section.quant_sensitivity, Path):
        from predictors.accuracy import QuantSensitivity

        QuantSensitivity.load(section.quant_sensitivity, space)


def prior_rows(loaded: LoadedConfig, space: SearchSpace) -> list[tuple[Any, dict[str, float]]]:
    """``(genome, {"accuracy": value})`` from ``predictors.dataset`` (checked row by row)."""
    section = loaded.config.predictors
    if section is None or section.dataset is None:
        return []
    from predictors.accuracy import PredictorDataset

    data = PredictorDataset.load(section.dataset, space)
    return [(g, {"accuracy": float(a)}) for g, a in zip(data.genomes, data.accuracies)]


def search_context(loaded: LoadedConfig, space: SearchSpace, cheap: Any, *, subnets: Any = None,
                   run_dir: Path | None = None, log: Callable[[str], None] = print) -> Any:
    """The :class:`SearchContext` of a model-based searcher (``None`` for the others).

    ``subnets`` (the run's :class:`~supernets.evaluate.SubnetEvaluator`) and ``run_dir`` are needed
    when ``predictors.quant_sensitivity`` is ``true``.
    """
    if not uses_predictors(loaded.config.search.algorithm):
        return None
    from nas.config_sections import PredictorsSection
    from nas.searchers import SearchContext

    section = loaded.config.predictors or PredictorsSection()
    options = dict(section.predictor_options())
    table = quant_sensitivity(section.quant_sensitivity, space, subnets, run_dir, log,
                              hessian_samples=hessian_samples(loaded))
    if table is not None:
        options["sensitivity"] = table
    return SearchContext(cheap=cheap, model=section.model, model_options=options, prior=prior_rows(loaded, space),
                         sensitivity=bit_sensitivity(loaded, space, subnets, run_dir, log, kl=quant_sensitivity))


def quant_sensitivity(setting: bool | str | Path, space: SearchSpace, subnets: Any, run_dir: Path | None,
                      log: Callable[[str], None] = print, *, hessian_samples: int = 16) -> Any:
    """The run's :class:`QuantSensitivity`: ``None`` (off), loaded from a path, HAWQ-V3's Hessian table
    (``hessian``), or ZeroQ's KL measured on the supernet (``SENSITIVITY_IMAGES`` validation images); measured
    tables are saved in the run directory and reread when resuming."""
    if setting is False:
        return None
    from predictors.accuracy import SENSITIVITY_JSON, QuantSensitivity

    if isinstance(setting, Path):
        return QuantSensitivity.load(setting, space)
    if setting == "hessian":
        return hessian_table(space, subnets, run_dir, log, samples=hessian_samples)
    if subnets is None or run_dir is None:
        raise ValueError("measuring the quantization sensitivity needs the supernet evaluator and the run directory")
    path = Path(run_dir) / SENSITIVITY_JSON
    if path.exists():
        log(f"quantization sensitivity: reusing {path}")
        return QuantSensitivity.load(path, space)
    import torch

    from supernets.sensitivity import measure_context_sensitivity, measure_quant_sensitivity

    start = time.perf_counter()
    images = (subnets.supernet, torch.cat(subnets.calib), subnets.eval_x[:SENSITIVITY_IMAGES])
    partial = path.with_name(path.name + ".partial.jsonl")
    memo = RecordedMemo(partial, {"space": space.fingerprint(), "images": SENSITIVITY_IMAGES,
                                  "calib_images": len(images[1])})
    values = measure_quant_sensitivity(*images, batch_size=subnets.batch_size, memo=memo)
    contexts = measure_context_sensitivity(*images, batch_size=subnets.batch_size, memo=memo)
    table = QuantSensitivity(space, values, contexts=contexts)
    table.save(path)
    partial.unlink(missing_ok=True)
    log(f"quantization sensitivity of {len(values)} genes (+ {len(contexts)} contexts of declared interactions) "
        f"measured in {time.perf_counter() - start:.1f} s ({SENSITIVITY_IMAGES} validation images): {path}")
    return table


class RecordedMemo:
    """Sensitivity variants measured so far, one fsync'd line each (``<table>.partial.jsonl``, first line the
    settings): a run killed mid-measurement re-measures only the variant in flight when it resumes."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        records, _ = read_partial_records(path, meta)  # made with other settings: deleted, measured afresh
        self.path = path
        self.values = {str(r["key"]): float(r["kl"]) for r in records if "key" in r and "kl" in r}
        if not path.exists():
            append_jsonl(path, [meta])

    def get(self, key: str) -> float | None:
        return self.values.get(key)

    def put(self, key: str, value: float) -> None:
        append_jsonl(self.path, [{"key": key, "kl": value}])
        self.values[key] = value


def write_predictor_artifacts(run_dir: Path, searcher: Any, result: SearchResult, space: SearchSpace,
                              measured: Sequence[str]) -> list[str]:
    """Write the dataset CSV and (for predictor-guided searches) the report; return report.md lines."""
    lines: list[str] = []
    if "accuracy" in measured:
        from predictors.accuracy import PredictorDataset

        data = PredictorDataset(space)
        for trial in result.trials:
            data.add(trial.genome, trial.metrics["accuracy"], measured_by="supernet")
        data.save(Path(run_dir) / DATASET_CSV)
    if hasattr(searcher, "report"):
        report = searcher.report()
        atomic_write_json(Path(run_dir) / REPORT_JSON, report)
        lines = _report_lines(report)
    return lines


#: The sensitivity a predictor report names (its table's metric), in words.
SENSITIVITY_NAMES = {"kl": "ZeroQ's output KL", "hawq": "HAWQ-V3's Hessian trace × quantization perturbation"}


def feature_summary(reports: Any) -> str:
    """What the predictors of the last round saw, in words (from their reports)."""
    reports = list(reports)
    parts = ["one-hot genes"]
    if any(rep.get("interactions") for rep in reports):
        parts.append("the space's gene interactions (joint one-hot of declared pairs)")
    if any(rep.get("analytic_features") for rep in reports):
        parts += ["log costs", "the bit-width histogram"]
    tables = {rep.get("quant_sensitivity") for rep in reports} - {None, False}
    for name in sorted({SENSITIVITY_NAMES.get(metric, metric) for metric in tables}):
        parts.append(f"each genome's summed per-layer quantization sensitivity ({name})")
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]


def _report_lines(report: dict[str, Any]) -> list[str]:
    lines = ["## Predictors", "", f"`{report['searcher']}` measured {report['n_measured']} candidates "
             f"({report['n_startup_trials']} random to start) and predicted {', '.join(report['predicted_metrics'])} "
             f"for everything else ({report['n_prior_rows']} rows from an earlier run). Held-out: each round's "
             "picks were predicted *before* they were measured. Details: `predictor_report.json`.", ""]
    level = round(100 * (1 - report["alpha"]))
    lines += [f"| metric | held-out pairs | Kendall τ | Spearman ρ | RMSE | MAPE % | {level}% interval coverage |",
              "|---|---|---|---|---|---|---|"]
    for metric, m in report["held_out_pooled"].items():
        lines.append(f"| {metric} | {m['n']} | {m['kendall_tau']:.3f} | {m['spearman']:.3f} | {m['rmse']:.4f} | "
                     f"{m['mape']:.2f} | {m.get('coverage', float('nan')):.3f} |")
    last = next((r for r in reversed(report["rounds"]) if r.get("predictors")), None)
    if last is not None:
        lines += ["", f"Features: {feature_summary(last['predictors'].values())}."]
        lines += ["", f"Last round ({last['n_train']} training samples), cross-validated:", "",
                  "| metric | model | Kendall τ | Spearman ρ | RMSE | MAPE % |", "|---|---|---|---|---|---|"]
        for metric, rep in last["predictors"].items():
            cv = rep.get("cv", {})
            lines.append(f"| {metric} | {rep.get('model')} | {cv.get('kendall_tau', float('nan')):.3f} | "
                         f"{cv.get('spearman', float('nan')):.3f} | {cv.get('rmse', float('nan')):.4f} | "
                         f"{cv.get('mape', float('nan')):.2f} |")
    return lines + [""]
