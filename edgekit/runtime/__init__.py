"""The device runtime: numpy + onnxruntime only."""

from __future__ import annotations

from edgekit.runtime.model import (
    AUTO_ORDER,
    PROVIDER_NAMES,
    EdgeModel,
    InputSpec,
    SessionOptionsConfig,
    available_providers,
    format_predictions,
    load_array,
    load_image,
    predict_input,
    resolve_providers,
)

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
]
