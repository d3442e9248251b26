"""The export's local rewrites (:mod:`edgekit.convert.rewrites`): the Embedding's index wrap left
to Gather and Conv1D epilogues fused, on Keras models exported for real (op lists asserted,
outputs checked against Keras, negative ids included) and on small graphs built here that the
rewrites must leave alone or change exactly; the input normalisation merged into the stem conv on
Keras fronts and on keras.applications' EfficientNetV2B0."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

if TYPE_CHECKING:
    import keras
    import onnx
else:
    keras = pytest.importorskip("keras")
    onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgekit.convert import ExportConfig, export_model  # noqa: E402
from edgekit.convert.graph import simplify  # noqa: E402
from edgekit.convert.rewrites import rewrite  # noqa: E402

pytestmark = [pytest.mark.file_seconds(20)]

CFG = ExportConfig(validation_samples=16)


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def _run(model: Any, feeds: dict[str, np.ndarray]) -> np.ndarray:
    data = model if isinstance(model, str) else model.SerializeToString()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, feeds)[0])


def _conv1d_text(vocab: int = 200) -> keras.Model:
    """keras-io "Text classification from scratch", scaled down (its layers, in its order)."""
    keras.utils.set_random_seed(0)
    tokens = keras.Input((60,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(vocab, 16)(tokens)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.Conv1D(16, 7, padding="valid", activation="relu", strides=3)(x)
    x = keras.layers.Conv1D(16, 7, padding="valid", activation="relu", strides=3)(x)
    x = keras.layers.GlobalMaxPooling1D()(x)
    x = keras.layers.Dense(16, activation="relu")(x)
    out = keras.layers.Dense(1, activation="sigmoid", name="predictions")(x)
    model = keras.Model(tokens, out, name="conv1d_text")
    for layer in model.layers:  # non-zero biases, so a dropped bias Add would show
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(np.linspace(-0.3, 0.3, layer.bias.shape[0]).astype("float32"))
    return model


@pytest.mark.slow
def test_conv1d_text_exports_with_fused_epilogues_and_no_index_wrap(tmp_path: Path) -> None:
    model = _conv1d_text()
    res = export_model(model, tmp_path, CFG)
    ops = _ops(res.onnx_path)
    # tf2onnx's graph: Cast, Less, Not, 2 Cast, 2 Mul, 2 Add before the Gather; Conv ->
    # Squeeze -> Add -> Relu -> Unsqueeze between the convs
    assert ops[:5] == ["Gather", "Unsqueeze", "Transpose", "Conv", "Relu"]
    assert ops.count("Conv") == 2 and ops[ops.index("Conv", 4) + 1] == "Relu"
    for op in ("Less", "Not", "Where", "Cast", "Mul"):
        assert op not in ops
    assert ops.count("Squeeze") == 2 and ops.count("Unsqueeze") == 1
    assert res.validation.max_abs_error < 1e-5
    # values, negative ids included: Keras wraps them into the table, so must the file
    rng = np.random.default_rng(1)
    ids = rng.integers(-200, 200, (32, 60)).astype(np.int32)
    expect = np.asarray(model(ids, training=False))
    np.testing.assert_allclose(_run(str(res.onnx_path), {"tokens": ids}), expect,
                               atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_conv1d_batchnorm_folds_into_the_conv(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    inp = keras.Input((64, 3), name="series")
    x = keras.layers.Conv1D(16, 3, padding="same", use_bias=False)(inp)
    bn = keras.layers.BatchNormalization()
    x = keras.layers.ReLU()(bn(x))
    x = keras.layers.Conv1D(16, 3, padding="causal", dilation_rate=2, activation="tanh")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x))
    rng = np.random.default_rng(0)
    bn.moving_mean.assign(rng.normal(0, 1, 16).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 2, 16).astype("float32"))
    bn.gamma.assign(rng.uniform(0.5, 2, 16).astype("float32"))
    res = export_model(model, tmp_path, CFG)
    ops = _ops(res.onnx_path)
    assert ops[:4] == ["Unsqueeze", "Transpose", "Conv", "Relu"]  # BN's scale and shift folded
    assert "BatchNormalization" not in ops and "Mul" not in ops and "Add" not in ops[:8]
    assert ops[ops.index("Conv", 3) + 1] == "Tanh"
    assert res.validation.max_abs_error < 1e-5
    series = rng.normal(0, 1, (8, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(_run(str(res.onnx_path), {"series": series}),
                               np.asarray(model(series, training=False)), atol=1e-5)


# -- small graphs built here -----------------------------------------------------------------


def _model(nodes: list[Any], inputs: list[Any], outputs: list[Any],
           inits: list[Any]) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _c(name: str, value: Any, dtype: Any = np.int64) -> Any:
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def _where_gather(bound: int) -> onnx.ModelProto:
    """Gather(table, Where(ids < 0, ids + bound, ids)): Keras' take as a Where."""
    table = np.arange(20, dtype=np.float32).reshape(10, 2)
    nodes = [helper.make_node("Less", ["ids", "zero"], ["neg"]),
             helper.make_node("Add", ["ids", "n"], ["wrapped"]),
             helper.make_node("Where", ["neg", "wrapped", "ids"], ["idx"]),
             helper.make_node("Gather", ["table", "idx"], ["y"], axis=0)]
    return _model(nodes, [helper.make_tensor_value_info("ids", TensorProto.INT64, [None, 3])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3, 2])],
                  [numpy_helper.from_array(table, "table"), _c("zero", 0), _c("n", bound)])


