"""The sensitivity table a bit-allocation search (``ilp-bits``, ``nas-then-ilp``) minimises, in a run.

``search.options.sensitivity``: ``hessian`` (default) measures HAWQ-V3's costs on the run's supernet and
saves ``hessian_sensitivity.json`` in the run folder (a resumed run reads it back); ``kl`` uses ZeroQ's
output KL (``quant_sensitivity.json``, as ``predictors.quant_sensitivity: true``); any other value is the
path of a saved table, which the searcher loads itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nas.config import LoadedConfig
from search_spaces import SearchSpace

__all__ = ["is_bit_allocator", "check_bit_allocation", "check_hessian_space", "bit_sensitivity", "hessian_table",
           "hessian_samples", "HESSIAN_IMAGES"]

#: Validation images the loss and its Hessian are averaged over (two batches of 128).
HESSIAN_IMAGES = 256


def is_bit_allocator(algorithm: str) -> bool:
    """Whether the searcher allocates bits from a sensitivity table."""
    from nas.searchers import list_searchers, searcher_class

    return algorithm in list_searchers() and getattr(searcher_class(algorithm), "finite", False)


def _setting(loaded: LoadedConfig) -> tuple[str, int]:
    options = loaded.config.search.options
    return str(options.get("sensitivity", "hessian")), hessian_samples(loaded)


def hessian_samples(loaded: LoadedConfig) -> int:
    """Rademacher vectors of the run's Hessian table (``search.options.hessian_samples`` of a bit allocator, else
    16): the predictors' feature and the ILP's costs of one run are one table."""
    return loaded.config.search.options.get("hessian_samples", 16)


def check_bit_allocation(loaded: LoadedConfig, space: SearchSpace) -> None:
    """A measured sensitivity needs a supernet, and the Hessian one a supernet it can be measured on (before any
    work: one error naming the option)."""
    from nas.searchers.bit_allocation import SENSITIVITY_SOURCES

    if not is_bit_allocator(loaded.config.search.algorithm):
        return
    _check_budget_metrics(loaded)
    setting, _ = _setting(loaded)
    if setting in SENSITIVITY_SOURCES and loaded.config.supernet is None:
        raise loaded.error("search.options.sensitivity", f"{setting!r} is measured on the supernet, but this config "
                                                         "has no supernet section; add one or give the path of a "
                                                         "saved sensitivity table")
    if setting == "hessian":
        check_hessian_space(loaded, space, "search.options.sensitivity", instead="kl")


def check_hessian_space(loaded: LoadedConfig, space: SearchSpace, field: str, *, instead: str) -> None:
    """The Hessian table needs a supernet that says which quantizers each gene sets (``gene_quantizers`` and
    ``reference_modes``, as the CNN and transformer supernets do): another family's space is one error."""
    from supernets.families import supernet_class

    family = supernet_class(space)
    if not all(hasattr(family, name) for name in ("gene_quantizers", "reference_modes")):
        raise loaded.error(field, f"HAWQ-V3's Hessian sensitivity needs a supernet that maps genes to quantizers "
                                  f"(gene_quantizers, reference_modes), and space {space.name!r} trains a "
                                  f"{family.__name__}, which does not; use {instead} (ZeroQ's output KL) or the path "
                                  "of a saved table")


def _check_budget_metrics(loaded: LoadedConfig) -> None:
    """Each budget names a cheap metric this config provides (a latency budget needs a latency section)."""
    from nas.objectives import parse_constraint
    from nas.stages import declared_metrics

    budgets = loaded.config.search.options.get("budgets")
    cheap = [m for m, source in declared_metrics(loaded.config).items() if source != "measured"]
    for i, text in enumerate(budgets if isinstance(budgets, list) else []):
        try:
            metric = parse_constraint(text).metric
        except (TypeError, ValueError):
            continue  # the searcher names a malformed budget itself
        if metric not in cheap:
            raise loaded.error(f"search.options.budgets[{i}]", f"cannot budget {metric!r}: the ILP budgets exact "
                                                               f"cheap metrics, this config has {', '.join(cheap)}")


def bit_sensitivity(loaded: LoadedConfig, space: SearchSpace, subnets: Any, run_dir: Path | None,
                    log: Callable[[str], None] = print, *, kl: Callable[..., Any]) -> Any:
    """The table the run's bit allocator minimises (``None`` for other searchers and for saved-table paths).

    ``kl(True, space, subnets, run_dir, log)`` measures (or rereads) ZeroQ's table: the predictors' own stage.
    """
    if not is_bit_allocator(loaded.config.search.algorithm):
        return None
    setting, samples = _setting(loaded)
    if setting == "kl":
        return kl(True, space, subnets, run_dir, log)
    if setting != "hessian":
        return None
    return hessian_table(space, subnets, run_dir, log, samples=samples)


def hessian_table(space: SearchSpace, subnets: Any, run_dir: Path | None, log: Callable[[str], None] = print, *,
                  samples: int = 16) -> Any:
    """HAWQ-V3's table of the run's supernet: measured into ``hessian_sensitivity.json`` in the run folder, or
    reread from it (a resumed run, or the bit allocator and the predictors of one run sharing it)."""
    from predictors.accuracy import HESSIAN_JSON, HessianSensitivity

    if subnets is None or run_dir is None:
        raise ValueError("measuring the Hessian sensitivity needs the supernet evaluator and the run directory")

    path = Path(run_dir) / HESSIAN_JSON
    if path.exists():
        table = HessianSensitivity.load(path, space)
        if table.samples == samples:
            log(f"Hessian sensitivity: reusing {path}")
            return table
        log(f"Hessian sensitivity: {path} was measured with {table.samples} Rademacher samples, not {samples}: "
            "measuring it again")
    import torch

    from supernets.hessian import measure_hessian_sensitivity

    start = time.perf_counter()
    x, y = subnets.eval_x[:HESSIAN_IMAGES], subnets.eval_y[:HESSIAN_IMAGES]
    measured = measure_hessian_sensitivity(subnets.supernet, torch.cat(subnets.calib), x, y, samples=samples,
                                           batch_size=subnets.batch_size)
    table = HessianSensitivity(space, measured.omega, traces=measured.traces, samples=samples, images=len(x))
    table.save(path)
    log(f"Hessian sensitivity of {len(measured.omega)} genes measured in {time.perf_counter() - start:.1f} s "
        f"({samples} Rademacher samples, {len(x)} validation images): {path}")
    return table
