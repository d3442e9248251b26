"""Keras -> ONNX conversion and validation (needs ``edgekit[export]``)."""

from __future__ import annotations

from edgekit.convert.export import (
    MAX_OPSET,
    ExportConfig,
    ExportResult,
    KerasSource,
    convert,
    export_model,
    library_versions,
    load_custom_objects,
    load_source,
    output_contract,
    read_labels,
    synthetic_inputs,
)

__all__ = [
    "MAX_OPSET",
    "ExportConfig",
    "ExportResult",
    "KerasSource",
    "load_source",
    "load_custom_objects",
    "convert",
    "export_model",
    "library_versions",
    "output_contract",
    "read_labels",
    "synthetic_inputs",
]
