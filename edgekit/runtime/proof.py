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

A file whose outputs are not per-sample (a softmax over the batch, an output without a batch
axis: :data:`BATCH_KEY` in its metadata, written by the export) is compared only on identical
whole batches: each engine against onnxruntime at the main batch and at each small batch that
onnxruntime runs, never against its own answers at another batch size, and without per-sample
figures (labels, top-1 against fp32).

The result is stored in the file's ``edgekit.engines`` metadata (:func:`engines_prop`) and in
the reports; :class:`~edgekit.runtime.model.EdgeModel` refuses an engine a file failed on and
``engine="auto"`` never picks one. Pure numpy + the engines.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from edgekit.agreement import compare_predictions, gate
from edgekit.contract import scores_classes, top1
from edgekit.errors import EdgekitError
from edgekit.inputs.data import run_in_batches, run_whole_batches
from edgekit.io.memory import batch_for
from edgekit.runtime.engine_record import EngineCheck
from edgekit.runtime.engine_registry import engine_class, parse_engines
from edgekit.runtime.engine_registry import installed_engines as _installed
from edgekit.runtime.model import EdgeModel
from edgekit.runtime.streams import BATCH_KEY, batch_prop, mixes_batch

__all__ = ["BATCH_KEY", "BUDGET_POINTS", "MAX_REL_MEAN_DIFF", "SMALL_BATCHES", "SMALL_SAMPLES",
           "batch_prop", "check_engines", "installed_engines", "in_child", "mixes_batch"]
#: accuracy (with labels) or top-1 agreement (without) an engine may lose against onnxruntime
#: on the same file, in percentage points, judged like the accuracy gate
#: (:func:`edgekit.agreement.gate`: a one-sided bound that accounts for the sample count)
BUDGET_POINTS = 1.0
#: batch sizes each engine is also run at, on the first :data:`SMALL_SAMPLES` samples, and
#: checked against its own answers at the main batch: OpenVINO compiles each input shape with
#: its own kernels (the Q/DQ after an Embedding mean was right at batch 1, wrong at 4, 8, 64)
SMALL_BATCHES = (1, 8)
#: the main batch size of an engine check, on files whose activations allow it
CHECK_BATCH = 64
SMALL_SAMPLES = 32
#: seconds a check run in a child process may take before it counts as hung
CHILD_TIMEOUT_S = 900.0
#: mean |engine - onnxruntime| allowed, relative to mean |onnxruntime| per output
MAX_REL_MEAN_DIFF = 0.02


def _run_all(model: EdgeModel, feeds: Mapping[str, np.ndarray], batch: int,
             whole: bool = False) -> list[np.ndarray]:
    """Every output of ``model`` on all samples, run in batches (``whole``: on the same whole
    batches every time, stacked per batch)."""
    return (run_whole_batches if whole else run_in_batches)(model.run, feeds, batch)


def _compare(engine: str, ref: list[np.ndarray], got: list[np.ndarray],
             labels: np.ndarray | None, fp32: np.ndarray | None,
             reference: str = "onnxruntime", classes: bool = True) -> EngineCheck:
    """``got`` against ``ref``; ``classes``: the first output scores classes (False: a
    regression output, held to the mean-difference rule alone)."""
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
    vs_ort = compare_predictions(ref[0], got[0], labels, classes)
    if vs_ort.top1_agreement is not None:
        ok, _, why = gate(vs_ort, BUDGET_POINTS)
        if not ok:
            reasons.append(f"against {reference}: {why}")
    vs_fp32 = compare_predictions(fp32, got[0], classes=classes) if fp32 is not None else None
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


def _classes(model: EdgeModel) -> bool:
    """Whether ``model``'s first output scores classes (its output contract)."""
    return scores_classes(model.metadata.output_kinds)


