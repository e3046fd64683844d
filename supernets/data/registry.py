"""Dataset registry: one name -> one loader, so configs say ``dataset.name: mnist`` and nothing else.

Loaders are plain functions whose parameters are all keyword-only with explicit defaults; ``root`` and
``seed`` are always passed, every other parameter is a user-visible *option*. Keeping the options in
the signature lets :func:`load_dataset` reject typos with a "did you mean" hint instead of silently
ignoring them.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import torch

from search_spaces.errors import InputError, nearest
from search_spaces.registries import Registry

if TYPE_CHECKING:  # torch_geometric is heavy; only graph loaders import it, lazily.
    from torch_geometric.data import Data

__all__ = [
    "ImageSplits",
    "GraphSplits",
    "TextSplits",
    "register_dataset",
    "load_dataset",
    "list_datasets",
    "dataset_kind",
    "resolve_data_root",
]

Kind = Literal["image", "graph", "text"]
_KINDS: tuple[str, ...] = ("image", "graph", "text")
_ALWAYS_PASSED = ("root", "seed")
DATA_ENV = "QNAS_DATA"


@dataclass(frozen=True, eq=False)
class _TensorSplits:
    """Train/val/test inputs and targets as tensors (images, or token windows)."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    @property
    def device(self) -> torch.device:
        """Where the tensors are."""
        return self.train_x.device


@dataclass(frozen=True, eq=False)
class ImageSplits(_TensorSplits):
    """Train/val/test image tensors, normalised with the train split's per-channel mean/std."""

    num_classes: int
    in_channels: int
    image_size: int
    classes: tuple[str, ...]
    description: str

    def to(self, device: torch.device | str, *, channels_last: bool = False) -> ImageSplits:
        """The same splits with every tensor on ``device`` (a no-op copy of nothing already there).

        Move once, before training: batches are then sliced on the device instead of being copied
        there at every step. ``channels_last`` stores the images NHWC (what cuDNN's fast kernels use).
        """
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        moved = {f: getattr(self, f).to(device).contiguous(memory_format=fmt) if f.endswith("_x")
                 else getattr(self, f).to(device) for f in _TENSOR_FIELDS}
        return dataclasses.replace(self, **moved)


_TENSOR_FIELDS = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")


@dataclass(frozen=True, eq=False)
class GraphSplits:
    """One graph with node masks (``train_mask``/``val_mask``/``test_mask``) for transductive tasks."""

    name: str
    data: Data
    num_features: int
    num_classes: int
    description: str


@dataclass(frozen=True, eq=False)
class TextSplits(_TensorSplits):
    """Character-level language-modelling windows: ``*_x`` token ids, ``*_y`` the next token of each position.

    Every tensor is int64 of shape (N, ``seq_len``); ``y[:, t]`` is the character after ``x[:, t]``, so
    ``y[:, :-1] == x[:, 1:]``. Ids index ``vocab`` (the text's distinct characters, sorted); a model
    predicts one of ``vocab_size`` classes at every position.
    """

    vocab_size: int
    seq_len: int
    vocab: str
    description: str

    @property
    def num_classes(self) -> int:
        """Classes per position (the vocabulary size), the name trainers read for every kind of dataset."""
        return self.vocab_size

    def to(self, device: torch.device | str, *, channels_last: bool = False) -> TextSplits:
        """The same splits with every tensor on ``device``; tensors shared between splits stay shared.
        (``channels_last`` is accepted for the images' signature; token ids have no channels.)"""
        moved: dict[int, torch.Tensor] = {}
        for f in _TENSOR_FIELDS:
            t = getattr(self, f)
            if id(t) not in moved:
                moved[id(t)] = t.to(device)
        return dataclasses.replace(self, **{f: moved[id(getattr(self, f))] for f in _TENSOR_FIELDS})

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """The text of a 1-d sequence of token ids (e.g. ``decode(splits.val_x[0])``)."""
        values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return "".join(self.vocab[i] for i in values)


@dataclass(frozen=True)
class _Entry:
    kind: str
    loader: Callable[..., ImageSplits | GraphSplits | TextSplits]
    options: tuple[str, ...]


_REGISTRY: Registry[_Entry] = Registry("dataset", field="dataset.name", normalize=lambda name: name.strip().lower())
_F = TypeVar("_F", bound=Callable[..., Any])


