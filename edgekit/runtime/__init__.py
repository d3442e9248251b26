"""The device runtime: numpy + onnxruntime (OpenVINO optional, imported when it runs a model)."""

from __future__ import annotations

from edgekit.runtime.engines import (
    MAX_STATIC_SHAPES,
    Engine,
    OnnxruntimeEngine,
    OpenVinoEngine,
    open_engine,
    openvino_available,
)
from edgekit.runtime.model import EdgeModel, choose_engine
from edgekit.runtime.predict import format_predictions, load_array, load_image, predict_input
from edgekit.runtime.session import (
    AUTO_ORDER,
    ENGINE_NAMES,
    PERFORMANCE_HINTS,
    PRECISIONS,
    PROVIDER_NAMES,
    SessionOptionsConfig,
    available_providers,
    resolve_providers,
)
from edgekit.runtime.specs import InputSpec, read_onnx_props

__all__ = [
    "EdgeModel",
    "SessionOptionsConfig",
    "InputSpec",
    "PROVIDER_NAMES",
    "AUTO_ORDER",
    "available_providers",
    "resolve_providers",
    "load_image",
    "load_array",
    "predict_input",
    "format_predictions",
    "ENGINE_NAMES",
    "PRECISIONS",
    "PERFORMANCE_HINTS",
    "Engine",
    "OnnxruntimeEngine",
    "OpenVinoEngine",
    "MAX_STATIC_SHAPES",
    "open_engine",
    "openvino_available",
    "choose_engine",
    "read_onnx_props",
]
