"""Numerical equivalence between a reference (Keras, fp32 ONNX) and a converted model.

``compare_outputs`` turns two lists of output arrays into a :class:`ValidationResult`
(max/mean abs error and, for classifiers, top-1 agreement); ``run_onnx`` runs an ONNX model
(file or bytes) on batched feeds with onnxruntime on the CPU.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.contract import predicted_classes  # the one top-1/threshold rule
from edgekit.inputs.data import run_in_batches

__all__ = ["ValidationResult", "compare_outputs", "run_onnx", "accuracy", "predicted_classes",
           "output_saturation", "degenerate_warnings", "onnx_session"]


@dataclass
class ValidationResult:
    """How far a converted model's outputs are from the reference.

    Attributes:
        n_samples: samples compared.
        max_abs_error: largest absolute difference over all outputs.
        mean_abs_error: mean absolute difference over all outputs.
        top1_agreement: share of samples whose arg-max agrees (classifier outputs), else None.
        atol: the tolerance the result was checked against (None: not checked).
        passed: ``max_abs_error <= atol`` (True when no tolerance was given).
        per_output: the same figures per output name.
        saturation: per output, how little the reference varies (see :func:`output_saturation`).
        warnings: why the comparison may prove little (degenerate reference outputs).
    """

    n_samples: int
    max_abs_error: float
    mean_abs_error: float
    top1_agreement: float | None
    atol: float | None = None
    passed: bool = True
    per_output: dict[str, dict[str, float | None]] = field(default_factory=dict)
    saturation: dict[str, dict[str, float | None]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for people."""
        s = (
            f"{self.n_samples} samples: max abs error {self.max_abs_error:.3g}, "
            f"mean abs error {self.mean_abs_error:.3g}"
        )
        if self.top1_agreement is not None:
            s += f", top-1 agreement {100 * self.top1_agreement:.2f}%"
        return s


def _is_classifier_output(a: np.ndarray) -> bool:
    return a.ndim == 2 and a.shape[1] > 1


def compare_outputs(
    reference: Sequence[np.ndarray],
    candidate: Sequence[np.ndarray],
    names: Sequence[str] | None = None,
    atol: float | None = None,
) -> ValidationResult:
    """Compare output lists element-wise (same order, same shapes)."""
    names = list(names) if names is not None else [f"output_{i}" for i in range(len(reference))]
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference outputs vs {len(candidate)} candidates")
    per: dict[str, dict[str, float | None]] = {}
    max_err, abs_sum, count, agree = 0.0, 0.0, 0, []
    for name, r, c in zip(names, reference, candidate, strict=True):
        r64, c64 = np.asarray(r, np.float64), np.asarray(c, np.float64)
        if r64.shape != c64.shape:
            raise ValueError(f"output {name!r}: shape {c64.shape} != reference {r64.shape}")
        diff = np.abs(r64 - c64)
        diff = np.where(np.isnan(diff), np.inf, diff)
        m = float(diff.max()) if diff.size else 0.0
        top1 = (
            float(np.mean(r64.argmax(1) == c64.argmax(1))) if _is_classifier_output(r64) else None
        )
        if top1 is not None:
            agree.append(top1)
        per[name] = {"max_abs_error": m, "mean_abs_error": float(diff.mean()), "top1": top1}
        max_err = max(max_err, m)
        abs_sum += float(diff.sum())
        count += diff.size
    n = len(reference[0]) if len(reference) and np.ndim(reference[0]) else 0
    return ValidationResult(
        n_samples=n,
        max_abs_error=max_err,
        mean_abs_error=abs_sum / max(count, 1),
        top1_agreement=float(np.mean(agree)) if agree else None,
        atol=atol,
        passed=atol is None or max_err <= atol,
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
        a = np.asarray(r, np.float64).reshape(len(r), -1) if np.ndim(r) else np.zeros((0, 1))
        if len(a) == 0:
            continue
        spread = a.std(axis=0)
        constant = float(np.mean(spread <= 1e-6 * np.maximum(1.0, np.abs(a).mean(axis=0))))
        entry: dict[str, float | None] = {"constant_share": constant, "same_class_share": None,
                                          "saturated_share": None}
        if _is_classifier_output(np.asarray(r)):
            counts = np.bincount(a.argmax(1), minlength=a.shape[1])
            entry["same_class_share"] = float(counts.max() / len(a))
            if a.min() >= 0 and np.allclose(a.sum(1), 1.0, atol=1e-3):
                entry["saturated_share"] = float(np.mean(a.max(1) >= 0.999))
        out[name] = entry
    return out


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
    """Top-1 accuracy in percent (see :func:`predicted_classes`)."""
    truth = np.asarray(labels).reshape(-1)
    return 100.0 * float(np.mean(predicted_classes(probabilities) == truth))


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
) -> list[np.ndarray]:
    """Run an ONNX model over ``feeds`` in batches of ``batch_size`` (default 64), CPU only."""
    sess = onnx_session(model, providers, session_options)
    return run_in_batches(lambda f: sess.run(None, f), feeds, batch_size)
