"""What Swish (``x * sigmoid(x)``) costs each engine, and what an int8 file can do about it.

EfficientNet's gap to LiteRT int8 at batch 1 (the zoo's largest miss on the AMX Xeon) is its 49
Swish activations: XNNPACK runs them as int8 table lookups, while a standard-ONNX file can only
ask onnxruntime / OpenVINO for the float function or for the ops around it. This script times
one EfficientNet layer pair (a 16 -> 96 1x1 conv at 112x112, the expand conv of block 2a, then
a 96 -> 24 1x1 conv, both int8 QDQ) with the activation between them written six ways:

- ``relu``: a reference, not Swish: what the two int8 convs cost with a free activation;
- ``swish-float``: Sigmoid + Mul in float between the conv's output and the next Q (the layout
  OpenVINO fuses into its int8 conv as a post-op);
- ``swish-qdq``: Q/DQ around the Sigmoid and the Mul too (what onnxruntime's QDQ int8 file
  holds: QLinearSigmoid + QLinearMul);
- ``swish-tanh``: ``0.5 x (1 + tanh(x / 2))``, the same function from other ops;
- ``swish-op``: ONNX's own ``Swish`` op (opset 24; the layer pair's file is then opset 24), in
  float between the conv's output and the next Q, as ``swish-float``;
- ``swish-lut``: an int8 table lookup in standard ops (the conv's output quantized, Cast to
  int32, Gather from a 256-entry uint8 table of the quantized Swish: XNNPACK's method, within
  one int8 step of the float Swish's quantized output).

Each on onnxruntime and on OpenVINO (bf16 where the CPU has it, else f32), 1 thread, in
interleaved rounds of warm samples (each the median of the later half of 50 ms of one row's
consecutive calls: one call per row and round would time every row with cold caches). With
``--model F.onnx`` it also times that fp32 file on OpenVINO as it is and with every
``x * sigmoid(x)`` replaced by Relu (a different function: only the difference is meaningful,
as Swish's share of the call).

    python benchmarks/swish_cost.py
    python benchmarks/swish_cost.py --model benchmarks/.cache/zoo/efficientnetb0/export/model.onnx

Prints a table (p50 / p90 / p99 per call, CPU and ISA) and writes
``benchmarks/results/swish_cost.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.speed.machine import cpu_model, instruction_set
from edgekit.speed.timing import measure

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "swish_cost.json"
C0, C1, C2, SIDE = 16, 96, 24, 112
Y_SCALE, Y_ZERO, A_SCALE, A_ZERO = 0.05, 128, 0.03, 10
SETTLE_S = 0.05  # a sample: the median of the later half of 50 ms of one row's calls (warm caches)
ACTIVATIONS = ("relu", "swish-float", "swish-qdq", "swish-tanh", "swish-op", "swish-lut")
#: the opset of the layer pair's file: ONNX's ``Swish`` op needs 24, the others 17
SWISH_OPSET = 24


def _consts(rng: np.random.Generator) -> dict[str, np.ndarray]:
    def w(cout: int, cin: int) -> np.ndarray:
        return rng.integers(-127, 128, (cout, cin, 1, 1)).astype(np.int8)

    q = (np.arange(256, dtype=np.float32) - Y_ZERO) * Y_SCALE
    lut = np.clip(np.round(q / (1 + np.exp(-q)) / A_SCALE) + A_ZERO, 0, 255)
    return {"s_in": np.array(0.02, np.float32), "z_in": np.array(128, np.uint8),
            "w1": w(C1, C0), "ws1": np.full(C1, 0.0025, np.float32), "wz1": np.zeros(C1, np.int8),
            "b1": rng.normal(0, 0.5, size=C1).astype(np.float32),
            "w2": w(C2, C1), "ws2": np.full(C2, 0.01, np.float32), "wz2": np.zeros(C2, np.int8),
            "s_y": np.array(Y_SCALE, np.float32), "z_y": np.array(Y_ZERO, np.uint8),
            "s_a": np.array(A_SCALE, np.float32), "z_a": np.array(A_ZERO, np.uint8),
            "s_sg": np.array(1 / 255, np.float32), "z_sg": np.array(0, np.uint8),
            "half": np.array(0.5, np.float32), "one": np.array(1.0, np.float32),
            "lut": lut.astype(np.uint8)}


Step = tuple[str, list[str], str, dict[str, Any]]


def _activation(kind: str) -> list[Step]:
    """(op, inputs, output, attributes) from the conv's float output ``y`` to uint8 ``aq``."""
    q: Step = ("QuantizeLinear", ["a", "s_a", "z_a"], "aq", {})
    if kind == "relu":
        return [("Relu", ["y"], "a", {}), q]
    if kind == "swish-float":
        return [("Sigmoid", ["y"], "sg", {}), ("Mul", ["y", "sg"], "a", {}), q]
    if kind == "swish-op":
        return [("Swish", ["y"], "a", {}), q]
    if kind == "swish-tanh":
        return [("Mul", ["y", "half"], "yh", {}), ("Tanh", ["yh"], "th", {}),
                ("Add", ["th", "one"], "t1", {}), ("Mul", ["yh", "t1"], "a", {}), q]
    yq: Step = ("QuantizeLinear", ["y", "s_y", "z_y"], "yq", {})
    if kind == "swish-lut":
        return [yq, ("Cast", ["yq"], "yi", {"to": 6}), ("Gather", ["lut", "yi"], "aq", {"axis": 0})]
    return [yq, ("DequantizeLinear", ["yq", "s_y", "z_y"], "yd", {}),
            ("Sigmoid", ["yd"], "sg", {}), ("QuantizeLinear", ["sg", "s_sg", "z_sg"], "sgq", {}),
            ("DequantizeLinear", ["sgq", "s_sg", "z_sg"], "sgd", {}),
            ("Mul", ["yd", "sgd"], "a", {}), q]


