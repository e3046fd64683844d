"""Image datasets: digits (embedded in scikit-learn), MNIST (IDX files) and CIFAR-10 (JPEG npz or python batches).

Loaders return uint8/float NCHW arrays to :func:`make_image_splits`, which subsamples and normalises.
Decoding is validated strictly: a truncated or mislabelled file gives an InputError naming the file
rather than a reshape error deep inside numpy.
"""

from __future__ import annotations

import functools
import gzip
import io
import os
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from search_spaces.errors import InputError
from supernets.data._split import (
    check_fraction,
    check_limits,
    fraction_count,
    make_image_splits,
    split_rng,
    stratified_partition,
)
from supernets.data.registry import ImageSplits, data_root_for, missing_dataset, register_dataset

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def _dedupe(paths: list[Path]) -> list[Path]:
    """Candidate folders in order, each once (``root`` may equal a candidate's parent)."""
    seen: dict[str, Path] = {}
    for p in paths:
        seen.setdefault(str(p), p)
    return list(seen.values())


# --------------------------------------------------------------------------------------- digits
@register_dataset("digits", kind="image")
def load_digits(
    *,
    root: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    max_train: int | None = None,
    max_val: int | None = None,
    max_test: int | None = None,
) -> ImageSplits:
    """scikit-learn's 1797 8x8 digits, split 60/20/20 stratified; needs no data folder (``root`` unused)."""
    from sklearn.datasets import load_digits as sk_digits

    val_fraction = check_fraction("digits", "val_fraction", val_fraction)
    limits = check_limits("digits", max_train, max_val, max_test)
    test_fraction = check_fraction("digits", "test_fraction", test_fraction)
    bunch = sk_digits()
    x = bunch.images.astype(np.float32)[:, None]  # (1797, 1, 8, 8), values 0..16
    y = bunch.target.astype(np.int64)
    n_val = fraction_count(len(y), val_fraction, "digits", "val_fraction")
    n_test = fraction_count(len(y), test_fraction, "digits", "test_fraction")
    if n_val + n_test >= len(y):
        raise InputError("val_fraction + test_fraction leaves no training data", source="digits")
    test, val, train = stratified_partition(y, [n_test, n_val, -1], split_rng(seed))
    return make_image_splits(
        "digits",
        {"train": (x[train], y[train]), "val": (x[val], y[val]), "test": (x[test], y[test])},
        classes=tuple(str(i) for i in range(10)),
        description="scikit-learn load_digits (UCI optical digits, 8x8, 16 grey levels), stratified split",
        limits=limits,
        seed=seed,
    )


