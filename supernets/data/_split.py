"""Seeded, stratified splitting and subsampling, and the final :class:`ImageSplits` assembly.

Everything draws from ``np.random.default_rng(seed)`` children (no global random state), and each
split gets its own child generator so that e.g. ``max_train`` never changes which val/test images
are picked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from search_spaces.errors import InputError, shown
from supernets.data.registry import ImageSplits
from supernets.data.stream import FileImages, StreamedImages

_LIMITS = ("max_train", "max_val", "max_test")


def child_rngs(seed: int, n: int) -> list[np.random.Generator]:
    """``n`` independent generators derived from ``seed``; child 0 makes the split, 1-3 subsample."""
    return np.random.default_rng(seed).spawn(n)


def split_rng(seed: int) -> np.random.Generator:
    """The generator loaders use to split (child 0, so it never overlaps the subsampling ones)."""
    return child_rngs(seed, 1)[0]


def _stratified_order(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random order of indices in which every prefix holds each class in proportion.

    Each item's key is its centred rank inside its own (shuffled) class, ``(r + 0.5) / n_c``, so the
    first ``k`` items hold ``round(k * n_c / n)`` items of class ``c`` (+-1); ties break at random.
    """
    perm = rng.permutation(len(y))
    labels = y[perm]
    rank = np.empty(len(y), dtype=np.float64)
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        rank[where] = (np.arange(len(where)) + 0.5) / len(where)
    order = np.lexsort((np.arange(len(y)), rank))  # stable on rank: the shuffle breaks ties
    return perm[order]


