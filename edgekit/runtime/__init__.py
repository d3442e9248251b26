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
    "AUTO_ORDER",
    "available_providers",
    "BUILTIN_ENGINES",
    "DEFAULT_ENGINE",
    "EdgeModel",
    "Engine",
    "engine_class",
    "engine_names",
    "Feeds",
    "format_predictions",
    "InputSpec",
    "installed_engines",
    "load_array",
    "load_image",
    "MAX_IMAGE_PIXELS",
    "MAX_STATIC_SHAPES",
    "normalize_engine",
    "OnnxruntimeEngine",
    "open_engine",
    "OpenVinoEngine",
    "parse_engines",
    "PERFORMANCE_HINTS",
    "Placement",
    "PRECISIONS",
    "predict_input",
    "PROVIDER_NAMES",
    "ProviderOptions",
    "RawInput",
    "register_engine",
    "resolve_providers",
    "SessionOptionsConfig",
    "short_provider_name",
    "unregister_engine",
]
