"""edgekit.agreement: a variant against fp32, and the accuracy gate that accounts for sample count
(pure numpy: no engine, no model)."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.agreement import Z_GATE, Agreement, compare_predictions, gate, wilson_lower


def test_gate_statistic_accounts_for_sample_count() -> None:
    # the defect: 2 of 256 changed predictions failed a 0.5-point label-free budget
    two = Agreement(256, 254 / 256, 2, 0.1, 0.01)
    assert gate(two, 0.5)[0]
    assert not gate(Agreement(256, 246 / 256, 10, 0.1, 0.01), 0.5)[0]
    assert not gate(Agreement(10000, 0.98, 200, 0.1, 0.01), 0.5)[0]  # many samples: exact
    assert 0 < wilson_lower(2, 256) < 2 / 256
    # with labels, the paired accuracy drop and its standard error decide
    paired = Agreement(1000, 0.99, 10, 0.1, 0.01, fp32_correct_variant_wrong=8,
                       fp32_wrong_variant_correct=2)
    ok, lower, reason = gate(paired, 0.5)
    assert ok and lower < 0.6 and "accuracy drop +0.60 pt" in reason
    assert not gate(Agreement(1000, 0.97, 30, 0.1, 0.01, 30, 0), 0.5)[0]
    a = compare_predictions(np.eye(3)[[0, 1, 2, 0]], np.eye(3)[[0, 1, 1, 0]],
                            np.array([0, 1, 2, 1]))
    assert a.disagreements == 1 and a.fp32_correct_variant_wrong == 1
    assert a.fp32_wrong_variant_correct == 0


@pytest.mark.parametrize(("k", "n"), [(1, 10), (2, 256), (30, 100), (99, 100)])
@pytest.mark.parametrize("z", [Z_GATE, 1.96])
def test_wilson_lower_solves_the_score_equation(k: int, n: int, z: float) -> None:
    """The Wilson bound L is the root below k/n of (k/n - L)^2 = z^2 L (1 - L) / n."""
    p, low = k / n, wilson_lower(k, n, z)
    assert 0 < low < p
    assert (p - low) ** 2 == pytest.approx(z * z * low * (1 - low) / n, rel=1e-9)


def test_wilson_lower_edges() -> None:
    assert wilson_lower(0, 50) == 0.0 and wilson_lower(3, 0) == 0.0 and wilson_lower(0, 0) == 0.0
    # all n: the closed form n / (n + z^2)
    assert wilson_lower(10, 10) == pytest.approx(10 / 11)
    assert wilson_lower(10, 10, z=2.0) == pytest.approx(10 / 14)
    # more disagreements, higher bound; more samples at the same rate, tighter (higher) bound
    assert wilson_lower(2, 100) < wilson_lower(3, 100) < wilson_lower(4, 100)
    assert wilson_lower(2, 100) < wilson_lower(20, 1000) < wilson_lower(200, 10000) < 0.02


def test_compare_predictions_values() -> None:
    fp32 = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    variant = np.array([[0.8, 0.2], [0.6, 0.4], [0.6, 0.4]])
    a = compare_predictions(fp32, variant)
    assert a.samples == 3 and a.disagreements == 1
    assert a.top1_agreement == pytest.approx(2 / 3)
    assert a.max_abs_error == pytest.approx(0.4)
    assert a.mean_abs_error == pytest.approx((0.1 * 2 + 0.4 * 2) / 6)
    assert a.fp32_correct_variant_wrong is None and a.fp32_wrong_variant_correct is None
    # labels: sample 1 fp32 right / variant wrong; sample 2 both wrong (not discordant)
    b = compare_predictions(fp32, variant, labels=np.array([[0], [1], [1]]))
    assert (b.fp32_correct_variant_wrong, b.fp32_wrong_variant_correct) == (1, 0)
    assert b.to_dict() == {"samples": 3, "top1_agreement": pytest.approx(2 / 3),
                           "disagreements": 1, "max_abs_error": pytest.approx(0.4),
                           "mean_abs_error": pytest.approx(1 / 6),
                           "fp32_correct_variant_wrong": 1, "fp32_wrong_variant_correct": 0,
                           "relative_error": pytest.approx(1 / 3), "classes": True}


def test_compare_predictions_one_column_and_no_classes() -> None:
    # one column of probabilities: class 1 over 0.5; of logits (values outside [0, 1]): over 0
    probs = compare_predictions(np.array([[0.7], [0.3]]), np.array([[0.4], [0.3]]))
    assert probs.disagreements == 1 and probs.top1_agreement == 0.5
    logits = compare_predictions(np.array([[2.0], [-1.0]]), np.array([[0.3], [-1.0]]))
    assert logits.disagreements == 0 and logits.top1_agreement == 1.0
    # per-pixel outputs are no classes: errors only
    maps = compare_predictions(np.zeros((2, 4, 4)), np.full((2, 4, 4), 0.25),
                               labels=np.array([0, 1]))
    assert maps.top1_agreement is None and maps.disagreements == 0
    assert maps.max_abs_error == maps.mean_abs_error == 0.25
    assert maps.fp32_correct_variant_wrong is None


def test_gate_with_labels_is_the_paired_drop_minus_z_standard_errors() -> None:
    """McNemar: drop (b - c) / n = 0.6 pt, se sqrt(b + c - (b - c)^2 / n) / n = 0.316 pt."""
    paired = Agreement(1000, 0.99, 10, 0.1, 0.01, 8, 2)
    ok, lower, reason = gate(paired, 0.5)
    assert lower == pytest.approx(0.2843420, rel=1e-6)
    assert reason == ("accuracy drop +0.60 pt (lower bound +0.28 pt): within the 0.5 pt "
                      "budget on 1000 samples")
    assert gate(paired, 0.5, z=0.0)[1] == pytest.approx(0.6)  # z = 0: the drop itself
    assert gate(paired, 0.5, z=2.0)[1] == pytest.approx(0.6 - 2 * 0.315658, abs=1e-6)
    # the budget is compared with the lower bound, inclusively
    assert gate(paired, lower)[0] and not gate(paired, lower - 0.01)[0]
    assert gate(paired, 0.28)[2].endswith("over the 0.28 pt budget on 1000 samples")
    # a variant better than fp32 has a negative drop: always within
    better = gate(Agreement(100, 0.9, 10, 0.1, 0.01, 0, 10), 0.0)
    assert better[0] and better[1] < 0


def test_gate_without_labels_uses_the_wilson_bound_of_the_disagreements() -> None:
    two = Agreement(256, 254 / 256, 2, 0.1, 0.01)
    ok, lower, reason = gate(two, 0.5)
    assert ok and lower == pytest.approx(100 * wilson_lower(2, 256))
    assert reason == ("top-1 disagreement 2/256 = 0.78% (lower bound 0.39%): within the 0.5 pt "
                      "budget on 256 samples")
    # only one of the discordant counts: not paired, the disagreements decide
    half = Agreement(256, 254 / 256, 2, 0.1, 0.01, fp32_correct_variant_wrong=2)
    assert gate(half, 0.5)[1] == lower
    # no samples: nothing to reject
    assert gate(Agreement(0, None, 0, 0.0, 0.0), 0.0)[:2] == (True, 0.0)


def test_a_regression_output_is_compared_by_its_relative_error() -> None:
    """No top-1 of a regression output (a sign flip of a value near 0 is no class change):
    the mean |variant - fp32| over the mean |fp32|, held to the budget read as a percentage."""
    fp32 = np.array([[10.0], [-0.1], [30.0], [0.2]])
    variant = fp32 + np.array([[0.2], [0.2], [-0.2], [-0.4]])  # two signs flip
    reg = compare_predictions(fp32, variant, labels=np.array([0, 1, 2, 3]), classes=False)
    assert reg.top1_agreement is None and reg.disagreements == 0 and not reg.classes
    assert reg.fp32_correct_variant_wrong is None  # labels unused
    assert reg.relative_error == pytest.approx(0.25 / 10.075)
    ok, lower, reason = gate(reg, 2.5)
    assert ok and lower == pytest.approx(100 * 0.25 / 10.075)
    assert reason == ("relative error 2.48% (mean |variant - fp32| over mean |fp32|, a "
                      "regression output): within the 2.5 pt budget on 4 samples")
    assert not gate(reg, 2.0)[0]
    # as class scores (the default), the same values are one logit column: signs decide
    assert compare_predictions(fp32, variant).top1_agreement == 0.5
    # fp32 all zeros: any error is all of it, none is nothing
    zeros = np.zeros((3, 1))
    assert gate(compare_predictions(zeros, zeros + 0.1, classes=False), 50.0)[:2] == \
        (False, 100.0)
    assert gate(compare_predictions(zeros, zeros, classes=False), 0.0)[:2] == (True, 0.0)