def stratified_partition(
    y: np.ndarray, sizes: Sequence[int], rng: np.random.Generator
) -> list[np.ndarray]:
    """Disjoint sorted index arrays of the given ``sizes`` (the last may be -1 = "the rest")."""
    order = _stratified_order(np.asarray(y), rng)
    sizes = [len(order) - sum(sizes[:-1]) if s == -1 else s for s in sizes]
    if sum(sizes) > len(order) or min(sizes) < 0:
        raise ValueError(f"cannot split {len(order)} items into {sizes}")
    bounds = np.cumsum([0, *sizes])
    return [np.sort(order[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def stratified_subsample(y: np.ndarray, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of at most ``limit`` items, classes in proportion (all items when None)."""
    if limit is None or limit >= len(y):
        return np.arange(len(y))
    return np.sort(_stratified_order(np.asarray(y), rng)[:limit])


def check_limit(dataset: str, option: str, value: object) -> int | None:
    """Validate a ``max_*`` option: None or a positive integer."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        msg = f"must be a positive integer or null, got {value!r}"
        raise InputError(msg, source=dataset, field=option)
    return int(value)


def check_int(dataset: str, option: str, value: object, low: int, high: int | None = None) -> int:
    """An integer option in ``low..high`` (bool refused); InputError naming ``option`` otherwise."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):  # type: ignore[operator]
        wanted = f"an integer from {low} to {high}" if high is not None else f"an integer >= {low}"
        raise InputError(f"must be {wanted}, got {shown(value)}", source=dataset, field=option)
    return int(value)  # type: ignore[arg-type]


def check_limits(dataset: str, max_train: object, max_val: object, max_test: object) -> dict[str, int | None]:
    """The ``max_*`` options, validated before any (slow) decoding starts."""
    limits = {"max_train": max_train, "max_val": max_val, "max_test": max_test}
    return {k: check_limit(dataset, k, v) for k, v in limits.items()}


def check_fraction(dataset: str, option: str, value: object) -> float:
    """Validate a fraction option: a number strictly between 0 and 1."""
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
    if not ok or not 0.0 < float(value) < 1.0:  # type: ignore[arg-type]
        msg = f"must be a number between 0 and 1 (exclusive), got {value!r}"
        raise InputError(msg, source=dataset, field=option)
    return float(value)  # type: ignore[arg-type]


def fraction_count(n: int, fraction: float, dataset: str, option: str) -> int:
    """``round(n * fraction)``, rejecting fractions that would leave a split empty."""
    k = int(round(n * fraction))
    if k < 1 or k >= n:
        raise InputError(f"{fraction} of {n} items leaves an empty split", source=dataset, field=option)
    return k


def _channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean/std in float64, in chunks so a 50k CIFAR train set needs no 400 MB copy."""
    total = np.zeros(x.shape[1])
    squares = np.zeros(x.shape[1])
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].astype(np.float64)
        total += part.sum(axis=(0, 2, 3))
        squares += np.square(part).sum(axis=(0, 2, 3))
    count = len(x) * x.shape[2] * x.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return mean, np.maximum(std, 1e-8)


def _normalised(images: Sequence[np.ndarray], mean: np.ndarray, std: np.ndarray) -> tuple[list[torch.Tensor], str]:
    """Float32 tensors of ``images`` normalised per channel with ``mean``/``std``, and the statistics as text."""
    m32 = mean.astype(np.float32)[None, :, None, None]
    s32 = std.astype(np.float32)[None, :, None, None]
    tensors = [torch.from_numpy((a.astype(np.float32) - m32) / s32) for a in images]
    return tensors, f"mean {np.round(mean, 4).tolist()}, std {np.round(std, 4).tolist()}"


def _normalise(train: np.ndarray, others: Sequence[np.ndarray]) -> tuple[list[torch.Tensor], str]:
    """Float32 tensors normalised per channel with the *train* statistics (no test leakage)."""
    return _normalised((train, *others), *_channel_stats(train))


def _picked(name: str, parts: dict[str, tuple[np.ndarray, np.ndarray]], limits: dict[str, object],
            seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each split's ``max_*`` subsample in a seeded order whose every prefix holds the classes in proportion;
    the images still as the loader gave them (a lazy source has decoded nothing yet)."""
    if list(parts) != ["train", "val", "test"]:
        raise ValueError(f"{name}: parts must be train, val, test in that order, got {list(parts)}")
    rngs = child_rngs(seed, 4)[1:]
    picked = []
    for (split, (x, y)), option, rng in zip(parts.items(), _LIMITS, rngs):
        limit = check_limit(name, option, limits.get(option))
        keep = stratified_subsample(y, limit, rng)
        keep = keep[_stratified_order(np.asarray(y)[keep], rng)]  # every prefix class-balanced (see below)
        if len(keep) == 0:
            raise InputError("split is empty", source=name, field=split)
        picked.append((x[keep], np.asarray(y[keep], dtype=np.int64)))
    return picked


def _splits(name: str, train_x: Any, ys: Sequence[np.ndarray], val_x: torch.Tensor, test_x: torch.Tensor, *,
            classes: Sequence[str], description: str) -> ImageSplits:
    tr_y, va_y, te_y = ys
    return ImageSplits(
        name=name,
        train_x=train_x,
        train_y=torch.from_numpy(tr_y),
        val_x=val_x,
        val_y=torch.from_numpy(va_y),
        test_x=test_x,
        test_y=torch.from_numpy(te_y),
        num_classes=len(classes),
        in_channels=int(train_x.shape[1]),
        image_size=int(train_x.shape[2]),
        classes=tuple(classes),
        description=description,
    )


def make_image_splits(
    name: str,
    parts: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    classes: Sequence[str],
    description: str,
    limits: dict[str, object],
    seed: int,
) -> ImageSplits:
    """Subsample (``max_*``), normalise and wrap ``parts`` = {split: (x NCHW, y)} as ImageSplits.

    ``x`` may be any array-like that supports ``x[index_array]`` and ``np.asarray`` (a lazily decoded
    source then decodes only the images kept).

    Every split comes in a seeded order in which each prefix holds the classes in proportion: callers
    take prefixes (BN recalibration on ``train_x[:n]``, quick evaluations on ``val_x[:n]``), and source
    files are often sorted by class (the CIFAR-10 JPEG subset is: its first 1000 images are airplanes).
    """
    picked = [(np.asarray(x), y) for x, y in _picked(name, parts, limits, seed)]  # lazy sources decode here
    (trx, _), (vax, _), (tex, _) = picked
    if trx.ndim != 4 or trx.shape[2] != trx.shape[3]:
        raise ValueError(f"{name}: images must be (N, C, H, H), got {trx.shape}")
    (train_x, val_x, test_x), stats = _normalise(trx, (vax, tex))
    sizes = "/".join(str(len(y)) for _, y in picked)
    full = f"{description}; train/val/test {sizes} (seed {seed}); normalised per channel with train {stats}"
    return _splits(name, train_x, [y for _, y in picked], val_x, test_x, classes=classes, description=full)


def make_streamed_image_splits(
    name: str,
    parts: dict[str, tuple[FileImages, np.ndarray]],
    *,
    classes: Sequence[str],
    description: str,
    limits: dict[str, object],
    seed: int,
    stats_images: int,
) -> ImageSplits:
    """As :func:`make_image_splits`, but the train images stay files (:class:`StreamedImages`, decoded batch by
    batch when trained on); val and test are decoded now. The per-channel statistics come from the first
    ``stats_images`` train images (a class-balanced prefix)."""
    picked = _picked(name, parts, limits, seed)
    (train, _), (val, _), (test, _) = picked
    mean, std = _channel_stats(np.asarray(train[:stats_images]))
    (val_x, test_x), stats = _normalised((np.asarray(val), np.asarray(test)), mean, std)
    streamed = StreamedImages(train, mean.astype(np.float32), std.astype(np.float32))
    sizes = "/".join(str(len(y)) for _, y in picked)
    full = (f"{description}; train/val/test {sizes} (seed {seed}); train streamed from its files, normalised per "
            f"channel with the first {min(stats_images, len(train))} train images' {stats}")
    return _splits(name, streamed, [y for _, y in picked], val_x, test_x, classes=classes, description=full)