def check_engines(
    path: str | Path,
    feeds: Mapping[str, np.ndarray],
    labels: np.ndarray | None = None,
    engines: Sequence[str] | None = None,
    fp32: np.ndarray | None = None,
    batch: int | None = None,
    batch_dependent: bool | None = None,
) -> dict[str, EngineCheck]:
    """Run ``path`` on onnxruntime and each of ``engines`` (default: every installed engine) on
    the samples ``feeds`` (input name -> all samples) and check each against onnxruntime.

    Returns one :class:`EngineCheck` per engine, onnxruntime first (it is the reference: it
    passes when it loads). ``fp32``: the fp32 model's first output on the same samples, for a
    variant: each engine's top-1 agreement with it is recorded too. ``batch``: the main batch
    size (default :data:`CHECK_BATCH`, fewer where the file's activations would pass
    :data:`~edgekit.io.memory.BATCH_MEMORY_BYTES`). ``batch_dependent``:
    whether the outputs are not per-sample (default: as the file's :data:`BATCH_KEY` says);
    such a file is compared on identical whole batches only, without ``labels`` and ``fp32``.
    An engine that fails to load or run is a failed check with the engine's own first error
    line as the reason, never an exception.
    """
    path = Path(path)
    if not feeds or not len(next(iter(feeds.values()))):
        return {}  # nothing to compare on: no record rather than a record of nothing
    if batch is None:
        batch = batch_for(path, CHECK_BATCH)
    ref_model = _load(path, "onnxruntime")
    classes = _classes(ref_model)
    try:
        whole = mixes_batch(ref_model.engine.props) if batch_dependent is None \
            else batch_dependent
        ref = _run_all(ref_model, feeds, batch, whole)
        small = _small_references(ref_model, feeds, batch) if whole else None
    finally:
        ref_model.close()
    if whole:  # per-sample figures mean nothing when the outputs mix the batch
        labels = fp32 = None
    checks = {"onnxruntime": _samples(_compare("onnxruntime", ref, ref, labels, fp32,
                                               classes=classes), feeds)}
    for engine in installed_engines() if engines is None else parse_engines(list(engines)):
        if engine == "onnxruntime":
            continue
        args = (engine, path, dict(feeds), ref, labels, fp32, batch, small)
        isolated = engine_class(engine).check_in_child
        checks[engine] = in_child(_engine_check, args, engine) if isolated else \
            _engine_check(*args)
    return checks


def in_child(check: Callable[..., EngineCheck], args: tuple[object, ...],
             engine: str) -> EngineCheck:
    """``check(*args)`` in a fresh Python process (:mod:`edgekit.runtime.child`): an engine
    that crashes the process (a segfault in its compiler) is a failed check naming the exit
    code, not a dead export; one that hangs is stopped after :data:`CHILD_TIMEOUT_S`. The child
    is a plain ``python -m`` with this process's ``sys.path``, not a multiprocessing spawn: it
    never re-runs the caller's script (a script without an ``if __name__ == "__main__"`` guard
    works), and what the engine prints goes nowhere near the caller's stdout."""
    with tempfile.TemporaryDirectory(prefix="edgekit-check-") as tmp:
        job, answer = Path(tmp, "job.pkl"), Path(tmp, "answer.pkl")
        try:
            job.write_bytes(pickle.dumps((check, args), protocol=pickle.HIGHEST_PROTOCOL))
        except (pickle.PicklingError, AttributeError, TypeError):
            return check(*args)  # a function the child cannot import: run it here
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        cmd = [sys.executable, "-m", "edgekit.runtime.child", str(job), str(answer)]
        try:
            code = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, env=env, timeout=CHILD_TIMEOUT_S,
                                  check=False).returncode
        except subprocess.TimeoutExpired:
            return EngineCheck(engine, loads=False, passed=False,
                               reason=f"{engine} did not answer within {CHILD_TIMEOUT_S:g} s")
        result = pickle.loads(answer.read_bytes()) if answer.exists() else None
    if isinstance(result, EngineCheck):
        return result
    if code < 0:  # killed by a signal
        return EngineCheck(engine, loads=False, passed=False,
                           reason=f"{engine} crashed the process that ran it (exit code {code}):"
                                  " it cannot be used for this file")
    return check(*args)  # the child could not run it (it failed to import): run it here


