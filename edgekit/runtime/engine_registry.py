"""The one list of engines: engine classes by name, and the name rules every command uses.

Everything that lists or validates engines reads this registry at call time:
:class:`~edgekit.runtime.model.EdgeModel` (``engine=``), ``SessionOptionsConfig.engine``,
``edgekit run/bench --engine``, ``compare``'s engine rows, ``edgekit tune --engines`` and its
engine candidates, and ``edgekit doctor``. The built-in engines (onnxruntime, OpenVINO) are
registered by :mod:`edgekit.runtime.engines` (``BUILTIN_ENGINES``), which ``import
edgekit.runtime`` loads. Adding an engine is one module with an
:class:`~edgekit.runtime.engine_base.Engine` subclass and one line: ``register_engine(MyEngine)``
(or an entry in ``BUILTIN_ENGINES``).

LiteRT is not an engine here: ``.tflite`` files run only in ``edgekit bench``/``compare``,
chosen by their suffix (:mod:`edgekit.measure.litert`); engines run ONNX files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from edgekit.errors import InputError

if TYPE_CHECKING:
    from edgekit.runtime.engine_base import Engine

__all__ = [
    "register_engine",
    "unregister_engine",
    "engine_class",
    "engine_names",
    "installed_engines",
    "normalize_engine",
    "parse_engines",
]

E = TypeVar("E", bound="type[Engine]")

_ENGINES: dict[str, type[Engine]] = {}
_ALIASES: dict[str, str] = {}
#: words that are not engines but mean "choose": accepted where a choice is
_AUTO = "auto"


def register_engine(cls: E) -> E:
    """Register the engine class ``cls`` under ``cls.name`` and its aliases; returns ``cls``
    (so it also works as a class decorator). Raises :class:`InputError` when the name or an
    alias is taken by another engine."""
    name = cls.name.strip().lower()
    if not name or name in (_AUTO, "all"):
        raise InputError(f"engine class {cls.__name__} needs a name other than auto/all")
    for key in (name, *cls.aliases):
        owner = _ALIASES.get(key.lower()) or (key.lower() if key.lower() in _ENGINES else None)
        if owner is not None and _ENGINES.get(owner) is not cls:
            raise InputError(f"engine name {key!r} is taken by {_ENGINES[owner].__name__}")
    _ENGINES[name] = cls
    _ALIASES.update({a.lower(): name for a in cls.aliases})
    return cls


def unregister_engine(name: str) -> None:
    """Remove the engine ``name`` (canonical name or alias) and its aliases, if registered."""
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    cls = _ENGINES.pop(key, None)
    if cls is not None:
        for alias in cls.aliases:
            _ALIASES.pop(alias.lower(), None)


def engine_names() -> tuple[str, ...]:
    """Canonical names of the registered engines, in registration order."""
    return tuple(_ENGINES)


def installed_engines() -> list[str]:
    """The registered engines that can run here (:meth:`Engine.available`), in order."""
    return [n for n, cls in _ENGINES.items() if cls.available()]


def normalize_engine(name: str | None) -> str | None:
    """Canonical engine name (``"ort"`` -> ``"onnxruntime"``, ``"ov"`` -> ``"openvino"``);
    None and ``"auto"`` give None. Unknown names raise :class:`InputError` listing the valid."""
    if name is None:
        return None
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key == _AUTO:
        return None
    if key not in _ENGINES:
        raise InputError(
            f"unknown engine {name!r}",
            hint=f"use auto or one of {', '.join(_ENGINES)}",
        )
    return key


def engine_class(name: str) -> type[Engine]:
    """The class of the engine ``name`` (canonical name or alias; :class:`InputError` when
    unknown)."""
    key = normalize_engine(name)
    if key is None:
        raise InputError("engine 'auto' is a choice, not an engine",
                         hint=f"use one of {', '.join(_ENGINES)}")
    return _ENGINES[key]


def parse_engines(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Canonical names of a comma-separated (or listed) engine choice, in order, without
    repeats; :class:`InputError` on an unknown or empty one."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [n for n in (normalize_engine(i) for i in items if str(i).strip()) if n]
    if not names:
        raise InputError(f"no engine in {text!r}", hint=f"use {', '.join(_ENGINES)}")
    return tuple(dict.fromkeys(names))
