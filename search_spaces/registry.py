"""Registry of search spaces: ``@register_space("mbv3")`` and ``get_space("mbv3", **options)``."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .errors import InputError, nearest
from .registries import Registry
from .space import SearchSpace

__all__ = ["register_space", "get_space", "list_spaces", "space_class", "space_from_dict", "space_from_options"]

_SPACES: Registry[type[SearchSpace]] = Registry("search space", field="search_space.name")
S = TypeVar("S", bound=type[SearchSpace])


def register_space(name: str) -> Callable[[S], S]:
    """Class decorator registering a search space under ``name`` (duplicate names raise)."""

    def wrap(cls: S) -> S:
        _SPACES.register(name, cls)
        cls.name = name
        return cls

    return wrap


def list_spaces() -> list[str]:
    """Names of all registered search spaces, sorted."""
    return _SPACES.names()


def space_class(name: str, *, source: str | None = None) -> type[SearchSpace]:
    """The class registered under ``name``; unknown names get the nearest valid one."""
    return _SPACES.get(name, source=source)


def get_space(name: str, /, *, source: str | None = None, **options: Any) -> SearchSpace:
    """Build the registered space ``name`` with keyword options, refusing unknown options by name."""
    return space_from_options(name, options, source=source)


def space_from_options(name: str, options: Mapping[str, Any], *, source: str | None = None) -> SearchSpace:
    """:func:`get_space` with the options as a mapping: any key (``name``, ``source``, ...) is checked as an
    option instead of colliding with this function's own parameters."""
    cls = space_class(name, source=source)
    allowed = [p.name for p in inspect.signature(cls.__init__).parameters.values()
               if p.kind is inspect.Parameter.KEYWORD_ONLY]
    for key in options:
        if key not in allowed:
            raise InputError(f"unknown option for space {name!r}{nearest(str(key), allowed)} (options: {allowed})",
                             source=source, field=f"search_space.options.{key}")
    try:
        return cls(**options)
    except InputError as err:
        if source is None or err.source is not None:
            raise
        raise InputError(err.detail, source=source, field=err.field, line=err.line) from None


def space_from_dict(data: Mapping[str, Any], *, source: str | None = None) -> SearchSpace:
    """Rebuild a space from ``{"name": ..., "options": {...}}`` (as stored in checkpoints and tables)."""
    return space_from_options(str(data["name"]), dict(data.get("options") or {}), source=source)
