"""edgekit.measure.profile and ``bench --profile``: op-kind tables of both engines, shares,
unfused Q/DQ counts and the why line (structure only: never timings or which is faster)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from edgekit.cli.main import cli
from edgekit.errors import InputError
from edgekit.measure.profile import (
    KINDS,
    NodeTime,
    OpProfile,
    ProfileRow,
    attribute_fp32,
    attribute_int8,
    node_profile,
    node_times,
    ort_kind,
    parse_ort_events,
    profile_models,
)
from edgekit.measure.profile_report import why_lines
from edgekit.runtime import SessionOptionsConfig
from edgekit.speed.machine import instruction_set

pytestmark = pytest.mark.file_seconds(8)

SHAPE: list[str | int] = ["N", 8, 16, 16]


@dataclass
class Models:
    fp32: Path  # kxk conv, depthwise conv, 1x1 conv, Gemm
    int8: Path  # its QDQ int8 file (edgekit.quantize.quantize_model)
    qdq_erf: Path  # Q/DQ around Erf, which has no integer kernel: onnxruntime fuses none


def _save(nodes: list, inits: list, out_shape: list, path: Path) -> Path:
    graph = helper.make_graph(nodes, path.stem, [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, SHAPE)], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _cnn(path: Path) -> Path:
    rng = np.random.default_rng(0)
    shapes = {"w1": (16, 8, 3, 3), "b1": (16,), "w2": (16, 1, 3, 3), "b2": (16,),
              "w3": (16, 16, 1, 1), "b3": (16,), "w4": (16, 10), "b4": (10,)}
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n)
             for n, s in shapes.items()]
    conv: dict[str, Any] = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], "conv_kxk", **conv),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], "conv_dw", group=16, **conv),
        helper.make_node("Relu", ["c2"], ["r2"], "relu2"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], "conv_1x1", kernel_shape=[1, 1]),
        helper.make_node("Relu", ["c3"], ["r3"], "relu3"),
        helper.make_node("GlobalAveragePool", ["r3"], ["g"], "gap"),
        helper.make_node("Flatten", ["g"], ["f"], "flatten"),
        helper.make_node("Gemm", ["f", "w4", "b4"], ["l"], "fc"),
        helper.make_node("Softmax", ["l"], ["y"], "softmax", axis=1),
    ]
    return _save(nodes, inits, ["N", 10], path)


def _qdq_erf(path: Path) -> Path:
    inits = [numpy_helper.from_array(np.array(0.02, np.float32), "s"),
             numpy_helper.from_array(np.array(128, np.uint8), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q0"], "q0"),
             helper.make_node("DequantizeLinear", ["q0", "s", "z"], ["d0"], "dq0"),
             helper.make_node("Erf", ["d0"], ["e"], "erf"),
             helper.make_node("QuantizeLinear", ["e", "s", "z"], ["q1"], "q1"),
             helper.make_node("DequantizeLinear", ["q1", "s", "z"], ["y"], "dq1")]
    return _save(nodes, inits, SHAPE, path)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    from edgekit.quantize import CalibrationConfig, QuantizationConfig, QuantScheme, quantize_model

    d = tmp_path_factory.mktemp("profile")
    fp32 = _cnn(d / "tiny.onnx")
    np.savez(d / "cal.npz", x=np.random.default_rng(1).random((48, 8, 16, 16), np.float32))
    cfg = QuantizationConfig(scheme=QuantScheme(stem_in_float=False),
                             calibration=CalibrationConfig(samples=32))
    int8 = quantize_model(fp32, d, config=cfg, calibration=d / "cal.npz").path
    return Models(fp32, Path(int8), _qdq_erf(d / "qdq_erf.onnx"))


def _bench(args: list[str]) -> tuple[str, dict]:
    r = CliRunner().invoke(cli, ["bench", *args, "--runs", "5", "--warmup", "1", "--threads",
                                 "1", "--profile", "--json", "-q"])
    assert r.exit_code == 0, r.output
    return r.stdout, json.loads(r.stdout)


@pytest.mark.slow
def test_bench_profile_prints_both_engines_and_the_why_line(models: Models, tmp_path) -> None:
    report = tmp_path / "r.json"
    r = CliRunner().invoke(cli, ["bench", str(models.fp32), str(models.int8), "--engine", "all",
                                 "--runs", "5", "--warmup", "1", "--threads", "1", "--profile",
                                 "--report", str(report), "-q"])
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert out.index("| tiny.int8.onnx@openvino") < out.index("op profile:")  # after latencies
    names = ["tiny.onnx@onnxruntime", "tiny.onnx@openvino", "tiny.int8.onnx@onnxruntime",
             "tiny.int8.onnx@openvino"]
    for name in names:
        assert f"\n{name}: unfused Q/DQ " in out
    assert out.count("| op kind ") == 4 and out.count("| conv depthwise ") == 4
    prof = json.loads(report.read_text())["profile"]
    assert [p["name"] for p in prof["profiles"]] == names
    for p in prof["profiles"]:
        assert set(p["kinds"]) == set(KINDS) and p["calls"] == prof["runs"] * prof["rounds"]
        assert p["p50_ms"] > 0  # the bench row's latency, the why line's verdict
        if p["total_ms"] > 0:
            assert sum(k["share"] for k in p["kinds"].values()) == pytest.approx(100.0)
        # each layer of the graph found under its kind (an engine may split one into more)
        nodes = {k: v["nodes"] for k, v in p["kinds"].items()}
        assert all(nodes[k] >= 1 for k in ("conv 1x1", "conv depthwise", "conv kxk",
                                           "matmul/gemm")), (p["name"], nodes, out)
        qdq = p["unfused_qdq"]
        assert isinstance(qdq, int) and qdq >= 0
        if p["engine"] == "openvino":  # its unfused Q/DQ layers are its quantize time
            assert p["kinds"]["quantize"]["nodes"] == qdq, (p["name"], out)
    fp32_qdq, fp32_ov, int8_qdq, int8_ov = (p["unfused_qdq"] for p in prof["profiles"])
    assert fp32_qdq == fp32_ov == 0
    assert int8_qdq >= 1 and int8_ov >= 1  # int8: at least its float boundaries' Q or DQ
    why = [line for line in out.splitlines() if line.startswith("why: ")]
    assert why == prof["why"] and len(why) == 2  # int8 vs fp32 on each engine
    assert why[0].startswith("why: tiny.int8.onnx@onnxruntime is ")
    assert why[1].startswith("why: tiny.int8.onnx@openvino is ")
    assert all(instruction_set() in line and " % of the fp32 time" in line for line in why)


def test_unfused_qdq_counts_the_qdq_onnxruntime_cannot_fuse(models: Models) -> None:
    _, data = _bench([str(models.qdq_erf), str(models.fp32)])
    erf, fp32 = data["profile"]["profiles"]
    assert erf["unfused_qdq"] == 4 and erf["kinds"]["quantize"]["nodes"] == 4
    assert fp32["unfused_qdq"] == 0 and data["profile"]["why"] == []  # no fp32 of the same stem
    assert data["config"]["profile"] is True


def test_ort_kinds_follow_the_graph_through_fusions(models: Models) -> None:
    """fp32: NCHWc convs named by their activation's output; int8: QLinearConv ``_token_N``."""
    from edgekit.measure.profile import _graph_index

    feeds = {"x": np.random.default_rng(0).random((1, 8, 16, 16), np.float32)}
    for path in (models.fp32, models.int8):
        nodes = node_times(path, feeds, SessionOptionsConfig(threads=1), runs=3, warmup=1)
        by_name, producer = _graph_index(path)
        kinds = sorted(ort_kind(n, by_name, producer) for n in nodes if "conv" in
                       ort_kind(n, by_name, producer))
        assert kinds == ["conv 1x1", "conv depthwise", "conv kxk"], [n.name for n in nodes]
    prof = node_profile(models.int8, feeds, SessionOptionsConfig(threads=1), runs=2)
    assert any(name.startswith("conv_dw_token_") for name in prof)
    assert all(v >= 0 for v in prof.values())
    # the tune's attribution of profile names to the graph's compute nodes
    compute = {"conv_kxk", "conv_dw", "conv_1x1", "fc"}
    assert set(attribute_int8(prof, compute)) == compute
    fp32 = node_profile(models.fp32, feeds, SessionOptionsConfig(threads=1), runs=2)
    assert set(attribute_fp32(fp32, onnx.load(models.fp32).graph)) == compute


