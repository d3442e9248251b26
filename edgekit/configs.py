"""Composed option dataclasses as JSON: the nested shape is written, older flat keys are read.

A config such as :class:`~edgekit.quantize.QuantizationConfig` or
:class:`~edgekit.tune.TuneConfig` holds smaller configs (its groups) as fields.
:func:`config_to_dict` writes it as nested JSON objects; :func:`config_from_dict` reads that
back, and also the flat dicts written before the groups existed: each old key is moved into
its group (``{"calibration_method": "minmax"}`` -> ``{"calibration": {"method": "minmax"}}``)
before the dataclasses are built, so they validate it as usual.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Mapping
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

from edgekit.errors import InputError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["config_to_dict", "config_from_dict", "flat_keys", "check_groups"]

C = TypeVar("C", bound="DataclassInstance")


def _jsonable(value: object) -> object:
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def config_to_dict(config: DataclassInstance) -> dict[str, object]:
    """The JSON-ready dict of ``config``: every field, groups as nested objects, enums as their
    values, tuples as lists."""
    return {f.name: _jsonable(getattr(config, f.name)) for f in dataclasses.fields(config)}


@functools.cache
def _groups(cls: type[DataclassInstance]) -> dict[str, type[DataclassInstance]]:
    """The fields of ``cls`` that are dataclasses themselves (its groups), with their types."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)
            if isinstance(hints[f.name], type) and dataclasses.is_dataclass(hints[f.name])}


def check_groups(config: DataclassInstance) -> None:
    """An :class:`~edgekit.errors.InputError` when a group of ``config`` holds anything but its
    dataclass (a dict, say): call it from ``__post_init__``."""
    for name, cls in _groups(type(config)).items():
        value = getattr(config, name)
        if not isinstance(value, cls):
            raise InputError(f"{type(config).__name__}.{name} must be a {cls.__name__}, got "
                             f"{type(value).__name__}", hint=f"build it with {cls.__name__}(...)")


def flat_keys(cls: type[DataclassInstance]) -> dict[str, str]:
    """Old flat key -> ``"group.field"`` of every field of ``cls``'s groups: a field's old name
    is its ``metadata["flat"]``, else its own name."""
    return {f.metadata.get("flat", f.name): f"{group}.{f.name}"
            for group, sub in _groups(cls).items() for f in dataclasses.fields(sub)}


def _put(data: dict[str, object], path: list[str], value: object, where: str) -> None:
    """Set ``data[path[0]][path[1]]...`` to ``value`` unless set already (objects copied)."""
    if len(path) == 1:
        data.setdefault(path[0], value)
        return
    sub = data.get(path[0], {})
    if not isinstance(sub, Mapping):
        raise InputError(f"{where}.{path[0]} must be an object, got {type(sub).__name__}")
    data[path[0]] = copy = dict(sub)
    _put(copy, path[1:], value, f"{where}.{path[0]}")


def _default(f: dataclasses.Field[Any]) -> object:
    """The default of field ``f`` (dataclasses.MISSING when it has none)."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _read_field(cls: type[DataclassInstance], f: dataclasses.Field[Any], value: object,
                base: DataclassInstance | None, where: str) -> object:
    """``value`` for field ``f`` of ``cls``: a group (a dataclass field) is read from its
    object on top of its default (``base``'s value when given); anything else as it is."""
    sub = _groups(cls).get(f.name)
    if sub is None or isinstance(value, sub):
        return value
    default = getattr(base, f.name) if base is not None else _default(f)
    return config_from_dict(sub, value, where=f"{where}.{f.name}",
                            base=default if isinstance(default, sub) else None)


def config_from_dict(cls: type[C], data: object, flat: Mapping[str, str] | None = None,
                     where: str | None = None, base: C | None = None) -> C:
    """``cls`` from ``data`` (what :func:`config_to_dict` wrote). Fields that are dataclasses
    are read from nested objects, a missing key keeping the field's default (``base``'s value
    when given); old flat keys named in ``flat`` (old key -> ``"group.field"``, any depth) are
    moved into their group first (a value given in the group wins); unknown keys are ignored
    (files written by a newer edgekit). A value that is not an object, or one the dataclass
    refuses, is an :class:`~edgekit.errors.InputError` naming where it was."""
    where = where or cls.__name__
    if not isinstance(data, Mapping):
        raise InputError(f"{where} must be an object, got {type(data).__name__}")
    fields = dataclasses.fields(cls)
    values = dict(data)
    for old, path in (flat or {}).items():
        if old in values and old not in {f.name for f in fields}:
            _put(values, path.split("."), values.pop(old), where)
    kwargs: dict[str, Any] = {f.name: _read_field(cls, f, values[f.name], base, where)
                              for f in fields if f.name in values}
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except TypeError as exc:  # a value of the wrong kind that __post_init__ compared
        raise InputError(f"{where}: {exc}") from exc
