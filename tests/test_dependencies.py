"""The dependency lock: complete, within pyproject's ranges, and what this suite is running on.

``make setup``/``run``/``test`` install ``requirements.lock`` (``make lock`` refreshes it), so a fresh machine gets
exactly the set the suite last passed with; ``pip install qnas`` users get pyproject's ranges, which must admit it.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


def _lock() -> dict[str, str]:
    pins: dict[str, str] = {}
    for number, line in enumerate(LOCK.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        match = PIN.match(line.strip())
        assert match, f"{LOCK.name}:{number}: expected NAME==VERSION, got {line!r}"
        name = canonicalize_name(match[1])
        assert name not in pins, f"{LOCK.name}:{number}: {name} is pinned twice"
        pins[name] = match[2]
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]]


def test_lock_is_for_this_python():
    header = LOCK.read_text().splitlines()[0]
    assert f"python {sys.version_info.major}.{sys.version_info.minor} " in header, header


def test_every_declared_range_admits_its_locked_version():
    pins = _lock()
    for requirement in _declared():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is declared in pyproject.toml but not locked"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"pyproject.toml asks {requirement}, the lock has {name}=={pins[name]}")


def test_lock_holds_every_transitive_dependency():
    """Every requirement of every locked package, and of the extras pyproject.toml asks for (``ray[train]``)."""
    pins, environment = _lock(), default_environment()
    extras: dict[str, set[str]] = {}
    for requirement in _declared():
        extras.setdefault(canonicalize_name(requirement.name), set()).update(requirement.extras)
    missing = []
    for name in pins:
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            wanted = [""] + sorted(extras.get(name, ()))
            if requirement.marker is not None and not any(requirement.marker.evaluate({**environment, "extra": extra})
                                                          for extra in wanted):
                continue
            if canonicalize_name(requirement.name) not in pins:
                missing.append(f"{name} needs {requirement}")
    assert not missing, f"{LOCK.name} lacks: {missing}"


def test_this_environment_is_the_lock():
    """The gate: the suite passes on the locked set, so `make test` proves the lock (run `make setup` if this fails)."""
    differ = []
    for name, version in _lock().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            differ.append(f"{name}: locked {version}, installed {installed}")
    assert not differ, f"installed packages differ from {LOCK.name} (run `make setup`): {differ}"
