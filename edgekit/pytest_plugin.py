"""pytest plugin for users' regression tests (registered through the ``pytest11`` entry point)."""

from __future__ import annotations

__all__: list[str] = []
