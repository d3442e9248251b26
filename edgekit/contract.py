"""The output contract: what each model output means, decided at export and stored in metadata.

Pure Python + numpy (Keras is imported lazily by :func:`keras_output_kinds` only), so the
runtime can read the contract on a device. The runtime never guesses from values: an output is
turned into probabilities only when the contract says it holds logits.

Kinds (:class:`OutputKind`):

- ``probabilities``: the model ends in softmax or sigmoid; returned as they are (softmax rows
  renormalised to sum to 1, which absorbs fp16/int8 rounding);
- ``logits``: a classifier without a final activation; ``predict`` applies softmax (sigmoid for
  one column);
- ``regression``: real-valued outputs, returned unchanged;
- ``other``: anything else (embeddings, feature maps ...), returned unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import numpy as np

from edgekit.errors import InputError

__all__ = [
    "OutputKind",
    "parse_output_kinds",
    "keras_output_activations",
    "output_kind",
    "to_probabilities",
]

_PROBABILITY_ACTIVATIONS = frozenset({"softmax", "sigmoid"})
#: softmax(log_softmax(x)) == softmax(x), so log-probabilities are read as logits
_LINEAR = frozenset({"linear", "identity", "none", "log_softmax"})


class OutputKind(StrEnum):
    """What one model output holds."""

    PROBABILITIES = "probabilities"
    LOGITS = "logits"
    REGRESSION = "regression"
    OTHER = "other"


def parse_output_kinds(values: Sequence[str | OutputKind] | None) -> list[OutputKind] | None:
    """Validated kinds (case-insensitive names), or :class:`InputError` naming the choices."""
    if values is None:
        return None
    out = []
    for v in values:
        try:
            out.append(OutputKind(str(v).strip().lower()))
        except ValueError:
            raise InputError(f"unknown output kind {v!r}",
                             hint=f"use one of {', '.join(k.value for k in OutputKind)}") from None
    return out


def _activation_name(layer: Any) -> str:
    """Name of the activation a Keras layer applies last (``linear`` when it has none)."""
    import keras

    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    act = getattr(layer, "activation", None)
    if act is None:
        return "linear"
    return str(getattr(act, "__name__", None) or act).lower()


def keras_output_activations(model: Any) -> list[str]:
    """The final activation of each of ``model.outputs`` (``unknown`` where no layer is known)."""
    names = []
    for t in getattr(model, "outputs", None) or []:
        hist = getattr(t, "_keras_history", None)
        layer = getattr(hist, "operation", None) if hist is not None else None
        names.append("unknown" if layer is None else _activation_name(layer))
    return names


def output_kind(activation: str, task: str, classifier: bool) -> OutputKind:
    """The kind of an output whose last activation is ``activation``.

    Softmax/sigmoid give ``probabilities``; for a regression ``task`` anything else is
    ``regression``; a linear end is ``logits`` only for a known ``classifier`` (labels or a
    stored classification task), else ``other``; ``unknown`` (a SavedModel) is ``other``.
    """
    if activation in _PROBABILITY_ACTIVATIONS:
        return OutputKind.PROBABILITIES
    if task == "regression":
        return OutputKind.REGRESSION
    if classifier and activation in _LINEAR:
        return OutputKind.LOGITS
    return OutputKind.OTHER


def to_probabilities(y: np.ndarray, kind: OutputKind | str | None) -> np.ndarray:
    """Probabilities from an output of ``kind`` (unchanged for regression/other/None)."""
    if kind is None or y.size == 0 or y.dtype.kind != "f":
        return y
    kind = OutputKind(kind)
    if kind is OutputKind.PROBABILITIES:
        if y.ndim < 2 or y.shape[-1] == 1:
            return y
        s = y.sum(axis=-1, keepdims=True, dtype=np.float32)
        return (y / np.where(s > 0, s, 1)).astype(y.dtype, copy=False)
    if kind is OutputKind.LOGITS:
        if y.ndim < 2 or y.shape[-1] == 1:
            return (1.0 / (1.0 + np.exp(-y))).astype(y.dtype)
        e = np.exp(y - y.max(axis=-1, keepdims=True))
        return (e / e.sum(axis=-1, keepdims=True)).astype(y.dtype)
    return y
