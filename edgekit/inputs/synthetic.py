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
* **Text.** String inputs get words of the vocabulary of the ``StringLookup`` layers that
  read them (:func:`keras_string_values`), and out-of-vocabulary words where those layers
  have OOV indices; a string input without a lookup gets plain English words
  (:data:`PLAIN_WORDS`). Never random bytes: onnxruntime's string tensors hold text.
* **Shape.** Dynamic non-batch dimensions (a text model's sequence length) get the first of
  :data:`CANDIDATE_LENGTHS` that Keras itself, and the converted graph when given, runs
  without error (:func:`probe_lengths`): stacked ``Conv1D`` / pooling layers reject short
  sequences, and Keras runs some too-short ones that onnxruntime refuses (a convolution over
  a window longer than what is left of the sequence). Several dynamic dimensions get distinct
  lengths (a query and a value of different lengths), unless the model needs them equal.

numpy only at import time; Keras is imported by :func:`keras_input_ranges`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.errors import ConversionError, InputError, exception_reason
from edgekit.inputs.data import TensorSpecInfo, is_string_dtype
from edgekit.metadata import ModelMetadata

__all__ = ["InputRange", "CANDIDATE_LENGTHS", "PLAIN_WORDS", "OOV_WORDS", "keras_input_ranges",
           "keras_string_values", "draw_inputs", "synthetic_feeds", "probe_lengths",
           "shortest_length", "dynamic_count", "smooth_images"]

CANDIDATE_LENGTHS = (8, 16, 32, 64, 128, 256, 512)
#: the words of a string input that no lookup layer reads
PLAIN_WORDS = ("the", "model", "reads", "plain", "text", "here", "and", "there")
#: out-of-vocabulary words drawn besides a lookup's vocabulary (where it has OOV indices)
OOV_WORDS = ("", "edgekit-out-of-vocabulary", "Zürich")


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


def _lookups(layer: Any) -> list[Any]:
    """The ``StringLookup`` layers in ``layer`` (itself or nested)."""
    if type(layer).__name__ == "StringLookup" and not getattr(layer, "invert", False):
        return [layer]
    return [lk for sub in getattr(layer, "layers", None) or [] for lk in _lookups(sub)]


def _readers(model: Any, tensor: Any) -> list[Any]:
    """The layers of functional ``model`` called on ``tensor`` (matched by name: a nested
    model's node holds a copy)."""
    name = getattr(tensor, "name", None)
    return [layer for layer in getattr(model, "layers", None) or []
            for node in getattr(layer, "_inbound_nodes", None) or []
            if any(getattr(t, "name", None) == name
                   for t in getattr(node, "input_tensors", None) or ())]


def _words(lookups: Sequence[Any]) -> tuple[str, ...]:
    """The vocabularies of ``lookups``, plus OOV words where every one of them has OOV
    indices (Keras raises on OOV input with ``num_oov_indices=0``)."""
    vocab = dict.fromkeys(str(w) for lk in lookups
                          for w in lk.get_vocabulary(include_special_tokens=False))
    if all(int(getattr(lk, "num_oov_indices", 0) or 0) > 0 for lk in lookups):
        vocab.update(dict.fromkeys(OOV_WORDS))
    return tuple(vocab)


def keras_string_values(model: Any, specs: Sequence[TensorSpecInfo]) -> dict[str, tuple[str, ...]]:
    """The words to draw for each string input of a Keras model: the vocabulary (and OOV
    words) of the ``StringLookup`` layers reading it; of all the model's lookups where none
    is found (a subclassed model); :data:`PLAIN_WORDS` without any lookup."""
    strings = [i for i, s in enumerate(specs) if is_string_dtype(s.dtype)]
    if not strings:
        return {}
    every = _lookups(model) if getattr(model, "layers", None) else []
    inputs = list(getattr(model, "inputs", None) or [])
    out: dict[str, tuple[str, ...]] = {}
    for i in strings:
        own = ([lk for layer in _readers(model, inputs[i]) for lk in _lookups(layer)]
               if len(inputs) == len(specs) else [])
        out[specs[i].name] = _words(own or every) if own or every else PLAIN_WORDS
    return out


def dynamic_count(specs: Sequence[TensorSpecInfo]) -> int:
    """How many non-batch dimensions of ``specs`` are dynamic (None)."""
    return sum(d is None for s in specs for d in s.shape[1:])


def draw_inputs(specs: Sequence[TensorSpecInfo], n: int, rng: np.random.Generator,
                length: int | Sequence[int], ranges: dict[str, InputRange],
                int_ranges: dict[str, int], image: bool,
                strings: Mapping[str, Sequence[str]] | None = None) -> dict[str, np.ndarray]:
    """Seeded inputs for ``specs``; see the module doc. Dynamic dimensions get ``length``: one
    size for all, or one size per dynamic dimension (inputs in order, then their axes).
    String inputs get words of ``strings[name]`` (default :data:`PLAIN_WORDS`)."""
    sizes = iter([length] * dynamic_count(specs) if isinstance(length, int) else length)
    feeds: dict[str, np.ndarray] = {}
    for s in specs:
        shape = (n, *[next(sizes) if d is None else d for d in s.shape[1:]])
        dt = np.dtype(s.dtype)
        r = ranges.get(s.name)
        if is_string_dtype(dt):
            words = np.asarray(list((strings or {}).get(s.name) or PLAIN_WORDS), object)
            feeds[s.name] = words[rng.integers(0, len(words), shape)]
        elif np.issubdtype(dt, np.integer):
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


def _candidates(count: int) -> Iterator[tuple[int, ...]]:
    """Lengths for ``count`` dynamic dimensions, shortest first: at each of
    :data:`CANDIDATE_LENGTHS` distinct ones (``L, 1.5 L, 2 L, ...``), then all equal."""
    for length in CANDIDATE_LENGTHS:
        step = max(1, length // 2)
        yield tuple(length + j * step for j in range(count))
        if count > 1:
            yield (length,) * count


Runner = Callable[[dict[str, np.ndarray]], object]


def _first_refusal(runners: Sequence[tuple[str, Runner]], feeds: dict[str, np.ndarray],
                   ) -> tuple[str, BaseException] | None:
    """(who, error) of the first of ``runners`` that cannot run ``feeds``; None when all do."""
    for who, run in runners:
        try:
            run(feeds)
        except Exception as exc:  # this runner refuses these lengths
            return who, exc
    return None


def probe_lengths(runners: Sequence[tuple[str, Runner]],
                  make: Callable[[tuple[int, ...]], dict[str, np.ndarray]], count: int,
                  name: str) -> tuple[int, ...]:
    """The first lengths for ``count`` dynamic dimensions (see :func:`_candidates`) that every
    one of ``runners`` (``(name, call)``, Keras first) runs ``make(lengths)`` with.

    Raises:
        InputError: Keras itself runs none of them (with Keras' own reason).
        ConversionError: Keras runs some, but a later runner (onnxruntime on the converted
            graph) none of those.
    """
    refusals: dict[str, BaseException] = {}
    for lengths in _candidates(count):
        refusal = _first_refusal(runners, make(lengths))
        if refusal is None:
            return lengths
        refusals[refusal[0]] = refusal[1]
    tried = ", ".join(map(str, CANDIDATE_LENGTHS))
    keras = runners[0][0]
    who = next((w for w in refusals if w != keras), keras)
    last = refusals.get(who)
    why = f"{type(last).__name__}: {exception_reason(last)}" if last is not None else "no candidate"
    if who == keras:
        raise InputError(
            f"{who} cannot run {name} on synthetic inputs with dynamic dimensions of length "
            f"{tried}: {why}", hint="pass --validation-data with inputs the model accepts")
    raise ConversionError(
        f"{who} fails running the converted {name} at every input length Keras accepts "
        f"(tried {tried}): {why}", hint="a converter bug: report it with the model attached "
        "(try --no-simplify to rule out edgekit's clean-ups)")


def shortest_length(runs: Callable[[int], bool], above: int) -> int | None:
    """The shortest length over ``above`` at which ``runs(length)`` is true, assuming every
    longer one runs too (the windows of convolutions and pooling); None when none of
    :data:`CANDIDATE_LENGTHS` does."""
    hi = next((c for c in CANDIDATE_LENGTHS if c > above and runs(c)), None)
    if hi is None:
        return None
    lo = above  # runs(lo) is false: the length that failed
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if runs(mid) else (mid, hi)
    return hi


def synthetic_feeds(specs: Sequence[TensorSpecInfo], meta: ModelMetadata, n: int,
                    seed: int = 0, words: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Seeded inputs for an ONNX model (:func:`edgekit.inputs.synthetic.draw_inputs`, the generator
    export uses): image-like for image models, N(0, 1) for other float inputs, token ids below
    the vocabulary size (else 0/1) for integer inputs, ``words`` (the graph's string
    constants: its lookup vocabularies) and :data:`OOV_WORDS` for string inputs
    (:data:`PLAIN_WORDS` without ``words``); dynamic dimensions get length 8."""
    pre = meta.preprocessing
    vocab = len((meta.tokenizer or {}).get("vocabulary") or []) or 2
    ints = {s.name: vocab for s in specs if np.dtype(s.dtype).kind in "iu"}
    image = pre is not None and pre.kind == "image"
    texts = tuple(dict.fromkeys([*words, *OOV_WORDS])) if words else PLAIN_WORDS
    strings = {s.name: texts for s in specs if is_string_dtype(s.dtype)}
    return draw_inputs(specs, n, np.random.default_rng(seed), 8, {}, ints, image, strings)
