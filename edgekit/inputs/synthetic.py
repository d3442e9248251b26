"""Synthetic validation inputs that the model accepts and that match its preprocessing.

Without user data, export validates on seeded random inputs. Two things make such inputs
prove something:

* **Range.** A model whose first layer is ``Rescaling(1/255)`` (EfficientNet, keras-io image
  models) expects pixels in ``[0, 255]``; one starting with an adapted ``Normalization``
  expects data around its mean. :func:`keras_input_ranges` reads that from the layers
  right after each input (through ``Resizing`` / nested models); other float inputs get
  ``[0, 1)`` for image models (edgekit metadata) and N(0, 1) otherwise. Image batches
  (N, H, W, 1|3|4) are smooth random fields in that range (:func:`smooth_images`), not
  independent noise per pixel.
* **Shape.** A dynamic non-batch dimension (a text model's sequence length) gets the first
  of :data:`CANDIDATE_LENGTHS` that Keras itself runs without error: stacked ``Conv1D`` /
  pooling layers reject short sequences.

numpy only at import time; Keras is imported by :func:`keras_input_ranges`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.errors import InputError, exception_reason
from edgekit.inputs.data import TensorSpecInfo
from edgekit.metadata import ModelMetadata

__all__ = ["InputRange", "CANDIDATE_LENGTHS", "keras_input_ranges", "draw_inputs",
           "synthetic_feeds", "probe_length", "smooth_images"]

CANDIDATE_LENGTHS = (8, 16, 32, 64, 128, 256, 512)


@dataclass(frozen=True)
class InputRange:
    """How to draw a float input: ``uniform`` in [low, high), or ``normal`` (mean low, sd high)."""

    kind: str
    low: float
    high: float


_PASS_THROUGH = ("Resizing", "CenterCrop", "InputLayer", "Reshape", "Permute")


def _first_layers(model: Any) -> list[Any]:
    """Layers after a single-input model's input, skipping shape-only layers and descending
    into a nested model that comes first."""
    layers = [lay for lay in getattr(model, "layers", [])
              if type(lay).__name__ not in _PASS_THROUGH]
    if not layers:
        return []
    first = layers[0]
    if getattr(first, "layers", None):
        return _first_layers(first)
    return layers[:1]


def _range_of(layer: Any) -> InputRange | None:
    """The input range a preprocessing layer implies, if it is one."""
    name = type(layer).__name__
    if name == "Rescaling":
        scale = np.asarray(layer.scale, np.float64)
        if scale.size == 1 and float(scale) > 0:
            return InputRange("uniform", 0.0, float(min(1.0 / float(scale), 1e4)))
    if name == "Normalization":
        mean, var = getattr(layer, "mean", None), getattr(layer, "variance", None)
        if mean is not None and var is not None:
            m = float(np.mean(np.asarray(mean)))
            sd = float(np.sqrt(np.mean(np.asarray(var))))
            return InputRange("normal", m, sd if sd > 0 else 1.0)
    return None


def keras_input_ranges(model: Any, specs: Sequence[TensorSpecInfo]) -> dict[str, InputRange]:
    """Input ranges implied by the first layers of a single-input Keras model ({} otherwise)."""
    if len(specs) != 1 or not np.issubdtype(np.dtype(specs[0].dtype), np.floating):
        return {}
    for layer in _first_layers(model):
        r = _range_of(layer)
        if r is not None:
            return {specs[0].name: r}
    return {}


def draw_inputs(specs: Sequence[TensorSpecInfo], n: int, rng: np.random.Generator,
                length: int, ranges: dict[str, InputRange], int_ranges: dict[str, int],
                image: bool) -> dict[str, np.ndarray]:
    """Seeded inputs for ``specs``: dynamic dimensions get ``length``; see the module doc."""
    feeds: dict[str, np.ndarray] = {}
    for s in specs:
        shape = (n, *[length if d is None else d for d in s.shape[1:]])
        dt = np.dtype(s.dtype)
        r = ranges.get(s.name)
        if np.issubdtype(dt, np.integer):
            feeds[s.name] = rng.integers(0, int_ranges.get(s.name, 2), shape).astype(dt)
        elif dt == np.bool_:
            feeds[s.name] = rng.integers(0, 2, shape).astype(bool)
        elif _is_image(shape):
            feeds[s.name] = _scaled(smooth_images(rng, shape), r, image).astype(dt)
        elif r is not None and r.kind == "uniform":
            feeds[s.name] = rng.uniform(r.low, r.high, shape).astype(dt)
        elif r is not None:
            feeds[s.name] = rng.normal(r.low, r.high, shape).astype(dt)
        elif image:
            feeds[s.name] = rng.random(shape, dtype=np.float32).astype(dt)
        else:
            feeds[s.name] = rng.standard_normal(shape).astype(dt)
    return feeds


def _is_image(shape: tuple[int, ...]) -> bool:
    """(N, H, W, C) with 1, 3 or 4 channels and H, W >= 8: a channels-last image batch."""
    return len(shape) == 4 and shape[-1] in (1, 3, 4) and min(shape[1:3]) >= 8


def _scaled(u: np.ndarray, r: InputRange | None, unit: bool) -> np.ndarray:
    """Map [0, 1] images to ``r`` ([0, 1] for ``unit`` image models, else mean 0, sd 1)."""
    if r is not None and r.kind == "uniform":
        return r.low + (r.high - r.low) * u
    mean, sd = (r.low, r.high) if r is not None else (0.0, 1.0)
    return u if unit and r is None else mean + sd * np.sqrt(12.0) * (u - 0.5)


def _interp_matrix(size: int, coarse: int) -> np.ndarray:
    """(size, coarse) bilinear weights from a coarse grid to ``size`` points."""
    pos = np.linspace(0, coarse - 1, size)
    lo = np.minimum(pos.astype(int), coarse - 2)
    frac = pos - lo
    m = np.zeros((size, coarse), np.float32)
    m[np.arange(size), lo] = 1 - frac
    m[np.arange(size), lo + 1] = frac
    return m


def smooth_images(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Image-like batches in [0, 1]: a random 6x6 colour field upsampled bilinearly, 10 %
    pixel noise, each image stretched to the full range. Independent noise per pixel is far
    from what image models see and drives deep networks into saturation."""
    n, h, w, c = shape
    coarse = rng.random((n, 6, 6, c), dtype=np.float32)
    field = np.einsum("hi,nijc,wj->nhwc", _interp_matrix(h, 6), coarse, _interp_matrix(w, 6),
                      optimize=True)
    img = 0.9 * field + 0.1 * rng.random(shape, dtype=np.float32)
    lo = img.min(axis=(1, 2, 3), keepdims=True)
    hi = img.max(axis=(1, 2, 3), keepdims=True)
    return np.asarray((img - lo) / np.maximum(hi - lo, 1e-6), np.float32)


