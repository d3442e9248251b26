"""benchmarks/swish_cost.py: its layer pairs compute Swish (within one int8 step of the float
function's quantized output; ONNX's own Swish op too), its Relu substitution finds
x * sigmoid(x) only, and a short run writes its table's JSON with each row's difference from
the float Swish (real onnxruntime and OpenVINO)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import swish_cost  # noqa: E402


def _run(model: onnx.ModelProto, x: np.ndarray, extra: list[str]) -> list[np.ndarray]:
    for name in extra:
        model.graph.output.append(helper.make_value_info(name, onnx.TypeProto()))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


def test_layer_pairs_compute_swish_on_the_int8_grid() -> None:
    x = np.random.default_rng(1).normal(size=(1, swish_cost.C0, swish_cost.SIDE,
                                              swish_cost.SIDE)).astype(np.float32)
    outs = {k: _run(swish_cost.layer_pair(k), x, ["y", "aq"]) for k in swish_cost.ACTIVATIONS}
    ref_out, y, ref_aq = outs["swish-float"]
    assert np.abs(y).max() < 128 * swish_cost.Y_SCALE  # the conv's output is not clipped
    expected = np.clip(np.round(y / (1 + np.exp(-y)) / swish_cost.A_SCALE) + swish_cost.A_ZERO,
                       0, 255)
    assert np.abs(ref_aq.astype(int) - expected).max() <= 1
    for kind in ("swish-qdq", "swish-tanh", "swish-op", "swish-lut"):
        out, _, aq = outs[kind]
        assert aq.dtype == np.uint8 and aq.shape == ref_aq.shape
        assert np.abs(aq.astype(int) - ref_aq.astype(int)).max() <= 1, kind
        assert (aq == ref_aq).mean() > 0.75, kind
        assert np.allclose(out, ref_out, atol=1.0), kind
    relu_aq = outs["relu"][2]
    assert relu_aq.min() == swish_cost.A_ZERO and ref_aq.min() < swish_cost.A_ZERO


def _swish_graph() -> onnx.ModelProto:
    """Swish twice (Mul inputs in both orders) and one Mul of another tensor's sigmoid."""
    nodes = [helper.make_node("Sigmoid", ["x"], ["sx"]),
             helper.make_node("Mul", ["x", "sx"], ["a"], name="swish1"),
             helper.make_node("Sigmoid", ["a"], ["sa"]),
             helper.make_node("Mul", ["sa", "a"], ["b"], name="swish2"),
             helper.make_node("Mul", ["b", "sx"], ["c"], name="gate")]
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in ("x", "c")]
    graph = helper.make_graph(nodes, "g", vi[:1], vi[1:])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_relu_for_swish_replaces_x_times_sigmoid_x_only() -> None:
    model = _swish_graph()
    assert swish_cost.relu_for_swish(model) == 2
    onnx.checker.check_model(model)
    ops = {n.name: n.op_type for n in model.graph.node}
    assert ops["swish1"] == ops["swish2"] == "Relu" and ops["gate"] == "Mul"
    x = np.array([[-2.0, 0.5, 3.0], [1.0, -0.1, 0.0]], np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = np.maximum(x, 0) / (1 + np.exp(-x))
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], expected, rtol=1e-6)


def test_short_run_writes_the_table_json(tmp_path: Path) -> None:
    out = tmp_path / "swish.json"
    assert swish_cost.main(["--rounds", "3", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["cpu"] and result["instruction_set"] and result["threads"] == 1
    assert result["openvino_precision"] in ("bf16", "f32")
    rows = result["rows"]
    assert [(r["row"].split(", ")[1], r["engine"]) for r in rows] == [
        (k, e) for k in swish_cost.ACTIVATIONS for e in ("onnxruntime", "openvino")]
    assert all(0 < r["p50_us"] <= r["p90_us"] <= r["p99_us"] for r in rows)
    # every Swish row computes what the float Swish row does, on either engine (the final
    # conv's output: within a few int8 steps of the activation); Relu is another function
    diffs = {(r["row"].split(", ")[1], r["engine"]): r["max_abs_diff_vs_swish_float"]
             for r in rows}
    assert diffs[("swish-float", "onnxruntime")] == 0.0
    assert all(d < 1.0 for (k, _), d in diffs.items() if k != "relu"), diffs
    assert min(d for (k, _), d in diffs.items() if k == "relu") > 1.0, diffs
