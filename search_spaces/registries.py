"""One generic registry for everything users extend: spaces, searchers, blocks, op costs, datasets,
accuracy models, commands, latency backends.

Every registry refuses a name given twice (timm only warns; a silently replaced searcher is a bug
nobody finds) and answers an unknown name with the nearest registered one, as one :class:`InputError`
naming the config field. Names can be normalised (datasets are case-insensitive) and some reserved.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar, overload

from .errors import InputError, nearest

__all__ = ["Registry"]

T = TypeVar("T")


def _describe(value: Any) -> str:
    return getattr(value, "__qualname__", None) or type(value).__qualname__


class Registry(Generic[T]):
    """Named values of one kind.

    ``kind`` words the errors ("searcher", "dataset", ...); ``field`` is the config key an unknown
    name is reported against; ``normalize`` maps a name to its key (e.g. ``str.lower``);
    ``reserved`` names cannot be registered (e.g. strategies that are not models).
    """

    def __init__(self, kind: str, *, field: str | None = None, normalize: Callable[[str], str] | None = None,
                 reserved: Iterable[str] = ()) -> None:
        self.kind, self.field = kind, field
        self._normalize = normalize or (lambda name: name)
        self._reserved = frozenset(reserved)
        self._items: dict[str, T] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, value: T) -> T: ...

    def register(self, name: str, value: Any = None) -> Any:
        """Add ``value`` under ``name``; without ``value``, a decorator that adds what it decorates."""
        if value is not None:
            return self._add(name, value)
        return lambda decorated: self._add(name, decorated)

    def _add(self, name: str, value: T) -> T:
        key = self._normalize(name)
        if not key:
            raise ValueError(f"a {self.kind} name must not be empty")
        if key in self._reserved:
            raise ValueError(f"{self.kind} name {key!r} is reserved")
        if key in self._items:
            raise ValueError(f"{self.kind} {key!r} is already registered by {_describe(self._items[key])}")
        self._items[key] = value
        return value

    def get(self, name: str, *, source: Any = None, field: str | None = None) -> T:
        """The value registered under ``name``; an unknown name is an InputError naming the nearest one."""
        key = self._normalize(str(name))
        if key not in self._items:
            names = self.names()
            raise InputError(f"unknown {self.kind} {name!r}{nearest(key, names)} (known: {', '.join(names)})",
                             source=source, field=field or self.field)
        return self._items[key]

    def copy(self) -> Registry[T]:
        """An independent registry with the same entries (a test registers into it and throws it away)."""
        other: Registry[T] = Registry(self.kind, field=self.field, normalize=self._normalize, reserved=self._reserved)
        other._items = dict(self._items)
        return other

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        """(name, value) pairs in registration order."""
        return list(self._items.items())

    def values(self) -> list[T]:
        """The values in registration order (e.g. the commands in ``qnas --help``)."""
        return list(self._items.values())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._normalize(name) in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
