"""The output contract: what each model output means, decided at export and stored in metadata.

Pure Python + numpy (Keras is imported lazily by :func:`keras_output_activations` only), so
the runtime can read the contract on a device. The runtime never guesses from values: an output
is turned into probabilities only when the contract says it holds logits.

Kinds (:class:`OutputKind`):

- ``probabilities``: the model ends in a softmax over its last axis: each row (each pixel or
  step for rank > 2) is a distribution, renormalised to sum to 1 (absorbs fp16/int8 rounding);
- ``independent``: the model ends in a sigmoid: every value is its own probability (multi-label
  classes, pixels ...), returned unchanged, never renormalised;
- ``logits``: a classifier without a final activation; ``predict`` applies softmax (sigmoid for
  one column);
- ``regression``: real-valued outputs, returned unchanged;
- ``other``: anything else (embeddings, feature maps, a softmax over another axis than the last
  ...), returned unchanged.

Files exported before ``independent`` existed say ``probabilities`` for sigmoid outputs too;
:func:`graph_kind` corrects the kind from the op that ends the ONNX graph (Sigmoid ->
``independent``, a Softmax over another axis -> ``other``), never from values.

Classification rows (:func:`class_rows`, :func:`predicted_classes`, :func:`top_k_rows`): an
output of shape ``[N, C]`` (or ``[C]``; ``[N, 1, ..., 1, C]`` is read as ``[N, C]``). Outputs
with more dimensions (per pixel, per step) are not rows: :class:`InputError`. An
``independent`` output with several columns is multi-label: every class whose probability is at
or over a threshold (default 0.5), most likely first, possibly none.

The top-1 rule (:func:`top1`, the one place it is written): the arg-max over the last axis; a
single column (or a 1-D array of per-sample scores) is a binary classifier, ``[1 - p, p]``,
class 1 when ``p >= 0.5`` (:data:`DEFAULT_THRESHOLD`). The threshold applies to
probabilities; a single *logit* column is class 1 when ``x >= 0`` (:data:`LOGIT_THRESHOLD`,
``sigmoid(x) >= 0.5``), so outputs of the ``logits`` kind pass that threshold instead.
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
    "graph_kind",
    "class_rows",
    "has_class_rows",
    "predicted_classes",
    "top1",
    "top_k_rows",
    "is_multi_label",
    "scores_classes",
    "DEFAULT_THRESHOLD",
    "LOGIT_THRESHOLD",
]

#: the multi-label threshold: a class is predicted when its probability is at or over it
DEFAULT_THRESHOLD = 0.5
#: the same threshold for a single logit column: ``sigmoid(x) >= 0.5`` exactly when ``x >= 0``
LOGIT_THRESHOLD = 0.0
#: softmax(log_softmax(x)) == softmax(x), so log-probabilities are read as logits
_LINEAR = frozenset({"linear", "identity", "none", "log_softmax"})


class OutputKind(StrEnum):
    """What one model output holds."""

    PROBABILITIES = "probabilities"
    INDEPENDENT = "independent"
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


def _activation_name(layer: Any, rank: int | None) -> str:
    """Name of the activation a Keras layer applies last (``linear`` when it has none); a
    ``Softmax`` layer over another axis than the last (of an output of ``rank``) is
    ``softmax_axis``."""
    import keras

    if isinstance(layer, keras.layers.Softmax):
        axes = layer.axis if isinstance(layer.axis, list | tuple) else [layer.axis]
        last = all(int(a) == -1 or (rank is not None and int(a) == rank - 1) for a in axes)
        return "softmax" if last else "softmax_axis"
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
        shape = getattr(t, "shape", None)
        rank = None if shape is None else len(shape)
        names.append("unknown" if layer is None else _activation_name(layer, rank))
    return names


def output_kind(activation: str, task: str, classifier: bool) -> OutputKind:
    """The kind of an output whose last activation is ``activation``.

    Softmax (over the last axis) gives ``probabilities``, sigmoid ``independent``, a softmax
    over another axis ``other``; for a regression ``task`` anything else is ``regression``; a
    linear end is ``logits`` only for a known ``classifier`` (labels or a stored classification
    task), else ``other``; ``unknown`` (a SavedModel) is ``other``.
    """
    if activation == "softmax":
        return OutputKind.PROBABILITIES
    if activation == "sigmoid":
        return OutputKind.INDEPENDENT
    if activation == "softmax_axis":
        return OutputKind.OTHER
    if task == "regression":
        return OutputKind.REGRESSION
    if classifier and activation in _LINEAR:
        return OutputKind.LOGITS
    return OutputKind.OTHER


def to_probabilities(y: np.ndarray, kind: OutputKind | str | None) -> np.ndarray:
    """Probabilities from an output of ``kind`` (unchanged for independent/regression/other/
    None)."""
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


def graph_kind(kind: OutputKind | None, op: str | None, axis: int | None,
               rank: int | None) -> OutputKind | None:
    """``kind`` corrected by the op that ends the graph (see :mod:`edgekit.runtime.output_ops`).

    Only ``probabilities`` is corrected, for files exported before ``independent`` existed
    (or a forced ``--output-kind``): a ``Sigmoid`` end is ``independent``; a ``Softmax`` whose
    ``axis`` (of an output of ``rank``) is not the last is ``other``. Unknown ops change nothing.
    """
    if kind is not OutputKind.PROBABILITIES or op is None:
        return kind
    if op == "Sigmoid":
        return OutputKind.INDEPENDENT
    if op == "Softmax" and axis is not None and rank and axis % rank != rank - 1:
        return OutputKind.OTHER
    return kind


def scores_classes(kinds: Sequence[str] | None) -> bool:
    """Whether variants of a model are compared on the top-1 class of its first output: every
    kind but a declared ``regression`` (unknown kinds too, as before the contract); a
    regression output's values are compared instead (:mod:`edgekit.agreement`)."""
    return not kinds or kinds[0] != OutputKind.REGRESSION.value


