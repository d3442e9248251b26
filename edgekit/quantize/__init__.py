"""int8 / fp16 variants of an ONNX model and the ORT mobile format."""

from __future__ import annotations

from edgekit.quantize.core import (
    METADATA_KEY,
    PRESETS,
    ArrayCalibrationReader,
    CalibrationMethod,
    OutputFormat,
    QuantizationConfig,
    QuantMode,
    QuantType,
    VariantResult,
    activation_bytes,
    calibration_split,
    export_hook,
    load_model_data,
    onnx_input_specs,
    quantize_file,
    quantize_model,
    resolve_mode,
    synthetic_feeds,
    variant_lines,
    variant_names,
)

__all__ = [
    "QuantMode",
    "QuantType",
    "CalibrationMethod",
    "OutputFormat",
    "PRESETS",
    "QuantizationConfig",
    "VariantResult",
    "variant_lines",
    "ArrayCalibrationReader",
    "onnx_input_specs",
    "load_model_data",
    "resolve_mode",
    "calibration_split",
    "activation_bytes",
    "synthetic_feeds",
    "variant_names",
    "quantize_model",
    "quantize_file",
    "export_hook",
    "METADATA_KEY",
]
