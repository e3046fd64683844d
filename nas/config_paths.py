"""Paths in configs: relative to the config file's folder, and checked to exist."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, ValidationInfo

__all__ = ["ExistingPath", "ConfigPath", "relative_to_config", "resolve_existing"]


def relative_to_config(value: Path, info: ValidationInfo) -> Path:
    """Resolve against the config's folder (the working folder when the config came from no file)."""
    context = info.context or {}
    path = value.expanduser()
    if not path.is_absolute() and context.get("base_dir") is not None:
        path = Path(context["base_dir"]) / path
    return path.resolve()


def resolve_existing(value: Path, info: ValidationInfo) -> Path:
    """Resolve against the config's folder; a missing file is an error naming the resolved path."""
    context = info.context or {}
    path = relative_to_config(value, info)
    if context.get("check_files", True) and not path.exists():
        raise ValueError(f"file or folder not found: {path}")
    return path


ExistingPath = Annotated[Path, AfterValidator(resolve_existing)]
"""A path to an existing input file or folder, relative to the config file's folder."""

ConfigPath = Annotated[Path, AfterValidator(relative_to_config)]
"""A path relative to the config file's folder that need not exist yet (a cache, an output)."""