def test_where_index_wrap_is_left_to_gather() -> None:
    model = _where_gather(10)
    ids = np.array([[0, -1, 9], [-10, 3, -4]], np.int64)
    before = _run(model, {"ids": ids})
    assert rewrite(model) == ["1 Embedding index wrap(s) left to Gather"]
    simplify(model)
    assert [n.op_type for n in model.graph.node] == ["Gather"]
    np.testing.assert_array_equal(_run(model, {"ids": ids}), before)


def test_a_wrap_by_another_bound_is_kept() -> None:
    model = _where_gather(7)  # ids + 7 on a 10-row table: not Gather's own wrap
    assert rewrite(model) == []
    assert [n.op_type for n in model.graph.node] == ["Less", "Add", "Where", "Gather"]


def _conv_squeeze(tail: list[Any], out_shape: list[Any], extra: list[Any] | None = None,
                  outputs: list[str] | None = None) -> onnx.ModelProto:
    """x [N, 2, 1, 8] -> Conv(1x3) -> Squeeze(axis 2) -> tail nodes."""
    w = np.linspace(-1, 1, 4 * 2 * 3, dtype=np.float32).reshape(4, 2, 1, 3)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 3]),
             helper.make_node("Squeeze", ["c", "axes"], ["s"]), *tail]
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, out_shape)
            for o in (outputs or ["y"])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2, 1, 8])],
                  outs, [numpy_helper.from_array(w, "w"), _c("axes", [2]), *(extra or [])])


def _same_outputs(model: onnx.ModelProto, x: np.ndarray | None = None,
                  tol: float = 1e-6) -> list[str]:
    """Rewrite + simplify ``model`` in place; checks its outputs on ``x`` (default: the
    Conv/Squeeze graphs' input) are unchanged within ``tol``; its ops."""
    if x is None:
        x = np.random.default_rng(0).normal(0, 1, (3, 2, 1, 8)).astype(np.float32)
    names = [o.name for o in model.graph.output]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    before = sess.run(names, {"x": x})
    rewrite(model)
    simplify(model)
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for a, b in zip(sess.run(names, {"x": x}), before, strict=True):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    return [n.op_type for n in model.graph.node]


def test_bias_and_scale_fold_and_relu_moves_before_the_squeeze() -> None:
    bias = numpy_helper.from_array(np.array([[0.5], [-1.0], [2.0], [0.0]], np.float32), "b")
    scale = numpy_helper.from_array(np.array([[2.0], [0.5], [-1.0], [3.0]], np.float32), "m")
    model = _conv_squeeze([helper.make_node("Add", ["s", "b"], ["a"]),
                           helper.make_node("Mul", ["a", "m"], ["p"]),
                           helper.make_node("Relu", ["p"], ["y"])], [None, 4, 6], [bias, scale])
    assert _same_outputs(model) == ["Conv", "Relu", "Squeeze"]
    conv = model.graph.node[0]
    b = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == conv.input[2]))
    np.testing.assert_allclose(b, [1.0, -0.5, -2.0, 0.0])


def test_a_constant_along_the_length_moves_but_does_not_fold() -> None:
    ramp = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(1, 1, 6), "r")
    model = _conv_squeeze([helper.make_node("Add", ["s", "r"], ["y"])], [None, 4, 6], [ramp])
    assert _same_outputs(model) == ["Conv", "Add", "Squeeze"]  # not one number per channel


def test_a_squeeze_read_twice_or_by_an_output_is_left_alone() -> None:
    model = _conv_squeeze([helper.make_node("Relu", ["s"], ["y"])], [None, 4, 6],
                          outputs=["y", "s"])
    assert _same_outputs(model) == ["Conv", "Squeeze", "Relu"]


