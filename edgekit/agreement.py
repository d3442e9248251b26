"""How far a variant's predictions are from fp32, with a gate that accounts for sample count.

A gate on an exact count is noise: with a 0.5-point budget on 256 samples it allows one
changed prediction and rejects two. :func:`gate` instead rejects a variant when its loss is over
the budget by more than one standard error (a one-sided 84 % confidence bound; a 95 % bound
would accept 2-point drops measured on a few hundred samples, a bound that must clear the
budget from below would reject every variant on them):

- with labels, the accuracy drop is a difference of paired proportions; its standard error
  comes from the discordant pairs (McNemar): ``b`` samples fp32 got right and the variant
  wrong, ``c`` the reverse; ``se = sqrt(b + c - (b - c)^2 / n) / n``;
- without labels, the disagreement rate ``k / n`` of top-1 classes gets a Wilson lower bound;
- a regression output (:func:`edgekit.contract.scores_classes`) has no classes: its relative
  error, the mean ``|variant - fp32|`` over the mean ``|fp32|``, is held to the budget read as
  a percentage (0.5 pt: 0.5 % of the output's typical magnitude); a mean over every value of
  every sample, it needs no confidence bound.

Top-1 classes follow :func:`edgekit.contract.top1`; a single column is read as logits when
either side holds values outside ``[0, 1]``.

Pure numpy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgekit.contract import DEFAULT_THRESHOLD, LOGIT_THRESHOLD, top1

__all__ = ["Z_GATE", "Agreement", "compare_predictions", "wilson_lower", "gate"]

#: standard errors of tolerance (one-sided 84 % confidence)
Z_GATE = 1.0


@dataclass
class Agreement:
    """A variant against fp32 on the same samples.

    Attributes:
        samples: how many samples were compared.
        top1_agreement: share (0..1) of samples with the same top-1 class (None when the
            outputs are not class scores).
        disagreements: samples whose top-1 class changed.
        max_abs_error / mean_abs_error: over the first output.
        fp32_correct_variant_wrong / fp32_wrong_variant_correct: discordant pairs (labels).
        relative_error: ``mean_abs_error`` over the mean ``|fp32|`` of the first output (None
            when that is 0).
        classes: whether the output holds class scores (False: a regression output, gated on
            ``relative_error``).
    """

    samples: int
    top1_agreement: float | None
    disagreements: int
    max_abs_error: float
    mean_abs_error: float
    fp32_correct_variant_wrong: int | None = None
    fp32_wrong_variant_correct: int | None = None
    relative_error: float | None = None
    classes: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _threshold(*outputs: np.ndarray) -> float:
    """The threshold of a single column: the outputs compared are raw (their kind is not known
    here), so values outside ``[0, 1]`` on either side mean logits."""
    probs = all(y.size == 0 or (y.min() >= 0 and y.max() <= 1) for y in outputs)
    return DEFAULT_THRESHOLD if probs else LOGIT_THRESHOLD


def compare_predictions(fp32: np.ndarray, variant: np.ndarray,
                        labels: np.ndarray | None = None, classes: bool = True) -> Agreement:
    """:class:`Agreement` of the first outputs ``fp32`` and ``variant`` (same samples);
    ``classes=False`` for a regression output: no top-1 figures, labels unused."""
    a, b = np.asarray(fp32, np.float64), np.asarray(variant, np.float64)
    diff = np.abs(a - b)
    n = len(a)
    rows = classes and a.ndim == 2 and b.ndim == 2  # one row of class scores per sample
    scale = float(np.abs(a).mean()) if a.size else 0.0
    t = _threshold(a, b)
    ca, cb = (top1(a, t), top1(b, t)) if rows else (None, None)
    same = None if ca is None or cb is None else ca == cb
    out = Agreement(samples=n, top1_agreement=None if same is None else float(same.mean()),
                    disagreements=0 if same is None else int((~same).sum()),
                    max_abs_error=float(diff.max()) if diff.size else 0.0,
                    mean_abs_error=float(diff.mean()) if diff.size else 0.0, classes=classes)
    out.relative_error = out.mean_abs_error / scale if scale > 0 else None
    if labels is not None and ca is not None and cb is not None:
        y = np.asarray(labels).reshape(-1)[:n]
        ok_a, ok_b = ca == y, cb == y
        out.fp32_correct_variant_wrong = int((ok_a & ~ok_b).sum())
        out.fp32_wrong_variant_correct = int((~ok_a & ok_b).sum())
    return out


def wilson_lower(k: int, n: int, z: float = Z_GATE) -> float:
    """Wilson score lower bound of a proportion ``k / n`` (0 for ``n == 0``)."""
    if n <= 0:
        return 0.0
    p = k / n
    denom = 1 + z * z / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - half) / denom)


def relative_error_percent(agreement: Agreement) -> float:
    """A regression output's error against fp32 in percent: ``relative_error`` x 100, or 100
    when fp32's output is all zeros and the variant's is not (any error is all of it)."""
    rel = agreement.relative_error
    return 100.0 * rel if rel is not None else 100.0 * (agreement.mean_abs_error > 0)


def gate(agreement: Agreement, budget_points: float,
         z: float = Z_GATE) -> tuple[bool, float, str]:
    """``(accepted, lower_bound_points, reason)`` for a budget in percentage points.

    With discordant pairs (labels) the accuracy drop is tested; otherwise the top-1
    disagreement rate. A variant is rejected only when the lower confidence bound of its
    loss (``z`` standard errors below the estimate, default :data:`Z_GATE`) is over
    ``budget_points``. A regression output (``agreement.classes`` False) is rejected when its
    relative error, in percent, is over ``budget_points``.
    """
    n = agreement.samples
    b, c = agreement.fp32_correct_variant_wrong, agreement.fp32_wrong_variant_correct
    if b is not None and c is not None and n:
        drop = (b - c) / n
        se = math.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n
        lower = 100.0 * (drop - z * se)
        what = f"accuracy drop {100 * drop:+.2f} pt (lower bound {lower:+.2f} pt)"
    elif not agreement.classes:
        lower = relative_error_percent(agreement)
        what = (f"relative error {lower:.2f}% (mean |variant - fp32| over mean |fp32|, a "
                "regression output)")
    else:
        k = agreement.disagreements
        lower = 100.0 * wilson_lower(k, n, z)
        what = (f"top-1 disagreement {k}/{n} = {100 * k / max(n, 1):.2f}% "
                f"(lower bound {lower:.2f}%)")
    ok = lower <= budget_points + 1e-9
    verdict = "within" if ok else "over"
    return ok, lower, f"{what}: {verdict} the {budget_points:g} pt budget on {n} samples"
