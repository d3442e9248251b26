"""What the quantizer decides from the graph: auto counts Embedding tables as weights, and an
output activation stays float whatever relabelling ops follow it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgekit.quantize import quantize_model
from edgekit.quantize.config import AUTO_MIN_DENSE_WEIGHT_BYTES, QuantizationConfig, resolve_mode
from edgekit.quantize.options import CalibrationMethod, QuantMode
from edgekit.quantize.qdq import output_activation_nodes


def _embedding_classifier(vocab: int, dim: int) -> onnx.ModelProto:
    """ids -> Gather(table) -> ReduceMean -> MatMul(dim x 2) -> Softmax: a Keras
    Embedding + GlobalAveragePooling1D + Dense text classifier."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["emb"]),
         helper.make_node("ReduceMean", ["emb"], ["pooled"], axes=[1], keepdims=0),
         helper.make_node("MatMul", ["pooled", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probs"], name="softmax")],
        "text",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 20])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(rng.normal(size=(vocab, dim)).astype(np.float32), "table"),
         numpy_helper.from_array(rng.normal(size=(dim, 2)).astype(np.float32), "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_auto_counts_embedding_tables_like_dense_weights() -> None:
    vocab = AUTO_MIN_DENSE_WEIGHT_BYTES // (4 * 32) + 1  # just over the bar in table bytes
    mode, why = resolve_mode(_embedding_classifier(vocab, 32), "auto")
    assert mode is QuantMode.DYNAMIC
    assert why is not None and "256 KiB of Dense and Embedding weights" in why


def test_auto_still_skips_a_small_embedding_model() -> None:
    mode, why = resolve_mode(_embedding_classifier(100, 16), "auto")
    assert mode is QuantMode.NONE
    assert why is not None and "6.4 KiB of Dense and Embedding weights" in why


def _softmax_then(ops: list[str], activation: str = "Softmax") -> onnx.ModelProto:
    """x -> MatMul -> activation -> ops... -> y (each op a name-bearing node)."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["t0"], name="matmul"),
             helper.make_node(activation, ["t0"], ["t1"], name="act")]
    for i, op in enumerate(ops, start=1):
        attrs: dict[str, Any] = {"perm": [0, 2, 1]} if op == "Transpose" else {}
        nodes.append(helper.make_node(op, [f"t{i}"], [f"t{i + 1}"], name=f"{op.lower()}{i}",
                                      **attrs))
    nodes[-1].output[0] = "y"
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones((4, 4), np.float32), "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_an_output_softmax_behind_transposes_stays_float() -> None:
    assert output_activation_nodes(_softmax_then([])) == ["act"]
    assert output_activation_nodes(_softmax_then(["Transpose"])) == ["act", "transpose1"]
    assert output_activation_nodes(_softmax_then(["Identity", "Transpose"], "Sigmoid")) == [
        "act", "transpose2", "identity1"]


def test_an_activation_followed_by_arithmetic_is_not_an_output_activation() -> None:
    model = _softmax_then(["Transpose"])
    model.graph.node.append(helper.make_node("Neg", ["y"], ["z"], name="neg"))
    model.graph.output[0].name = "z"
    assert output_activation_nodes(model) == []


def test_a_degenerate_range_falls_back_to_minmax_calibration(tmp_path: Path) -> None:
    """numpy cannot make 2048 histogram bins over a denormal range (ConvNeXt's layer scales
    with random weights): percentile calibration fails there, minmax works, and says so."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "tiny"], ["t"]),
         helper.make_node("MatMul", ["t", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.array(1e-42, np.float32), "tiny"),
         numpy_helper.from_array(np.ones((8, 4), np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "m.onnx"))
    x = np.random.default_rng(0).uniform(-1, 1, (64, 8)).astype(np.float32)
    np.savez(tmp_path / "cal.npz", x=x)
    out = tmp_path / "out"
    out.mkdir()
    result = quantize_model(tmp_path / "m.onnx", out, "m", QuantizationConfig(),
                            calibration=tmp_path / "cal.npz")
    assert result.config.calibration.method is CalibrationMethod.MINMAX
    assert any("percentile calibration failed" in n and "minmax instead" in n
               for n in result.notes)
    saved = json.loads((out / "m.int8.quant.json").read_text())
    assert saved["calibration"]["method"] == "minmax"  # the file says how it was calibrated
    assert result.path.exists()
