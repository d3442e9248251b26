"""Files: atomic artifact writes and ONNX reading."""

from __future__ import annotations

from edgekit.io.artifacts import (
    ArtifactSet,
    atomic_write_bytes,
    atomic_write_json,
    sha256_file,
    to_json,
)
from edgekit.io.onnxfile import (
    ModelInfo,
    format_info,
    inspect_model,
    load_onnx,
)

__all__ = [
    "ArtifactSet",
    "atomic_write_bytes",
    "atomic_write_json",
    "sha256_file",
    "to_json",
    "ModelInfo",
    "inspect_model",
    "format_info",
    "load_onnx",
]
