"""One :class:`InputError` message from a pydantic ``ValidationError``: what is wrong, the value, what was expected.

Its own module because every config model validates through it (the experiment config and the
sections each experiment kind owns), and none of those may import the others.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from search_spaces.errors import nearest
from search_spaces.inputs import dotted as _dotted

__all__ = ["short_repr", "translate_validation_error"]

_EXPECTED = {
    "path_type": "expected a file path",
    "model_type": "expected a mapping (a section of keys)",
    "model_attributes_type": "expected a mapping (a section of keys)",
    "dict_type": "expected a mapping of option names to values",
}


def _unwrap(annotation: Any) -> Any:
    """The model or list type inside ``Annotated[...]`` / ``X | None``."""
    while get_origin(annotation) in (Annotated, Union, types.UnionType):
        annotation = [a for a in get_args(annotation) if a is not type(None)][0]
    return annotation


def _model_at(model: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    current: Any = model
    for part in loc:
        inner = _unwrap(current)
        if isinstance(part, int) and get_origin(inner) is list:
            current = get_args(inner)[0]
        elif isinstance(inner, type) and issubclass(inner, BaseModel) and part in inner.model_fields:
            current = inner.model_fields[str(part)].annotation
        else:
            return None
    inner = _unwrap(current)
    return inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None


def short_repr(value: Any) -> str:
    """``repr(value)``, cut to 60 characters (a value inside an error line)."""
    return repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."


def translate_validation_error(err: ValidationError, model: type[BaseModel],
                               absent: Mapping[str, str] | None = None) -> tuple[str, str]:
    """``(dotted field, message)`` for the first error: what is wrong, the value, what was expected.

    An unknown key comes first (a misspelt key also makes its correct spelling "missing"). ``absent`` maps
    required top-level sections to the message for their being missing or null (e.g. ``missing required
    section for kind: lpgnas``); that is reported only when nothing else is wrong."""
    errors, absent = err.errors(), absent or {}

    def is_absent(error: Any) -> bool:
        loc = error["loc"]
        return len(loc) == 1 and loc[0] in absent and (error["type"] == "missing" or error.get("input", 0) is None)

    first = next((e for e in errors if e["type"] == "extra_forbidden"), None) or \
        next((e for e in errors if not is_absent(e)), errors[0])
    loc, kind, value = list(first["loc"]), first["type"], first.get("input")
    field = _dotted(loc)
    if is_absent(first):
        return field, absent[str(loc[0])]
    if kind == "extra_forbidden":
        key, parent = str(loc[-1]), _model_at(model, loc[:-1])
        valid = list(parent.model_fields) if parent is not None else []
        return field, f"unknown key {key!r}{nearest(key, valid)} (valid keys: {', '.join(valid)})"
    if kind == "missing":
        return field, "missing required key"
    message = first["msg"].removeprefix("Value error, ")
    if kind in _EXPECTED:
        message = _EXPECTED[kind]
    elif message.startswith("Input should be "):
        message = "expected " + message.removeprefix("Input should be ")
    return field, f"got {short_repr(value)}; {message}"
