"""Per-engine proof of a model file: does each engine load it and give onnxruntime's answers?

An artifact is only as portable as the engines that were shown to run it right. OpenVINO reads
the same standard ONNX file through its own importer and its own low-precision passes, and
those can be wrong where onnxruntime is right (a Fashion-MNIST ViT's int8 file: 74 % in
onnxruntime, 26 % in OpenVINO before :func:`edgekit.quantize.qdq.float_means`), or not
read a file at all (OpenVINO has no ONNX ``Loop``). :func:`check_engines` runs one file on
every engine on the same held-out samples and compares each engine's outputs with
onnxruntime's on that file (so quantization loss, which the accuracy gate judges, is not
counted against an engine):

- class outputs: the engine may lose at most :data:`BUDGET_POINTS` of accuracy (with labels)
  or top-1 agreement (without) against onnxruntime, judged by the accuracy gate's rule;
- every output: the mean absolute difference must stay within :data:`MAX_REL_MEAN_DIFF` of
  the mean absolute value of onnxruntime's output (garbage, NaN and swapped layouts fail).

The result is stored in the file's ``edgekit.engines`` metadata (:func:`engines_prop`) and in
the reports; :class:`~edgekit.runtime.model.EdgeModel` refuses an engine a file failed on and
``engine="auto"`` never picks one. Pure numpy + the engines.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from edgekit.agreement import compare_predictions, gate
from edgekit.contract import top1
from edgekit.errors import EdgekitError
from edgekit.runtime.engine_record import EngineCheck
from edgekit.runtime.engine_registry import engine_class, parse_engines
from edgekit.runtime.engine_registry import installed_engines as _installed
from edgekit.runtime.model import EdgeModel

__all__ = ["BUDGET_POINTS", "MAX_REL_MEAN_DIFF", "SMALL_BATCHES", "SMALL_SAMPLES", "check_engines",
           "installed_engines", "in_child"]
#: accuracy (with labels) or top-1 agreement (without) an engine may lose against onnxruntime
#: on the same file, in percentage points, judged like the accuracy gate
#: (:func:`edgekit.agreement.gate`: a one-sided bound that accounts for the sample count)
BUDGET_POINTS = 1.0
#: batch sizes each engine is also run at, on the first :data:`SMALL_SAMPLES` samples, and
#: checked against its own answers at the main batch: OpenVINO compiles each input shape with
#: its own kernels (the Q/DQ after an Embedding mean was right at batch 1, wrong at 4, 8, 64)
SMALL_BATCHES = (1, 8)
SMALL_SAMPLES = 32
#: seconds a check run in a child process may take before it counts as hung
CHILD_TIMEOUT_S = 900.0
#: mean |engine - onnxruntime| allowed, relative to mean |onnxruntime| per output
MAX_REL_MEAN_DIFF = 0.02


def _run_all(model: EdgeModel, feeds: Mapping[str, np.ndarray], batch: int
             ) -> list[np.ndarray]:
    """Every output of ``model`` on all samples, run in batches."""
    n = len(next(iter(feeds.values())))
    chunks: list[list[np.ndarray]] = []
    for start in range(0, n, batch):
        chunks.append(model.run({k: v[start:start + batch] for k, v in feeds.items()}))
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def _compare(engine: str, ref: list[np.ndarray], got: list[np.ndarray],
             labels: np.ndarray | None, fp32: np.ndarray | None,
             reference: str = "onnxruntime") -> EngineCheck:
    n = len(ref[0])
    diffs, reasons = [], []
    for i, (r, g) in enumerate(zip(ref, got, strict=True)):
        a, b = np.asarray(r, np.float64), np.asarray(g, np.float64)
        finite = np.isfinite(a)
        if a.shape != b.shape or (np.isfinite(b) != finite).any():
            reasons.append(f"output {i} holds NaN or infinite values where {reference}'s does "
                           "not (or the reverse)" if a.shape == b.shape else
                           f"output {i} has shape {b.shape}, {reference}'s {a.shape}")
            continue
        d = np.abs(a[finite] - b[finite])
        diffs.append(d)
        scale = float(np.abs(a[finite]).mean()) if d.size else 1.0
        if d.size and d.mean() > MAX_REL_MEAN_DIFF * (scale or 1.0):
            reasons.append(f"output {i} differs by {float(d.mean()):.3g} on average "
                           f"(> {MAX_REL_MEAN_DIFF:.0%} of its mean magnitude {scale:.3g})")
    vs_ort = compare_predictions(ref[0], got[0], labels)
    if vs_ort.top1_agreement is not None:
        ok, _, why = gate(vs_ort, BUDGET_POINTS)
        if not ok:
            reasons.append(f"against {reference}: {why}")
    vs_fp32 = compare_predictions(fp32, got[0]) if fp32 is not None else None
    accuracy = None
    if labels is not None and vs_ort.fp32_correct_variant_wrong is not None:
        accuracy = float((top1(np.asarray(got[0])) == np.asarray(labels).reshape(-1)[:n]).mean())
    return EngineCheck(
        engine, loads=True, passed=not reasons, samples=n,
        top1_agreement=vs_ort.top1_agreement,
        fp32_top1_agreement=None if vs_fp32 is None else vs_fp32.top1_agreement,
        mean_abs_diff=_finite(float(np.mean([d.mean() for d in diffs if d.size] or [0.0]))),
        max_abs_diff=_finite(float(max((d.max() for d in diffs if d.size), default=0.0))),
        accuracy=accuracy, reason="; ".join(reasons))


def _finite(v: float) -> float | None:
    """``v``, or None when it is NaN/infinite (the record is strict JSON)."""
    return v if math.isfinite(v) else None


def _load(path: Path, engine: str) -> EdgeModel:
    return EdgeModel(path, engine=engine, check_engine=False)


def check_engines(
    path: str | Path,
    feeds: Mapping[str, np.ndarray],
    labels: np.ndarray | None = None,
    engines: Sequence[str] | None = None,
    fp32: np.ndarray | None = None,
    batch: int = 64,
) -> dict[str, EngineCheck]:
    """Run ``path`` on onnxruntime and each of ``engines`` (default: every installed engine) on
    the samples ``feeds`` (input name -> all samples) and check each against onnxruntime.

    Returns one :class:`EngineCheck` per engine, onnxruntime first (it is the reference: it
    passes when it loads). ``fp32``: the fp32 model's first output on the same samples, for a
    variant: each engine's top-1 agreement with it is recorded too. An engine that fails to
    load or run is a failed check with the engine's own first error line as the reason, never
    an exception.
    """
    path = Path(path)
    if not feeds or not len(next(iter(feeds.values()))):
        return {}  # nothing to compare on: no record rather than a record of nothing
    ref_model = _load(path, "onnxruntime")
    try:
        ref = _run_all(ref_model, feeds, batch)
    finally:
        ref_model.close()
    checks = {"onnxruntime": _compare("onnxruntime", ref, ref, labels, fp32)}
    for engine in installed_engines() if engines is None else parse_engines(list(engines)):
        if engine == "onnxruntime":
            continue
        args = (engine, path, dict(feeds), ref, labels, fp32, batch)
        isolated = engine_class(engine).check_in_child
        checks[engine] = in_child(_engine_check, args, engine) if isolated else \
            _engine_check(*args)
    return checks


def in_child(check: Callable[..., EngineCheck], args: tuple[object, ...],
             engine: str) -> EngineCheck:
    """``check(*args)`` in a fresh (spawned) process: an engine that crashes the process (a
    segfault in its compiler) is a failed check naming the exit code, not a dead export."""
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_run_in_child, args=(send, check, args), daemon=True)
    child.start()
    send.close()
    result, answered = None, False
    try:
        answered = receive.poll(CHILD_TIMEOUT_S)
        result = receive.recv() if answered else None
    except EOFError:  # the child died before it answered
        pass
    finally:
        if child.is_alive():
            child.terminate()
        child.join()
        receive.close()
    if isinstance(result, EngineCheck):
        return result
    if not answered:
        return EngineCheck(engine, loads=False, passed=False,
                           reason=f"{engine} did not answer within {CHILD_TIMEOUT_S:g} s")
    code = child.exitcode
    if code is not None and code < 0:  # killed by a signal
        return EngineCheck(engine, loads=False, passed=False,
                           reason=f"{engine} crashed the process that ran it (exit code {code}):"
                                  " it cannot be used for this file")
    return check(*args)  # the child could not start (e.g. a script without a main guard)


def _run_in_child(send: Connection, check: Callable[..., EngineCheck],
                  args: tuple[object, ...]) -> None:
    try:  # unpickling ``check`` imported edgekit.runtime, which registered the engines
        send.send(check(*args))
    finally:
        send.close()


def _engine_check(engine: str, path: Path, feeds: Mapping[str, np.ndarray],
                  ref: list[np.ndarray], labels: np.ndarray | None, fp32: np.ndarray | None,
                  batch: int) -> EngineCheck:
    """One engine against onnxruntime's outputs ``ref``, at ``batch`` and at
    :data:`SMALL_BATCHES`; a file it cannot load or run is a failed check, never an error."""
    try:
        model = _load(path, engine)
    except Exception as exc:  # the engine refuses the file: a failed check, with its words
        return EngineCheck(engine, loads=False, passed=False, reason=_first(exc))
    try:
        got = _run_all(model, feeds, batch)
        inconsistent = _small_batches(model, feeds, got, batch)
    except Exception as exc:
        return EngineCheck(engine, loads=False, passed=False, reason=_first(exc))
    finally:
        model.close()
    check = _compare(engine, ref, got, labels, fp32)
    batches = sorted({batch, *(b for b in SMALL_BATCHES if b < batch)})
    reason = "; ".join(r for r in (check.reason, inconsistent) if r)
    return dataclasses.replace(check, passed=check.passed and not inconsistent, reason=reason,
                               batches=batches)


def _small_batches(model: EdgeModel, feeds: Mapping[str, np.ndarray], got: list[np.ndarray],
                   batch: int) -> str:
    """Why the engine's outputs on the first :data:`SMALL_SAMPLES` samples run at each of
    :data:`SMALL_BATCHES` differ from its own at ``batch`` (empty when they agree): an engine
    compiles each input shape with its own kernels."""
    m = min(SMALL_SAMPLES, len(got[0]))
    head = {k: v[:m] for k, v in feeds.items()}
    for b in (b for b in SMALL_BATCHES if b < batch):
        check = _compare(model.engine_name, [g[:m] for g in got], _run_all(model, head, b),
                         None, None, reference=f"its own run at batch {batch}")
        if not check.passed:
            return f"at batch {b}, its answers differ from its own at batch {batch}: " \
                   f"{check.reason}"
    return ""


def installed_engines() -> list[str]:
    """The engines installed here (the registry's), onnxruntime first."""
    return ["onnxruntime", *(e for e in _installed() if e != "onnxruntime")]


def _first(exc: BaseException) -> str:
    text = exc.message if isinstance(exc, EdgekitError) else str(exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