def _engine_check(engine: str, path: Path, feeds: Mapping[str, np.ndarray],
                  ref: list[np.ndarray], labels: np.ndarray | None, fp32: np.ndarray | None,
                  batch: int, small: dict[int, list[np.ndarray]] | None = None) -> EngineCheck:
    """One engine against onnxruntime's outputs ``ref``, at ``batch`` and at
    :data:`SMALL_BATCHES` (``small``: onnxruntime's own outputs at those batch sizes, for a
    file whose outputs mix the batch); a file it cannot load or run is a failed check, never
    an error."""
    try:
        model = _load(path, engine)
    except Exception as exc:  # the engine refuses the file: a failed check, with its words
        return EngineCheck(engine, loads=False, passed=False, reason=_first(exc))
    classes = _classes(model)
    try:
        got = _run_all(model, feeds, batch, small is not None)
        inconsistent = _small_batches(model, feeds, got, batch, small)
    except Exception as exc:
        return EngineCheck(engine, loads=False, passed=False, reason=_first(exc))
    finally:
        model.close()
    check = _samples(_compare(engine, ref, got, labels, fp32, classes=classes), feeds)
    batches = sorted({batch, *(b for b in SMALL_BATCHES if b < batch and
                               (small is None or b in small))})
    reason = "; ".join(r for r in (check.reason, inconsistent) if r)
    return dataclasses.replace(check, passed=check.passed and not inconsistent, reason=reason,
                               batches=batches)


def _samples(check: EngineCheck, feeds: Mapping[str, np.ndarray]) -> EngineCheck:
    """``check`` counting the samples of ``feeds`` (outputs stacked per batch count batches)."""
    return dataclasses.replace(check, samples=len(next(iter(feeds.values()))))


def _head(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The first :data:`SMALL_SAMPLES` samples of ``feeds``."""
    return {k: v[:SMALL_SAMPLES] for k, v in feeds.items()}


def _small_references(model: EdgeModel, feeds: Mapping[str, np.ndarray], batch: int,
                      ) -> dict[int, list[np.ndarray]]:
    """onnxruntime's outputs on the first :data:`SMALL_SAMPLES` samples, on whole batches of
    each of :data:`SMALL_BATCHES` below ``batch`` and that sample count, where it runs them
    (a model that mixes the batch may run at some batch sizes only)."""
    head = _head(feeds)
    m = len(next(iter(head.values())))
    out: dict[int, list[np.ndarray]] = {}
    for b in (b for b in SMALL_BATCHES if b < min(batch, m)):
        try:
            out[b] = _run_all(model, head, b, whole=True)
        except Exception:  # onnxruntime does not run the file at this batch size: not checked
            continue
    return out


def _small_batches(model: EdgeModel, feeds: Mapping[str, np.ndarray], got: list[np.ndarray],
                   batch: int, small: dict[int, list[np.ndarray]] | None = None) -> str:
    """Why the engine's outputs on the first :data:`SMALL_SAMPLES` samples run at each of
    :data:`SMALL_BATCHES` differ from its own at ``batch`` (empty when they agree): an engine
    compiles each input shape with its own kernels. With ``small`` (a file whose outputs mix
    the batch), each is compared with onnxruntime's on the same batches instead."""
    head = _head(feeds)
    m = len(next(iter(head.values())))
    for b in (b for b in SMALL_BATCHES if b < batch and (small is None or b in small)):
        if small is None:
            ref, against, said = [g[:m] for g in got], "its own run", "its own"
        else:
            ref, against, said = small[b], "onnxruntime", "onnxruntime's"
        at = f" at batch {batch if small is None else b}"
        check = _compare(model.engine_name, ref, _run_all(model, head, b, small is not None),
                         None, None, reference=against + at, classes=_classes(model))
        if not check.passed:
            return f"at batch {b}, its answers differ from {said}{at}: {check.reason}"
    return ""


def installed_engines() -> list[str]:
    """The engines installed here (the registry's), onnxruntime first."""
    return ["onnxruntime", *(e for e in _installed() if e != "onnxruntime")]


def _first(exc: BaseException) -> str:
    text = exc.message if isinstance(exc, EdgekitError) else str(exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


