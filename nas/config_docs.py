"""The config reference, generated from the pydantic models that validate configs (so it cannot drift).

``qnas docs config`` prints it; ``docs/config.md`` is its output, and a test fails when the file and the
models disagree. Each section model becomes one table: key, type, default, allowed range, and the
field's ``description``; a model's docstring introduces its table. First what every experiment has
(:class:`nas.config.ExperimentConfig`), then, per registered kind (the default first), the kind's own
sections (its ``config_model``), each section table naming the kinds it belongs to.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Iterator, Mapping
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


def model_sections(model: type[BaseModel], prefix: str = "",
                   fields: set[str] | None = None) -> Iterator[tuple[str, type[BaseModel]]]:
    """(dotted prefix, model) for ``model`` and every section model under it, depth first, each once
    (``fields``: only those top-level fields of ``model``)."""
    seen: set[type[BaseModel]] = set()

    def walk(current: type[BaseModel], path: str) -> Iterator[tuple[str, type[BaseModel]]]:
        if current in seen:
            return
        seen.add(current)
        yield path, current
        for name, field in current.model_fields.items():
            if current is model and fields is not None and name not in fields:
                continue
            for sub in _models_in(field.annotation):
                key = f"{path}.{name}" if path else name
                yield from walk(sub, f"{key}[]" if get_origin(field.annotation) is list else key)

    yield from walk(model, prefix)


def _table(heading: str, model: type[BaseModel], path: str = "", fields: set[str] | None = None,
           intro: str | None = None) -> str:
    doc = inspect.getdoc(model) or ""
    lines = [heading, ""]
    intro = doc.split("\n\n")[0] if intro is None else intro
    if intro:
        lines += [intro, ""]
    lines += ["| key | type | default | allowed | what |", "|---|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if fields is not None and name not in fields:
            continue
        key = f"{path}.{name}" if path else name
        lines.append(f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | {_bounds(field)} | "
                     f"{_cell(field.description or '')} |")
    return "\n".join(lines) + "\n"


def config_reference() -> str:
    """The whole reference as Markdown: what every experiment has, then each registered kind's sections (the
    default kind first)."""
    from nas.config import ExperimentConfig
    from nas.kinds import KINDS

    default = ExperimentConfig.model_fields["kind"].default
    names = sorted(KINDS.names(), key=lambda name: (name != default, name))
    kinds = {name: KINDS.get(name).config_model for name in names}
    common = set(ExperimentConfig.model_fields)
    own = {name: set(model.model_fields) - common for name, model in kinds.items()}
    parts = [_table("## top level", ExperimentConfig)]
    parts += [_table(f"## `{path}`", m, path) for path, m in model_sections(ExperimentConfig) if path]
    owners: dict[tuple[str, type[BaseModel]], list[str]] = {}
    for name, model in kinds.items():
        for path, m in model_sections(model, fields=own[name]):
            if path:
                owners.setdefault((path, m), []).append(name)
    documented: set[tuple[str, type[BaseModel]]] = set()
    for name, model in kinds.items():
        doc = (inspect.getdoc(model) or "").split("\n\n")[0]
        parts.append(_table(f"## kind: `{name}`", model, fields=own[name],
                            intro=f"{doc}\n\nIts own sections, besides those above:"))
        for path, m in model_sections(model, fields=own[name]):
            if path and (path, m) not in documented:
                documented.add((path, m))
                belongs = ", ".join(owners[(path, m)])
                parts.append(_table(f"## `{path}` (kind{'s' if len(owners[(path, m)]) > 1 else ''}: {belongs})",
                                    m, path))
    return HEADER + "\n" + "\n".join(parts)