# ---------------------------------------------------------------------------------------- MNIST
_MNIST_EXPECTED = (
    "the MNIST IDX files t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (gzipped or not; "
    "add train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz for the 60k train set) "
    "in <root>/mnist_t10k/, <root>/mnist/, <root>/MNIST/raw/ or <root>/"
)
_IDX_MAGIC = {3: 2051, 1: 2049}  # ndim -> magic number of unsigned-byte images / labels


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise InputError(f"cannot read IDX file: {err}", source=path) from None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An unsigned-byte IDX array (gzipped or not), with its magic number and sizes checked."""
    raw = _read_bytes(path)
    header = 4 + 4 * ndim
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if magic != _IDX_MAGIC[ndim]:
        raise InputError(
            f"not an IDX file of {ndim}-d unsigned bytes: magic number {magic}, expected {_IDX_MAGIC[ndim]}",
            source=path,
        )
    if len(raw) < header:
        raise InputError(f"IDX header truncated ({len(raw)} bytes)", source=path)
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if len(raw) - header != int(np.prod(dims)):
        raise InputError(
            f"IDX dims {dims} need {int(np.prod(dims))} data bytes, file has {len(raw) - header}", source=path
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _read_mnist_pair(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    images_path = _find_idx(folder, f"{prefix}-images-idx3-ubyte")
    labels_path = _find_idx(folder, f"{prefix}-labels-idx1-ubyte")
    assert images_path is not None and labels_path is not None
    images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
    if images.shape[1:] != (28, 28):
        size = f"{images.shape[1]}x{images.shape[2]}"
        raise InputError(f"MNIST images must be 28x28, got {size}", source=images_path)
    if len(images) != len(labels):
        raise InputError(
            f"{len(images)} images but {len(labels)} labels in {labels_path.name}", source=images_path
        )
    if labels.size and labels.max() > 9:
        raise InputError(f"MNIST labels must be 0..9, found {int(labels.max())}", source=labels_path)
    return images[:, None], labels.astype(np.int64)


def _has_pair(folder: Path, prefix: str) -> bool:
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    return all(_find_idx(folder, s) is not None for s in stems)


@register_dataset("mnist", kind="image")
def load_mnist(
    *,
    root: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 1 / 12,
    max_train: int | None = None,
    max_val: int | None = None,
    max_test: int | None = None,
) -> ImageSplits:
    """MNIST: train -> train/val, t10k -> test; with only t10k, split it 80/10/10 stratified."""
    val_fraction = check_fraction("mnist", "val_fraction", val_fraction)
    limits = check_limits("mnist", max_train, max_val, max_test)
    base = data_root_for("mnist", root, _MNIST_EXPECTED)
    folders = _dedupe([base / "mnist_t10k", base / "mnist", base / "MNIST" / "raw", base])
    folder = next((f for f in folders if _has_pair(f, "t10k")), None)
    if folder is None:
        raise missing_dataset("mnist", [str(f) for f in folders], _MNIST_EXPECTED)
    test_x, test_y = _read_mnist_pair(folder, "t10k")
    rng = split_rng(seed)
    if _has_pair(folder, "train"):
        x, y = _read_mnist_pair(folder, "train")
        n_val = fraction_count(len(y), val_fraction, "mnist", "val_fraction")
        val, train = stratified_partition(y, [n_val, -1], rng)
        how = f"MNIST IDX files in {folder}: train split into train/val ({val_fraction:.4g} val), t10k = test"
        parts = {"train": (x[train], y[train]), "val": (x[val], y[val]), "test": (test_x, test_y)}
    else:
        n = len(test_y)
        test, val, train = stratified_partition(test_y, [n // 10, n // 10, -1], rng)
        how = (
            f"MNIST t10k IDX files only (no train files) in {folder}: the 10k test set split 80/10/10 "
            "stratified into train/val/test (val_fraction unused)"
        )
        parts = {"train": (test_x[train], test_y[train]), "val": (test_x[val], test_y[val]),
                 "test": (test_x[test], test_y[test])}  # fmt: skip
    return make_image_splits(
        "mnist", parts, classes=tuple(str(i) for i in range(10)), description=how,
        limits=limits, seed=seed,
    )  # fmt: skip


# ------------------------------------------------------------------------------------- CIFAR-10
_FULL_NPZ = "cifar10_jpeg.npz"
_SUBSET_NPZ = "cifar10_jpeg_subset.npz"
CIFAR10_VARIANTS = ("full", "subset")
_CIFAR_EXPECTED = (
    f"{_FULL_NPZ} (all 50k train images as JPEG), {_SUBSET_NPZ} (the JPEG subset, 10k train; both with "
    "train_jpeg/train_offsets/train_labels and test_*) or the python batches folder cifar-10-batches-py/ "
    "(data_batch_1..5, test_batch, batches.meta) in <root>/cifar10_jpeg/, <root>/cifar10_jpeg_subset/, "
    "<root>/cifar-10-batches-py/, <root>/cifar10/ or <root>/"
)
_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_DECODE_CHUNK = 2048  # images per decoding task: big enough to amortise the pool, small enough to spread


def _decode_one(buf: np.ndarray, start: int, stop: int) -> np.ndarray:
    """One 32x32 RGB JPEG as (32, 32, 3) uint8; ValueError says what is wrong with it."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(buf[start:stop].tobytes())).convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"is not a valid JPEG: {err}") from None
    if img.size != (32, 32):
        raise ValueError(f"is {img.size[0]}x{img.size[1]}, expected 32x32")
    return np.asarray(img)