def layer_pair(kind: str) -> Any:
    """The int8 QDQ conv pair with ``kind``'s activation between the convs."""
    from onnx import TensorProto, checker, helper, numpy_helper

    steps: list[Step] = [
        ("QuantizeLinear", ["x", "s_in", "z_in"], "xq", {}),
        ("DequantizeLinear", ["xq", "s_in", "z_in"], "xd", {}),
        ("DequantizeLinear", ["w1", "ws1", "wz1"], "w1d", {"axis": 0}),
        ("Conv", ["xd", "w1d", "b1"], "y", {}), *_activation(kind),
        ("DequantizeLinear", ["aq", "s_a", "z_a"], "ad", {}),
        ("DequantizeLinear", ["w2", "ws2", "wz2"], "w2d", {"axis": 0}),
        ("Conv", ["ad", "w2d"], "out", {})]
    nodes = [helper.make_node(op, ins, [out], **attrs) for op, ins, out, attrs in steps]
    used = {i for n in nodes for i in n.input}
    inits = [numpy_helper.from_array(v, k) for k, v in _consts(np.random.default_rng(0)).items()
             if k in used]
    graph = helper.make_graph(
        nodes, kind, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C0, SIDE, SIDE])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, C2, SIDE, SIDE])], inits)
    opset = SWISH_OPSET if kind == "swish-op" else 17
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    checker.check_model(model)
    return model


def relu_for_swish(model: Any) -> int:
    """Replace each ``Mul(x, Sigmoid(x))`` of ``model`` by ``Relu(x)`` in place; the count."""
    from onnx import helper

    producer = {o: n for n in model.graph.node for o in n.output}
    done = 0
    for i, node in enumerate(model.graph.node):
        if node.op_type != "Mul" or len(node.input) != 2:
            continue
        for x, s in (tuple(node.input), tuple(node.input)[::-1]):
            sig = producer.get(s)
            if sig is not None and sig.op_type == "Sigmoid" and sig.input[0] == x:
                model.graph.node[i].CopyFrom(helper.make_node("Relu", [x], list(node.output),
                                                              name=node.name))
                done += 1
                break
    return done


def _ov_precision() -> str:
    """bf16 where OpenVINO computes in bf16 here (the OpenVINO engine's own rule), else f32."""
    from edgekit.runtime.engine_openvino import OpenVinoEngine

    return "f32" if OpenVinoEngine.precision_problem("bf16") else "bf16"


