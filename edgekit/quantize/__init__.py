"""int8 / fp16 variants of an ONNX model and the ORT mobile format."""

from __future__ import annotations

from edgekit.quantize import calibration as _calibration
from edgekit.quantize import config as _config
from edgekit.quantize import core as _core
from edgekit.quantize.calibration import *  # noqa: F403
from edgekit.quantize.config import *  # noqa: F403
from edgekit.quantize.core import *  # noqa: F403

__all__ = [*_calibration.__all__, *_config.__all__, *_core.__all__]
