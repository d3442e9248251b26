"""edgekit.quantize.qdq: graph passes on quantized ONNX models, on small hand-made graphs (onnx
and onnxruntime are base dependencies: no optional engine)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.quantize.qdq import (
    commute_relu_maxpool,
    float_qdq_pairs,
    nonstandard_ops,
    output_activation_nodes,
    topological_sort,
)


def _model(nodes: list[onnx.NodeProto], outputs: tuple[str, ...] = ("y",),
           inits: tuple[onnx.TensorProto, ...] = ()) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, 2, 4, 4]) for o in outputs],
        list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _pool(inp: str, out: str, name: str = "pool") -> onnx.NodeProto:
    return helper.make_node("MaxPool", [inp], [out], name=name, kernel_shape=[2, 2],
                            strides=[2, 2])


def test_commute_relu_maxpool_is_exact() -> None:
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"),
         helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2],
                          strides=[2, 2]),
         helper.make_node("Identity", ["p"], ["y"], name="id")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2, 2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(0).normal(size=(1, 2, 4, 4)).astype(np.float32)
    before = ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
    assert commute_relu_maxpool(m) == ["pool"]
    assert [n.op_type for n in m.graph.node] == ["MaxPool", "Relu", "Identity"]
    onnx.checker.check_model(m)
    np.testing.assert_array_equal(ort.InferenceSession(m.SerializeToString()).run(
        None, {"x": x})[0], before)


def test_commute_relu_maxpool_rewires_and_drops_stale_shapes() -> None:
    m = _model([helper.make_node("Relu", ["x"], ["r"], name="relu"), _pool("r", "p"),
                helper.make_node("Identity", ["p"], ["y"], name="id")])
    m.graph.value_info.extend([helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 2, 4, 4]),
                               helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 2, 2, 2])])
    assert commute_relu_maxpool(m) == ["pool"]
    pool, relu = m.graph.node[0], m.graph.node[1]
    assert (list(pool.input), list(pool.output)) == (["x"], ["r"])
    assert (list(relu.input), list(relu.output)) == (["r"], ["p"])
    # "r" is now the pooled tensor: its old shape is gone, "p" kept its shape
    assert [v.name for v in m.graph.value_info] == ["p"]


def test_commute_relu_maxpool_leaves_pairs_it_cannot_swap() -> None:
    # the Relu has a second consumer
    shared = _model([helper.make_node("Relu", ["x"], ["r"], name="relu"), _pool("r", "p"),
                     helper.make_node("Add", ["p", "p"], ["y"], name="add"),
                     helper.make_node("Identity", ["r"], ["z"], name="id")], ("y", "z"))
    # the MaxPool's output is a graph output
    as_output = _model([helper.make_node("Relu", ["x"], ["r"], name="relu"), _pool("r", "y")])
    # no Relu before the MaxPool
    no_relu = _model([helper.make_node("Sigmoid", ["x"], ["s"], name="sig"), _pool("s", "p"),
                      helper.make_node("Identity", ["p"], ["y"], name="id")])
    for m in (shared, as_output, no_relu):
        before = m.SerializeToString()
        assert commute_relu_maxpool(m) == []
        assert m.SerializeToString() == before


def test_topological_sort_orders_nodes_after_their_producers() -> None:
    w = numpy_helper.from_array(np.ones((1,), np.float32), "w")
    nodes = [helper.make_node("Relu", ["b"], ["y"], name="c"),
             helper.make_node("Add", ["a", "w"], ["b"], name="b"),
             helper.make_node("Neg", ["x"], ["a"], name="a")]
    m = _model(nodes, inits=(w,))
    topological_sort(m.graph)
    assert [n.name for n in m.graph.node] == ["a", "b", "c"]
    onnx.checker.check_model(m)
    # already sorted: unchanged; a cycle: an error
    topological_sort(m.graph)
    assert [n.name for n in m.graph.node] == ["a", "b", "c"]
    cycle = _model([helper.make_node("Add", ["x", "q"], ["p"], name="p"),
                    helper.make_node("Relu", ["p"], ["q"], name="q"),
                    helper.make_node("Identity", ["q"], ["y"], name="id")])
    with pytest.raises(ValueError, match="cycle"):
        topological_sort(cycle.graph)


def test_nonstandard_ops_and_output_activations() -> None:
    m = _model([helper.make_node("Relu", ["x"], ["r"], name="relu"),
                helper.make_node("FusedGemm", ["r"], ["f"], name="f", domain="com.microsoft"),
                helper.make_node("QLinearConv", ["f"], ["c"], name="c", domain="com.microsoft"),
                helper.make_node("FusedGemm", ["c"], ["g"], name="g", domain="com.microsoft"),
                helper.make_node("Softmax", ["g"], ["y"], name="softmax"),
                helper.make_node("Sigmoid", ["g"], ["z"], name="inner"),
                helper.make_node("Sigmoid", ["z"], ["w"], name="sigmoid")], ("y", "w"))
    m.graph.node.extend([helper.make_node("Neg", ["x"], ["n"], name="neg", domain="ai.onnx")])
    assert nonstandard_ops(m) == ["com.microsoft.FusedGemm", "com.microsoft.QLinearConv"]
    assert output_activation_nodes(m) == ["softmax", "sigmoid"]
    assert nonstandard_ops(_model([helper.make_node("Relu", ["x"], ["y"])])) == []


def _qdq(src: str, name: str) -> list[onnx.NodeProto]:
    """``src`` -> QuantizeLinear -> DequantizeLinear -> ``name``_dq."""
    return [helper.make_node("QuantizeLinear", [src, "s", "zp"], [f"{name}_q"], name=f"{name}_Q"),
            helper.make_node("DequantizeLinear", [f"{name}_q", "s", "zp"], [f"{name}_dq"],
                             name=f"{name}_DQ")]


def test_float_qdq_pairs_finds_q_dq_between_two_float_nodes() -> None:
    scale = (numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.uint8), "zp"))
    m = _model([helper.make_node("Relu", ["x"], ["a"], name="relu"), *_qdq("a", "a"),
                helper.make_node("MaxPool", ["a_dq"], ["p"], name="pool", kernel_shape=[2, 2]),
                *_qdq("p", "p"), helper.make_node("Conv", ["p_dq", "w"], ["y"], name="conv")],
               inits=scale)
    assert float_qdq_pairs(m, ["relu", "pool"]) == ["a"]
    assert float_qdq_pairs(m, ["relu", "pool", "conv"]) == ["a", "p"]
    assert float_qdq_pairs(m, ["pool", "conv"]) == ["p"]
    assert float_qdq_pairs(m, ["relu", "conv"]) == []  # the pool between them is quantized
    assert float_qdq_pairs(m, []) == []