def probe_length(call: Callable[[dict[str, np.ndarray]], Any],
                 make: Callable[[int], dict[str, np.ndarray]], name: str) -> int:
    """The first of :data:`CANDIDATE_LENGTHS` at which ``call(make(length))`` runs.

    Raises :class:`InputError` with Keras' own reason when none does.
    """
    last: BaseException | None = None
    for length in CANDIDATE_LENGTHS:
        try:
            call(make(length))
            return length
        except Exception as exc:  # Keras rejects this length: try the next one
            last = exc
    why = f"{type(last).__name__}: {exception_reason(last)}" if last is not None else "no candidate"
    raise InputError(
        f"Keras cannot run {name} on synthetic inputs with dynamic dimensions of length "
        f"{', '.join(map(str, CANDIDATE_LENGTHS))}: {why}",
        hint="pass --validation-data with inputs the model accepts",
    )


def synthetic_feeds(specs: Sequence[TensorSpecInfo], meta: ModelMetadata, n: int,
                    seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for an ONNX model (:func:`edgekit.inputs.synthetic.draw_inputs`, the generator
    export uses): image-like for image models, N(0, 1) for other float inputs, token ids below
    the vocabulary size (else 0/1) for integer inputs; dynamic dimensions get length 8."""
    pre = meta.preprocessing
    vocab = len((meta.tokenizer or {}).get("vocabulary") or []) or 2
    ints = {s.name: vocab for s in specs if np.dtype(s.dtype).kind in "iu"}
    image = pre is not None and pre.kind == "image"
    return draw_inputs(specs, n, np.random.default_rng(seed), 8, {}, ints, image)
