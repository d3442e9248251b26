"""Convs moved onto onnxruntime's GEMM kernels by offset weights (edgekit.quantize.kernels;
QuantScheme.offset_weight_convs): the same dequantized weights, the integer kernels fused as
before, the same outputs on onnxruntime and OpenVINO (real onnx, onnxruntime, OpenVINO)."""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

if TYPE_CHECKING:
    import onnx
else:
    onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgekit.errors import InputError  # noqa: E402
from edgekit.quantize import CalibrationConfig, QuantizationConfig, quantize_model  # noqa: E402
from edgekit.quantize.kernels import offset_candidates, offset_conv_weights  # noqa: E402
from edgekit.quantize.options import QuantScheme, SpeedCheckConfig  # noqa: E402

pytestmark = pytest.mark.file_seconds(5)

#: the Conv1D text model's layout: channels 8 -> 16 over 60 steps, kernel 7, stride 3; a
#: depthwise conv (never offset) and a 1x1 conv
CONVS = ("conv_k7", "conv_dw", "conv_pw")


def _float_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weights = {"conv_k7": rng.normal(size=[16, 8, 1, 7]) * 0.2,
               "conv_dw": rng.normal(size=[16, 1, 1, 3]) * 0.5,
               "conv_pw": rng.normal(size=[4, 16, 1, 1]) * 0.3}
    nodes = [
        helper.make_node("Conv", ["x", "conv_k7_w"], ["a"], name="conv_k7",
                         kernel_shape=[1, 7], strides=[1, 3]),
        helper.make_node("Relu", ["a"], ["a_relu"], name="relu_a"),
        helper.make_node("Conv", ["a_relu", "conv_dw_w"], ["b"], name="conv_dw",
                         kernel_shape=[1, 3], group=16, pads=[0, 1, 0, 1]),
        helper.make_node("Relu", ["b"], ["b_relu"], name="relu_b"),
        helper.make_node("Conv", ["b_relu", "conv_pw_w"], ["y"], name="conv_pw",
                         kernel_shape=[1, 1]),
    ]
    inits = [numpy_helper.from_array(w.astype(np.float32), f"{n}_w") for n, w in weights.items()]
    graph = helper.make_graph(
        nodes, "conv1d", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8, 1, 60])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4, 1, 18])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("kernels")
    onnx.save(_float_model(), str(d / "model.onnx"))
    x = np.random.default_rng(1).uniform(-1, 1, (64, 8, 1, 60)).astype(np.float32)
    np.savez(d / "calib.npz", x=x)
    return {"fp32": d / "model.onnx", "calib": d / "calib.npz", "dir": d}


def _config(reduce_range: bool, offset: tuple[str, ...] = ()) -> QuantizationConfig:
    return QuantizationConfig(
        scheme=QuantScheme(stem_in_float=False, reduce_range=reduce_range,
                           offset_weight_convs=offset),
        calibration=CalibrationConfig(samples=64), speed=SpeedCheckConfig(enabled=False))


def _quantize(files: dict[str, Path], name: str, cfg: QuantizationConfig) -> Path:
    return Path(quantize_model(files["fp32"], files["dir"] / name, config=cfg,
                               calibration=files["calib"]).path)


def _weights(model: onnx.ModelProto) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per conv: its int8 weights and their zero points."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    out = {}
    for node in model.graph.node:
        if node.op_type == "Conv" and node.input[1] in producers:
            dq = producers[node.input[1]]
            out[node.name] = (inits[dq.input[0]], inits[dq.input[2]])
    return out