def test_unsqueeze_of_other_axes_stays() -> None:
    model = _conv_squeeze([helper.make_node("Unsqueeze", ["s", "ax3"], ["y"])], [None, 4, 6, 1],
                          [_c("ax3", [3])])
    assert _same_outputs(model) == ["Conv", "Squeeze", "Unsqueeze"]
    same = _conv_squeeze([helper.make_node("Relu", ["s"], ["r"]),
                          helper.make_node("Unsqueeze", ["r", "axes"], ["u"]),
                          helper.make_node("Sigmoid", ["u"], ["y"])], [None, 4, 1, 6])
    assert _same_outputs(same) == ["Conv", "Relu", "Sigmoid"]


# -- input normalisation before the layout Transpose -------------------------------------------

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _preprocessed_cnn(stem: Any, mean: list[float] | None = MEAN) -> keras.Model:
    """keras.applications' front: Rescaling, Normalization (``mean=None``: left unadapted, as
    EfficientNet builds it without ImageNet weights: mean 0, variance 1), the stem conv."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3), name="image")
    norm = (keras.layers.Normalization(axis=-1) if mean is None else
            keras.layers.Normalization(mean=mean, variance=[s * s for s in STD]))
    x = stem(norm(keras.layers.Rescaling(1 / 255)(inp)))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(4, activation="softmax")(x))


@pytest.mark.slow
@pytest.mark.parametrize(("stem", "mean", "front"), [
    # EfficientNetV2: a padded stride-2 stem; the scale folds, the shift stays (zero padding
    # is in normalised values), per channel of NCHW
    (lambda: keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="swish"), MEAN,
     ["Transpose", "Add", "Conv"]),
    # EfficientNet without ImageNet weights: mean 0 / variance 1 vanish, 1/255 folds
    (lambda: keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="swish"), None,
     ["Transpose", "Conv"]),
    # ConvNeXt's patchify stem: no padding, scale and shift fold
    (lambda: keras.layers.Conv2D(8, 4, strides=4), MEAN, ["Transpose", "Conv"]),
], ids=["padded", "unadapted", "unpadded"])
def test_keras_input_normalisation_merges_into_the_stem_conv(
        tmp_path: Path, stem: Any, mean: list[float] | None, front: list[str]) -> None:
    model = _preprocessed_cnn(stem(), mean)
    res = export_model(model, tmp_path, CFG)
    ops = _ops(res.onnx_path)
    assert ops[:len(front)] == front and ops[len(front)] != "Mul", ops
    assert not {"Sub", "Div"} & set(ops) and ops.count("Conv") == 1
    notes = res.report["graph"]["simplified"]  # type: ignore[index]
    assert any("input normalisation: 3 element-wise op(s)" in n for n in notes), notes
    # values, the borders of the padded conv included: 0..255 pixels, the extremes too
    rng = np.random.default_rng(3)
    image = rng.uniform(0, 255, (6, 32, 32, 3)).astype(np.float32)
    image[0], image[1] = 0.0, 255.0
    np.testing.assert_allclose(_run(str(res.onnx_path), {"image": image}),
                               np.asarray(model(image, training=False)), atol=2e-6, rtol=1e-5)


@pytest.mark.slow
def test_efficientnetv2_from_keras_applications_keeps_one_add_before_its_stem(
        tmp_path: Path) -> None:
    """keras.applications' EfficientNetV2B0 (weights=None, 32x32, its own Rescaling and
    ImageNet Normalization in the model): the chain leaves one Add before the padded stem
    conv, and the file gives Keras' probabilities."""
    keras.utils.set_random_seed(0)
    model = keras.applications.EfficientNetV2B0(input_shape=(32, 32, 3), weights=None,
                                                classes=10)
    res = export_model(model, tmp_path, CFG)
    ops = _ops(res.onnx_path)
    assert ops[:4] == ["Transpose", "Add", "Conv", "Sigmoid"], ops[:8]
    notes = res.report["graph"]["simplified"]  # type: ignore[index]
    assert any("input normalisation: 3 element-wise op(s)" in n for n in notes), notes
    image = np.random.default_rng(4).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    name = onnx.load(str(res.onnx_path)).graph.input[0].name
    np.testing.assert_allclose(_run(str(res.onnx_path), {name: image}),
                               np.asarray(model(image, training=False)), atol=1e-6, rtol=1e-4)


def _nhwc(nodes: list[Any], inits: list[Any], channels: int = 3,
          extra_outputs: tuple[str, ...] = ()) -> onnx.ModelProto:
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 5, 5, channels])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None] * 4)
            for n in ("y", *extra_outputs)]
    return _model(nodes, [inp], outs, inits)


