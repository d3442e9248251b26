"""Files: atomic artifact writes, temporary folders that go on every exit, ONNX reading."""

from __future__ import annotations

from edgekit.io.artifacts import ArtifactSet, atomic_write_bytes, atomic_write_json
from edgekit.io.onnxfile import ModelInfo, inspect_model, load_onnx
from edgekit.io.tempdirs import temp_dir

__all__ = [
    "ArtifactSet",
    "atomic_write_bytes",
    "atomic_write_json",
    "temp_dir",
    "load_onnx",
    "inspect_model",
    "ModelInfo",
]
