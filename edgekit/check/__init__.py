"""Accuracy and latency regression checks for CI."""

from __future__ import annotations

from edgekit.check import regression as _regression
from edgekit.check.regression import *  # noqa: F403

__all__ = [*_regression.__all__]