def test_parse_ort_events_leaves_out_warmup_and_takes_medians() -> None:
    def run(ts: int) -> dict:
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": 50}

    def node(ts: int, dur: int, name: str = "a") -> dict:
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur,
                "args": {"op_name": "Conv"}}

    events = [run(0), node(1, 1000), run(100), node(101, 3), node(120, 2),  # twice in a call
              run(200), node(201, 7), run(300), node(301, 4), node(302, 9, "b")]
    nodes, calls = parse_ort_events(events, skip=1)
    assert calls == 3
    by = {n.name: n for n in nodes}
    assert by["a"].us == 5.0 and by["a"].op == "Conv"  # median of 5, 7, 4: warm-up left out
    assert by["b"].us == 0.0  # ran in one call of three


def test_why_line_pairs_by_stem_and_engine() -> None:
    def prof(name: str, engine: str, conv: float, quant: float) -> OpProfile:
        ms = {**dict.fromkeys(KINDS, 0.0), "conv depthwise": conv, "quantize": quant,
              "other": 1.0}
        return OpProfile(name, f"/m/{name}", engine, ms, dict.fromkeys(KINDS, 1), 3, 10)

    profiles = [prof("x.onnx", "onnxruntime", 3.0, 0.0), prof("x.int8.onnx", "openvino", 2.0, 0.5),
                prof("x.int8.onnx", "onnxruntime", 3.0, 0.5), prof("y.int8.onnx", "onnxruntime",
                                                                   1.0, 0.0)]
    (line,) = why_lines(profiles, "AVX2 (no VNNI)")
    assert line == ("why: x.int8.onnx @ onnxruntime is slower than x.onnx (1.12x its kernel "
                    "time; AVX2 (no VNNI)): conv depthwise is 75 % of the fp32 time and takes "
                    "1.00x its fp32 time in int8; quantize adds 500.0 µs (3 unfused Q/DQ)")
    profiles[0].p50_ms, profiles[2].p50_ms = 2.0, 1.0  # measured by bench: the verdict's basis
    assert why_lines(profiles, "AVX2")[0].startswith(
        "why: x.int8.onnx @ onnxruntime is faster than x.onnx (0.50x its p50, 1.12x its kernel "
        "time; AVX2): ")


