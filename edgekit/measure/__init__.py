"""Latency, memory and accuracy measurement; side-by-side comparisons."""

from __future__ import annotations

from edgekit.measure import bench as _bench
from edgekit.measure.bench import *  # noqa: F403

__all__ = [*_bench.__all__]
