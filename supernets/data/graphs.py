"""Planetoid citation graphs (Cora, CiteSeer) with their standard public node splits.

torch_geometric's ``Planetoid`` writes ``processed/`` next to ``raw/``, and the shared data folder is
read-only, so the raw files are first copied to a writable cache (``$QNAS_CACHE`` or
``~/.cache/qnas``). torch_geometric is imported inside the loader only: it is slow to import and
image-only runs never need it.
"""

from __future__ import annotations

import contextlib
import io
import filecmp
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

from search_spaces.errors import InputError
from supernets.data.registry import GraphSplits, data_root_for, missing_dataset, register_dataset

CACHE_ENV = "QNAS_CACHE"
_SUFFIXES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")


def cache_dir() -> Path:
    """Writable cache root: ``$QNAS_CACHE`` if set, else ``~/.cache/qnas``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "qnas"


def _raw_files(name: str) -> list[str]:
    return [f"ind.{name.lower()}.{s}" for s in _SUFFIXES]


def _expected(name: str) -> str:
    return (
        f"the 8 Planetoid raw files ind.{name.lower()}.{{{','.join(_SUFFIXES)}}} in "
        f"<root>/planetoid/{name}/raw/ or <root>/{name}/raw/"
    )


def _find_raw(key: str, name: str, root: str | Path | None) -> Path:
    """The first folder holding all 8 raw files; else one error listing what each folder lacks."""
    base = data_root_for(key, root, _expected(name))
    looked = []
    for folder in (base / "planetoid" / name / "raw", base / name / "raw"):
        missing = [f for f in _raw_files(name) if not (folder / f).is_file()]
        if not missing:
            return folder
        lacks = "all 8 files" if len(missing) == len(_SUFFIXES) else ", ".join(missing)
        looked.append(f"{folder} (missing {lacks})")
    raise missing_dataset(key, looked, _expected(name))


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` so parallel workers do not process it twice at once."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; concurrent first loads may race.
        yield
        return
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sync_raw(source: Path, dest: Path, files: list[str]) -> None:
    """Copy raw files missing or different in ``dest``; stale ``processed/`` goes when any changed."""
    dest.mkdir(parents=True, exist_ok=True)
    changed = False
    for name in files:
        target = dest / name
        if target.is_file() and filecmp.cmp(source / name, target, shallow=False):
            continue
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(source / name, tmp)
        os.replace(tmp, target)
        changed = True
    processed = dest.parent / "processed"
    if changed and processed.exists():
        shutil.rmtree(processed)


def _process(key: str, source: Path, cache: Path, name: str):  # -> Planetoid
    """Copy the raw files to the cache and let torch_geometric build ``processed/`` there."""
    with warnings.catch_warnings():  # torch_geometric's import warns about torch.jit
        warnings.simplefilter("ignore", FutureWarning)
        from torch_geometric.datasets import Planetoid
    try:
        with _locked(cache / name):
            _sync_raw(source, cache / name / "raw", _raw_files(name))
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                return Planetoid(root=str(cache), name=name, split="public")  # it prints "Processing..."
    except OSError as err:
        raise InputError(
            f"cannot prepare the graph in the cache {cache / name}: {err}; "
            f"set {CACHE_ENV} to a writable folder",
            source=key,
        ) from None
    except Exception as err:  # noqa: BLE001 - PyG parses pickles/arrays: any failure = bad raw files
        raise InputError(f"cannot parse the Planetoid raw files: {err!r}", source=source) from None


def _load_planetoid(key: str, name: str, root: str | Path | None) -> GraphSplits:
    source = _find_raw(key, name, root)
    cache = cache_dir() / "planetoid"
    dataset = _process(key, source, cache, name)
    data = dataset[0]
    sizes = "/".join(str(int(getattr(data, f"{s}_mask").sum())) for s in ("train", "val", "test"))
    return GraphSplits(
        name=key,
        data=data,
        num_features=int(dataset.num_features),
        num_classes=int(dataset.num_classes),
        description=(
            f"{name} (Planetoid raw files from {source}, processed in {cache / name}); standard public "
            f"split (Yang et al. 2016), train/val/test nodes {sizes}; {data.num_nodes} nodes, "
            f"{data.num_edges} directed edges"
        ),
    )


@register_dataset("cora", kind="graph")
def load_cora(*, root: str | Path | None = None, seed: int = 0) -> GraphSplits:
    """Cora citation graph: 2708 papers, 1433 bag-of-words features, 7 classes, split 140/500/1000."""
    del seed  # the public split is fixed
    return _load_planetoid("cora", "Cora", root)


@register_dataset("citeseer", kind="graph")
def load_citeseer(*, root: str | Path | None = None, seed: int = 0) -> GraphSplits:
    """CiteSeer citation graph: 3327 papers, 3703 features, 6 classes, split 120/500/1000."""
    del seed  # the public split is fixed
    return _load_planetoid("citeseer", "CiteSeer", root)
