"""edgekit.deprecation: an old name warns, names its replacement and its removal version."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from edgekit.deprecation import REMOVAL, deprecated_alias, warn_deprecated


def add(a: int, b: int = 1) -> int:
    """Add."""
    return a + b


@dataclass
class Point:
    """A point."""

    x: int
    y: int = 0


def test_function_alias_warns_and_calls_the_new_function() -> None:
    old_add = deprecated_alias("edgekit.example.old_add", add)
    with pytest.warns(DeprecationWarning) as caught:
        assert old_add(2, b=3) == 5
    message = str(caught[0].message)
    assert "edgekit.example.old_add is deprecated" in message
    assert f"removed in edgekit {REMOVAL}" in message
    assert f"use {__name__}.add instead" in message
    assert caught[0].filename == __file__  # points at the caller, not at the alias
    assert old_add.__doc__ == "Add." and old_add.__name__ == "add"


def test_class_alias_is_a_subclass_that_warns_on_construction() -> None:
    OldPoint = deprecated_alias("edgekit.example.OldPoint", Point, removal="9.0")
    with pytest.warns(DeprecationWarning, match=r"OldPoint is deprecated .* edgekit 9\.0; "
                                                rf"use {__name__}\.Point instead") as caught:
        p = OldPoint(1, y=2)
    assert isinstance(p, Point) and (p.x, p.y) == (1, 2)
    assert caught[0].filename == __file__
    assert OldPoint.__name__ == "OldPoint" and OldPoint.__doc__ == Point.__doc__


def test_warn_deprecated_points_at_the_callers_caller() -> None:
    def old_style(session: object | None = None) -> None:
        if session is not None:
            warn_deprecated("EdgeModel(session=...)", "session_options=")

    with pytest.warns(DeprecationWarning, match=r"session=\.\.\.\) is deprecated") as caught:
        old_style(session=object())
    assert caught[0].filename == __file__


def test_an_alias_past_its_removal_version_is_refused() -> None:
    with pytest.raises(RuntimeError, match="was to be removed in edgekit 0.1"):
        deprecated_alias("edgekit.example.old_add", add, removal="0.1")
