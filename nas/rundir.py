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
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from search_spaces.atomic import atomic_write_bytes, atomic_write_text
from search_spaces.errors import InputError

__all__ = [
    "CONFIG", "MANIFEST", "JOURNAL", "atomic_write_bytes", "atomic_write_text", "atomic_write_json",
    "create_run_dir", "check_run_dir", "package_versions", "git_commit", "now_iso", "new_manifest",
    "read_manifest", "update_manifest",
]

CONFIG, MANIFEST, JOURNAL = "config.yaml", "manifest.json", "trials.jsonl"
_PACKAGES = ("qnas", "torch", "numpy", "pymoo", "optuna", "scikit-learn", "pydantic")


def atomic_write_json(path: str | Path, data: Any) -> None:
    """:func:`atomic_write_bytes` for indented JSON."""
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=True) + "\n")


def now_iso() -> str:
    """Current UTC time, ISO 8601 with seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def create_run_dir(root: str | Path, name: str, *, out: str | Path | None = None) -> Path:
    """A fresh run folder: ``out`` if given (must not hold a run), else ``root/<name>-<timestamp>[-n]``."""
    if out is not None:
        path = Path(out).expanduser().resolve()
        if path.exists() and not path.is_dir():
            raise InputError("exists and is not a folder", source=str(path), field="--out")
        if (path / CONFIG).exists() or (path / JOURNAL).exists():
            raise InputError(f"already holds a run; continue it with `qnas run --resume {path}` or choose "
                             "another --out", source=str(path), field="--out")
        path.mkdir(parents=True, exist_ok=True)
        return path
    base = Path(root).expanduser().resolve()
    base.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        path = base / (f"{name}-{stamp}" if n == 1 else f"{name}-{stamp}-{n}")
        try:
            path.mkdir()  # exclusive: two runs started in the same second get different folders
            return path
        except FileExistsError:
            continue
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


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """The run's manifest (an empty one when the run died before writing it)."""
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"damaged manifest: {err}", source=path) from None


def update_manifest(run_dir: str | Path, **changes: Any) -> dict[str, Any]:
    """Merge ``changes`` into the manifest and write it atomically."""
    manifest = {**read_manifest(run_dir), **changes}
    atomic_write_json(Path(run_dir) / MANIFEST, manifest)
    return manifest
