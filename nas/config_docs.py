"""The config reference, generated from the pydantic models that validate configs (so it cannot drift).

``qnas docs config`` prints it; ``docs/config.md`` is its output, and a test fails when the file and the
models disagree. Each section model becomes one table: key, type, default, allowed range, and the
field's ``description``; a model's docstring introduces its table.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Iterator
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

__all__ = ["config_reference", "model_sections"]

HEADER = """# Config reference

Generated from the pydantic models that validate experiment configs (`qnas docs config > docs/config.md`);
a test fails when this file and the models disagree. Every key is checked when a config loads: an unknown
key, a wrong type or a value out of range is one error line naming the file, line and key.
"""


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Every pydantic model inside an annotation (``X | None``, ``list[X]``, ``Annotated[X, ...]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _type_name(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in get_args(annotation))
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(annotation))
    if origin in (list, tuple, dict):
        inner = ", ".join(_type_name(a) for a in get_args(annotation) if a is not Ellipsis)
        return f"{origin.__name__}[{inner}]" if inner else origin.__name__
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type):
        return "section" if issubclass(annotation, BaseModel) else annotation.__name__
    return str(annotation).replace("typing.", "")


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    else:
        value = field.default
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        return "(section defaults)"
    return f"`{value!r}`" if value is not None else "`null`"


def _bounds(field: FieldInfo) -> str:
    parts = []
    for item in field.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"), ("min_length", "length ≥"),
                           ("max_length", "length ≤")):
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{sign} {value:,}" if isinstance(value, int) else f"{sign} {value}")
    return ", ".join(parts)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def model_sections(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, type[BaseModel]]]:
    """(dotted prefix, model) for ``model`` and every section model under it, depth first, each once."""
    seen: set[type[BaseModel]] = set()

    def walk(current: type[BaseModel], path: str) -> Iterator[tuple[str, type[BaseModel]]]:
        if current in seen:
            return
        seen.add(current)
        yield path, current
        for name, field in current.model_fields.items():
            for sub in _models_in(field.annotation):
                key = f"{path}.{name}" if path else name
                yield from walk(sub, f"{key}[]" if get_origin(field.annotation) is list else key)

    yield from walk(model, prefix)


def _table(path: str, model: type[BaseModel]) -> str:
    doc = inspect.getdoc(model) or ""
    lines = [f"## `{path}`" if path else "## top level", ""]
    if doc:
        lines += [doc.split("\n\n")[0], ""]
    lines += ["| key | type | default | allowed | what |", "|---|---|---|---|---|"]
    for name, field in model.model_fields.items():
        key = f"{path}.{name}" if path else name
        lines.append(f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | {_bounds(field)} | "
                     f"{_cell(field.description or '')} |")
    return "\n".join(lines) + "\n"


def config_reference(model: type[BaseModel] | None = None) -> str:
    """The whole reference as Markdown (``model``: the experiment config by default)."""
    if model is None:
        from nas.config import ExperimentConfig

        model = ExperimentConfig
    return HEADER + "\n" + "\n".join(_table(path, m) for path, m in model_sections(model))
