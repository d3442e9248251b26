"""ONNX Runtime model packages written by ``edgekit export/tune --package`` (the format, the
variant table and the selection live in :mod:`edgekit.runtime.modelpackage`)."""

from __future__ import annotations

from edgekit.packaging import build as _build
from edgekit.packaging import write as _write
from edgekit.packaging.build import *  # noqa: F403
from edgekit.packaging.write import *  # noqa: F403

__all__ = [*_build.__all__, *_write.__all__]
