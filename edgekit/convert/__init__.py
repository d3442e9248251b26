"""Keras -> ONNX conversion and validation (needs ``edgekit[export]``)."""

from __future__ import annotations

from edgekit.convert import export as _export
from edgekit.convert.export import *  # noqa: F403

__all__ = [*_export.__all__]
