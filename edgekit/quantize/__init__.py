"""int8 / fp16 variants of an ONNX model and the ORT mobile format."""

from __future__ import annotations

from edgekit.quantize.calibration import (
    CHECK_SAMPLES,
    HISTOGRAM_MEMORY_BYTES,
    ArrayCalibrationReader,
    CheckData,
    activation_bytes,
    bound_histogram_memory,
    calibration_split,
    load_check_data,
)
from edgekit.quantize.config import (
    AUTO_MIN_DENSE_WEIGHT_BYTES,
    METADATA_KEY,
    PRESETS,
    CalibrationMethod,
    OutputFormat,
    QuantizationConfig,
    QuantMode,
    QuantType,
    VariantResult,
    resolve_mode,
    variant_lines,
    variant_names,
)
from edgekit.quantize.core import (
    export_hook,
    quantize_file,
    quantize_model,
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
    "resolve_mode",
    "variant_names",
    "METADATA_KEY",
    "AUTO_MIN_DENSE_WEIGHT_BYTES",
    "ArrayCalibrationReader",
    "CHECK_SAMPLES",
    "HISTOGRAM_MEMORY_BYTES",
    "calibration_split",
    "activation_bytes",
    "CheckData",
    "load_check_data",
    "bound_histogram_memory",
    "quantize_model",
    "quantize_file",
    "export_hook",
]
