"""int8 / fp16 variants of an ONNX model and the ORT mobile format."""

from __future__ import annotations

from edgekit.quantize.config import (
    METADATA_KEY,
    QuantizationConfig,
    VariantResult,
    resolve_mode,
    variant_lines,
    variant_names,
)
from edgekit.quantize.core import export_hook, quantize_file, quantize_model
from edgekit.quantize.options import (
    PRESETS,
    CalibrationConfig,
    CalibrationMethod,
    GateConfig,
    OutputConfig,
    OutputFormat,
    QuantMode,
    QuantScheme,
    QuantType,
    SpeedCheckConfig,
)
from edgekit.quantize.preflight import check_gate_data

__all__ = [
    "QuantizationConfig",
    "QuantScheme",
    "CalibrationConfig",
    "GateConfig",
    "SpeedCheckConfig",
    "OutputConfig",
    "QuantMode",
    "QuantType",
    "CalibrationMethod",
    "OutputFormat",
    "PRESETS",
    "quantize_model",
    "quantize_file",
    "export_hook",
    "check_gate_data",
    "VariantResult",
    "variant_lines",
    "variant_names",
    "resolve_mode",
    "METADATA_KEY",
]
