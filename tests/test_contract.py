"""edgekit.contract: the rules of the output contract, on plain arrays (no engine, no model;
tests/test_output_contract.py runs them on exported Keras models)."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.cli.main import cli
from edgekit.contract import (
    DEFAULT_THRESHOLD,
    OutputKind,
    class_rows,
    graph_kind,
    has_class_rows,
    is_multi_label,
    output_kind,
    parse_output_kinds,
    predicted_classes,
    to_probabilities,
    top_k_rows,
)
from edgekit.errors import InputError


def test_output_kind_rules() -> None:
    assert output_kind("softmax", "classification", False) is OutputKind.PROBABILITIES
    assert output_kind("sigmoid", "regression", False) is OutputKind.INDEPENDENT
    assert output_kind("linear", "classification", True) is OutputKind.LOGITS
    assert output_kind("log_softmax", "classification", True) is OutputKind.LOGITS
    assert output_kind("linear", "regression", True) is OutputKind.REGRESSION
    assert output_kind("unknown", "classification", True) is OutputKind.OTHER
    assert output_kind("relu", "classification", True) is OutputKind.OTHER
    p = np.array([[0.5, 0.494]], np.float32)  # int8-rounded softmax row
    np.testing.assert_allclose(to_probabilities(p, "probabilities").sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(to_probabilities(np.array([[0.0]], np.float32), "logits"), 0.5)


def test_contract_rules_without_a_model() -> None:
    assert output_kind("sigmoid", "classification", True) is OutputKind.INDEPENDENT
    assert output_kind("softmax_axis", "classification", True) is OutputKind.OTHER
    binary = np.array([[0.7], [0.2]], np.float32)  # one sigmoid column: a binary classifier
    assert top_k_rows(binary, "independent", ["no", "yes"], 1) == [
        [("yes", pytest.approx(0.7))], [("no", pytest.approx(0.8))]]
    assert predicted_classes(binary).tolist() == [1, 0]
    assert top_k_rows(np.array([[0.2, 0.4]]), "independent", ["a", "b"]) == [[]]
    assert top_k_rows(np.zeros((2, 1, 3)), "probabilities", None, 2) == [
        [("0", 0.0), ("1", 0.0)]] * 2  # [N, 1, C] is read as rows
    export_kinds = next(p for p in cli.commands["export"].params if p.name == "output_kinds")
    assert list(export_kinds.type.choices) == [k.value for k in OutputKind]  # type: ignore[attr-defined]


def test_output_kind_of_a_linear_end_needs_a_known_classifier() -> None:
    for act in ("linear", "identity", "none", "log_softmax"):
        assert output_kind(act, "classification", True) is OutputKind.LOGITS
        assert output_kind(act, "classification", False) is OutputKind.OTHER
        assert output_kind(act, "regression", False) is OutputKind.REGRESSION
    # the final activation wins over the task
    assert output_kind("softmax", "regression", False) is OutputKind.PROBABILITIES
    assert output_kind("softmax_axis", "regression", False) is OutputKind.OTHER


def test_parse_output_kinds() -> None:
    assert parse_output_kinds(None) is None
    assert parse_output_kinds([" Logits", "INDEPENDENT", OutputKind.OTHER]) == [
        OutputKind.LOGITS, OutputKind.INDEPENDENT, OutputKind.OTHER]
    with pytest.raises(InputError, match="unknown output kind 'softmax'") as info:
        parse_output_kinds(["probabilities", "softmax"])
    assert info.value.hint == "use one of probabilities, independent, logits, regression, other"


def test_to_probabilities_values() -> None:
    logits = np.array([[0.0, np.log(3.0)], [5.0, 5.0]], np.float32)
    np.testing.assert_allclose(to_probabilities(logits, "logits"), [[0.25, 0.75], [0.5, 0.5]],
                               rtol=1e-6)
    # one logit column: sigmoid; large logits do not overflow
    one = to_probabilities(np.array([[np.log(3.0)], [-np.log(3.0)], [100.0]], np.float32),
                           OutputKind.LOGITS)
    np.testing.assert_allclose(one, [[0.75], [0.25], [1.0]], rtol=1e-6)
    np.testing.assert_allclose(to_probabilities(np.array([[1000.0, 0.0]], np.float32), "logits"),
                               [[1.0, 0.0]])
    # a distribution is renormalised per row (each pixel of a rank-4 output too), dtype kept
    probs = np.array([[[0.2, 0.2], [0.3, 0.1]]], np.float16)
    out = to_probabilities(probs, "probabilities")
    assert out.dtype == np.float16
    np.testing.assert_allclose(out, [[[0.5, 0.5], [0.75, 0.25]]], rtol=1e-3)
    zero = np.zeros((1, 3), np.float32)  # an all-zero row stays zero (no division by 0)
    np.testing.assert_array_equal(to_probabilities(zero, "probabilities"), zero)
    # never renormalised: independent, regression, other, no kind, integers, one column
    x = np.array([[0.9, 0.8]], np.float32)
    for kind in ("independent", "regression", "other", None):
        assert to_probabilities(x, kind) is x
    ints = np.array([[3, 1]], np.int64)
    assert to_probabilities(ints, "logits") is ints
    col = np.array([[0.3]], np.float32)
    assert to_probabilities(col, "probabilities") is col


def test_graph_kind_corrects_probabilities_only() -> None:
    probs = OutputKind.PROBABILITIES
    assert graph_kind(probs, "Sigmoid", None, 2) is OutputKind.INDEPENDENT
    assert graph_kind(probs, "Softmax", 1, 3) is OutputKind.OTHER  # over the steps
    assert graph_kind(probs, "Softmax", -1, 3) is probs
    assert graph_kind(probs, "Softmax", 2, 3) is probs  # the last axis, counted from 0
    assert graph_kind(probs, "Softmax", None, 3) is probs
    assert graph_kind(probs, "Identity", None, 2) is probs  # unknown ops change nothing
    assert graph_kind(probs, None, None, None) is probs
    for kind in (OutputKind.LOGITS, OutputKind.INDEPENDENT, OutputKind.OTHER, None):
        assert graph_kind(kind, "Sigmoid", 1, 3) is kind


def test_class_rows_shapes() -> None:
    assert has_class_rows(np.zeros((4, 3))) and has_class_rows(np.zeros(3))
    assert has_class_rows(np.zeros((4, 1, 1, 3)))
    assert not has_class_rows(np.zeros(())) and not has_class_rows(np.zeros((4, 8, 8, 3)))
    assert class_rows(np.array([0.1, 0.9])).tolist() == [[0.1, 0.9]]
    rows = class_rows(np.arange(6, dtype=np.float32).reshape(2, 1, 1, 3))
    assert rows.shape == (2, 3) and rows.dtype == np.float64
    with pytest.raises(InputError, match="scalar"):
        class_rows(np.array(0.5))
    with pytest.raises(InputError, match=r"shape \[2, 4, 3\] holds one value per pixel or step"):
        class_rows(np.zeros((2, 4, 3)))


def test_predicted_classes() -> None:
    assert predicted_classes(np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])).tolist() == [1, 0]
    # a single column: class 1 at or over the threshold
    column = np.array([[DEFAULT_THRESHOLD], [0.49], [0.8]])
    assert predicted_classes(column).tolist() == [1, 0, 1]
    assert predicted_classes(column, threshold=0.9).tolist() == [0, 0, 0]
    assert predicted_classes(np.array([0.2, 0.6])).tolist() == [0, 1]
    mask = predicted_classes(np.array([[0.5, 0.2, 0.9]]), multi_label=True)
    assert mask.tolist() == [[True, False, True]]


def test_is_multi_label() -> None:
    two = np.zeros((1, 2))
    assert is_multi_label(two, "independent") and is_multi_label(two, OutputKind.INDEPENDENT)
    assert not is_multi_label(np.zeros((1, 1)), "independent")  # binary, not multi-label
    assert not is_multi_label(two, "probabilities") and not is_multi_label(two, None)


def test_top_k_rows_of_a_distribution() -> None:
    p = np.array([[0.1, 0.6, 0.3], [0.4, 0.2, 0.4]])
    rows = top_k_rows(p, "probabilities", ["a", "b", "c"])
    assert rows == [[("b", 0.6), ("c", 0.3), ("a", 0.1)],
                    [("a", 0.4), ("c", 0.4), ("b", 0.2)]]  # ties: the lower index first
    assert top_k_rows(p, "probabilities", ["a", "b", "c"], k=1) == [[("b", 0.6)], [("a", 0.4)]]
    assert top_k_rows(p, "probabilities", ["a", "b", "c"], k=0) == [[("b", 0.6)], [("a", 0.4)]]
    # k over the class count: every class; labels that do not match: the class index
    assert [len(r) for r in top_k_rows(p, "probabilities", None, k=9)] == [3, 3]
    assert top_k_rows(p[:1], "probabilities", ["a", "b"], k=2) == [[("1", 0.6), ("2", 0.3)]]


def test_top_k_rows_of_a_multi_label_output() -> None:
    p = np.array([[0.9, 0.5, 0.49, 0.7]])
    labels = ["a", "b", "c", "d"]
    assert top_k_rows(p, "independent", labels) == [[("a", 0.9), ("d", 0.7), ("b", 0.5)]]
    assert top_k_rows(p, "independent", labels, k=2) == [[("a", 0.9), ("d", 0.7)]]
    assert top_k_rows(p, "independent", labels, threshold=0.8) == [[("a", 0.9)]]
    # the same values read as a distribution: the top 3, under the threshold too
    assert top_k_rows(p, "probabilities", labels)[0][2] == ("b", 0.5)
    assert top_k_rows(p, "probabilities", labels, k=4)[0][3] == ("c", 0.49)
