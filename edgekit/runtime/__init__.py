"""The device runtime: numpy + onnxruntime (OpenVINO optional, imported when it runs a model).

The face: :class:`EdgeModel` and its settings (:class:`SessionOptionsConfig`, providers), the
engine protocol (:class:`Engine`) and the engine registry (:func:`register_engine` ...), the
input/output specs, and the file-input helpers of ``edgekit run``.
"""

from __future__ import annotations

from edgekit.runtime.engine_base import Engine, Placement, ProviderOptions
from edgekit.runtime.engine_openvino import MAX_STATIC_SHAPES, OpenVinoEngine
from edgekit.runtime.engine_ort import OnnxruntimeEngine
from edgekit.runtime.engine_registry import (
    engine_class,
    engine_names,
    installed_engines,
    normalize_engine,
    parse_engines,
    register_engine,
    unregister_engine,
)
from edgekit.runtime.engines import BUILTIN_ENGINES, DEFAULT_ENGINE, open_engine
from edgekit.runtime.model import EdgeModel, Feeds, RawInput
from edgekit.runtime.predict import (
    MAX_IMAGE_PIXELS,
    format_predictions,
    load_array,
    load_image,
    predict_input,
)
from edgekit.runtime.session import (
    AUTO_ORDER,
    PERFORMANCE_HINTS,
    PRECISIONS,
    PROVIDER_NAMES,
    SessionOptionsConfig,
    available_providers,
    resolve_providers,
    short_provider_name,
)
from edgekit.runtime.specs import InputSpec

__all__ = [
    "EdgeModel",
    "RawInput",
    "Feeds",
    "SessionOptionsConfig",
    "InputSpec",
    "PROVIDER_NAMES",
    "AUTO_ORDER",
    "PRECISIONS",
    "PERFORMANCE_HINTS",
    "available_providers",
    "resolve_providers",
    "short_provider_name",
    "Engine",
    "Placement",
    "ProviderOptions",
    "OnnxruntimeEngine",
    "OpenVinoEngine",
    "MAX_STATIC_SHAPES",
    "BUILTIN_ENGINES",
    "DEFAULT_ENGINE",
    "open_engine",
    "register_engine",
    "unregister_engine",
    "engine_class",
    "engine_names",
    "installed_engines",
    "normalize_engine",
    "parse_engines",
    "MAX_IMAGE_PIXELS",
    "load_image",
    "load_array",
    "predict_input",
    "format_predictions",
]
