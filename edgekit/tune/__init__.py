"""Search quantization and session settings for the fastest model within an accuracy budget."""

from __future__ import annotations

from edgekit.tune import search as _search
from edgekit.tune.search import *  # noqa: F403

__all__ = [*_search.__all__]
