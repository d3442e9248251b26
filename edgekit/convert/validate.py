"""Validation of a converted model against its Keras source: the inputs (the user's data or
seeded synthetic inputs in the range the preprocessing layers imply), Keras and onnxruntime run
on them in batches and at batch 1, and the tolerance and ``strict`` rules enforced.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from edgekit.convert.config import ExportConfig
from edgekit.convert.conversion import conversion_error
from edgekit.convert.load import KerasSource
from edgekit.errors import ConversionError, InputError, ValidationError
from edgekit.errors import exception_reason as _reason
from edgekit.inputs.data import Dataset, format_shape, run_in_batches
from edgekit.inputs.prepare import load_model_data
from edgekit.inputs.synthetic import draw_inputs, probe_length
from edgekit.validate import (
    DEFAULT_RTOL,
    ValidationResult,
    compare_outputs,
    degenerate_warnings,
    onnx_session,
    output_saturation,
)

if TYPE_CHECKING:
    import onnxruntime

__all__ = ["synthetic_inputs", "validate_source", "validation_feeds", "validate"]


def synthetic_inputs(source: KerasSource, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs matching each input's shape, dtype and preprocessing range.

    Integer inputs get ids in the Embedding range; float inputs the range a leading
    ``Rescaling`` / ``Normalization`` layer implies, else [0, 1) for image models and N(0, 1)
    otherwise. Dynamic non-batch dimensions get the first length Keras accepts (probed once,
    see :func:`edgekit.inputs.synthetic.probe_length`).
    """
    pre = source.metadata.preprocessing
    image = pre is not None and pre.kind == "image"

    def make(length: int, count: int = n) -> dict[str, np.ndarray]:
        return draw_inputs(source.inputs, count, np.random.default_rng(seed), length,
                           source.input_ranges, source.int_ranges, image)

    dynamic = any(d is None for s in source.inputs for d in s.shape[1:])
    if dynamic and source.synthetic_length is None:
        source.synthetic_length = probe_length(source.call, lambda k: make(k, 1), source.name)
    return make(source.synthetic_length or 8)


def validation_feeds(source: KerasSource, config: ExportConfig,
                      data: str | os.PathLike[str] | Dataset | None,
                      ) -> tuple[dict[str, np.ndarray], list[str], str]:
    """(feeds, notes, description) to validate on: the user's data (capped at
    ``config.validation_samples``; its ``test`` split) or seeded synthetic inputs."""
    if data is None:
        feeds = synthetic_inputs(source, config.validation_samples or 256, config.seed)
        return feeds, [], f"synthetic (seed {config.seed})"
    feeds, _, notes, desc = load_model_data(data, source.inputs, source.metadata,
                                            "validation data", "test",
                                            config.validation_samples, config.seed)
    return feeds, notes, desc


def _shapes_of(feeds: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{k} {format_shape(v.shape)} {v.dtype}" for k, v in feeds.items())


def _keras_reference(source: KerasSource, feeds: dict[str, np.ndarray],
                     batch_size: int) -> list[np.ndarray]:
    """The Keras outputs on ``feeds``; Keras' own failure is an input problem, said as such."""
    try:
        return run_in_batches(source.call, feeds, batch_size)
    except Exception as exc:
        raise InputError(
            f"Keras itself cannot run {source.name} on the validation inputs "
            f"({_shapes_of(feeds)}): {type(exc).__name__}: {_reason(exc)}",
            hint="give --validation-data with inputs the model accepts",
        ) from exc


def _onnx_run_error(exc: BaseException, feeds: dict[str, np.ndarray], opset: int | None,
                    ) -> ConversionError:
    return conversion_error(
        f"onnxruntime loads the converted graph but fails running it on {_shapes_of(feeds)}",
        exc, opset, "a converter bug: report it with the model attached (try --no-simplify "
        "to rule out edgekit's clean-ups)")


def validate_source(
    source: KerasSource,
    onnx_model: bytes | str | os.PathLike[str] | onnxruntime.InferenceSession,
    feeds: dict[str, np.ndarray],
    atol: float | None,
    batch_size: int = 8,
    opset: int | None = None,
    rtol: float = DEFAULT_RTOL,
) -> ValidationResult:
    """Compare Keras (reference) and onnxruntime on ``feeds`` in batches of ``batch_size``
    (default 8: memory bounded by the batch, not the sample count), then at batch 1.

    ``onnx_model``: a path, bytes or an onnxruntime session; tolerance: see :func:`compare_outputs`.
    The result carries the reference outputs' saturation and warnings when they are degenerate.
    """
    n = len(next(iter(feeds.values())))
    names = [o.name for o in source.outputs]
    ref = _keras_reference(source, feeds, batch_size)
    sess = (onnx_model if not isinstance(onnx_model, bytes | str | os.PathLike)
            else onnx_session(onnx_model))
    try:
        got = run_in_batches(lambda f: sess.run(None, f), feeds, batch_size)
        k = min(n, 8)  # batch 1 proves the batch dimension is really dynamic
        one = run_in_batches(lambda f: sess.run(None, f), {a: v[:k] for a, v in feeds.items()}, 1)
    except Exception as exc:
        raise _onnx_run_error(exc, feeds, opset) from exc
    result = compare_outputs(ref, got, names, atol, rtol)
    result.include(compare_outputs([r[:k] for r in ref], one, names, atol, rtol))
    result.saturation = output_saturation(ref, names)
    result.warnings = degenerate_warnings(result.saturation, n)
    return result


def validate(source: KerasSource, session: onnxruntime.InferenceSession,
             feeds: dict[str, np.ndarray], config: ExportConfig) -> ValidationResult:
    """:func:`validate_source` with ``config``'s tolerance and ``strict`` enforced.

    Raises:
        ValidationError: outputs differ beyond the tolerance, or (``strict``) the reference
            outputs are degenerate.
    """
    result = validate_source(source, session, feeds, config.atol, config.batch_size,
                             config.opset, rtol=config.rtol)
    differ = (f"ONNX outputs differ from Keras beyond {result.tolerance()}: "
              f"{result.failures()} ({result.summary()})")
    if not result.passed and result.warnings:
        raise ValidationError(
            f"{differ}, on inputs where {'; '.join(result.warnings)}; no model was written",
            hint="saturated outputs turn float rounding into flipped classes: validate on "
            "real inputs with --validation-data (or --calibration)",
        )
    if not result.passed:
        raise ValidationError(
            f"{differ}; no model was written",
            hint="check the model for non-deterministic layers, or raise --atol/--rtol if "
            "this difference is acceptable",
        )
    if config.strict and result.warnings:
        raise ValidationError(
            f"validation proves little: {'; '.join(result.warnings)} (--strict)",
            hint="validate on real inputs with --validation-data (or --calibration)",
        )
    return result
