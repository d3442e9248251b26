"""The float-graph changes of an int8 layout (edgekit.quantize.layout): strided 1x1 convs read a
strided Slice (OpenVINO's), a flatten of an int8 conv's map reads it channels-last
(onnxruntime's); real onnx, onnxruntime, TF/tf2onnx and OpenVINO."""

from __future__ import annotations

import collections
import dataclasses
import json
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

from edgekit.quantize import CalibrationConfig, QuantizationConfig  # noqa: E402
from edgekit.quantize.layout import channels_last_flatten, slice_strided_pointwise  # noqa: E402

pytestmark = pytest.mark.file_seconds(15)


def _conv(name: str, x: str, w: np.ndarray, out: str, **attrs: Any) -> tuple[Any, Any]:
    return (helper.make_node("Conv", [x, f"{name}_w"], [out], name=name, **attrs),
            numpy_helper.from_array(w, f"{name}_w"))


def _graph(rank: int) -> onnx.ModelProto:
    """x -> 1x1 stride-2 conv (rewritten), 1x1 stride-2 conv with pads (kept), 3x3 stride-2
    conv (kept), 1x1 stride-1 conv (kept); spatial size 7 (odd: the Slice must round up)."""
    rng = np.random.default_rng(0)
    k = [1] * rank
    spatial = [7] * rank
    nodes, inits = zip(
        _conv("pw_s2", "x", rng.normal(size=[6, 4, *k]).astype(np.float32), "a",
              kernel_shape=k, strides=[2] * rank),
        _conv("pw_s2_padded", "x", rng.normal(size=[6, 4, *k]).astype(np.float32), "b",
              kernel_shape=k, strides=[2] * rank, pads=[1] * (2 * rank)),
        _conv("k3_s2", "x", rng.normal(size=[6, 4, *[3] * rank]).astype(np.float32), "c",
              kernel_shape=[3] * rank, strides=[2] * rank),
        _conv("pw_s1", "x", rng.normal(size=[6, 4, *k]).astype(np.float32), "d",
              kernel_shape=k, strides=[1] * rank),
        strict=True,
    )
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, [2, 6] + [None] * rank)
            for o in "abcd"]
    graph = helper.make_graph(list(nodes), "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [2, 4, *spatial])], outs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


@pytest.mark.parametrize("rank", [1, 2])
def test_only_unpadded_strided_pointwise_convs_read_a_slice(rank: int) -> None:
    model = _graph(rank)
    x = np.random.default_rng(1).normal(size=[2, 4, *[7] * rank]).astype(np.float32)
    want = _run(model, x)
    assert slice_strided_pointwise(model) == 1
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Slice") == 1 and ops.count("Conv") == 4
    convs = {n.name: n for n in model.graph.node if n.op_type == "Conv"}
    strides = {name: list(helper.get_attribute_value(
        next(a for a in n.attribute if a.name == "strides"))) for name, n in convs.items()}
    assert strides == {"pw_s2": [1] * rank, "pw_s2_padded": [2] * rank,
                       "k3_s2": [2] * rank, "pw_s1": [1] * rank}
    got = _run(model, x)
    for w, g in zip(want, got, strict=True):
        assert w.shape == g.shape  # 7 -> 4: the Slice rounds up like the strided conv
        np.testing.assert_array_equal(w, g)
    assert slice_strided_pointwise(model) == 0  # nothing left to rewrite


def _downsampling_block() -> object:
    """A ResNet-style downsampling block (keras.applications' ResNet50 layout: the strided
    1x1 conv on the main path and on the shortcut)."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 8), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    short = keras.layers.Conv2D(32, 1, strides=2)(x)
    y = keras.layers.Conv2D(16, 1, strides=2, activation="relu")(x)
    y = keras.layers.Conv2D(32, 3, padding="same")(y)
    y = keras.layers.Activation("relu")(keras.layers.Add()([short, y]))
    y = keras.layers.GlobalAveragePooling2D()(y)
    return keras.Model(inp, keras.layers.Dense(4, activation="softmax")(y))


def test_openvino_layout_runs_strided_pointwise_convs_in_int8(tmp_path: Path) -> None:
    """The OpenVINO layout's file of a ResNet-style block: its two strided 1x1 convs read a
    Slice, every Convolution of OpenVINO's compiled graph runs in int8 (u8/i8; the stem too:
    the layout does not keep it in float), and both
    engines give the fp32 file's classes."""
    pytest.importorskip("openvino")
    from edgekit.convert import export_model
    from edgekit.quantize import quantize_model
    from edgekit.runtime.engine_openvino import load_openvino
    from edgekit.runtime.engine_registry import engine_class
    from edgekit.runtime.model import EdgeModel

    cls = engine_class("openvino")
    assert cls.qdq_scheme == {"slice_strided_pointwise": True, "stem_in_float": False,
                              "channels_last_flatten": False}
    x = np.random.default_rng(0).uniform(0, 1, (128, 16, 16, 8)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    fp32 = export_model(_downsampling_block(), tmp_path / "fp32").onnx_path
    base = QuantizationConfig(calibration=CalibrationConfig(samples=64))
    cfg = dataclasses.replace(base, scheme=dataclasses.replace(
        base.scheme, op_types_to_quantize=cls.qdq_ops, **cls.qdq_scheme))
    variant = quantize_model(fp32, tmp_path / "ov", config=cfg, calibration=tmp_path / "calib.npz")
    assert any("2 strided 1x1 conv(s) read a strided Slice" in n for n in variant.notes)
    graph = onnx.load(str(variant.path)).graph
    assert [n.op_type for n in graph.node].count("Slice") == 2
    assert QuantizationConfig.from_dict(variant.config.to_dict()).scheme.slice_strided_pointwise

    ov = load_openvino()
    compiled = ov.Core().compile_model(str(variant.path), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    precisions = collections.Counter(
        op.get_rt_info()["runtimePrecision"].astype(str)
        for op in compiled.get_runtime_model().get_ordered_ops()
        if op.get_rt_info()["layerType"].astype(str) == "Convolution")
    assert sum(precisions.values()) >= 4
    assert set(precisions) <= {"u8", "i8"}, precisions

    want = EdgeModel(fp32).predict(x).argmax(1)
    for engine in ("onnxruntime", "openvino"):
        got = EdgeModel(variant.path, engine=engine).predict(x).argmax(1)
        assert (got == want).mean() >= 0.9, engine


def _mbconv_block() -> object:
    """An EfficientNet-style MBConv block (keras.applications' layout: expand 1x1 conv +
    swish, depthwise conv + swish, squeeze-excite, project 1x1 conv)."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 8), name="image")
    x = keras.layers.Conv2D(32, 1, activation="swish")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="swish")(x)
    se = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    se = keras.layers.Conv2D(8, 1, activation="swish")(se)
    se = keras.layers.Conv2D(32, 1, activation="sigmoid")(se)
    x = keras.layers.Conv2D(16, 1)(keras.layers.Multiply()([x, se]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(4, activation="softmax")(x))


def test_float_outputs_leave_the_compute_ops_outputs_unquantized(tmp_path: Path) -> None:
    """OpenVINO's bf16 layout (``float_outputs``) on an MBConv block: no Q/DQ pair reads a
    Conv/Gemm output (the default layout quantizes every one), OpenVINO fuses the swish
    activations into its int8 convs, the option is saved with the variant, and both
    engines give the fp32 file's classes (OpenVINO in bf16 where this CPU has it)."""
    pytest.importorskip("openvino")
    from edgekit.convert import export_model
    from edgekit.quantize import QuantScheme, quantize_model
    from edgekit.runtime.engine_openvino import load_openvino
    from edgekit.runtime.engine_registry import engine_class
    from edgekit.runtime.model import EdgeModel

    cls = engine_class("openvino")
    assert cls.qdq_bf16_scheme == {"float_outputs": True}
    assert QuantScheme(float_outputs=True, op_types_to_quantize=["Conv"]).ort_extra_options()[
        "OpTypesToExcludeOutputQuantization"] == ["Conv"]
    x = np.random.default_rng(0).uniform(0, 1, (128, 16, 16, 8)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    fp32 = export_model(_mbconv_block(), tmp_path / "fp32").onnx_path
    base = QuantizationConfig(calibration=CalibrationConfig(samples=64))

    def build(name: str, **extra: Any) -> Path:
        cfg = dataclasses.replace(base, scheme=dataclasses.replace(
            base.scheme, op_types_to_quantize=cls.qdq_ops, **cls.qdq_scheme, **extra))
        return Path(quantize_model(fp32, tmp_path / name, config=cfg,
                                   calibration=tmp_path / "calib.npz").path)

    def quantized_outputs(path: Path) -> int:
        graph = onnx.load(str(path)).graph
        made = {o: n.op_type for n in graph.node for o in n.output}
        return sum(1 for n in graph.node if n.op_type == "QuantizeLinear"
                   and made.get(n.input[0]) in ("Conv", "Gemm", "MatMul"))

    plain, floats = build("plain"), build("floats", **cls.qdq_bf16_scheme)
    assert quantized_outputs(plain) >= 3 and quantized_outputs(floats) == 0
    saved = json.loads(floats.with_name(floats.name.replace(".onnx", ".quant.json")).read_text())
    assert saved["scheme"]["float_outputs"] is True
    assert QuantizationConfig.from_dict(saved).scheme.float_outputs

    def activations_in_convs(path: Path) -> int:
        """OpenVINO's runtime Convolution layers that hold an activation (the swish Mul or
        the sigmoid of an ONNX node, per the layer's ``originalLayersNames``)."""
        acts = {n.name for n in onnx.load(str(path)).graph.node if n.op_type in ("Mul",
                                                                                 "Sigmoid")}
        compiled = load_openvino().Core().compile_model(
            str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return sum(1 for op in compiled.get_runtime_model().get_ordered_ops()
                   if op.get_rt_info()["layerType"].astype(str) == "Convolution"
                   and acts & set(op.get_rt_info()["originalLayersNames"].astype(str).split(",")))

    # the file's 4 activations (3 swish, the SE sigmoid) fuse into the int8 convs
    assert activations_in_convs(floats) == 4 and activations_in_convs(plain) == 0
    want = EdgeModel(fp32).predict(x).argmax(1)
    precision = "bf16" if cls.precision_problem("bf16") is None else "f32"
    for engine, session in (("onnxruntime", None), ("openvino", {"precision": precision})):
        got = EdgeModel(floats, engine=engine, session=session).predict(x).argmax(1)
        assert (got == want).mean() >= 0.9, engine



def _flatten_graph() -> onnx.ModelProto:
    """Five flattens of conv maps ``[batch, 4, 3, 3]`` (and one ``[batch, 4, 1, 1]``):
    - ``a``: Conv -> Relu -> MaxPool -> Reshape [-1, 36] -> MatMul (rewritten);
    - ``b``: Conv -> Flatten -> Gemm with transB (rewritten: the weight's columns permute);
    - ``c``: a conv named float -> Reshape -> MatMul (kept);
    - ``d``: Conv -> Reshape -> Softmax (no Dense layer: kept);
    - ``e``: a conv to a 1x1 map -> Reshape -> MatMul (the flatten order is the same: kept)."""
    rng = np.random.default_rng(0)

    def w(*shape: int) -> np.ndarray:
        return rng.normal(size=shape).astype(np.float32)

    inits = [numpy_helper.from_array(np.array([-1, 36], np.int64), "to36"),
             numpy_helper.from_array(np.array([0, 4], np.int64), "to4")]
    nodes = []
    for name in "abcde":
        kernel = 6 if name == "e" else 3
        pool = name == "a"
        node, init = _conv(f"conv_{name}", "x", w(4, 2, kernel, kernel), f"{name}_map",
                           kernel_shape=[kernel, kernel], pads=[0] * 4 if kernel == 6 or pool
                           else [1, 1, 0, 0], strides=[1, 1] if pool or kernel == 6 else [2, 2])
        nodes.append(node)
        inits.append(init)
    nodes += [helper.make_node("Relu", ["a_map"], ["a_relu"]),
              helper.make_node("MaxPool", ["a_relu"], ["a_pool"], kernel_shape=[2, 2],
                               strides=[1, 1]),
              helper.make_node("Reshape", ["a_pool", "to36"], ["a_flat"], name="flat_a"),
              helper.make_node("MatMul", ["a_flat", "a_w"], ["a"]),
              helper.make_node("Flatten", ["b_map"], ["b_flat"], name="flat_b", axis=1),
              helper.make_node("Gemm", ["b_flat", "b_w", "b_bias"], ["b"], transB=1),
              helper.make_node("Reshape", ["c_map", "to36"], ["c_flat"], name="flat_c"),
              helper.make_node("MatMul", ["c_flat", "c_w"], ["c"]),
              helper.make_node("Reshape", ["d_map", "to36"], ["d_flat"], name="flat_d"),
              helper.make_node("Softmax", ["d_flat"], ["d"]),
              helper.make_node("Reshape", ["e_map", "to4"], ["e_flat"], name="flat_e"),
              helper.make_node("MatMul", ["e_flat", "e_w"], ["e"])]
    inits += [numpy_helper.from_array(v, k) for k, v in
              {"a_w": w(36, 5), "b_w": w(5, 36), "b_bias": w(5), "c_w": w(36, 5),
               "e_w": w(4, 5)}.items()]
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, [None, None]) for o in "abcde"]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["batch", 2, 6, 6])], outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_flatten_of_an_int8_conv_map_reads_it_channels_last() -> None:
    """Only the flattens that feed a Dense layer from a multi-pixel map of an int8 conv get a
    Transpose to channels-last, and every output keeps its values."""
    model = _flatten_graph()
    x = np.random.default_rng(1).normal(size=[3, 2, 6, 6]).astype(np.float32)
    want = _run(model, x)
    float_convs = frozenset({"conv_c"})
    assert channels_last_flatten(model, float_convs) == 2
    onnx.checker.check_model(model, full_check=True)
    transposes = [n for n in model.graph.node if n.op_type == "Transpose"]
    assert [list(helper.get_attribute_value(t.attribute[0])) for t in transposes] == [
        [0, 2, 3, 1]] * 2
    reads = {n.name: n.input[0] for n in model.graph.node if n.name.startswith("flat_")}
    assert reads["flat_a"] == transposes[0].output[0] and reads["flat_b"] == transposes[1].output[0]
    assert {reads[k] for k in ("flat_c", "flat_d", "flat_e")} == {"c_map", "d_map", "e_map"}
    for w, g in zip(want, _run(model, x), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    assert channels_last_flatten(model, float_convs) == 0  # it reads a Transpose now: done


def _flatten_cnn() -> object:
    """A Keras CNN like the Fashion recipe: an RGB stem conv (kept in float by the stem rule),
    an int8 conv, pooling, Flatten, Dense."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3), name="image")
    x = keras.layers.MaxPooling2D()(keras.layers.Conv2D(8, 3, activation="relu")(inp))
    x = keras.layers.MaxPooling2D()(keras.layers.Conv2D(16, 3, activation="relu")(x))
    return keras.Model(inp, keras.layers.Dense(4, activation="softmax")(
        keras.layers.Flatten()(x)))


def test_onnxruntime_runs_the_int8_flatten_without_a_transpose_back(tmp_path: Path) -> None:
    """The default int8 layout of a conv -> flatten -> Dense model: the note says so,
    onnxruntime's optimized graph has one Transpose fewer than with the rewrite off (the one
    its channels-last int8 conv needed back before the flatten), the outputs match that file's,
    and the option is saved with the variant."""
    from edgekit.convert import export_model
    from edgekit.quantize import quantize_model

    x = np.random.default_rng(0).uniform(0, 1, (64, 16, 16, 3)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    fp32 = export_model(_flatten_cnn(), tmp_path / "fp32").onnx_path
    base = QuantizationConfig(calibration=CalibrationConfig(samples=32))
    assert base.scheme.channels_last_flatten is True
    on = quantize_model(fp32, tmp_path / "on", config=base, calibration=tmp_path / "calib.npz")
    off = quantize_model(fp32, tmp_path / "off", config=dataclasses.replace(
        base, scheme=dataclasses.replace(base.scheme, channels_last_flatten=False)),
        calibration=tmp_path / "calib.npz")
    assert any("1 flatten(s) of an int8 conv's feature map read it channels-last" in n
               for n in on.notes)
    assert not any("channels-last" in n for n in off.notes)

    def optimized_ops(path: Path) -> collections.Counter[str]:
        so = ort.SessionOptions()
        so.optimized_model_filepath = str(path.with_suffix(".opt.onnx"))
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        del sess
        return collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath)
                                   .graph.node)

    got, before = optimized_ops(Path(on.path)), optimized_ops(Path(off.path))
    assert got["QLinearConv"] == before["QLinearConv"] == 1
    assert got["Transpose"] == before["Transpose"] - 1
    want = _run_image(Path(off.path), x)
    np.testing.assert_allclose(_run_image(Path(on.path), x), want, atol=1e-5)
    saved = json.loads(Path(on.path).with_suffix(".quant.json").read_text())
    assert saved["scheme"]["channels_last_flatten"] is True
    assert QuantizationConfig.from_dict(saved).scheme.channels_last_flatten


def _run_image(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {sess.get_inputs()[0].name: x})[0])
