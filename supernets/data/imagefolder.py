"""``imagefolder``: the user's own images as a torchvision-style class tree, decoded by DataLoader workers.

The tree is ``folder``: an absolute path, or one under the data root (``dataset.root`` or ``$QNAS_DATA``; ``.``,
the default, is the root itself), in one of two layouts:

- ``train/<class>/<image>`` with a held-out ``test/<class>/…`` (or ``val/<class>/…``, as ImageNet ships it): the
  train images are split into train and val (``val_fraction``, stratified), the held-out images are the test split;
- ``<class>/<image>`` only: split into train, val and test (``val_fraction``, ``test_fraction``, stratified).

Classes are the sorted class-folder names and every split must hold the same ones. Each image is converted to RGB
(``channels: 1``: grayscale), resized so its shorter side is ``image_size`` and centre-cropped to a square, by
``workers`` DataLoader processes (0: this process); a file that cannot be read is an error naming it. Only the
images a load keeps (``max_train`` …) are decoded, into memory; with ``stream: true`` the train images stay files,
read batch by batch while the supernet trains (:class:`~supernets.data.stream.StreamedImages`, normalised with the
statistics of the first ``stats_images`` of them), for data that does not fit in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from search_spaces.errors import InputError
from supernets.data._split import (
    check_fraction,
    check_int,
    check_limits,
    fraction_count,
    make_image_splits,
    make_streamed_image_splits,
    split_rng,
    stratified_partition,
)
from supernets.data.registry import ImageSplits, data_root_for, register_dataset
from supernets.data.stream import FileImages

__all__ = ["IMAGE_SUFFIXES", "load_imagefolder"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
HELD_OUT = ("test", "val")  # the held-out folder of the train/ layout, first found wins
_EXPECTED = ("a class tree: <folder>/train/<class>/<image> with <folder>/test/<class>/<image> (or val/), or "
             f"<folder>/<class>/<image>; images {', '.join(IMAGE_SUFFIXES)}")


@dataclass(frozen=True)
class _Tree:
    """One class tree's image files (sorted) and their labels."""

    folder: Path
    classes: tuple[str, ...]
    files: np.ndarray  # (N,) str paths
    labels: np.ndarray  # (N,) int64


def _class_dirs(folder: Path) -> list[Path]:
    return sorted((d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name)


def _scan(folder: Path, classes: tuple[str, ...] | None = None) -> _Tree:
    """The images under ``folder/<class>/`` (any depth); ``classes``: the names another split holds."""
    dirs = _class_dirs(folder)
    names = tuple(d.name for d in dirs)
    if len(names) < 2:
        raise InputError(f"expected at least 2 class folders, found {list(names)}; {_EXPECTED}", source=folder)
    if classes is not None and names != classes:
        missing, extra = sorted(set(classes) - set(names)), sorted(set(names) - set(classes))
        raise InputError(f"its class folders differ from the train split's: missing {missing}, extra {extra}",
                         source=folder)
    files: list[str] = []
    labels: list[int] = []
    for label, d in enumerate(dirs):
        found = sorted(str(p) for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise InputError(f"class folder {d.name!r} holds no images ({', '.join(IMAGE_SUFFIXES)})", source=d)
        files += found
        labels += [label] * len(found)
    return _Tree(folder, names, np.array(files), np.array(labels, dtype=np.int64))


def _tree_root(root: str | Path | None, folder: object) -> Path:
    if not isinstance(folder, (str, Path)) or not str(folder):
        raise InputError(f"got {folder!r}, expected the tree's folder (relative to the data root, or absolute)",
                         source="imagefolder", field="folder")
    path = Path(folder).expanduser()
    where = path if path.is_absolute() else data_root_for("imagefolder", root, _EXPECTED) / path
    if not where.is_dir():
        raise InputError(f"folder not found; expected {_EXPECTED}", source=where)
    return where


@register_dataset("imagefolder", kind="image")
def load_imagefolder(
    *,
    root: str | Path | None = None,
    seed: int = 0,
    folder: str = ".",
    image_size: int = 32,
    channels: int = 3,
    workers: int = 0,
    stream: bool = False,
    stats_images: int = 2048,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_train: int | None = None,
    max_val: int | None = None,
    max_test: int | None = None,
) -> ImageSplits:
    """A class tree of image files (see the module docstring for the layouts and options)."""
    size = check_int("imagefolder", "image_size", image_size, 4, 1024)
    if channels not in (1, 3) or isinstance(channels, bool):
        raise InputError(f"got {channels!r}, expected 3 (RGB) or 1 (grayscale)", source="imagefolder",
                         field="channels")
    workers = check_int("imagefolder", "workers", workers, 0, 64)
    if not isinstance(stream, bool):
        raise InputError(f"got {stream!r}, expected true (read the train images from their files while training) "
                         "or false (decode them into memory now)", source="imagefolder", field="stream")
    stats_images = check_int("imagefolder", "stats_images", stats_images, 1, 1_000_000)
    val_fraction = check_fraction("imagefolder", "val_fraction", val_fraction)
    limits = check_limits("imagefolder", max_train, max_val, max_test)
    base = _tree_root(root, folder)
    held_out = next((base / name for name in HELD_OUT if (base / name).is_dir()), None)
    rng = split_rng(seed)
    if (base / "train").is_dir():
        train = _scan(base / "train")
        test = _scan(held_out, train.classes) if held_out is not None else None
        if test is None:
            raise InputError(f"has train/ but no held-out {' or '.join(f'{h}/' for h in HELD_OUT)} folder; "
                             f"expected {_EXPECTED}", source=base)
        n_val = fraction_count(len(train.labels), val_fraction, "imagefolder", "val_fraction")
        val_idx, train_idx = stratified_partition(train.labels, [n_val, -1], rng)
        parts = {"train": (train, train_idx), "val": (train, val_idx), "test": (test, np.arange(len(test.labels)))}
        layout = f"{base}/train (split into train/val, {val_fraction:.4g} val), test = {held_out.name}/"
    else:
        tree = _scan(base)
        test_fraction = check_fraction("imagefolder", "test_fraction", test_fraction)
        n = len(tree.labels)
        n_val = fraction_count(n, val_fraction, "imagefolder", "val_fraction")
        n_test = fraction_count(n, test_fraction, "imagefolder", "test_fraction")
        if n_val + n_test >= n:
            raise InputError(f"val_fraction + test_fraction leave no training images of {n}", source="imagefolder",
                             field="test_fraction")
        val_idx, test_idx, train_idx = stratified_partition(tree.labels, [n_val, n_test, -1], rng)
        parts = {"train": (tree, train_idx), "val": (tree, val_idx), "test": (tree, test_idx)}
        layout = f"{base} split into train/val/test ({val_fraction:.4g} val, {test_fraction:.4g} test)"
    classes = next(iter(parts.values()))[0].classes
    arrays = {split: (FileImages(t.files[idx], size, channels, workers), t.labels[idx])
              for split, (t, idx) in parts.items()}
    description = (f"image folder {layout}; {len(classes)} classes, {'RGB' if channels == 3 else 'grayscale'} "
                   f"{size}x{size} (shorter side resized, centre crop)")
    if stream:
        return make_streamed_image_splits("imagefolder", arrays, classes=classes, limits=limits, seed=seed,
                                          description=description, stats_images=stats_images)
    return make_image_splits("imagefolder", arrays, classes=classes, limits=limits, seed=seed,
                             description=description)
