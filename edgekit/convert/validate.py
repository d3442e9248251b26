"""Validation of a converted model against its Keras source: the inputs (the user's data or
seeded synthetic inputs in the range the preprocessing layers imply), Keras and onnxruntime run
on them in batches and at batch 1, and the tolerance and ``strict`` rules enforced.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from edgekit.convert.batching import batch_mixing
from edgekit.convert.config import ExportConfig
from edgekit.convert.conversion import conversion_error
from edgekit.convert.load import KerasSource
from edgekit.convert.noise import noise_envelope
from edgekit.errors import ConversionError, InputError, ValidationError
from edgekit.errors import exception_reason as _reason
from edgekit.inputs.data import Dataset, format_shape, run_in_batches, run_whole_batches
from edgekit.inputs.prepare import load_model_data
from edgekit.inputs.synthetic import draw_inputs, dynamic_count, probe_lengths, shortest_length
from edgekit.io.memory import batch_within
from edgekit.validate import (
    DEFAULT_ATOL,
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


def synthetic_inputs(source: KerasSource, n: int, seed: int = 0,
                     onnx_run: Callable[[dict[str, np.ndarray]], object] | None = None,
                     ) -> dict[str, np.ndarray]:
    """Seeded inputs matching each input's shape, dtype and preprocessing range.

    Integer inputs get ids in the Embedding range; float inputs the range a leading
    ``Rescaling`` / ``Normalization`` layer implies, else [0, 1) for image models and N(0, 1)
    otherwise. Dynamic non-batch dimensions get the first lengths Keras, and ``onnx_run`` (the
    converted graph) when given, both run: distinct per dimension unless the model needs them
    equal (probed once, see :func:`edgekit.inputs.synthetic.probe_lengths`).
    """
    pre = source.metadata.preprocessing
    image = pre is not None and pre.kind == "image"

    def make(lengths: int | tuple[int, ...], count: int = n) -> dict[str, np.ndarray]:
        return draw_inputs(source.inputs, count, np.random.default_rng(seed), lengths,
                           source.input_ranges, source.int_ranges, image, source.string_values)

    dynamic = dynamic_count(source.inputs)
    if dynamic and source.synthetic_lengths is None:
        runners = [("Keras", source.call)] + ([("onnxruntime", onnx_run)] if onnx_run else [])
        source.synthetic_lengths = probe_lengths(runners, lambda k: make(k, 1), dynamic,
                                                 source.name)
    return make(source.synthetic_lengths or 8)


def validation_feeds(source: KerasSource, config: ExportConfig,
                      data: str | os.PathLike[str] | Dataset | None,
                      session: onnxruntime.InferenceSession | None = None,
                      ) -> tuple[dict[str, np.ndarray], list[str], str]:
    """(feeds, notes, description) to validate on: the user's data (capped at
    ``config.validation_samples``; its ``test`` split) or seeded synthetic inputs, of lengths
    ``session`` (the converted graph) runs too when given."""
    if data is None:
        run = None if session is None else _quiet_run(session)
        feeds = synthetic_inputs(source, config.validation_samples or 256, config.seed, run)
        lengths = source.synthetic_lengths
        at = f", dynamic lengths {', '.join(map(str, lengths))}" if lengths else ""
        return feeds, [], f"synthetic (seed {config.seed}{at})"
    feeds, _, notes, desc = load_model_data(data, source.inputs, source.metadata,
                                            "validation data", "test",
                                            config.validation_samples, config.seed)
    return feeds, notes, desc


def _quiet_run(sess: onnxruntime.InferenceSession,
               ) -> Callable[[dict[str, np.ndarray]], object]:
    """``sess.run`` on feeds without onnxruntime's error log: a probe expects refusals."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.log_severity_level = 4
    return lambda feeds: sess.run(None, feeds, options)


#: how a model is run over the validation inputs: in slices with the outputs concatenated
#: (per-sample models), or on whole batches with the outputs stacked per batch
Runner = Callable[[Callable[[dict[str, np.ndarray]], Sequence[np.ndarray]],
                   dict[str, np.ndarray], int], list[np.ndarray]]