def _runner(path: Path, engine: str, x: np.ndarray) -> Callable[[], np.ndarray]:
    """A call of ``path`` on ``engine`` (1 thread) that returns the first output."""
    if engine == "onnxruntime":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return lambda: np.asarray(sess.run(None, {name: x})[0])
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {
        "INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": _ov_precision()})
    request = compiled.create_infer_request()
    return lambda: np.asarray(request.infer({0: x})[0])


def pair_row(kind: str) -> str:
    """The table's label of the layer pair with ``kind``'s activation."""
    return f"layer pair, {kind}"


def _rows(tmp: Path, model: Path | None) -> list[tuple[str, Path, str, np.ndarray]]:
    import onnx

    x = np.random.default_rng(1).normal(size=(1, C0, SIDE, SIDE)).astype(np.float32)
    rows = []
    for kind in ACTIVATIONS:
        onnx.save(layer_pair(kind), tmp / f"{kind}.onnx")
        rows += [(pair_row(kind), tmp / f"{kind}.onnx", e, x)
                 for e in ("onnxruntime", "openvino")]
    if model is not None:
        proto = onnx.load(str(model))
        dims = [d.dim_value or 1 for d in proto.graph.input[0].type.tensor_type.shape.dim]
        image = np.random.default_rng(1).uniform(0, 255, dims).astype(np.float32)
        replaced = relu_for_swish(proto)
        onnx.save(proto, tmp / "model_relu.onnx")
        rows += [(f"{model.name}, Swish", model, "openvino", image),
                 (f"{model.name}, Relu for its {replaced} Swish", tmp / "model_relu.onnx",
                  "openvino", image)]
    return rows


def run(model: Path | None, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        rows = _rows(Path(tmp), model)
        calls = [_runner(path, engine, x) for _, path, engine, x in rows]
        times = measure(calls, runs=rounds, warmup=5, settle=SETTLE_S)
        values = [call().astype(np.float32) for call in calls]
    labels = [label for label, *_ in rows]
    reference = values[labels.index(pair_row("swish-float"))]
    pairs = {pair_row(kind) for kind in ACTIVATIONS}
    out = []
    for (label, _, engine, _), ns, y in zip(rows, times, values, strict=True):
        us = np.asarray(ns) / 1e3
        row = {"row": label, "engine": engine, "p50_us": float(np.median(us)),
               "p90_us": float(np.percentile(us, 90)), "p99_us": float(np.percentile(us, 99))}
        if label in pairs:  # one function (relu another): their outputs are comparable
            row["max_abs_diff_vs_swish_float"] = float(np.abs(y - reference).max())
        out.append(row)
    return {"cpu": cpu_model(), "instruction_set": instruction_set(), "threads": 1,
            "openvino_precision": _ov_precision(), "rounds": rounds, "settle_s": SETTLE_S,
            "rows": out}


def _print(result: dict[str, Any]) -> None:
    print(f"CPU: {result['cpu']} ({result['instruction_set']}), 1 thread, batch 1, OpenVINO "
          f"in {result['openvino_precision']}, {result['rounds']} interleaved rounds, a sample the "
          f"median of the later half of {result['settle_s'] * 1e3:.0f} ms of one row's calls")
    print(f"{'row':46}{'engine':>12}{'p50 us':>9}{'p90 us':>9}{'p99 us':>9}"
          f"{'max |diff|':>12}")
    for r in result["rows"]:
        diff = r.get("max_abs_diff_vs_swish_float")
        print(f"{r['row']:46}{r['engine']:>12}{r['p50_us']:9.0f}{r['p90_us']:9.0f}"
              f"{r['p99_us']:9.0f}{'' if diff is None else f'{diff:12.4f}'}")
    print("max |diff|: the largest difference of the row's output from onnxruntime's "
          "swish-float output (relu is another function)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="an fp32 .onnx file with Swish to time on "
                    "OpenVINO as it is and with Relu in its place")
    ap.add_argument("--rounds", type=int, default=40, help="interleaved rounds (default 40)")
    ap.add_argument("--out", type=Path, default=RESULTS, help=f"JSON file (default {RESULTS})")
    args = ap.parse_args(argv)
    result = run(args.model, args.rounds)
    _print(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