def has_class_rows(probs: np.ndarray) -> bool:
    """True when ``probs`` is one row of classes per sample (``[N, C]``, ``[C]`` or
    ``[N, 1, ..., 1, C]``), False for a scalar or an output per pixel or step."""
    shape = np.shape(probs)
    return len(shape) >= 1 and int(np.prod(shape[1:-1])) == 1


def class_rows(probs: np.ndarray) -> np.ndarray:
    """``probs`` as classification rows ``[N, C]`` (float64), or :class:`InputError` for an
    output with one value per pixel or step (see the module docstring)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 0:
        raise InputError("a scalar output has no classes")
    if p.ndim == 1:
        return p[None]
    if not has_class_rows(p):
        raise InputError(
            f"an output of shape {list(p.shape)} holds one value per pixel or step, not one row "
            "of class probabilities per sample: it has no labels or top-k",
            hint="use predict() and read the array")
    return p.reshape(p.shape[0], p.shape[-1])


def top1(p: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """The predicted class of each row (the top-1 rule of the module docstring).

    Args:
        p: scores with the classes on the last axis (``[N, C]``, or per pixel/step
            ``[N, ..., C]``); a 1-D array is one binary score per sample.
        threshold: class 1 of a single column is ``p >= threshold``; default 0.5 for
            probabilities, :data:`LOGIT_THRESHOLD` for logits.

    Returns:
        int64 class ids of shape ``p.shape[:-1]`` (``[N]`` for a 1-D ``p``): the arg-max, or
        0 / 1 for one column.
    """
    p = np.asarray(p)
    if p.ndim <= 1:
        return (p.reshape(-1) >= threshold).astype(np.int64)
    if p.shape[-1] == 1:
        return (p[..., 0] >= threshold).astype(np.int64)
    return p.argmax(-1).astype(np.int64, copy=False)


def predicted_classes(probabilities: np.ndarray, *, multi_label: bool = False,
                      threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Class ids by :func:`top1`; ``multi_label``: a boolean ``[N, C]`` mask of every class at
    or over ``threshold`` (default 0.5)."""
    if multi_label:
        return np.asarray(probabilities) >= threshold
    return top1(probabilities, threshold)


def is_multi_label(probs: np.ndarray, kind: OutputKind | str | None) -> bool:
    """True for an ``independent`` output of several classes (see the module docstring)."""
    return kind == OutputKind.INDEPENDENT and np.ndim(probs) >= 1 and np.shape(probs)[-1] > 1


def top_k_rows(probs: np.ndarray, kind: OutputKind | str | None, labels: Sequence[str] | None,
               k: int | None = None, threshold: float = DEFAULT_THRESHOLD,
               ) -> list[list[tuple[str, float]]]:
    """The most likely ``(label, probability)`` pairs of each row, most likely first.

    A distribution gives its ``k`` (default 3) first classes; a single column with two labels
    is read as ``[1 - p, p]``; a multi-label output (:func:`is_multi_label`) gives every class
    at or over ``threshold`` (at most ``k`` when given), possibly none. Without labels (or
    with a count that does not match) the class index is the label.
    """
    p = class_rows(probs)
    multi = is_multi_label(p, kind)
    if p.shape[1] == 1 and labels is not None and len(labels) == 2:
        p = np.concatenate([1.0 - p, p], axis=1)
    names = labels if labels is not None and len(labels) == p.shape[1] else None
    order = np.argsort(-p, axis=1, kind="stable")
    if multi:
        over = predicted_classes(p, multi_label=True, threshold=threshold)
        picked = [[j for j in idx if over[i, j]] for i, idx in enumerate(order)]
        cut = None if k is None else max(1, int(k))
    else:
        picked = [list(idx) for idx in order]
        cut = max(1, min(3 if k is None else int(k), p.shape[1]))
    return [[(names[j] if names else str(j), float(row[j])) for j in idx[:cut]]
            for row, idx in zip(p, picked, strict=True)]
