"""Files: atomic artifact writes, temporary folders that go on every exit, ONNX reading."""

from __future__ import annotations

from edgekit.io.artifacts import (
    ArtifactSet,
    atomic_write_bytes,
    atomic_write_json,
    recover,
    sha256_file,
    to_json,
)
from edgekit.io.onnxfile import (
    ModelInfo,
    format_info,
    inspect_model,
    load_onnx,
)
from edgekit.io.tempdirs import Terminated, interruptible, private_tempdir, temp_dir

__all__ = [
    "ArtifactSet",
    "atomic_write_bytes",
    "atomic_write_json",
    "recover",
    "sha256_file",
    "Terminated",
    "interruptible",
    "private_tempdir",
    "temp_dir",
    "to_json",
    "ModelInfo",
    "inspect_model",
    "format_info",
    "load_onnx",
]