def _loader_options(name: str, loader: Callable[..., Any]) -> tuple[str, ...]:
    """The option names of ``loader``; rejects signatures that :func:`load_dataset` cannot call."""
    params = inspect.signature(loader).parameters
    for p in params.values():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY or p.default is inspect.Parameter.empty:
            raise TypeError(
                f"dataset loader {name!r}: parameter {p.name!r} must be keyword-only with a default"
            )
    missing = [p for p in _ALWAYS_PASSED if p not in params]
    if missing:
        raise TypeError(f"dataset loader {name!r} must accept keyword-only {missing}")
    return tuple(p for p in params if p not in _ALWAYS_PASSED)


def register_dataset(name: str, *, kind: Kind) -> Callable[[_F], _F]:
    """Decorator registering a loader under ``name`` (case-insensitive); duplicates raise ValueError."""
    key = name.strip().lower()
    if kind not in _KINDS:
        raise ValueError(f"dataset {name!r}: kind must be one of {_KINDS}, got {kind!r}")
    if not key:
        raise ValueError("dataset name must not be empty")

    def decorate(loader: _F) -> _F:
        if key in _REGISTRY:  # before inspecting the signature: a duplicate is the clearer error
            raise ValueError(f"dataset {key!r} is already registered")
        _REGISTRY.register(key, _Entry(kind, loader, _loader_options(key, loader)))
        return loader

    return decorate


def list_datasets() -> list[str]:
    """Names of all registered datasets, sorted."""
    return _REGISTRY.names()


def _entry(name: str) -> _Entry:
    return _REGISTRY.get(name)


def dataset_kind(name: str) -> Kind:
    """``"image"``, ``"graph"`` or ``"text"``, so callers can pick a supernet family before loading any data."""
    return _entry(name).kind  # type: ignore[return-value]


def _check_options(name: str, entry: _Entry, options: dict[str, Any]) -> None:
    for key in options:
        if key not in entry.options:
            valid = ", ".join(entry.options) or "none"
            raise InputError(
                f"unknown option for dataset {name!r}{nearest(key, entry.options)} "
                f"(valid options: {valid})",
                source=name,
                field=key,
            )


def load_dataset(
    name: str, *, root: str | Path | None = None, seed: int = 0, **options: Any
) -> ImageSplits | GraphSplits | TextSplits:
    """Load dataset ``name`` split deterministically by ``seed``; ``options`` go to its loader."""
    entry = _entry(name)
    key = str(name).strip().lower()
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}", source=key, field="seed")
    _check_options(key, entry, options)
    splits = entry.loader(root=root, seed=seed, **options)
    expected = {"image": ImageSplits, "graph": GraphSplits, "text": TextSplits}[entry.kind]
    if not isinstance(splits, expected):
        raise TypeError(f"loader of {key!r} returned {type(splits).__name__}, not {expected.__name__}")
    return splits


def resolve_data_root(root: str | Path | None) -> Path:
    """The data folder: explicit ``root``, else ``$QNAS_DATA``; an InputError says how to set it."""
    if root is not None and str(root) != "":
        where, field = Path(root).expanduser(), "dataset.root"
    elif os.environ.get(DATA_ENV):
        where, field = Path(os.environ[DATA_ENV]).expanduser(), DATA_ENV
    else:
        raise InputError(
            f"no data folder given: set the {DATA_ENV} environment variable or `dataset.root` "
            "in the config to the folder that holds the datasets",
            field="dataset.root",
        )
    if not where.is_dir():
        raise InputError(f"data folder {str(where)!r} does not exist or is not a folder", field=field)
    return where.resolve()


def how_to_provide(name: str, expected: str) -> str:
    """The shared 'how to fix it' tail of every missing-data message."""
    return (
        f"to use dataset {name!r}, set {DATA_ENV} or `dataset.root` in the config to a folder "
        f"holding {expected}"
    )


def data_root_for(name: str, root: str | Path | None, expected: str) -> Path:
    """:func:`resolve_data_root`, with the dataset name and the expected files in its error."""
    try:
        return resolve_data_root(root)
    except InputError as err:
        raise InputError(f"{err.detail}; {how_to_provide(name, expected)}", source=name) from None


def missing_dataset(name: str, looked_in: list[str], expected: str) -> InputError:
    """One error naming the dataset, every place looked in, and what to put there."""
    places = "; ".join(looked_in)
    message = f"dataset files not found; looked in: {places}; {how_to_provide(name, expected)}"
    return InputError(message, source=name)
