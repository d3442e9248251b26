"""Files: atomic artifact writes, temporary folders that go on every exit, ONNX reading."""

from __future__ import annotations

from edgekit.io import artifacts as _artifacts
from edgekit.io import onnxfile as _onnxfile
from edgekit.io import tempdirs as _tempdirs
from edgekit.io.artifacts import *  # noqa: F403
from edgekit.io.onnxfile import *  # noqa: F403
from edgekit.io.tempdirs import *  # noqa: F403

__all__ = [*_artifacts.__all__, *_onnxfile.__all__, *_tempdirs.__all__]