def _rewritten(model: onnx.ModelProto, channels: int = 3) -> list[str]:
    """:func:`_same_outputs` of an NHWC graph (float rounding: the chain merged); its ops."""
    x = np.random.default_rng(0).uniform(-3, 3, (2, 5, 5, channels)).astype(np.float32)
    return _same_outputs(model, x, tol=1e-5)


def _vec(name: str, values: list[float], shape: tuple[int, ...] = (1, 1, 1, 3)) -> Any:
    return numpy_helper.from_array(np.asarray(values, np.float32).reshape(shape), name)


_TR = helper.make_node("Transpose", ["n"], ["t"], perm=[0, 3, 1, 2])


def _conv(pads: list[int]) -> tuple[Any, Any]:
    w = np.random.default_rng(1).normal(0, 1, (4, 3, 3, 3)).astype(np.float32)
    return (helper.make_node("Conv", ["t", "w"], ["y"], pads=pads),
            numpy_helper.from_array(w, "w"))


def test_every_affine_op_kind_merges_in_order() -> None:
    # ((c - x) / d) * m + a: Sub with the constant first, Div, then Mul and Add
    conv, w = _conv([0, 0, 0, 0])
    nodes = [helper.make_node("Sub", ["c", "x"], ["s"]), helper.make_node("Div", ["s", "d"], ["q"]),
             helper.make_node("Mul", ["q", "m"], ["p"]), helper.make_node("Add", ["p", "a"], ["n"]),
             _TR, conv]
    model = _nhwc(nodes, [_vec("c", [1, 2, 3]), _vec("d", [2, -4, 0.5], (3,)),
                          _vec("m", [3.0], (1,)), _vec("a", [0.5, 0, -1]), w])
    assert _rewritten(model) == ["Transpose", "Conv"]


def test_a_padded_conv_keeps_the_shift_and_no_conv_keeps_both() -> None:
    conv, w = _conv([1, 1, 1, 1])
    chain = [helper.make_node("Mul", ["x", "m"], ["p"]), helper.make_node("Add", ["p", "a"], ["n"])]
    inits = [_vec("m", [2, -1, 0.5]), _vec("a", [1, 2, 3]), w]
    assert _rewritten(_nhwc([*chain, _TR, conv], inits)) == ["Transpose", "Add", "Conv"]
    relu = helper.make_node("Relu", ["t"], ["y"])
    assert _rewritten(_nhwc([*chain, _TR, relu], inits[:2])) == ["Transpose", "Mul", "Add",
                                                                  "Relu"]
    # a zero scale cannot be divided out of the shift: the padded conv gets Mul and Add
    zero = [_vec("m", [2, 0, 0.5]), _vec("a", [1, 2, 3]), w]
    assert _rewritten(_nhwc([*chain, _TR, conv], zero)) == ["Transpose", "Mul", "Add", "Conv"]


def test_chains_that_gain_nothing_or_are_not_the_input_are_left_alone() -> None:
    scalars = [helper.make_node("Mul", ["x", "m"], ["p"]),
               helper.make_node("Add", ["p", "a"], ["n"]), _TR,
               helper.make_node("Relu", ["t"], ["y"])]
    inits = [_vec("m", [2.0], ()), _vec("a", [1.0], ())]
    assert _rewritten(_nhwc(scalars, inits)) == ["Mul", "Add", "Transpose", "Relu"]
    # a scalar scale and a per-channel shift: they move, whatever channels the shift has
    mixed = [_vec("m", [2.0], ()), _vec("a", [1, 2, 3])]
    assert _rewritten(_nhwc(scalars, mixed)) == ["Transpose", "Mul", "Add", "Relu"]
    # inside the network (a LayerNorm's scale and shift before a Transpose): engines fuse it
    inner = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["r", "m"], ["n"]),
             _TR, helper.make_node("Sigmoid", ["t"], ["y"])]
    assert _rewritten(_nhwc(inner, [_vec("m", [1, 2, 3])])) == ["Relu", "Mul", "Transpose",
                                                                 "Sigmoid"]
    # the normalised tensor is also an output: it must stay
    conv, w = _conv([0, 0, 0, 0])
    read = _nhwc([helper.make_node("Mul", ["x", "m"], ["n"]), _TR, conv],
                 [_vec("m", [1, 2, 3]), w], extra_outputs=("n",))
    assert _rewritten(read) == ["Mul", "Transpose", "Conv"]


def test_constants_that_widen_the_channels_move_but_do_not_fold() -> None:
    # one input channel times three constants: three channels, which the weights must not take
    conv, w = _conv([0, 0, 0, 0])
    model = _nhwc([helper.make_node("Mul", ["x", "m"], ["n"]), _TR, conv],
                  [_vec("m", [1, 2, 3]), w], channels=1)
    assert _rewritten(model, channels=1) == ["Transpose", "Mul", "Conv"]