def test_profile_models_rejects_bad_input(models: Models) -> None:
    x = [np.zeros((1, 8, 16, 16), np.float32)]
    with pytest.raises(InputError, match="runs and rounds"):
        profile_models([], x, runs=0)
    with pytest.raises(InputError, match="cannot profile engine"):
        profile_models([ProfileRow("m", models.fp32, "tflite", SessionOptionsConfig())], x)
    assert NodeTime("a", "Conv", "", 1.0).us == 1.0


def test_ov_kind_reads_the_conv_shape_from_the_graph(models: Models) -> None:
    from edgekit.measure.profile import _graph_index, ov_kind

    by_name, _ = _graph_index(models.fp32)
    assert ov_kind(NodeTime("conv_1x1/WithoutBiases", "Convolution", "gemm_f32", 1), by_name) \
        == "conv 1x1"
    assert ov_kind(NodeTime("conv_kxk/WithoutBiases", "Convolution", "x_1x1", 1), by_name) \
        == "conv kxk"
    assert ov_kind(NodeTime("other", "Convolution", "jit_1x1_I8", 1)) == "conv 1x1"
    assert ov_kind(NodeTime("fc", "FullyConnectedQuantizedLegacy", "brgemm", 1)) == "matmul/gemm"
    assert ov_kind(NodeTime("swish", "Subgraph", "jit_avx512_I8", 1)) == "elementwise"
    assert ov_kind(NodeTime("q", "FakeQuantize", "jit", 1)) == "quantize"
    assert ov_kind(NodeTime("r", "Reorder", "jit", 1)) == "layout"


