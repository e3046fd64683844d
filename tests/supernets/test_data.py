"""Tests of the dataset registry (supernets.data): real shared data when $QNAS_DATA is set, else synthetic."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from search_spaces.errors import InputError
from supernets.data import (
    GraphSplits,
    ImageSplits,
    dataset_kind,
    list_datasets,
    load_dataset,
    register_dataset,
    resolve_data_root,
)
from supernets.data import registry
from supernets.data._split import stratified_partition, stratified_subsample


@pytest.fixture
def shared_data() -> Path:
    """The real data folder, or skip: the Makefile sets QNAS_DATA=../shared/data."""
    root = os.environ.get("QNAS_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("QNAS_DATA is not set to the shared data folder")
    return Path(root)


def _unique_rows(*xs: torch.Tensor) -> int:
    flat = torch.cat([x.reshape(len(x), -1) for x in xs]).numpy()
    return len(np.unique(flat, axis=0))


def _write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> None:
    magic = magic if magic is not None else (2051 if array.ndim == 3 else 2049)
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _write_mnist(folder: Path, prefix: str, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
    _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)


# ------------------------------------------------------------------------------------- registry
def test_registry_lists_kinds():
    assert list_datasets() == sorted(["digits", "mnist", "cifar10", "cora", "citeseer", "tinyshakespeare",
                                      "imagefolder"])
    assert dataset_kind("tinyshakespeare") == "text"
    assert dataset_kind("imagefolder") == "image"
    assert [dataset_kind(n) for n in ("digits", "mnist", "cifar10")] == ["image"] * 3
    assert dataset_kind("cora") == dataset_kind("CiteSeer") == "graph"


def test_unknown_dataset_names_nearest_and_list():
    with pytest.raises(InputError) as err:
        load_dataset("mnst")
    msg = str(err.value)
    assert "'mnst'" in msg and "did you mean 'mnist'" in msg and "cifar10, citeseer, cora" in msg
    with pytest.raises(InputError, match="did you mean 'cora'"):
        dataset_kind("coraa")


def test_unknown_option_names_nearest(monkeypatch):
    monkeypatch.delenv("QNAS_DATA", raising=False)
    with pytest.raises(InputError) as err:
        load_dataset("digits", max_trian=10)
    msg = str(err.value)
    assert "max_trian" in msg and "did you mean 'max_train'" in msg and "val_fraction" in msg
    with pytest.raises(InputError, match="valid options: none"):
        load_dataset("cora", max_train=5)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_train": 0}, "max_train"),
        ({"max_val": "ten"}, "max_val"),
        ({"val_fraction": 1.5}, "val_fraction"),
    ],
)
def test_bad_option_values(options, field):
    with pytest.raises(InputError, match=field):
        load_dataset("digits", **options)


def test_bad_seed():
    with pytest.raises(InputError, match="seed"):
        load_dataset("digits", seed=-1)


def test_register_dataset_rejects_duplicates_and_bad_signatures(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", registry._REGISTRY.copy())
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("digits", kind="image")(lambda *, root=None, seed=0: None)
    with pytest.raises(TypeError, match="keyword-only"):
        register_dataset("toy", kind="image")(lambda root=None, seed=0: None)
    with pytest.raises(ValueError, match="kind"):
        register_dataset("toy", kind="audio")  # type: ignore[arg-type]

    @register_dataset("toy", kind="graph")
    def _toy(*, root=None, seed=0, size: int = 3):
        return GraphSplits("toy", data=None, num_features=size, num_classes=2, description="toy")

    assert "toy" in list_datasets() and load_dataset("toy", size=5).num_features == 5
    with pytest.raises(InputError, match="did you mean 'size'"):
        load_dataset("toy", sise=5)


def test_resolve_data_root(monkeypatch, tmp_path):
    monkeypatch.delenv("QNAS_DATA", raising=False)
    with pytest.raises(InputError, match="QNAS_DATA.*dataset.root"):
        resolve_data_root(None)
    monkeypatch.setenv("QNAS_DATA", str(tmp_path))
    assert resolve_data_root(None) == tmp_path.resolve()
    (tmp_path / "other").mkdir()
    assert resolve_data_root(tmp_path / "other") == (tmp_path / "other").resolve()
    with pytest.raises(InputError, match="does not exist"):
        resolve_data_root(tmp_path / "nope")


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cora"])
def test_missing_root_says_how_to_provide(monkeypatch, name):
    monkeypatch.delenv("QNAS_DATA", raising=False)
    with pytest.raises(InputError) as err:
        load_dataset(name)
    msg = str(err.value)
    assert msg.startswith(f"{name}:") and "QNAS_DATA" in msg and "dataset.root" in msg


# ---------------------------------------------------------------------------------- split helpers
def test_stratified_partition_is_disjoint_complete_and_balanced():
    y = np.repeat(np.arange(4), [50, 30, 15, 5])
    parts = stratified_partition(y, [20, 20, -1], np.random.default_rng(0))
    allidx = np.concatenate(parts)
    assert sorted(allidx.tolist()) == list(range(len(y)))
    assert np.bincount(y[parts[0]], minlength=4).tolist() == [10, 6, 3, 1]
    keep = stratified_subsample(y, 10, np.random.default_rng(1))
    assert len(keep) == 10 and set(np.bincount(y[keep], minlength=4)) >= {5, 3}


# ------------------------------------------------------------------------------------------ digits
def test_digits_needs_no_data_root(monkeypatch):
    monkeypatch.delenv("QNAS_DATA", raising=False)
    s = load_dataset("digits")
    assert isinstance(s, ImageSplits)
    assert (len(s.train_y), len(s.val_y), len(s.test_y)) == (1079, 359, 359)
    assert s.train_x.shape[1:] == (1, 8, 8) and s.train_x.dtype == torch.float32
    assert s.train_y.dtype == torch.int64 and (s.num_classes, s.in_channels, s.image_size) == (10, 1, 8)
    assert len(s.classes) == 10 and "stratified" in s.description
    assert abs(s.train_x.mean().item()) < 1e-4 and abs(s.train_x.std().item() - 1) < 1e-2
    for y in (s.train_y, s.val_y, s.test_y):  # stratified: every class in every split, ~even
        counts = torch.bincount(y, minlength=10)
        assert counts.min() >= 0.9 * counts.max()
    assert _unique_rows(s.train_x, s.val_x, s.test_x) == 1797  # no image in two splits


def test_digits_deterministic_per_seed():
    a, b, c = load_dataset("digits", seed=3), load_dataset("digits", seed=3), load_dataset("digits", seed=4)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.train_x, c.train_x)


def test_digits_max_limits_subsample_stratified():
    s = load_dataset("digits", max_train=100, max_val=50, max_test=20)
    assert (len(s.train_y), len(s.val_y), len(s.test_y)) == (100, 50, 20)
    assert torch.bincount(s.train_y, minlength=10).tolist() == [10] * 10
    assert abs(s.train_x.mean().item()) < 1e-4  # statistics of the subsampled train set
    full = load_dataset("digits", max_val=50)  # max_train must not change which val items are kept
    assert torch.equal(full.val_y, s.val_y) and len(full.train_y) == 1079


# ------------------------------------------------------------------------------------------- MNIST
def test_mnist_t10k_split(shared_data):
    s = load_dataset("mnist", root=shared_data)
    assert (len(s.train_y), len(s.val_y), len(s.test_y)) == (8000, 1000, 1000)
    assert s.train_x.shape[1:] == (1, 28, 28) and s.image_size == 28 and s.num_classes == 10
    assert "t10k" in s.description and "8000/1000/1000" in s.description
    assert abs(s.train_x.mean().item()) < 1e-4
    assert set(torch.unique(s.test_y).tolist()) == set(range(10))
    assert _unique_rows(s.train_x, s.val_x, s.test_x) == 10000  # the t10k images have no duplicates
    again = load_dataset("mnist", seed=0)  # found through $QNAS_DATA
    assert torch.equal(again.val_x, s.val_x)
    other = load_dataset("mnist", seed=1, max_train=200)
    assert len(other.train_y) == 200 and not torch.equal(other.val_y, s.val_y)


def test_mnist_with_train_files(tmp_path):
    _write_mnist(tmp_path / "MNIST" / "raw", "train", 120)
    _write_mnist(tmp_path / "MNIST" / "raw", "t10k", 30, seed=1)
    s = load_dataset("mnist", root=tmp_path)
    assert (len(s.train_y), len(s.val_y), len(s.test_y)) == (110, 10, 30)
    assert "train split into train/val" in s.description


def test_mnist_missing_files_lists_every_folder(tmp_path):
    (tmp_path / "mnist").mkdir()
    _write_mnist(tmp_path / "mnist", "train", 20)  # train alone is not enough
    with pytest.raises(InputError) as err:
        load_dataset("mnist", root=tmp_path)
    msg = str(err.value)
    for folder in ("mnist_t10k", "mnist", "MNIST/raw"):
        assert str(tmp_path / folder) in msg
    assert "t10k-images-idx3-ubyte.gz" in msg and "QNAS_DATA" in msg


@pytest.mark.parametrize("problem", ["magic", "truncated", "count", "not_gzip"])
def test_mnist_corrupt_idx_names_the_file(tmp_path, problem):
    _write_mnist(tmp_path, "t10k", 20)
    images = tmp_path / "t10k-images-idx3-ubyte.gz"
    if problem == "magic":
        _write_idx(images, np.zeros((20, 28, 28)), magic=1234)
    elif problem == "truncated":
        data = gzip.decompress(images.read_bytes())[:-5]
        images.write_bytes(gzip.compress(data))
    elif problem == "count":
        _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(19))
    else:
        images.write_bytes(b"this is not gzip")
    with pytest.raises(InputError) as err:
        load_dataset("mnist", root=tmp_path)
    assert "t10k-images-idx3-ubyte.gz" in str(err.value)


# ---------------------------------------------------------------------------------------- CIFAR-10
def test_cifar10_npz_subset(shared_data):
    s = load_dataset("cifar10", root=shared_data, variant="subset", max_train=500, max_val=100, max_test=200)
    assert s.train_x.shape == (500, 3, 32, 32) and s.test_x.shape == (200, 3, 32, 32)
    assert s.val_x.shape == (100, 3, 32, 32) and s.train_x.dtype == torch.float32
    assert (s.num_classes, s.in_channels, s.image_size) == (10, 3, 32)
    assert s.classes[0] == "airplane" and s.classes[-1] == "truck" and "JPEG" in s.description
    assert torch.allclose(s.train_x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.bincount(s.train_y, minlength=10).tolist() == [50] * 10
    full = load_dataset("cifar10", root=shared_data, seed=1, variant="subset")  # decoded once, cached per process
    assert (len(full.train_y), len(full.val_y), len(full.test_y)) == (9000, 1000, 10000)
    # The files are sorted by class; every prefix of every split must still hold all classes in proportion
    # (BN recalibration reads train_x[:n], quick evaluations val_x[:n] / test_x[:n]).
    for y in (full.train_y, full.val_y, full.test_y):
        for n in (100, 500):
            counts = torch.bincount(y[:n], minlength=10)
            assert counts.min() >= n // 10 - 1 and counts.max() <= n // 10 + 1, (n, counts.tolist())


def test_cifar10_full_variant_is_the_default_and_decodes_only_what_it_keeps(shared_data, monkeypatch):
    if not (shared_data / "cifar10_jpeg" / "cifar10_jpeg.npz").is_file():
        pytest.skip("the full CIFAR-10 JPEG set is not in the shared data folder")
    calls = _count_decodes(monkeypatch)
    s = load_dataset("cifar10", root=shared_data, max_train=200, max_val=50, max_test=100, seed=3)
    assert "full set" in s.description and "cifar10_jpeg.npz" in s.description
    assert (len(s.train_y), len(s.val_y), len(s.test_y)) == (200, 50, 100) and s.train_x.shape[1:] == (3, 32, 32)
    assert torch.bincount(s.train_y, minlength=10).tolist() == [20] * 10
    assert len(calls) <= 350  # 60k images in the file: only the kept ones (or fewer, if cached) were decoded
    subset = load_dataset("cifar10", root=shared_data, variant="subset", max_train=200, max_val=50, max_test=100)
    assert "subset" in subset.description and torch.equal(subset.test_y, load_dataset(
        "cifar10", root=shared_data, variant="subset", max_train=200, max_val=50, max_test=100).test_y)


def _count_decodes(monkeypatch) -> list[int]:
    """Record every JPEG the CIFAR loader decodes."""
    from supernets.data import images

    calls: list[int] = []
    real = images._decode_one

    def counting(buf, start, stop):
        calls.append(int(start))
        return real(buf, start, stop)

    monkeypatch.setattr(images, "_decode_one", counting)
    return calls


def _write_jpeg_npz(path: Path, train_per_class: int, test_per_class: int, *, corrupt: int | None = None) -> None:
    """A miniature of the CIFAR-10 JPEG npz files: random 32x32 JPEGs sorted by class."""
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    arrays = {}
    for split, per in (("train", train_per_class), ("test", test_per_class)):
        blobs, labels = [], []
        for c in range(10):
            for _ in range(per):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=75)
                blobs.append(buf.getvalue())
                labels.append(c)
        if split == "train" and corrupt is not None:
            blobs[corrupt] = b"\x00" * len(blobs[corrupt])
        arrays[f"{split}_jpeg"] = np.frombuffer(b"".join(blobs), np.uint8)
        arrays[f"{split}_offsets"] = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
        arrays[f"{split}_labels"] = np.array(labels, np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def test_cifar10_variant_option(tmp_path, monkeypatch):
    _write_jpeg_npz(tmp_path / "cifar10_jpeg_subset" / "cifar10_jpeg_subset.npz", 4, 2)
    only_subset = load_dataset("cifar10", root=tmp_path, val_fraction=0.25)  # no full set: the subset
    assert "subset" in only_subset.description and len(only_subset.train_y) == 30
    with pytest.raises(InputError) as err:
        load_dataset("cifar10", root=tmp_path, variant="full")
    msg = str(err.value)
    assert "variant" in msg and "cifar10_jpeg.npz" in msg and "set variant: subset" in msg
    _write_jpeg_npz(tmp_path / "cifar10_jpeg.npz", 8, 2)  # a full set straight in the root folder
    calls = _count_decodes(monkeypatch)
    s = load_dataset("cifar10", root=tmp_path, val_fraction=0.25, max_train=10, max_val=10, max_test=10)
    assert "full set" in s.description and (len(s.train_y), len(s.val_y), len(s.test_y)) == (10, 10, 10)
    assert len(calls) == 30  # 100 images in the file, 30 kept
    explicit = load_dataset("cifar10", root=tmp_path, variant="subset", val_fraction=0.25)
    assert "subset" in explicit.description and torch.equal(explicit.train_x, only_subset.train_x)
    with pytest.raises(InputError, match=r"cifar10: variant: got 'all', expected one of full, subset"):
        load_dataset("cifar10", root=tmp_path, variant="all")


def test_cifar10_corrupt_jpeg_names_file_and_image(tmp_path):
    _write_jpeg_npz(tmp_path / "cifar10_jpeg.npz", 2, 1, corrupt=5)
    with pytest.raises(InputError, match=r"cifar10_jpeg\.npz: train image 5 is not a valid JPEG"):
        load_dataset("cifar10", root=tmp_path, val_fraction=0.5)


def test_image_splits_move_to_a_device_once():
    s = load_dataset("digits", max_train=64, max_val=32, max_test=32)
    same = s.to("cpu")
    assert same.train_x is s.train_x and same.device == torch.device("cpu")  # nothing to move: no copy
    nhwc = s.to("cpu", channels_last=True)
    assert nhwc.val_x.is_contiguous(memory_format=torch.channels_last) and torch.equal(nhwc.val_x, s.val_x)
    assert nhwc.train_y is s.train_y and nhwc.description == s.description


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_image_splits_on_cuda():
    s = load_dataset("digits", max_train=64).to("cuda")
    assert s.train_x.is_cuda and s.test_y.is_cuda and s.device.type == "cuda"


def _write_cifar_batches(folder: Path, per_batch: int = 20) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": [i % 10 for i in range(per_batch)]}  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {b"label_names": [f"c{i}".encode() for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))


def test_cifar10_python_batches(tmp_path):
    _write_cifar_batches(tmp_path / "cifar10" / "cifar-10-batches-py")
    s = load_dataset("cifar10", root=tmp_path)
    assert (len(s.train_y), len(s.val_y), len(s.test_y)) == (90, 10, 20)
    assert s.train_x.shape[1:] == (3, 32, 32) and s.classes[3] == "c3"
    assert "python batches" in s.description


def test_cifar10_missing_and_corrupt(tmp_path):
    with pytest.raises(InputError) as err:
        load_dataset("cifar10", root=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "cifar10_jpeg_subset") in msg and "cifar10_jpeg_subset.npz" in msg
    assert "data_batch_1..5" in msg
    _write_cifar_batches(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(InputError, match="data_batch_3"):
        load_dataset("cifar10", root=tmp_path)


# ------------------------------------------------------------------------------------------ graphs
def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize(
    ("name", "folder", "shape"),
    [("cora", "Cora", (2708, 1433, 7, 140)), ("citeseer", "CiteSeer", (3327, 3703, 6, 120))],
)
def test_planetoid_public_split(shared_data, tmp_path, monkeypatch, name, folder, shape):
    monkeypatch.setenv("QNAS_CACHE", str(tmp_path))
    source = shared_data / "planetoid" / folder
    before = _snapshot(source)
    g = load_dataset(name)
    assert isinstance(g, GraphSplits) and g.name == name
    assert (g.data.num_nodes, g.num_features, g.num_classes, int(g.data.train_mask.sum())) == shape
    assert int(g.data.val_mask.sum()) == 500 and int(g.data.test_mask.sum()) == 1000
    assert not (g.data.train_mask & g.data.test_mask).any()
    assert _snapshot(source) == before and not (source / "processed").exists()
    assert (tmp_path / "planetoid" / folder / "processed").is_dir()
    assert load_dataset(name).data.num_edges == g.data.num_edges  # second load reuses the cache


def test_planetoid_missing_files_listed(tmp_path, monkeypatch):
    monkeypatch.setenv("QNAS_CACHE", str(tmp_path / "cache"))
    raw = tmp_path / "data" / "planetoid" / "Cora" / "raw"
    raw.mkdir(parents=True)
    for suffix in ("x", "y", "graph"):
        (raw / f"ind.cora.{suffix}").write_bytes(b"")
    with pytest.raises(InputError) as err:
        load_dataset("cora", root=tmp_path / "data")
    msg = str(err.value)
    assert "ind.cora.tx" in msg and "ind.cora.test.index" in msg and "ind.cora.x," not in msg
    assert str(tmp_path / "data" / "Cora" / "raw") in msg and "QNAS_DATA" in msg
    assert not (tmp_path / "cache").exists()
