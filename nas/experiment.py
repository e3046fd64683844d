"""What every experiment kind shares: the checked experiment, its reporter, the outcome, and the checks of
the sections every kind has (search space, dataset, device).

Kept apart from :mod:`nas.runner` (which drives a run) and :mod:`nas.kinds` (what each kind does), so both
import it and neither imports the other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from nas.config import LoadedConfig
from nas.objectives import Constraint, Objective
from nas.search import SearchResult
from search_spaces import InputError, SearchSpace, get_space

__all__ = ["Experiment", "Reporter", "RunOutcome", "SilentReporter", "build_space", "check_dataset", "device_line",
           "device_record", "launch_rows", "processes", "use_threads"]


class Reporter(Protocol):
    """Progress and messages of a run (the CLI's ``RichReporter`` prints them; :class:`SilentReporter` does not)."""

    def step(self, text: str) -> AbstractContextManager[None]: ...

    def search_progress(self, budget: int) -> AbstractContextManager[Callable[[int, int], None]]: ...

    def info(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...


class SilentReporter:
    """A :class:`Reporter` that says nothing (library use, tests)."""

    @contextmanager
    def step(self, text: str) -> Iterator[None]:
        yield

    @contextmanager
    def search_progress(self, budget: int) -> Iterator[Callable[[int, int], None]]:
        yield lambda done, total: None

    def info(self, text: str) -> None:
        pass

    def warn(self, text: str) -> None:
        pass


@dataclass(frozen=True)
class Experiment:
    """A checked config with everything built that a run needs (but no run folder yet)."""

    loaded: LoadedConfig
    space: SearchSpace | None  # None for kind: space-search (it searches over spaces)
    metrics: Mapping[str, str]
    dataset: str
    data: Any
    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...]
    batch_size: int
    latency_notes: tuple[str, ...] = ()  # one line per latency table, from check_latency
    placement: Any = None  # supernets.device.Placement of the config's device section
    launch: Any = None  # supernets.launch.LaunchPlan of the config's distributed section


@dataclass(frozen=True)
class RunOutcome:
    """A finished (or resumed-and-finished) run."""

    run_dir: Path
    result: SearchResult | None  # None for kinds with their own procedure (their artifacts are in run_dir)
    seconds: float
    follower: bool = False  # a torchrun rank other than 0: it only trained its shards of rank 0's run


def _rewrap(loaded: LoadedConfig, err: InputError, field: str) -> InputError:
    return loaded.error(err.field if err.field and err.field.startswith(field.split(".")[0]) else field, err.detail)


def build_space(loaded: LoadedConfig) -> SearchSpace:
    """``get_space(name, **options)``, its errors pointing at the config line."""
    section = loaded.config.search_space
    try:
        return get_space(section.name, source=str(loaded.source), **section.options)
    except InputError as err:
        raise _rewrap(loaded, err, "search_space") from None


_SPACE_READS = {"image": "in_channels", "text": "vocab_size", "graph": "in_features"}
"""The space option that says which kind of dataset a space reads."""
_KIND_WORDS = {"image": "images", "text": "text", "graph": "graphs"}


def check_dataset(loaded: LoadedConfig, space: SearchSpace) -> tuple[str, Any]:
    """Load the dataset and check it fits the space (channels, classes, image size); (summary, splits)."""
    from supernets.data import dataset_kind, load_dataset

    section, options = loaded.config.dataset, space.options()
    try:
        kind = dataset_kind(section.name)
        splits = load_dataset(section.name, root=section.root, seed=loaded.config.seed, **section.options)
    except InputError as err:
        field = f"dataset.options.{err.field}" if err.field in section.options else (
            err.field if err.field and err.field.startswith("dataset") else "dataset")
        raise loaded.error(field, err.detail) from None
    reads = next((k for k, opt in _SPACE_READS.items() if opt in options), None)
    if reads is not None and reads != kind:
        raise loaded.error("dataset.name", f"dataset {section.name!r} holds {_KIND_WORDS[kind]} but search space "
                                           f"{space.name!r} reads {_KIND_WORDS[reads]}")
    for attr, data_attr in (("in_channels", "in_channels"), ("num_classes", "num_classes"),
                            ("image_size", "image_size"), ("in_features", "num_features"),
                            ("vocab_size", "vocab_size")):
        have, want = options.get(attr), getattr(splits, data_attr, None)
        if have is not None and want is not None and have != want:
            raise loaded.error(f"search_space.options.{attr}", f"is {have} but dataset {section.name!r} has "
                                                               f"{data_attr}={want}; set search_space.options.{attr}: {want}")
    if kind == "text" and "seq_len" in options and splits.seq_len > options["seq_len"]:
        raise loaded.error("search_space.options.seq_len", f"is {options['seq_len']} but dataset {section.name!r} "
                                                           f"has {splits.seq_len}-token windows; raise it to "
                                                           f"{splits.seq_len} or set dataset.options.seq_len")
    if kind == "graph":
        sizes = "/".join(str(int(getattr(splits.data, f"{s}_mask").sum())) for s in ("train", "val", "test"))
    else:
        sizes = "/".join(str(len(getattr(splits, f"{s}_y"))) for s in ("train", "val", "test"))
    shape = {"image": lambda: f"{splits.in_channels}×{splits.image_size}×{splits.image_size}",
             "text": lambda: f"text, {splits.seq_len}-token windows",
             "graph": lambda: "graph"}[kind]()
    return f"{section.name} ({shape}, {splits.num_classes} classes, train/val/test {sizes})", splits


def device_line(placement: Any) -> str:
    """Where the supernet trains and evaluates, for ``qnas validate`` and the report."""
    info = placement.describe()
    return f"{info['name']} ({info['device']}, {info['precision']}{', torch.compile' if placement.compile else ''})"


def launch_rows(exp: Experiment) -> list[tuple[str, str]]:
    """A summary row for supernet training in several processes (none for one: the report stays as it was)."""
    plan = exp.launch
    if plan is None or plan.processes == 1:
        return []
    where = "Ray Train workers on the Ray cluster" if getattr(plan, "launcher", "local") == "ray" else "local processes"
    return [("training processes", f"{plan.processes} {where} ({plan.backend}), each on its shard of every "
                                   f"batch; the search runs in this one")]


def processes(exp: Experiment) -> int:
    """How many processes train the supernet (the manifest's ``processes``)."""
    return exp.launch.processes if exp.launch is not None else 1


def device_record(exp: Experiment) -> dict[str, Any]:
    """The manifest's ``device``: name, CUDA and cuDNN versions, precision (what the numbers were computed on)."""
    return exp.placement.describe() if exp.placement is not None else {}


def use_threads(exp: Experiment) -> None:
    """Torch threads for this process (``executor.threads``; see :class:`nas.config.ExecutorConfig`)."""
    import torch

    torch.set_num_threads(exp.loaded.config.executor.threads)