def _shapes_of(feeds: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{k} {format_shape(v.shape)} {v.dtype}" for k, v in feeds.items())


def _keras_reference(source: KerasSource, feeds: dict[str, np.ndarray], batch_size: int,
                     sess: onnxruntime.InferenceSession, run: Runner = run_in_batches,
                     ) -> list[np.ndarray]:
    """The Keras outputs on ``feeds`` (``run``: how batches are run and joined); Keras' own
    failure is an input problem, said as such (with the shortest length the converted graph
    ``sess`` runs, when too short for it)."""
    try:
        return run(source.call, feeds, batch_size)
    except Exception as exc:
        short = _minimum_length(source, sess, feeds)
        why = "" if short is None else (
            f"; inputs of length {short[0]} are too short for it: the converted graph runs "
            f"length {short[1]} or more")
        raise InputError(
            f"Keras itself cannot run {source.name} on the validation inputs "
            f"({_shapes_of(feeds)}): {type(exc).__name__}: {_reason(exc)}{why}",
            hint="give --validation-data with inputs the model accepts" if short is None
            else f"pad the validation inputs to length {short[1]} or more",
        ) from exc


def _onnx_run_error(exc: BaseException, feeds: dict[str, np.ndarray], opset: int | None,
                    ) -> ConversionError:
    return conversion_error(
        f"onnxruntime loads the converted graph but fails running it on {_shapes_of(feeds)}",
        exc, opset, "a converter bug: report it with the model attached (try --no-simplify "
        "to rule out edgekit's clean-ups)")


def _dynamic_length(source: KerasSource, feeds: dict[str, np.ndarray]) -> int | None:
    """The shortest length of a dynamic dimension in ``feeds`` (None: no dynamic dimension)."""
    lengths = [feeds[s.name].shape[axis] for s in source.inputs
               for axis, d in enumerate(s.shape) if axis and d is None and s.name in feeds]
    return min(lengths) if lengths else None


def _minimum_length(source: KerasSource, sess: onnxruntime.InferenceSession,
                    feeds: dict[str, np.ndarray]) -> tuple[int, int] | None:
    """(the shortest dynamic length in ``feeds``, the shortest length ``sess`` runs) when the
    graph refuses the first and runs a longer one (convolution/pooling windows longer than
    the sequence); None when the length is not the problem."""
    length = _dynamic_length(source, feeds)
    if length is None:
        return None
    rng, run = np.random.default_rng(0), _quiet_run(sess)

    def runs(k: int) -> bool:
        try:
            run(draw_inputs(source.inputs, 1, rng, k, source.input_ranges, source.int_ranges,
                            False, source.string_values))
        except Exception:  # refused at this length
            return False
        return True

    shortest = None if runs(length) else shortest_length(runs, length)
    return None if shortest is None else (length, shortest)


def _too_short(source: KerasSource, short: tuple[int, int]) -> InputError:
    return InputError(
        f"inputs of length {short[0]} are too short for {source.name}: the converted graph "
        f"needs dynamic dimensions of length {short[1]} or more (its convolution/pooling "
        "windows; Keras may run shorter ones without error, on empty windows)",
        hint=f"pad the validation inputs to length {short[1]} or more")


def _compared(ref: list[np.ndarray], got: list[np.ndarray], names: list[str],
              atol: float | None, rtol: float) -> ValidationResult:
    """:func:`compare_outputs`; outputs of another shape than Keras' are a conversion error."""
    try:
        return compare_outputs(ref, got, names, atol, rtol)
    except ValueError as exc:
        raise ConversionError(
            f"the converted graph's outputs differ in shape from Keras': {exc}",
            hint="a converter bug: report it with the model attached (try --no-simplify to "
            "rule out edgekit's clean-ups)") from exc


def validate_source(
    source: KerasSource,
    onnx_model: bytes | str | os.PathLike[str] | onnxruntime.InferenceSession,
    feeds: dict[str, np.ndarray],
    atol: float | None,
    batch_size: int = 8,
    opset: int | None = None,
    rtol: float = DEFAULT_RTOL,
    noise: bool = True,
) -> ValidationResult:
    """Compare Keras (reference) and onnxruntime on ``feeds`` in batches of ``batch_size``
    (default 8: memory bounded by the batch, not the sample count), then at batch 1.

    A model whose outputs are not per-sample (:func:`~edgekit.convert.batching.batch_mixing`)
    is compared on the same whole batches on both sides, and at batch 1 only where Keras runs
    it (``result.batch_dependent``). ``onnx_model``: a path, bytes or an onnxruntime session;
    tolerance: see :func:`compare_outputs`. The result carries the reference outputs'
    saturation and warnings when they are degenerate. When elements of a per-sample model fail
    the tolerance (and ``noise``), Keras runs again on the failing samples to tell float noise
    from a mismatch (:func:`edgekit.convert.noise.noise_envelope`, ``result.noise``).
    """
    n = len(next(iter(feeds.values())))
    names = [o.name for o in source.outputs]
    sess = (onnx_model if not isinstance(onnx_model, bytes | str | os.PathLike)
            else onnx_session(onnx_model))
    mixed = batch_mixing(source.call, feeds, batch_size, names,
                         DEFAULT_ATOL if atol is None else atol, rtol, source.weights,
                         noise and atol is not None)
    run: Runner = run_in_batches if mixed is None else run_whole_batches
    ref = _keras_reference(source, feeds, batch_size, sess, run)
    k = min(n, 8)  # batch 1 proves the batch dimension is really dynamic
    head = {a: v[:k] for a, v in feeds.items()}
    ref1 = [r[:k] for r in ref] if mixed is None else _keras_at_batch_1(source, head)
    try:
        got = run(lambda f: sess.run(None, f), feeds, batch_size)
        one = None if ref1 is None else run(lambda f: sess.run(None, f), head, 1)
    except Exception as exc:
        short = _minimum_length(source, sess, feeds)
        raise (_onnx_run_error(exc, feeds, opset) if short is None
               else _too_short(source, short)) from exc
    result = _compared(ref, got, names, atol, rtol)
    if ref1 is not None and one is not None:
        result.include(_compared(ref1, one, names, atol, rtol))
    result.saturation = output_saturation(ref, names)
    result.warnings = degenerate_warnings(result.saturation, len(ref[0]) if ref else n)
    if mixed is not None:
        result.n_samples, result.batch_dependent, result.batch_evidence = n, True, mixed
    elif noise and not result.passed and atol is not None:  # only then: is it float noise?
        candidates = [c for c in (got, one) if c is not None]
        result.noise = noise_envelope(source.call, feeds, ref, candidates, names, atol, rtol,
                                      batch_size, source.weights)
        result.passed = result.noise["passed"]
    return result


def _keras_at_batch_1(source: KerasSource, head: dict[str, np.ndarray],
                      ) -> list[np.ndarray] | None:
    """Keras on each sample of ``head`` alone, stacked (None: Keras does not run a batch of 1)."""
    try:
        return run_whole_batches(source.call, head, 1)
    except Exception:  # a model that runs at some batch sizes only: compared at the others
        return None


def validate(source: KerasSource, session: onnxruntime.InferenceSession,
             feeds: dict[str, np.ndarray], config: ExportConfig,
             per_sample_bytes: int = 0) -> ValidationResult:
    """:func:`validate_source` with ``config``'s tolerance and ``strict`` enforced, in batches
    of ``config.batch_size`` or fewer samples where their activations (``per_sample_bytes``
    each) would pass :data:`~edgekit.io.memory.BATCH_MEMORY_BYTES`.

    Raises:
        ValidationError: outputs differ beyond the tolerance, or (``strict``) the reference
            outputs are degenerate.
    """
    batch = batch_within(per_sample_bytes, config.batch_size)
    result = validate_source(source, session, feeds, config.atol, batch, config.opset,
                             rtol=config.rtol, noise=config.noise_envelope)
    noise = f"; {result.noise_summary()}" if result.noise else ""
    differ = (f"ONNX outputs differ from Keras beyond {result.tolerance()}: "
              f"{result.failures()}{noise} ({result.summary()}"
              + (f"; compared on the same whole batches, as the outputs are not per-sample: "
                 f"{result.batch_evidence}" if result.batch_dependent else "") + ")")
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
