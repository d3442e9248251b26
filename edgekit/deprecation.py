"""The one way to keep an old name for a while: it warns, names its replacement and the release
that removes it (after Polygraphy's ``mod.deprecate``).

- :func:`warn_deprecated` emits the :class:`DeprecationWarning` (for an old keyword, an old
  option value ...): ``edgekit: OLD is deprecated and will be removed in edgekit 0.3; use NEW
  instead``, pointing at the caller's line;
- :func:`deprecated_alias` keeps a function or class under its old name: calling the alias (or
  constructing an instance of a class alias, a subclass of the new class) warns first.

An alias whose removal version the package has reached is refused when it is created
(:class:`RuntimeError` at import): the alias has to go before the release.

Pure Python.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable
from typing import Any, TypeVar, cast

from edgekit import __version__

__all__ = ["REMOVAL", "warn_deprecated", "deprecated_alias"]

#: the release that removes names deprecated now
REMOVAL = "0.3"

F = TypeVar("F", bound=Callable[..., object])


def _version(text: str) -> tuple[int, ...]:
    """``(0, 3)`` from ``"0.3"`` (``"0.3.0rc1"`` -> ``(0, 3, 0)``)."""
    return tuple(int(n) for n in re.findall(r"\d+", text.split("rc")[0].split("+")[0]))


def _check_due(old: str, removal: str) -> None:
    if _version(__version__) >= _version(removal):
        raise RuntimeError(f"{old} was to be removed in edgekit {removal} and this is "
                           f"{__version__}: delete the alias")


def warn_deprecated(old: str, new: str, removal: str = REMOVAL, stacklevel: int = 2) -> None:
    """Emit a :class:`DeprecationWarning` naming ``old``, its replacement and ``removal``.

    Args:
        old: what is deprecated, as the user wrote it (``"EdgeModel(session=...)"``).
        new: what to use instead.
        removal: the edgekit version that removes ``old``.
        stacklevel: as for :func:`warnings.warn`, counted from the function that calls this
            one: 2 (default) points at that function's caller.
    """
    warnings.warn(f"edgekit: {old} is deprecated and will be removed in edgekit {removal}; "
                  f"use {new} instead", DeprecationWarning, stacklevel=stacklevel + 1)


def _qualified(obj: Callable[..., object]) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def deprecated_alias(old: str, new: F, removal: str = REMOVAL) -> F:
    """``new`` under its old name ``old`` (e.g. ``"edgekit.runtime.model.load_array"``),
    warning through :func:`warn_deprecated` on every call (a class: on every instance).

    Raises:
        RuntimeError: edgekit's version is at or past ``removal`` (see the module docstring).
    """
    _check_due(old, removal)
    target = _qualified(new)
    if isinstance(new, type):
        base = cast(type[Any], new)

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            warn_deprecated(old, target, removal)
            base.__init__(self, *args, **kwargs)

        name = old.rpartition(".")[2]
        attrs = {"__init__": __init__, "__doc__": base.__doc__, "__module__": base.__module__}
        return cast(F, type(name, (base,), attrs))

    @functools.wraps(new)
    def alias(*args: Any, **kwargs: Any) -> object:
        warn_deprecated(old, target, removal)
        return new(*args, **kwargs)

    return cast(F, alias)
