"""edgekit: Keras model -> fast, small, validated ONNX for edge devices.

``import edgekit`` is cheap and never imports TensorFlow; each stage lives in its own module
(``edgekit.convert``, ``edgekit.quantize``, ``edgekit.runtime`` ...) and imports its heavy
dependencies only when called.
"""

from __future__ import annotations

from edgekit.errors import EdgekitError

__version__ = "0.1.0"

__all__ = ["__version__", "EdgekitError"]
