"""The run directory: where a run keeps its config, manifest, journal and artifacts.

Why atomic writes: a run can be killed at any moment, and a half-written ``pareto.json`` or
``config.yaml`` is worse than none (resume reads ``config.yaml``). Every file but the journal is
written to a temporary file in the same folder, fsync'd, then moved over the target with
``os.replace``, so readers see either the old or the new file, never a mix.

Layout::

    runs/<name>-<YYYYmmdd-HHMMSS>/
        config.yaml      resolved config (overrides applied, defaults filled)
        manifest.json    versions, seed, git commit, times, command line, space fingerprint
        trials.jsonl     one line per evaluated candidate (see nas.journal)
        hypervolume.csv  hypervolume after every batch
        pareto.csv, pareto.json, pareto.png, hypervolume.png, report.md
        subnets/<key>/arch.json
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from nas.runlock import LOCK
from search_spaces.atomic import atomic_write_bytes, atomic_write_text
from search_spaces.errors import InputError
from search_spaces.inputs import read_json

__all__ = [
    "CONFIG", "MANIFEST", "JOURNAL", "RUN_MARKERS", "atomic_write_bytes", "atomic_write_text", "atomic_write_json",
    "create_run_dir", "check_run_dir", "check_new_run_dir", "check_output_folder", "package_versions", "git_commit",
    "now_iso", "new_manifest", "read_manifest", "update_manifest", "MANIFEST_TYPES",
]

CONFIG, MANIFEST, JOURNAL = "config.yaml", "manifest.json", "trials.jsonl"
RUN_MARKERS = (CONFIG, MANIFEST, JOURNAL, LOCK)
"""Files whose presence makes a folder a qnas run (``run.lock`` alone: a run that died while starting)."""
_PACKAGES = ("qnas", "torch", "numpy", "pymoo", "optuna", "scikit-learn", "pydantic")


def atomic_write_json(path: str | Path, data: Any) -> None:
    """:func:`atomic_write_bytes` for indented JSON."""
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=True) + "\n")


def now_iso() -> str:
    """Current UTC time, ISO 8601 with seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_output_folder(path: str | Path) -> Path:
    """The resolved ``path`` if it is a folder this process can create files in (or could create); else an
    InputError saying why (``detail`` only: the caller names the config key or flag).

    Why a probe: checking permission bits is not enough (root ignores them, read-only mounts do not show
    in them), so a temporary folder is created and removed in the nearest existing ancestor."""
    try:
        target = Path(path).expanduser().resolve()
    except (OSError, RuntimeError) as err:  # e.g. a symlink loop
        raise InputError(f"cannot use {path} as a folder: {err}") from None
    existing = target
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"cannot create {target}: {existing} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".qnas-probe-", dir=existing))
    except OSError as err:
        raise InputError(f"cannot write in {existing}: {err.strerror or err}") from None
    return target


def check_new_run_dir(out: str | Path) -> Path:
    """The resolved ``--out`` folder if a new run may go there: absent or empty, and writable. A folder
    holding a run, or anything else, is refused, so nothing of the user's is ever overwritten."""
    path = Path(out).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise InputError("exists and is not a folder", source=str(path), field="--out")
    if any((path / marker).exists() for marker in RUN_MARKERS):
        raise InputError(f"already holds a run; continue it with `qnas run --resume {path}` or choose "
                         "another --out", source=str(path), field="--out")
    if path.is_dir() and any(path.iterdir()):
        raise InputError("is not empty and holds no qnas run; nothing was written (give a new or empty folder)",
                         source=str(path), field="--out")
    try:
        return check_output_folder(path)
    except InputError as err:
        raise InputError(err.detail, source=str(path), field="--out") from None


def create_run_dir(root: str | Path, name: str, *, out: str | Path | None = None) -> Path:
    """A fresh run folder: ``out`` if given (see :func:`check_new_run_dir`), else ``root/<name>-<timestamp>[-n]``."""
    if out is not None:
        path = check_new_run_dir(out)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"cannot create the run folder: {err.strerror or err}", source=str(path),
                             field="--out") from None
        return path
    try:
        base = check_output_folder(root)
        base.mkdir(parents=True, exist_ok=True)
    except (InputError, OSError) as err:
        detail = err.detail if isinstance(err, InputError) else err.strerror or str(err)
        raise InputError(detail, source=str(root), field="output.root") from None
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        path = base / (f"{name}-{stamp}" if n == 1 else f"{name}-{stamp}-{n}")
        try:
            path.mkdir()  # exclusive: two runs started in the same second get different folders
            return path
        except FileExistsError:
            continue
        except OSError as err:
            raise InputError(f"cannot create a run folder: {err.strerror or err}", source=str(path),
                             field="output.root") from None
    raise InputError(f"cannot create a new run folder under {base}", source=str(base))


def check_run_dir(path: str | Path) -> Path:
    """The resolved run folder, or an InputError saying why it is not one."""
    run = Path(path).expanduser().resolve()
    if not run.is_dir():
        raise InputError(f"run folder not found: {run}")
    if not (run / CONFIG).is_file():
        raise InputError(f"not a qnas run folder: {run / CONFIG} is missing")
    return run


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that decide a run's results (read from metadata, no imports)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(where: str | Path | None = None) -> str | None:
    """The commit of the git checkout holding the qnas sources, or None (not a checkout, no git)."""
    folder = Path(where) if where is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


def new_manifest(*, seed: int, space: dict[str, Any], command: list[str] | None = None) -> dict[str, Any]:
    """The manifest of a run that starts now; ``status`` becomes ``finished`` when it ends."""
    return {
        "qnas": metadata.version("qnas") if _installed("qnas") else None,
        "versions": package_versions(),
        "seed": seed,
        "git_commit": git_commit(),
        "command": list(sys.argv if command is None else command),
        "space": space,
        "started_at": now_iso(),
        "finished_at": None,
        "status": "running",
        "resumes": [],
    }


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


MANIFEST_TYPES: dict[str, type] = {"versions": dict, "command": list, "space": dict, "status": str, "resumes": list,
                                     "latency_tables": dict}
"""Keys of a manifest that code reads, and the type each must have (a damaged one is refused by name)."""
_JSON_NAMES: dict[type, str] = {dict: "object", list: "array", str: "string", int: "number", float: "number",
                                bool: "boolean", type(None): "null"}


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """The run's manifest (an empty one when the run died before writing it); a damaged one is an InputError."""
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        return {}
    try:
        manifest = read_json(path, what="run manifest")
    except InputError as err:
        raise InputError(f"damaged manifest: {err.detail}", source=path, line=err.line) from None
    if not isinstance(manifest, dict):
        raise InputError(f"damaged manifest: expected a JSON object, got {type(manifest).__name__}", source=path)
    for key, kind in MANIFEST_TYPES.items():
        if key in manifest and not isinstance(manifest[key], kind):
            raise InputError(f"damaged manifest: expected a JSON {_JSON_NAMES[kind]}, got "
                             f"{_JSON_NAMES.get(type(manifest[key]), type(manifest[key]).__name__)}", source=path,
                             field=key)
    return manifest


def update_manifest(run_dir: str | Path, **changes: Any) -> dict[str, Any]:
    """Merge ``changes`` into the manifest and write it atomically."""
    manifest = {**read_manifest(run_dir), **changes}
    atomic_write_json(Path(run_dir) / MANIFEST, manifest)
    return manifest