def _dequantized(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    out = {}
    for name, (q, zp) in _weights(model).items():
        dq = producers[next(n for n in model.graph.node if n.name == name).input[1]]
        scale = inits[dq.input[1]].reshape(-1, *[1] * (q.ndim - 1))
        out[name] = (q.astype(np.float32) - zp.reshape(scale.shape)) * scale
    return out


def _ort_ops(path: Path, tmp: Path) -> collections.Counter[str]:
    """onnxruntime's op counts of ``path`` after its optimizations (the kernels it runs)."""
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp / f"{path.stem}.optimized.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"x": x})[0])


@pytest.mark.parametrize("reduce_range", [True, False])
def test_offset_convs_keep_their_values_and_integer_kernels(files: dict[str, Path],
                                                            reduce_range: bool) -> None:
    """The two one-group convs are offset (up with 7-bit weights, down with full-range ones,
    which reach 127), the depthwise one is not; every dequantized weight is unchanged,
    onnxruntime still fuses all three into QLinearConv, and the outputs agree to within a
    quantization step of the output."""
    tag = "rr" if reduce_range else "full"
    plain = _quantize(files, f"plain_{tag}", _config(reduce_range))
    assert offset_candidates(onnx.load(str(plain))) == ["conv_k7", "conv_pw"]
    offset = _quantize(files, f"offset_{tag}", _config(reduce_range, ("conv_k7", "conv_pw")))
    before, after = onnx.load(str(plain)), onnx.load(str(offset))
    step = 1 if reduce_range else -1
    for name, (q, zp) in _weights(after).items():
        q0, zp0 = _weights(before)[name]
        assert not zp0.any()
        if name == "conv_dw":
            np.testing.assert_array_equal(q, q0)
            assert not zp.any()
        else:
            assert zp.shape == zp0.shape and (zp == step).all(), name
            np.testing.assert_array_equal(q.astype(np.int16), q0.astype(np.int16) + step)
    want, got = _dequantized(before), _dequantized(after)
    for name in CONVS:
        np.testing.assert_array_equal(got[name], want[name])
    for path in (plain, offset):
        ops = _ort_ops(path, files["dir"])
        assert ops["QLinearConv"] == 3 and ops["Conv"] == 0, ops
    x = np.random.default_rng(2).uniform(-1, 1, (4, 8, 1, 60)).astype(np.float32)
    y0, y1 = _run(plain, x), _run(offset, x)
    out_scale = float(np.abs(y0).max()) / 127
    assert np.abs(y1 - y0).max() <= 2 * out_scale
    assert QuantizationConfig.from_dict(_config(True, ("conv_k7",)).to_dict()) \
        .scheme.offset_weight_convs == ("conv_k7",)


def test_offset_file_gives_the_same_outputs_on_openvino(files: dict[str, Path]) -> None:
    """OpenVINO reads the offset zero points: its outputs match onnxruntime's on the file."""
    pytest.importorskip("openvino")
    from edgekit.runtime.engine_openvino import load_openvino

    path = _quantize(files, "offset_ov", _config(True, ("conv_k7", "conv_pw")))
    x = np.random.default_rng(3).uniform(-1, 1, (2, 8, 1, 60)).astype(np.float32)
    compiled = load_openvino().Core().compile_model(str(path), "CPU",
                                                    {"INFERENCE_PRECISION_HINT": "f32"})
    got = np.asarray(compiled({0: x})[0])
    want = _run(path, x)
    assert np.abs(got - want).max() <= 2 * float(np.abs(want).max()) / 127


def test_variant_notes_the_offset_convs(files: dict[str, Path]) -> None:
    variant = quantize_model(files["fp32"], files["dir"] / "noted",
                             config=_config(True, ("conv_pw",)), calibration=files["calib"])
    assert any(n.startswith("1 conv(s) with their int8 weights shifted by one")
               for n in variant.notes), variant.notes
    assert variant.config.scheme.offset_weight_convs == ("conv_pw",)


@pytest.mark.parametrize("names", [("conv_dw",), ("no_such_conv",), ("relu_a",)])
def test_offset_of_a_node_that_is_no_such_conv_is_refused(files: dict[str, Path], tmp_path: Path,
                                                          names: tuple[str, ...]) -> None:
    """A depthwise conv, an unknown name, a node that is not a Conv: a clear error, and
    nothing written."""
    out = tmp_path / "out"
    with pytest.raises(InputError, match="not Convs with symmetric int8 weights") as info:
        quantize_model(files["fp32"], out, config=_config(True, names),
                       calibration=files["calib"])
    assert names[0] in str(info.value) and info.value.hint
    assert not out.exists() or not any(out.iterdir())


def test_offset_names_must_be_a_list() -> None:
    with pytest.raises(InputError, match="offset_weight_convs"):
        QuantScheme(offset_weight_convs="conv_k7")


def _qdq_pair(shared: bool) -> onnx.ModelProto:
    """Two 1x1 convs on one input; their weights from one DequantizeLinear (``shared``) or
    from two reading the same int8 initializer."""
    q = numpy_helper.from_array(np.arange(-8, 8, dtype=np.int8).reshape(4, 4, 1, 1), "wq")
    inits: list[Any] = [q, numpy_helper.from_array(np.array(0.1, np.float32), "ws"),
                        numpy_helper.from_array(np.array(0, np.int8), "wz")]
    dqs = ["w"] if shared else ["w1", "w2"]
    nodes = [helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], [d], name=f"dq_{d}")
             for d in dqs]
    nodes += [helper.make_node("Conv", ["x", dqs[i % len(dqs)]], [f"y{i}"], name=f"conv{i}")
              for i in range(2)]
    graph = helper.make_graph(
        nodes, "pair", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 3, 3])],
        [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [1, 4, 3, 3])
         for i in range(2)],
        inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_shared_weights_are_offset_only_for_the_conv_named() -> None:
    """A DequantizeLinear read by two convs is left alone; two DequantizeLinears of one int8
    initializer: the named conv gets new initializers, the other keeps the old ones. Outputs
    are unchanged."""
    x = np.random.default_rng(4).normal(size=(1, 4, 3, 3)).astype(np.float32)
    shared = _qdq_pair(shared=True)
    assert offset_candidates(shared) == []
    model = _qdq_pair(shared=False)
    assert offset_candidates(model) == ["conv0", "conv1"]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})
    assert offset_conv_weights(model, ["conv1"]) == ["conv1"]
    onnx.checker.check_model(model, full_check=True)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    dq = {n.name: n for n in model.graph.node}
    assert list(dq["dq_w1"].input) == ["wq", "ws", "wz"]
    assert dq["dq_w2"].input[0] != "wq" and dq["dq_w2"].input[2] != "wz"
    np.testing.assert_array_equal(inits[dq["dq_w2"].input[0]], inits["wq"] + 1)
    assert inits[dq["dq_w2"].input[2]] == 1
    got = ort.InferenceSession(model.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for w, g in zip(want, got, strict=True):
        np.testing.assert_array_equal(w, g)
    assert offset_candidates(model) == ["conv0"]  # conv1's zero point is no longer 0


def test_a_conv_kept_in_float_is_not_offset(files: dict[str, Path]) -> None:
    """A conv that is named for offset weights but kept in float (nodes_to_exclude, as the
    accuracy gate or the stem rule keep nodes) stays float; the other is offset."""
    cfg = _config(True, ("conv_k7", "conv_pw"))
    cfg = dataclasses.replace(cfg, scheme=dataclasses.replace(cfg.scheme,
                                                              nodes_to_exclude=("conv_k7",)))
    variant = quantize_model(files["fp32"], files["dir"] / "kept", config=cfg,
                             calibration=files["calib"])
    weights = _weights(onnx.load(str(variant.path)))
    assert "conv_k7" not in weights and (weights["conv_pw"][1] == 1).all()
    assert any(n.startswith("1 conv(s) with their int8 weights shifted") for n in variant.notes)
