"""Numerical equivalence between a reference (Keras, fp32 ONNX) and a converted model.

``compare_outputs`` turns two lists of output arrays into a :class:`ValidationResult`
(per output: the |error| distribution, the elements beyond tolerance and, for classifiers,
top-1 agreement); ``run_onnx`` runs an ONNX model (file or bytes) on batched feeds with
onnxruntime on the CPU.

Tolerance (the ``numpy.isclose`` / Polygraphy convention, per element of each output): an
element fails when ``|candidate - reference| > atol + rtol * |reference|``, or when either side
is NaN. An absolute tolerance alone cannot fit every depth and output scale: float rounding
grows with the magnitude of the values, so ``rtol`` scales the tolerance with them. Integer
and boolean outputs (ids, indices, counts, masks) are compared exactly: any element that differs
fails, whatever the tolerance, and the comparison is made on the integers themselves (float64
cannot tell 2**60 from 2**60 + 1). Top-1
agreement is reported, not gated: a class that flips while every score is within tolerance is
a tie in the reference. Elements beyond the tolerance may still be float noise: see
:mod:`edgekit.convert.noise` and :attr:`ValidationResult.noise`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.contract import top1
from edgekit.inputs.data import run_in_batches, run_whole_batches

__all__ = ["CHUNK_ELEMENTS", "DEFAULT_ATOL", "DEFAULT_RTOL", "ValidationResult", "compare_outputs",
           "output_errors", "element_errors", "run_onnx", "accuracy",
           "output_saturation", "degenerate_warnings", "onnx_session"]

#: elements of one output compared at a time: the float64 temporaries of a comparison stay
#: near 100 MB whatever the output's size (a 64x64x256 output on 256 samples is 268 M elements)
CHUNK_ELEMENTS = 1 << 22
#: default absolute tolerance of fp32 validation against Keras
DEFAULT_ATOL = 1e-4
#: default relative tolerance (times |reference|) of fp32 validation against Keras. Measured
#: float noise needs up to 2.2e-4 beyond atol (InceptionV3 96x96, weights=None, BatchNorm from
#: one batch, TensorFlow's oneDNN on) and 4.5e-4 (16 x Conv+BatchNorm, outputs in the
#: hundreds; 12 of them, tests/test_tolerance.py, need 2.2e-5 where one weight x 1.5 puts 593
#: of the 640 output elements beyond this tolerance, the worst 270 times over)
DEFAULT_RTOL = 1e-3


@dataclass
class ValidationResult:
    """How far a converted model's outputs are from the reference.

    Attributes:
        n_samples: samples compared.
        max_abs_error: largest absolute difference over all outputs.
        mean_abs_error: mean absolute difference over all outputs.
        top1_agreement: share of samples whose arg-max agrees (classifier outputs), else None.
        atol / rtol: the tolerance the result was checked against (atol None: not checked).
        passed: no element of any output beyond its tolerance (True when none was given), or
            every such element within Keras' own float noise (``noise``).
        per_output: per output name, see :func:`output_errors` (the strict tolerance's
            figures, also when ``noise`` excuses them).
        saturation: per output, how little the reference varies (see :func:`output_saturation`).
        warnings: why the comparison may prove little (degenerate reference outputs).
        batch_dependent: the outputs are not per-sample (they mix the batch or lack a batch
            axis), so both sides ran on the same whole batches: per batch, the outputs are
            stacked on a new first axis (``worst.index`` starts with the batch's number).
        batch_evidence: what showed it (empty when per-sample).
        noise: measured only when elements fail the tolerance: how many of them lie within
            Keras' own float-noise envelope (see :func:`edgekit.convert.noise.noise_envelope`).
    """

    n_samples: int
    max_abs_error: float
    mean_abs_error: float
    top1_agreement: float | None
    atol: float | None = None
    rtol: float | None = None
    passed: bool = True
    per_output: dict[str, dict[str, Any]] = field(default_factory=dict)
    saturation: dict[str, dict[str, float | None]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    batch_dependent: bool = False
    batch_evidence: str = ""
    noise: dict[str, Any] | None = None

    def summary(self) -> str:
        """One line for people."""
        s = (
            f"{self.n_samples} samples: max abs error {self.max_abs_error:.3g}, "
            f"mean abs error {self.mean_abs_error:.3g}"
        )
        if self.top1_agreement is not None:
            s += f", top-1 agreement {100 * self.top1_agreement:.2f}%"
        return s

    def tolerance(self) -> str:
        """The tolerance checked, for people: ``atol 0.0001 + rtol 0.001 x |reference|``."""
        if self.atol is None:
            return "no tolerance"
        return f"atol {self.atol:g} + rtol {self.rtol or 0:g} x |reference|"

    def failures(self) -> str:
        """Per failing output: how many elements fail, the worst one, the |error| spread."""
        parts = []
        for name, e in self.per_output.items():
            if not e.get("failing"):
                continue
            w = e["worst"]
            ref, got = ((f"{w['reference']}", f"{w['candidate']}") if e.get("exact") else
                        (f"{w['reference']:.6g}", f"{w['candidate']:.6g}"))
            parts.append(
                f"output {name!r}: {e['failing']} of {e['elements']} elements "
                f"({100 * e['failing_share']:.2g}%) fail, worst at {w['index']}"
                f"{' (batch 1)' if w.get('batch1') else ''}: reference {ref}, got {got} ("
                + ("an integer output must match exactly" if e.get("exact") else
                   f"|error| {w['abs_error']:.3g} > allowed {w['allowed']:.3g}")
                + f"); |error| p50 {e['p50_abs_error']:.2g}, "
                f"p99 {e['p99_abs_error']:.2g}, max {e['max_abs_error']:.3g}"
            )
        return "; ".join(parts)

    def noise_summary(self) -> str:
        """For people: how many elements beyond the tolerance lie within Keras' own float
        noise, the envelope's size and the worst element ('' when it was not measured)."""
        n = self.noise
        if not n:
            return ""
        if n.get("error"):
            return f"Keras' own float noise could not be measured: {n['error']}"
        if not n["measured"]:
            return ("Keras' own float noise was not measured: neither its inputs nor its weights "
                    "have float values to move")
        m, inputs, weights = n["multiple"], *zip(*n["runs"], strict=True)
        moved = [f"its inputs moved by a relative {min(inputs):g} to {max(inputs):g}"
                 ] if n["perturbed_inputs"] else []
        if n["perturbed_weights"]:
            moved.append(f"its weights by {min(weights):g} to {max(weights):g}")
        how = (f"Keras re-run on {n['measured']} of the {n['failing']} failing samples, "
               f"{' and '.join(moved)}")
        worst = [(name, e["worst"]) for name, e in n["per_output"].items() if e["worst"]]
        if not worst:
            return f"Keras' own float noise was not measured ({how})"
        name, w = max(worst, key=lambda nw: nw[1]["ratio"])
        at = (f"output {name!r} at {w['index']}{' (batch 1)' if w['batch1'] else ''}: "
              f"|error| {w['abs_error']:.3g} {'<=' if n['passed'] else '>'} allowed "
              f"{w['allowed']:.3g} + {m:g} x envelope {w['envelope']:.3g}")
        if n["passed"]:
            env = max(e["envelope_max"] for e in n["per_output"].values())
            return (f"all {n['exceeded']} elements beyond {self.tolerance()} lie within "
                    f"{m:g}x Keras' own float noise: {how}, moves by up to {env:.3g} there "
                    f"(worst: {at})")
        text = (f"{n['beyond']} of them exceed {m:g}x Keras' own float noise too ({how}), "
                f"worst {at}; {n['within']} lie within it")
        if n["unmeasured"]:
            text += (f", {n['unmeasured']} on the {n['failing'] - n['measured']} samples not "
                     "measured (it stops at the first batch still beyond after "
                     f"{len(n['runs']) * (1 + n['recheck_rounds'])} runs)")
        return text

    def include(self, other: ValidationResult) -> None:
        """Fold in a second run of the same outputs (a subset of the samples at batch 1): its
        elements and failing elements add up, its worst element wins when worse, its max abs
        error counts, ``passed`` updates (the percentiles stay those of the first run)."""
        for name, e in self.per_output.items():
            o = other.per_output.get(name)
            if o is None:
                continue
            e["max_abs_error"] = max(e["max_abs_error"], o["max_abs_error"])
            e["elements"] += o["elements"]
            if "failing" in e and "failing" in o:
                e["failing"] += o["failing"]
                e["failing_share"] = e["failing"] / max(e["elements"], 1)
            if o.get("failing"):
                if not e.get("worst") or o["worst"]["ratio"] > e["worst"]["ratio"]:
                    e["worst"] = {**o["worst"], "batch1": True}
        self.max_abs_error = max(self.max_abs_error, other.max_abs_error)
        self.passed = self.passed and other.passed


def _is_classifier_output(a: np.ndarray) -> bool:
    return a.ndim == 2 and a.shape[1] > 1


def _integral(a: np.ndarray) -> bool:
    return bool(np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_)


def element_errors(
    reference: np.ndarray, candidate: np.ndarray, atol: float, rtol: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Per element: ``|candidate - reference|`` in float64 (NaN on either side: inf), the
    allowed error ``atol + rtol * |reference|``, whether it fails, and whether the output was
    held to exact equality (integers or booleans on both sides: allowed 0, compared as
    integers, so that 2**60 and 2**60 + 1 differ by 1)."""
    exact = _integral(np.asarray(reference)) and _integral(np.asarray(candidate))
    r, c = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    diff = np.abs(r - c)
    diff = np.where(np.isnan(diff), np.inf, diff)
    if exact:
        a, b = np.asarray(reference), np.asarray(candidate)
        mismatch = a != b
        tie = mismatch & (diff == 0)  # e.g. 2**60 vs 2**60 + 1
        if tie.any():
            with np.errstate(over="ignore"):  # exact where they tie: they are close
                gap = np.where(a > b, a - b, b - a) if a.dtype == b.dtype else np.inf
            diff = np.where(tie, np.asarray(gap, np.float64), diff)
        return diff, np.zeros_like(diff), mismatch, True
    allowed = atol + rtol * np.abs(r)
    return diff, allowed, ~(diff <= allowed), False  # NaN reference: NaN allowed, fails


def output_errors(
    reference: np.ndarray, candidate: np.ndarray, atol: float | None, rtol: float = 0.0
) -> dict[str, Any]:
    """How far one output is from its reference (same shape), element by element.

    Integer or boolean arrays on both sides are held to exact equality (``atol``/``rtol`` are
    then 0 and ``exact`` is True), compared as integers, not through float64.

    Always: ``elements``, ``max_abs_error``, ``mean_abs_error``, ``p50_abs_error``,
    ``p99_abs_error`` (NaN on either side counts as an infinite error). With ``atol``: an
    element fails when ``|c - r| > atol + rtol * |r|`` or either is NaN; ``failing`` (count),
    ``failing_share`` and ``worst``, the element furthest beyond its tolerance (``index``,
    ``reference``, ``candidate``, ``abs_error``, ``allowed``, ``ratio`` = abs_error / allowed),
    None when no element fails.
    """
    ref, cand = np.asarray(reference), np.asarray(candidate)
    rf, cf, size = ref.reshape(-1), cand.reshape(-1), ref.size
    diffs = np.empty(size, np.float32)  # every |error|, for the percentiles
    total, largest, n_fail, exact = 0.0, 0.0, 0, False
    worst: dict[str, Any] | None = None
    for start in range(0, size, CHUNK_ELEMENTS):  # float64 temporaries of one chunk only
        stop = min(start + CHUNK_ELEMENTS, size)
        diff, allowed, failing, exact = element_errors(rf[start:stop], cf[start:stop],
                                                       atol or 0.0, rtol)
        diffs[start:stop] = diff
        total, largest = total + float(diff.sum()), max(largest, float(diff.max()))
        n_fail += int(failing.sum()) if atol is not None else 0
        if atol is not None and failing.any():
            w = _worst(diff, allowed, failing, exact, ref, cand, start)
            worst = w if worst is None or w["ratio"] > worst["ratio"] else worst
    out: dict[str, Any] = {"elements": int(size), "max_abs_error": largest,
                           "mean_abs_error": total / size if size else 0.0,
                           **_percentiles(diffs)}
    if atol is None:
        return out
    if exact:
        out["exact"] = True
    out.update(failing=n_fail, failing_share=n_fail / max(size, 1), worst=worst)
    return out


def _percentiles(diffs: np.ndarray) -> dict[str, float]:
    """p50 and p99 of ``diffs`` (numpy's ``nearest`` method), partitioned in place."""
    if not diffs.size:
        return {"p50_abs_error": 0.0, "p99_abs_error": 0.0}
    k50, k99 = (int(np.around((diffs.size - 1) * q)) for q in (0.5, 0.99))
    diffs.partition(sorted({k50, k99}))
    return {"p50_abs_error": float(diffs[k50]), "p99_abs_error": float(diffs[k99])}


def _worst(diff: np.ndarray, allowed: np.ndarray, failing: np.ndarray, exact: bool,
           ref: np.ndarray, cand: np.ndarray, start: int) -> dict[str, Any]:
    """The failing element furthest beyond its tolerance in one chunk (flat elements from
    ``start`` of ``ref``), its index in ``ref``'s shape."""
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN, inf: infinitely worse
        # an exact output allows 0: its largest difference is the worst
        ratio = np.where(failing, diff / (np.ones_like(diff) if exact else allowed), -1.0)
    ratio = np.where(np.isnan(ratio), np.inf, ratio)
    k = int(np.argmax(ratio))
    i = np.unravel_index(start + k, ref.shape)
    value = (lambda v: v.item()) if exact else float  # integers stay exact
    return {"index": [int(j) for j in i], "reference": value(ref[i]),
            "candidate": value(cand[i]), "abs_error": float(diff[k]),
            "allowed": float(allowed[k]), "ratio": float(ratio[k])}


def compare_outputs(
    reference: Sequence[np.ndarray],
    candidate: Sequence[np.ndarray],
    names: Sequence[str] | None = None,
    atol: float | None = None,
    rtol: float = 0.0,
) -> ValidationResult:
    """Compare output lists element-wise (same order, same shapes) with :func:`output_errors`;
    passed when no element of any output is beyond ``atol + rtol * |reference|``."""
    names = list(names) if names is not None else [f"output_{i}" for i in range(len(reference))]
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference outputs vs {len(candidate)} candidates")
    per: dict[str, dict[str, Any]] = {}
    abs_sum, count, agree = 0.0, 0, []
    for name, ref, cand in zip(names, reference, candidate, strict=True):
        r, c = np.asarray(ref), np.asarray(cand)
        if r.shape != c.shape:
            raise ValueError(f"output {name!r}: shape {c.shape} != reference {r.shape}")
        e = output_errors(r, c, atol, rtol)
        e["top1"] = float(np.mean(top1(r) == top1(c))) if _is_classifier_output(r) else None
        if e["top1"] is not None:
            agree.append(e["top1"])
        per[name] = e
        abs_sum += e["mean_abs_error"] * e["elements"]
        count += e["elements"]
    n = len(reference[0]) if len(reference) and np.ndim(reference[0]) else 0
    return ValidationResult(
        n_samples=n,
        max_abs_error=max((e["max_abs_error"] for e in per.values()), default=0.0),
        mean_abs_error=abs_sum / max(count, 1),
        top1_agreement=float(np.mean(agree)) if agree else None,
        atol=atol,
        rtol=rtol if atol is not None else None,
        passed=not any(e.get("failing") for e in per.values()),
        per_output=per,
    )


def output_saturation(
    reference: Sequence[np.ndarray], names: Sequence[str]
) -> dict[str, dict[str, float | None]]:
    """How degenerate each reference output is over the samples.

    Per output: ``constant_share``, the share of output elements that do not vary across
    samples; for classifier outputs (N, C) also ``same_class_share``, the share of samples
    whose arg-max is the most common class, and, when rows are probabilities,
    ``saturated_share``, the share of samples with a top probability >= 0.999.
    """
    out: dict[str, dict[str, float | None]] = {}
    for name, r in zip(names, reference, strict=True):
        a = np.asarray(r).reshape(len(r), -1) if np.ndim(r) else np.zeros((0, 1))
        if len(a) == 0:
            continue
        constant = _constant_share(a)
        entry: dict[str, float | None] = {"constant_share": constant, "same_class_share": None,
                                          "saturated_share": None}
        if _is_classifier_output(np.asarray(r)):
            counts = np.bincount(top1(a), minlength=a.shape[1])
            entry["same_class_share"] = float(counts.max() / len(a))
            if a.min() >= 0 and np.allclose(a.sum(1), 1.0, atol=1e-3):
                entry["saturated_share"] = float(np.mean(a.max(1) >= 0.999))
        out[name] = entry
    return out


def _constant_share(a: np.ndarray) -> float:
    """Share of the columns of ``a`` (samples x elements) that do not vary across samples,
    in float64 a block of columns at a time."""
    step = max(1, CHUNK_ELEMENTS // max(len(a), 1))
    constant = 0
    for j in range(0, a.shape[1], step):
        block = np.asarray(a[:, j:j + step], np.float64)
        spread = block.std(axis=0)
        constant += int(np.sum(spread <= 1e-6 * np.maximum(1.0, np.abs(block).mean(axis=0))))
    return constant / max(a.shape[1], 1)


def degenerate_warnings(saturation: dict[str, dict[str, float | None]], n: int) -> list[str]:
    """Warnings for outputs on which agreement proves little (needs >= 4 samples).

    Degenerate: >= 50% constant elements, >= 90% of samples in one class, or >= 50% of
    samples saturated.
    """
    if n < 4:
        return []
    out = []
    for name, s in saturation.items():
        why = []
        if (s["constant_share"] or 0.0) >= 0.5:
            why.append(f"{100 * (s['constant_share'] or 0):.0f}% of its values never change")
        if (s["same_class_share"] or 0.0) >= 0.9:
            why.append(f"{100 * (s['same_class_share'] or 0):.0f}% of samples get the same class")
        if (s["saturated_share"] or 0.0) >= 0.5:
            why.append(f"{100 * (s['saturated_share'] or 0):.0f}% of samples are saturated "
                       "(top probability >= 0.999)")
        if why:
            out.append(f"output {name!r} is degenerate on the validation inputs: "
                       + "; ".join(why))
    return out


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent (see :func:`edgekit.contract.top1`)."""
    truth = np.asarray(labels).reshape(-1)
    return 100.0 * float(np.mean(top1(probabilities) == truth))


def onnx_session(
    model: str | os.PathLike[str] | bytes,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    session_options: object | None = None,
) -> Any:
    """An ``onnxruntime.InferenceSession`` of a model file or serialized bytes (CPU default)."""
    import onnxruntime as ort

    src = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(src, sess_options=session_options, providers=list(providers))


def run_onnx(
    model: str | os.PathLike[str] | bytes,
    feeds: dict[str, np.ndarray],
    batch_size: int = 64,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    session_options: object | None = None,
    whole: bool = False,
) -> list[np.ndarray]:
    """Run an ONNX model over ``feeds`` in batches of ``batch_size`` (default 64), CPU only;
    ``whole``: on the same whole batches every time, outputs stacked per batch
    (:func:`~edgekit.inputs.data.run_whole_batches`: models whose outputs mix the batch)."""
    sess = onnx_session(model, providers, session_options)
    run = run_whole_batches if whole else run_in_batches
    return run(lambda f: sess.run(None, f), feeds, batch_size)
