"""Keras -> ONNX conversion and validation (needs ``edgekit[export]``).

:func:`export_model` is the stage; its steps are in :mod:`~edgekit.convert.load` (with the
input signature in :mod:`~edgekit.convert.signature`), :mod:`~edgekit.convert.conversion`,
:mod:`~edgekit.convert.validate` (with :mod:`~edgekit.convert.batching` for models whose outputs
are not per-sample, and :mod:`~edgekit.convert.noise` for Keras' own float noise) and
:mod:`~edgekit.convert.report`.
"""

from __future__ import annotations

from edgekit.convert.config import ExportConfig, read_labels
from edgekit.convert.conversion import convert
from edgekit.convert.export import ExportResult, export_model
from edgekit.convert.load import KerasSource, load_custom_objects, load_source
from edgekit.convert.report import library_versions, output_contract
from edgekit.convert.signature import InputSpec
from edgekit.convert.tfconvert import MAX_OPSET
from edgekit.convert.validate import synthetic_inputs, validate_source
from edgekit.exported import ExportHook, ExportOutcome

__all__ = [
    "MAX_OPSET",
    "ExportConfig",
    "ExportHook",
    "ExportOutcome",
    "ExportResult",
    "InputSpec",
    "KerasSource",
    "convert",
    "export_model",
    "library_versions",
    "load_custom_objects",
    "load_source",
    "output_contract",
    "read_labels",
    "synthetic_inputs",
    "validate_source",
]
