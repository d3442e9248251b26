"""Conversion of a :class:`~edgekit.convert.load.KerasSource` to a checked ONNX model.

tf2onnx runs on the source's ``tf.function`` with an explicit input signature (dynamic batch
dimension; several inputs; integer inputs for Embedding layers) because ``from_keras`` does not
work with Keras 3 (the rewrites around tf2onnx are in :mod:`edgekit.convert.tfconvert`). The
graph is then checked (no TensorFlow op left unconverted, captured constants bound, the onnx
checker), optionally simplified (:mod:`edgekit.convert.graph`) and loaded in onnxruntime; each
refusal names its cause.

TensorFlow, tf2onnx, onnx and onnxruntime are imported inside the functions (the ``export``
extra).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from edgekit.convert.config import MIN_OPSET
from edgekit.convert.graph import drop_unused_opsets
from edgekit.convert.graph import simplify as simplify_graph
from edgekit.convert.load import KerasSource, keras_call_error
from edgekit.convert.rewrites import rewrite
from edgekit.convert.signature import framework_dtype
from edgekit.convert.tfconvert import (
    MAX_OPSET,
    bind_captured_constants,
    captured_constants,
    from_function,
    higher_opset_for,
    tracing_for_conversion,
)
from edgekit.errors import ConversionError, require
from edgekit.errors import exception_reason as _reason
from edgekit.io.onnxgraph import walk_nodes
from edgekit.validate import onnx_session

if TYPE_CHECKING:
    import onnx
    import onnxruntime

__all__ = ["convert", "conversion_error", "opset_hint", "simplified"]


def _rename_outputs(model_proto: onnx.ModelProto, names: list[str]) -> None:
    graph = model_proto.graph
    mapping = {o.name: n for o, n in zip(graph.output, names, strict=False) if o.name != n}
    if not mapping:
        return
    for node in graph.node:
        for i, o in enumerate(node.output):
            if o in mapping:
                node.output[i] = mapping[o]
        for i, x in enumerate(node.input):
            if x in mapping:
                node.input[i] = mapping[x]
    for o in graph.output:
        if o.name in mapping:
            o.name = mapping[o.name]


def _unsupported_nodes(model_proto: onnx.ModelProto) -> list[tuple[str, str]]:
    """(op type, node name) of nodes no ONNX domain defines, Loop/If bodies included."""
    import onnx

    return [(n.op_type, n.name) for n in walk_nodes(model_proto.graph)
            if not onnx.defs.has(n.op_type, n.domain or "")]


def opset_hint(reason: str, opset: int) -> str | None:
    """A hint to change --opset, only when the opset is what a message names as the cause."""
    if "opset" not in reason.lower():
        return None
    other = MAX_OPSET if opset < MAX_OPSET else MIN_OPSET
    return f"the message names the opset as the cause: try --opset {other}"


def conversion_error(what: str, exc: BaseException, opset: int | None,
                     otherwise: str) -> ConversionError:
    """``what: <exc's reason>``, hinting at another opset when the reason names it as the
    cause (and ``opset`` is known), else ``otherwise``."""
    reason = _reason(exc)
    hint = opset_hint(reason, opset) if opset else None
    return ConversionError(f"{what}: {reason}", hint=hint or otherwise)


def _trace(source: KerasSource, signature: list[Any]) -> Any:
    """The concrete function of ``source.function`` traced for conversion: edgekit's own call
    of the Keras model, whose failure is Keras' (:func:`keras_call_error`), not tf2onnx's."""
    try:
        with tracing_for_conversion():
            return source.function.get_concrete_function(*signature)
    except Exception as exc:
        raise keras_call_error(source.name, source.inputs, exc) from exc


def _run_tf2onnx(source: KerasSource, signature: list[Any], opset: int) -> tuple[Any, Any]:
    """tf2onnx on ``source.function`` traced for conversion; returns (model, concrete fn)."""
    import logging

    require("tf2onnx", "export")
    concrete = _trace(source, signature)
    log = logging.getLogger("tf2onnx")
    level = log.level
    log.setLevel(logging.CRITICAL)  # unsupported ops are reported by _check_converted
    try:
        with tracing_for_conversion():
            model_proto = from_function(source.function, signature, opset)
    except Exception as exc:
        raise conversion_error(
            f"tf2onnx failed converting {source.name}: {type(exc).__name__}", exc, opset,
            "a layer uses a TensorFlow construct tf2onnx cannot convert; replace that layer or "
            "apply it outside the model") from exc
    finally:
        log.setLevel(level)
    return model_proto, concrete


def _check_converted(model_proto: onnx.ModelProto, opset: int) -> None:
    """Raise when TensorFlow ops were left unconverted (tf2onnx does not raise itself)."""
    bad = _unsupported_nodes(model_proto)
    if not bad:
        return
    ops = Counter(op for op, _ in bad)
    where = sorted({n.split("/")[-2] if n.count("/") else n for _, n in bad})[:5]
    higher = higher_opset_for(set(ops), opset)
    if higher is not None:
        hint = f"tf2onnx converts these ops from opset {higher}: use --opset {higher}"
    elif "StatefulPartitionedCall" in ops or "PartitionedCall" in ops:
        hint = ("a layer calls a nested tf.function (e.g. jit_compile=True) that tf2onnx "
                "cannot inline; call its ops directly in the layer")
    else:
        hint = "replace that layer with ONNX-convertible ops, or apply it outside the model"
    raise ConversionError(
        f"unsupported layer: TensorFlow op(s) {', '.join(sorted(ops))} have no ONNX "
        f"conversion in tf2onnx (in {', '.join(where)})", hint=hint)


def convert(source: KerasSource, opset: int = 17) -> onnx.ModelProto:
    """Convert ``source`` to an ``onnx.ModelProto`` and check the graph.

    Captured constants become initializers and the graph's inputs must be exactly the
    signature's. Raises :class:`ConversionError` when tf2onnx fails, leaves TensorFlow ops
    unconverted, or the onnx checker rejects the result; the hint names the cause.
    """
    onnx = require("onnx", "export")
    import tensorflow as tf

    signature = [tf.TensorSpec(s.shape, framework_dtype(s.dtype), name=s.name)
                 for s in source.inputs]
    model_proto, concrete = _run_tf2onnx(source, signature, opset)
    _check_converted(model_proto, opset)
    bind_captured_constants(model_proto, captured_constants(concrete),
                            [s.name for s in source.inputs])
    _rename_outputs(model_proto, [o.name for o in source.outputs])
    drop_unused_opsets(model_proto)
    try:
        onnx.checker.check_model(model_proto)
    except Exception as exc:
        raise conversion_error(
            f"the onnx checker rejects the graph tf2onnx made of {source.name}", exc, opset,
            "a converter bug: report it with the model attached (tf2onnx and edgekit "
            "versions are in --version and the report)") from exc
    return model_proto


def _load_session(model_proto: onnx.ModelProto, raw: onnx.ModelProto | None,
                  opset: int) -> onnxruntime.InferenceSession:
    """An onnxruntime session of ``model_proto``; a refusal is classified: edgekit's
    clean-ups (``raw``, the unsimplified graph, loads) or the converted graph itself."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = False  # memory returns after each validation batch
    try:
        return onnx_session(model_proto.SerializeToString(), session_options=options)
    except Exception as exc:
        reason = _reason(exc)
        if raw is not None:
            try:
                onnx_session(raw.SerializeToString(), session_options=options)
            except Exception:  # the converted graph itself is refused: fall through
                pass
            else:
                raise ConversionError(
                    f"edgekit's graph clean-up produced a graph onnxruntime refuses: {reason}",
                    hint="re-run with --no-simplify, and report this edgekit bug",
                ) from exc
        raise conversion_error(
            "onnxruntime refuses the graph tf2onnx made", exc, opset, "an op or type "
            "onnxruntime does not implement, or a converter bug: report it with the model "
            "attached") from exc


def simplified(model_proto: onnx.ModelProto, simplify: bool, opset: int,
               ) -> tuple[list[str], onnxruntime.InferenceSession]:
    """(notes, loaded session) of ``model_proto``, simplified in place when ``simplify``; a
    graph onnxruntime refuses raises :class:`ConversionError` naming whose graph it is."""
    if not simplify:
        return [], _load_session(model_proto, None, opset)
    import onnx

    raw = onnx.ModelProto()
    raw.CopyFrom(model_proto)
    notes = rewrite(model_proto) + simplify_graph(model_proto)
    return notes, _load_session(model_proto, raw, opset)