class _JpegNpz:
    """A CIFAR-10 JPEG npz kept as its compressed bytes; images are decoded on first request, then cached.

    Decoding only what a load keeps makes ``max_train``-sized loads of the 60k-image file cheap, and a
    later full load reuses every image decoded so far.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            z = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise InputError(f"cannot read npz file: {err}", source=path) from None
        with z:
            self.splits = {split: self._read_split(z, split) for split in ("train", "test")}
        self.images = {k: np.empty((len(v[2]), 32, 32, 3), np.uint8) for k, v in self.splits.items()}  # (N, H, W, C)
        self.decoded = {k: np.zeros(len(v[2]), bool) for k, v in self.splits.items()}
        self.lock = threading.Lock()

    def _read_split(self, z: np.lib.npyio.NpzFile, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        try:
            buf, off = z[f"{split}_jpeg"], z[f"{split}_offsets"].astype(np.int64)
            labels = z[f"{split}_labels"].astype(np.int64)
        except KeyError as err:
            expected = f"{split}_jpeg, {split}_offsets, {split}_labels"
            raise InputError(f"missing array {err} (expected {expected})", source=self.path) from None
        if len(off) != len(labels) + 1 or off[0] != 0 or off[-1] != len(buf) or np.any(np.diff(off) <= 0):
            raise InputError(f"{split}_offsets do not match {split}_jpeg / {split}_labels", source=self.path)
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise InputError(f"{split}_labels must be 0..9", source=self.path)
        return buf, off, _readonly(labels)

    def labels(self, split: str) -> np.ndarray:
        return self.splits[split][2]

    def decode(self, split: str, index: np.ndarray) -> np.ndarray:
        """Images ``index`` of ``split`` as (N, 3, 32, 32) uint8, decoding (in threads) those not cached yet."""
        with self.lock:
            todo = np.unique(index[~self.decoded[split][index]])
            chunks = [todo[i:i + _DECODE_CHUNK] for i in range(0, len(todo), _DECODE_CHUNK)]
            if len(chunks) > 1:
                with ThreadPoolExecutor(min(len(chunks), os.cpu_count() or 1)) as pool:
                    list(pool.map(lambda chunk: self._decode_into(split, chunk), chunks))
            elif chunks:
                self._decode_into(split, chunks[0])
            return np.ascontiguousarray(self.images[split][index].transpose(0, 3, 1, 2))  # (N, C, H, W)

    def _decode_into(self, split: str, chunk: np.ndarray) -> None:
        buf, off, _ = self.splits[split]
        for i in chunk:
            try:
                self.images[split][i] = _decode_one(buf, off[i], off[i + 1])
            except ValueError as err:
                raise InputError(f"{split} image {i} {err}", source=self.path) from None
        self.decoded[split][chunk] = True


class _LazyImages:
    """NCHW uint8 images of one npz split that decode only when turned into an array.

    ``x[idx]`` composes index arrays (as numpy would), so splitting and subsampling cost nothing;
    ``np.asarray(x)`` decodes exactly the images selected.
    """

    ndim = 4

    def __init__(self, source: _JpegNpz, split: str, index: np.ndarray) -> None:
        self.source, self.split, self.index = source, split, index

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.index), 3, 32, 32)

    def __getitem__(self, idx: np.ndarray) -> _LazyImages:
        return _LazyImages(self.source, self.split, self.index[idx])

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        images = self.source.decode(self.split, self.index)
        return images if dtype is None else images.astype(dtype)


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)  # cached arrays are shared between loads: nobody may edit them
    return a


@functools.lru_cache(maxsize=4)
def _cached_npz(path: str, mtime_ns: int, size: int) -> _JpegNpz:
    """The npz at ``path``, shared by every load in this process; keyed by path + mtime + size."""
    return _JpegNpz(Path(path))


def _load_npz(path: Path) -> tuple[_LazyImages, np.ndarray, _LazyImages, np.ndarray]:
    """(train_x, train_y, test_x, test_y) of a JPEG npz, the images still undecoded."""
    st = path.stat()
    npz = _cached_npz(str(path.resolve()), st.st_mtime_ns, st.st_size)
    train_y, test_y = npz.labels("train"), npz.labels("test")
    return (_LazyImages(npz, "train", np.arange(len(train_y))), train_y,
            _LazyImages(npz, "test", np.arange(len(test_y))), test_y)


def _unpickle(path: Path) -> dict:
    # pickle can run arbitrary code: only ever called on files in the user's own data folder.
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise InputError(f"cannot unpickle CIFAR-10 batch: {err}", source=path) from None
    if not isinstance(batch, dict):
        raise InputError(f"expected a pickled dict, got {type(batch).__name__}", source=path)
    return batch


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    if b"data" not in batch or b"labels" not in batch:
        raise InputError("CIFAR-10 batch needs keys b'data' and b'labels'", source=path)
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise InputError(f"data {data.shape} / labels {labels.shape}: expected (N, 3072) / (N,)", source=path)
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise InputError("CIFAR-10 labels must be 0..9", source=path)
    return data.reshape(-1, 3, 32, 32), labels


def _load_batches(folder: Path) -> tuple[tuple[np.ndarray, ...], tuple[str, ...]]:
    parts = [_read_batch(folder / name) for name in _BATCHES]
    train_x = np.concatenate([p[0] for p in parts[:-1]])
    train_y = np.concatenate([p[1] for p in parts[:-1]])
    classes = CIFAR10_CLASSES
    if (folder / "batches.meta").is_file():
        names = _unpickle(folder / "batches.meta").get(b"label_names")
        if names is not None and len(names) == 10:
            classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    return (train_x, train_y, *parts[-1]), classes


def _cifar_folders(base: Path) -> list[Path]:
    folders = [base / "cifar10_jpeg", base / "cifar10_jpeg_subset", base / "cifar-10-batches-py", base / "cifar10",
               base]
    return _dedupe([p for f in folders for p in (f, f / "cifar-10-batches-py")])


def _source_in(folder: Path, variant: str) -> Path | None:
    """The ``variant`` source in ``folder``: full = the full npz or python batches, subset = the subset npz."""
    if variant == "subset":
        return folder / _SUBSET_NPZ if (folder / _SUBSET_NPZ).is_file() else None
    if (folder / _FULL_NPZ).is_file():
        return folder / _FULL_NPZ
    return folder if all((folder / b).is_file() for b in _BATCHES) else None


def _find_cifar(base: Path, variant: str | None) -> tuple[Path, str]:
    """The file or batches folder to read and its variant; errors name every folder looked in."""
    looked = _cifar_folders(base)
    found = {v: next((p for f in looked if (p := _source_in(f, v)) is not None), None) for v in CIFAR10_VARIANTS}
    chosen = variant or ("full" if found["full"] is not None else "subset")
    if found[chosen] is not None:
        return found[chosen], chosen  # type: ignore[return-value]
    places = [str(f) for f in looked]
    other = next((v for v in CIFAR10_VARIANTS if v != chosen and found[v] is not None), None)
    if other is None:
        raise missing_dataset("cifar10", places, _CIFAR_EXPECTED)
    wanted = f"{_FULL_NPZ} or cifar-10-batches-py/" if chosen == "full" else _SUBSET_NPZ
    raise InputError(f"variant {chosen!r} needs {wanted}, not found; looked in: {'; '.join(places)}; the "
                     f"{other!r} variant is at {found[other]}: set variant: {other} (or leave variant unset)",
                     source="cifar10", field="variant")


def _check_variant(variant: object) -> str | None:
    if variant is not None and variant not in CIFAR10_VARIANTS:
        raise InputError(f"got {variant!r}, expected one of {', '.join(CIFAR10_VARIANTS)} or null (full when present, "
                         "else subset)", source="cifar10", field="variant")
    return variant  # type: ignore[return-value]


@register_dataset("cifar10", kind="image")
def load_cifar10(
    *,
    root: str | Path | None = None,
    seed: int = 0,
    variant: str | None = None,
    val_fraction: float = 0.1,
    max_train: int | None = None,
    max_val: int | None = None,
    max_test: int | None = None,
) -> ImageSplits:
    """CIFAR-10 (JPEG npz or python batches); train -> train/val, test -> test.

    ``variant``: ``full`` (50k train: cifar10_jpeg.npz or the python batches), ``subset`` (10k train:
    cifar10_jpeg_subset.npz) or null: full when present, else subset. Only the images a load keeps are
    decoded, so ``max_*`` loads of the full set are quick.
    """
    variant = _check_variant(variant)
    val_fraction = check_fraction("cifar10", "val_fraction", val_fraction)
    limits = check_limits("cifar10", max_train, max_val, max_test)
    base = data_root_for("cifar10", root, _CIFAR_EXPECTED)
    found, variant = _find_cifar(base, variant)
    if found.is_file():
        (x, y, test_x, test_y), classes = _load_npz(found), CIFAR10_CLASSES
        how = (f"CIFAR-10 JPEG {'full set' if variant == 'full' else 'subset'} {found} (lossy JPEG q75, "
               "not bit-identical to the official binaries)")
    else:
        (x, y, test_x, test_y), classes = _load_batches(found)
        how = f"CIFAR-10 python batches in {found}"
    n_val = fraction_count(len(y), val_fraction, "cifar10", "val_fraction")
    val, train = stratified_partition(y, [n_val, -1], split_rng(seed))
    return make_image_splits(
        "cifar10",
        {"train": (x[train], y[train]), "val": (x[val], y[val]), "test": (test_x, test_y)},
        classes=classes,
        description=f"{how}; train split into train/val ({val_fraction:.4g} val), test = test",
        limits=limits,
        seed=seed,
    )
