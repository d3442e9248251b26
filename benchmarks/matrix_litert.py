"""The LiteRT column of the conversion matrix (issue #23, ``benchmarks/conversion_matrix.py``).

Each case's Keras model goes through the LiteRT (TFLite) converter the way a Keras 3 user
converts one: Keras' own ``model.export(path, format="litert")`` (Keras 3.15: an
``ExportArchive`` SavedModel, then ``tf.lite.TFLiteConverter.from_saved_model``), float32,
with the converter restricted to LiteRT's builtin ops (``target_spec.supported_ops =
[TFLITE_BUILTINS]``; Keras' default also allows ``SELECT_TF_OPS``, TensorFlow kernels that
LiteRT's own runtime does not have). Where the converter refuses the builtin-only
conversion, Keras' default export is tried once more: if that converts, the case *needs TF
ops* and the record names the Flex ops of that file. The builtin-only file runs in
``ai_edge_litert``'s ``Interpreter`` on the case's inputs (each input resized to the sample's
shape) and is compared with Keras within the matrix's tolerance.

Record keys: ``litert_ok`` (converted, runs and matches), ``litert_converted``,
``litert_runs``, ``litert_matches``, ``litert_max_abs_error``, ``litert_error`` (class and
message, converter messages without their MLIR locations), ``litert_needs_tf_ops`` (the Flex
ops), ``litert_tf_ops_error`` (Keras' default export failed too) and ``litert_s``.

Timeouts: the case's SIGALRM cannot interrupt the converter's C++ call; it fires when the call
returns, or the runner kills the process ``KILL_GRACE_S`` later and records a timeout.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["COUNT_KEYS", "cell", "compare", "converter_message", "counts", "flex_ops",
           "handles", "run_tflite", "stage"]

#: what the matrix's Counts table adds for this column
COUNT_KEYS = ("litert_ok", "litert_needs_tf_ops", "litert_or_keras_only")
_LOC = re.compile(r"^(<unknown>:\d+:\s*)?(error:\s*)?(loc\(.*?\)\):\s*)?(error:\s*)?")


def compare(ref: list[np.ndarray], got: list[Any], atol: float,
            rtol: float) -> tuple[float, bool]:
    """The largest absolute difference of ``got`` from Keras' outputs ``ref`` and whether every
    element is within ``atol + rtol x |ref|``; ValueError when the count or a shape differs."""
    if len(got) != len(ref):
        raise ValueError(f"{len(got)} outputs, Keras gives {len(ref)}")
    worst, close = 0.0, True
    for r, g in zip(ref, got, strict=True):
        if r.shape != np.shape(g):
            raise ValueError(f"output shape {list(np.shape(g))}, Keras {list(r.shape)}")
        diff = np.abs(r.astype("float64") - np.asarray(g, "float64"))
        worst = max(worst, float(diff.max(initial=0.0)))
        close &= bool(np.all(diff <= atol + rtol * np.abs(r.astype("float64"))))
    return worst, close


# ---------------------------------------------------------------------------------------------
# conversion
# ---------------------------------------------------------------------------------------------
def converter_message(text: str, limit: int = 500) -> str:
    """The converter's ``error:`` lines without their MLIR locations, de-duplicated, on one
    line (a ``ConverterError`` repeats each error with a page of ``loc(callsite(...))``)."""
    lines = [ln.strip() for ln in text.replace("\\n", "\n").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln] or lines[:1]
    out: list[str] = []
    for ln in errors:
        short = _LOC.sub("", ln).strip()
        if short and short not in out:
            out.append(short)
    # the "failed while converting" line names the ops on the lines after it
    for ln in lines:
        if ln.startswith(("Custom ops:", "TF Select ops:", "Flex ops:")):
            out.append(ln)
    return " / ".join(out)[:limit]


def flex_ops(content: bytes) -> list[str]:
    """The TensorFlow ops (``Flex*`` custom codes) a ``.tflite`` flatbuffer calls."""
    from ai_edge_litert import schema_py_generated as fb

    model = fb.Model.GetRootAs(content, 0)
    ops = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i).CustomCode()
        if code and code.decode().startswith("Flex"):
            ops.add(code.decode()[len("Flex"):])
    return sorted(ops)


def _export(model: Any, path: Path, builtins_only: bool, kwargs: dict[str, Any]) -> None:
    """Keras' LiteRT export of ``model`` to ``path`` (the converter's chatter silenced)."""
    import tensorflow as tf

    from edgekit.logs import quiet_fds

    options = dict(kwargs)
    if builtins_only:
        options["target_spec"] = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}
    with quiet_fds():
        model.export(str(path), format="litert", verbose=False, **options)


def _export_kwargs(case: Any) -> dict[str, Any]:
    """The case's arguments to Keras' export that the LiteRT export takes too (its input
    signature; ``opset_version`` is ONNX's)."""
    kw = case.keras_export() if case.keras_export else {}
    return {k: v for k, v in kw.items() if k == "input_signature"}


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------
def _natural(name: str) -> tuple[Any, ...]:
    """``output_2`` before ``output_10``; other names (a dict's keys) alphabetically, as
    ``keras.tree.flatten`` orders them."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def _input_order(sig_names: list[str], sample: Any, keras_names: list[str] | None) -> list[str]:
    """The file's input names in the order of ``keras.tree.flatten(sample)``: neither the
    file's input order nor its sorted signature names follow the model's (three inputs
    ``keras_tensor``, ``keras_tensor_1``, ``keras_tensor_2`` come out in reverse). By the
    sample's keys where they are the names, else by the Keras model's flat input names (a
    functional or Sequential model's inputs keep theirs), else by TensorFlow's names of
    unnamed arguments (``args_0``, ``args_0_1``, ``args_1``, ...) in natural order."""
    if isinstance(sample, dict) and set(sig_names) <= set(sample):
        return [n for n in sorted(sample) if n in sig_names]
    if keras_names and sorted(sig_names) == sorted(keras_names):
        return list(keras_names)
    return sorted(sig_names, key=_natural)


def run_tflite(path: Path, samples: list[Any],
               keras_names: list[str] | None = None) -> list[list[np.ndarray]]:
    """Every output of the file's first signature on each sample, in Keras' flattened order,
    through LiteRT's Interpreter; the inputs matched to the sample by :func:`_input_order`
    (``keras_names``: the model's flat input names) and resized to its shapes."""
    import keras

    from edgekit.measure.litert import tflite_interpreter_class

    cls, _ = tflite_interpreter_class()
    interp = cls(model_path=str(path))
    key = next(iter(interp.get_signature_list()))
    runner = interp.get_signature_runner(key)
    ins, outs = runner.get_input_details(), runner.get_output_details()
    del runner  # it holds the interpreter's internals: no resizing while it lives
    outputs = [outs[n]["index"] for n in sorted(outs, key=_natural)]
    results = []
    for sample in samples:
        arrays = [np.asarray(a) for a in keras.tree.flatten(sample)]
        if len(arrays) != len(ins):
            raise ValueError(f"the file has {len(ins)} inputs ({', '.join(ins)}), the model "
                             f"takes {len(arrays)}")
        details = [ins[n] for n in _input_order(list(ins), sample, keras_names)]
        for d, a in zip(details, arrays, strict=True):
            interp.resize_tensor_input(d["index"], list(a.shape))
        interp.allocate_tensors()
        for d, a in zip(details, arrays, strict=True):
            interp.set_tensor(d["index"], np.ascontiguousarray(a, dtype=d["dtype"]))
        interp.invoke()
        results.append([np.array(interp.get_tensor(i)) for i in outputs])
    return results


def _keras_names(model: Any) -> list[str] | None:
    """The model's flat input names (None: a subclassed model without declared inputs)."""
    try:
        return [str(t.name) for t in model.inputs]
    except (AttributeError, ValueError):
        return None


def stage(case: Any, model: Any, samples: list[Any], refs: list[list[np.ndarray]], work: Path,
          *, atol: float, rtol: float,
          error: Callable[[BaseException], dict[str, Any]]) -> dict[str, Any]:
    """The LiteRT column of one case (see the module doc); ``error``: the matrix's record of an
    exception (class and first line)."""
    path, kwargs = work / "litert.tflite", _export_kwargs(case)
    t0 = time.perf_counter()
    out: dict[str, Any] = {"litert_ok": False, "litert_converted": False}
    try:
        _export(model, path, True, kwargs)
    except Exception as exc:
        out["litert_error"] = err = error(exc)
        if type(exc).__name__ == "ConverterError":  # not Keras failing to trace the model
            err["message"] = converter_message(str(exc))
            flex = work / "litert_tf_ops.tflite"
            try:  # Keras' default: builtin ops and SELECT_TF_OPS
                _export(model, flex, False, kwargs)
                out["litert_needs_tf_ops"] = flex_ops(flex.read_bytes()) or ["(none named)"]
            except Exception as exc2:
                out["litert_tf_ops_error"] = error(exc2)
        out["litert_s"] = round(time.perf_counter() - t0, 1)
        return out
    out["litert_converted"] = True
    try:
        worst, close = 0.0, True
        for ref, got in zip(refs, run_tflite(path, samples, _keras_names(model)),
                                strict=True):
            w, c = compare(ref, got, atol, rtol)
            worst, close = max(worst, w), close and c
    except Exception as exc:
        out.update(litert_runs=False, litert_error=error(exc))
    else:
        out.update(litert_ok=close, litert_runs=True, litert_matches=close,
                   litert_max_abs_error=worst)
    out["litert_s"] = round(time.perf_counter() - t0, 1)
    return out


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def handles(r: dict[str, Any]) -> bool:
    """LiteRT's converter (builtin ops) wrote a file that runs in LiteRT and matches Keras."""
    return bool(r.get("litert_ok"))


def cell(r: dict[str, Any]) -> str:
    """The case's LiteRT cell of the Markdown table."""
    if handles(r):
        return "ok"
    if r.get("litert_runs"):
        return "runs, differs"
    if r.get("litert_converted"):
        return "fails in LiteRT"
    if r.get("litert_needs_tf_ops"):
        ops = ", ".join(r["litert_needs_tf_ops"])
        return f"needs TF ops: {ops if len(ops) <= 40 else ops[:37] + '...'}"
    return "FAIL" if "litert_error" in r else "-"


def counts(records: list[dict[str, Any]], edgekit: Callable[[dict[str, Any]], bool],
           keras: Callable[[dict[str, Any]], bool]) -> dict[str, int]:
    """This column's counts: cases LiteRT handles, cases only Flex ops convert, and the cases
    that Keras' export or LiteRT handles but edgekit does not (issue #23's acceptance list)."""
    return {"litert_ok": sum(handles(r) for r in records),
            "litert_needs_tf_ops": sum(bool(r.get("litert_needs_tf_ops")) for r in records),
            "litert_or_keras_only": sum((keras(r) or handles(r)) and not edgekit(r)
                                        for r in records)}
