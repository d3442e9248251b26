"""Numerical equivalence between a reference (Keras, fp32 ONNX) and a converted model.

``compare_outputs`` turns two lists of output arrays into a :class:`ValidationResult`
(max/mean abs error and, for classifiers, top-1 agreement); ``run_onnx`` runs an ONNX model
(file or bytes) on batched feeds with onnxruntime on the CPU.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .data import run_in_batches

__all__ = ["ValidationResult", "compare_outputs", "run_onnx", "accuracy", "predicted_classes"]


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
    """

    n_samples: int
    max_abs_error: float
    mean_abs_error: float
    top1_agreement: float | None
    atol: float | None = None
    passed: bool = True
    per_output: dict[str, dict[str, float | None]] = field(default_factory=dict)

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


def predicted_classes(probabilities: np.ndarray) -> np.ndarray:
    """Class ids: arg-max, or a single sigmoid column thresholded at 0.5."""
    p = np.asarray(probabilities)
    if p.ndim == 1 or p.shape[-1] == 1:
        return (p.reshape(-1) >= 0.5).astype(np.int64)
    return p.argmax(-1)


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent (see :func:`predicted_classes`)."""
    truth = np.asarray(labels).reshape(-1)
    return 100.0 * float(np.mean(predicted_classes(probabilities) == truth))


def run_onnx(
    model: str | os.PathLike[str] | bytes,
    feeds: dict[str, np.ndarray],
    batch_size: int = 64,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    session_options: object | None = None,
) -> list[np.ndarray]:
    """Run an ONNX model over ``feeds`` in batches of ``batch_size`` (default 64), CPU only."""
    import onnxruntime as ort

    src = model if isinstance(model, bytes) else os.fspath(model)
    sess = ort.InferenceSession(src, sess_options=session_options, providers=list(providers))
    return run_in_batches(lambda f: sess.run(None, f), feeds, batch_size)