def test_ort_kind_names_elementwise_kernels() -> None:
    """Swish and squeeze-excite products (float, fused or integer) are element-wise time."""
    from edgekit.measure.profile import ort_kind

    for op in ("QLinearSigmoid", "QLinearMul", "QuickGelu", "Mul", "Sigmoid"):
        assert ort_kind(NodeTime("n", op, "", 1), {}, {}) == "elementwise", op
    assert ort_kind(NodeTime("n", "DequantizeLinear", "", 1), {}, {}) == "quantize"
    assert ort_kind(NodeTime("n", "Softmax", "", 1), {}, {}) == "other"


def test_ov_kind_follows_the_layers_openvino_fused(models: Models) -> None:
    """A layer named after none of the graph's convs is classified by the ONNX layers OpenVINO
    says it fused (``originalLayersNames`` of its runtime graph), read off a real compile."""
    import openvino as ov

    from edgekit.measure.profile import _graph_index, _origins, ov_kind

    by_name, _ = _graph_index(models.int8)
    origins = _origins(ov.Core().compile_model(str(models.int8), "CPU"))
    fused = {name: names for name, names in origins.items() if "conv_1x1" in names}
    assert len(fused) == 1  # one runtime layer holds the 1x1 conv, its Relu and Q/DQ
    (names,) = fused.values()
    renamed = NodeTime("r3_QuantizeLinear", "Convolution", "brgconv_avx512_I8", 1.0)
    assert ov_kind(renamed, by_name) == "conv kxk"  # by its name and kernel alone: wrong
    assert ov_kind(renamed, by_name, names) == "conv 1x1"


def test_ov_qdq_layer_counts_quantization_work_left_alone(models: Models) -> None:
    """An OpenVINO layer is an unfused Q/DQ when it is a FakeQuantize or holds the file's Q/DQ
    nodes and only the Convert/Subtract/Multiply a DequantizeLinear splits into; a Q/DQ fused
    into a conv or an element-wise chain is not (origins as ``originalLayersNames`` gives)."""
    from edgekit.measure.profile import _graph_index, ov_qdq_layer

    by_name, _ = _graph_index(models.int8)
    q = next(n.name for n in by_name.values() if n.op_type == "QuantizeLinear")
    dq = next(n.name for n in by_name.values() if n.op_type == "DequantizeLinear")

    def layer(op: str, *origins: str) -> bool:
        return ov_qdq_layer(NodeTime("l", op, "jit_avx512_I8", 1.0), by_name, origins)

    assert layer("FakeQuantize")
    assert layer("Subgraph", q)
    assert layer("Subgraph", "Convert_7089", "Subtract_7090", dq)
    assert layer("Subgraph", "Convert_7089", "Subtract_7090", "cat:0_QuantizeLinear_1")
    assert not layer("Convolution", "conv_1x1", q)  # fused into the int8 conv
    assert not layer("Subgraph", q, "Convert_16", dq, "erf")  # fused into an Erf's chain
    assert not layer("Subgraph", "Convert_7089", "Subtract_7090")  # no Q/DQ of the file
    assert not layer("Reorder")
