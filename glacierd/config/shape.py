"""The models' shape, as the file sees it: which keys a section knows, which are sections
themselves, which values a choice allows. The formatter uses it to name settings and to
suggest the one a misspelt name meant."""

from __future__ import annotations

from collections.abc import Iterator
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic.dataclasses import is_pydantic_dataclass
from pydantic.fields import FieldInfo

from glacierd.config.model import Config

Path_ = tuple[str, ...]


def _key(name: str, info: FieldInfo) -> str:
    """The key the file uses for a field: its alias if it has one (conninfo is `dsn`)."""
    return info.validation_alias if isinstance(info.validation_alias, str) else name


def fields(model: type) -> dict[str, FieldInfo]:
    """A model's settings, by the keys the file uses (fields not read from it left out)."""
    found: dict[str, FieldInfo] = model.__pydantic_fields__  # type: ignore[attr-defined]
    return {_key(name, info): info for name, info in found.items() if info.init is not False}


def _types(annotation: Any) -> Iterator[Any]:
    """The types an annotation allows (``X | None``: X and None)."""
    if get_origin(annotation) in (Union, UnionType):
        for arg in get_args(annotation):
            yield from _types(arg)
    else:
        yield annotation


def section_type(info: FieldInfo) -> type | None:
    """The model of a field that is a section of its own ([store.s3]); None for a value."""
    return next(
        (t for t in _types(info.annotation) if isinstance(t, type) and is_pydantic_dataclass(t)),
        None,
    )


def model_at(path: Path_) -> type | None:
    """The model of the section at ``path`` (() is the whole file); None if it is none."""
    model: type | None = Config
    for part in path:
        info = fields(model).get(part) if model is not None else None
        model = section_type(info) if info is not None else None
    return model


def file_keys(loc: Path_) -> Path_:
    """pydantic names a defaulted field by its attribute (conninfo) and a given one by its
    key in the file (dsn): always the file's."""
    keys: list[str] = []
    model: type | None = Config
    for part in loc:
        all_fields = model.__pydantic_fields__ if model is not None else {}  # type: ignore[attr-defined]
        info = all_fields.get(part)
        keys.append(_key(part, info) if info is not None else part)
        model = section_type(info) if info is not None else None
    return tuple(keys)


def choices(path: Path_) -> tuple[str, ...]:
    """The values a choice setting (a Literal) allows, in their documented order."""
    model = model_at(path[:-1])
    info = fields(model).get(path[-1]) if model is not None else None
    if info is None:
        return ()
    literal = next((t for t in _types(info.annotation) if get_origin(t) is Literal), None)
    return tuple(str(choice) for choice in get_args(literal))


def all_settings(model: type = Config, prefix: Path_ = ()) -> Iterator[Path_]:
    """Every setting and section, as paths from the top of the file."""
    for key, info in fields(model).items():
        yield (*prefix, key)
        if (inner := section_type(info)) is not None:
            yield from all_settings(inner, (*prefix, key))


def label(path: Path_) -> str:
    """A section as the file writes its header ([store.s3]), a setting by its dotted name."""
    name = ".".join(path)
    return f"[{name}]" if model_at(path) is not None else name
