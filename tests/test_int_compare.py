"""Integer comparisons convert exactly (issue #23).

tf2onnx 1.17 converts TensorFlow ``Less``/``Greater`` on integers through float32 casts at
every opset, so integers above 2**24 compare rounded (``99999999 < 10**8`` came out False).
edgekit's conversion compares 32- and 64-bit integers as 64-bit integers
(:func:`edgekit.convert.tfconvert.custom_op_handlers`). Real Keras models exported with real
TensorFlow, tf2onnx and onnxruntime, on values around 2**24..2**62 where float32 rounds;
outputs are checked against Keras bit for bit, and the graphs for casts to float.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    import keras
    import onnx
    import tensorflow as tf
else:
    keras = pytest.importorskip("keras")
    tf = pytest.importorskip("tensorflow")
    onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edgekit.convert import ExportConfig, export_model, tfconvert  # noqa: E402

#: each test converts with tf2onnx; the export also validates and checks every engine
pytestmark = [pytest.mark.slow, pytest.mark.file_seconds(12)]

layers = keras.layers

C64 = 2**40 + 1  # float32 rounds it (and its neighbours) to 2**40
C32 = 2**30 + 3  # float32 rounds it to 2**30
COMPARISONS = {"Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Equal"}
FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
          onnx.TensorProto.BFLOAT16}


def _edges(c: int, dtype: str) -> np.ndarray:
    """Values float32 cannot tell apart from ``c`` (and from each other), both sides of it."""
    return np.array([c - 2, c - 1, c, c + 1, c + 2], dtype)


def _int64_values() -> np.ndarray:
    """[N, 5] int64 around 10**8, 2**24, 2**40 + 1 and 2**62, exact boundaries included."""
    rows = [_edges(10**8, "int64"), _edges(2**24, "int64"), _edges(C64, "int64"),
            _edges(2**62, "int64"), _edges(-C64, "int64"),
            np.array([2**40 - 1, 2**40, 2**40 + 1, 0, -1], "int64")]
    rng = np.random.default_rng(0)
    rows += list(rng.integers(2**24, 2**62, (20, 5)))
    return np.asarray(rows, "int64")


def _int32_values(n: int) -> np.ndarray:
    rows = [_edges(C32, "int32"), _edges(2**24, "int32"), _edges(-C32, "int32")]
    rows += list(np.random.default_rng(1).integers(2**24, 2**31 - 1, (n - len(rows), 5)))
    return np.asarray(rows, "int32")


def _compare_model() -> keras.Model:
    """int64, int32 and float32 inputs through Lambda comparisons and min/max."""
    x = keras.Input((5,), dtype="int64", name="x")
    w = keras.Input((5,), dtype="int32", name="w")
    f = keras.Input((5,), dtype="float32", name="f")

    def lam(fn: object, name: str) -> keras.layers.Layer:
        return layers.Lambda(fn, name=name)

    outs = [
        lam(lambda t: t < 10**8, "lt")(x),
        lam(lambda t: t > 2**40, "gt")(x),
        lam(lambda t: t <= C64, "le")(x),
        lam(lambda t: t >= C64, "ge")(x),
        lam(lambda t: tf.maximum(t, C64), "max")(x),
        lam(lambda t: tf.minimum(t, C64), "min")(x),
        lam(lambda t: tf.equal(t, C64), "eq")(x),
        lam(lambda t: t < C32, "lt32")(w),
        lam(lambda t: t > C32, "gt32")(w),
        lam(lambda t: t < 0.25, "flt")(f),
        lam(lambda t: t > -0.25, "fgt")(f),
    ]
    return keras.Model([x, w, f], outs)


def _elem_types(proto: onnx.ModelProto) -> dict[str, int]:
    """The element type of every tensor in the graph (onnx shape inference)."""
    graph = onnx.shape_inference.infer_shapes(proto).graph
    types = {t.name: t.data_type for t in graph.initializer}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        types[vi.name] = vi.type.tensor_type.elem_type
    for node in graph.node:
        if node.op_type == "Constant":
            types[node.output[0]] = node.attribute[0].t.data_type
    return types


def _comparison_inputs(proto: onnx.ModelProto) -> dict[str, list[int]]:
    """``{node name: [element type of each input]}`` of the comparison nodes, each input
    checked not to come from a Cast to float."""
    producers = {o: n for n in proto.graph.node for o in n.output}
    types = _elem_types(proto)
    found: dict[str, list[int]] = {}
    for node in proto.graph.node:
        if node.op_type not in COMPARISONS:
            continue
        for name in node.input:
            producer = producers.get(name)
            to = {a.name: a.i for a in producer.attribute}.get("to") if producer else None
            assert producer is None or producer.op_type != "Cast" or to not in FLOATS, (
                f"{node.op_type} {node.name} compares a Cast to float: {producer}")
        found[node.name] = [types[name] for name in node.input]
    return found


def test_integer_comparisons_export_exactly(tmp_path: Path) -> None:
    """``edgekit export`` on values float32 rounds: validation passes, onnxruntime gives
    Keras' outputs bit for bit, and every integer comparison compares integers."""
    from edgekit.runtime import EdgeModel

    model = _compare_model()
    xs = _int64_values()
    data = {"x": xs, "w": _int32_values(len(xs)),
            "f": np.random.default_rng(2).uniform(-1, 1, xs.shape).astype("float32")}
    np.savez(tmp_path / "val.npz", **data)  # type: ignore[arg-type]
    result = export_model(model, tmp_path / "out", ExportConfig(),
                          validation_data=tmp_path / "val.npz")
    want = [np.asarray(y) for y in model([tf.constant(data[k]) for k in ("x", "w", "f")])]
    assert want[0][0].tolist() == [True, True, False, False, False]  # 99999999 < 10**8
    with EdgeModel(result.onnx_path) as onnx_model:
        got = onnx_model.run(data)
    assert len(got) == len(want)
    for name, g, w in zip(model.output_names, got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape, name
        np.testing.assert_array_equal(g, w, err_msg=name)
    proto = onnx.load(result.onnx_path)
    compared = _comparison_inputs(proto)
    int64, f32 = onnx.TensorProto.INT64, onnx.TensorProto.FLOAT
    kinds = sorted(sorted(set(t)) for t in compared.values())
    # lt, gt, le, ge, eq on int64, lt32, gt32 on int32 widened to int64; flt, fgt on float32
    assert kinds == sorted([[int64]] * 7 + [[f32]] * 2), compared
    widened = [n for n in proto.graph.node if n.op_type == "Cast" and n.input[0] == "w"]
    assert [a.i for n in widened for a in n.attribute] == [int64] * len(widened) != []
    ops = {n.op_type for n in proto.graph.node}
    assert {"Max", "Min"} <= ops
    assert result.report["engines"]["onnxruntime"]["passed"] is True  # type: ignore[index]


@pytest.mark.parametrize("opset", [13, 18])
def test_tf2onnx_through_edgekit_compares_integers_as_integers(opset: int) -> None:
    """The conversion itself (no validation in between): ``Less``/``Greater`` on int64 stay
    ONNX ``Less``/``Greater`` on int64, on int32 they compare int64 casts; on float32 they are
    unchanged (no casts); on int16, where float32 is exact, tf2onnx's float compare is kept."""
    x = keras.Input((5,), dtype="int64", name="x")
    w = keras.Input((5,), dtype="int32", name="w")
    s = keras.Input((5,), dtype="int16", name="s")
    f = keras.Input((5,), dtype="float32", name="f")
    model = keras.Model([x, w, s, f], [
        layers.Lambda(lambda t: t < 10**8)(x), layers.Lambda(lambda t: t > C32)(w),
        layers.Lambda(lambda t: t < 7)(s), layers.Lambda(lambda t: t > 0.5)(f)])
    names = ["x", "w", "s", "f"]
    signature = [tf.TensorSpec((None, 5), t.dtype, name=n)
                 for t, n in zip(model.inputs, names, strict=True)]

    @tf.function(input_signature=signature, autograph=False)
    def function(*xs: tf.Tensor) -> list[tf.Tensor]:
        return list(model(list(xs), training=False))

    proto = tfconvert.from_function(function, signature, opset)
    onnx.checker.check_model(proto)
    types = _elem_types(proto)
    by_type = sorted((n.op_type, types[n.input[0]], types[n.input[1]])
                     for n in proto.graph.node if n.op_type in COMPARISONS)
    int64, f32 = onnx.TensorProto.INT64, onnx.TensorProto.FLOAT
    assert by_type == sorted([("Less", int64, int64), ("Greater", int64, int64),
                              ("Less", f32, f32), ("Greater", f32, f32)])
    casts = {x: [a.i for n in proto.graph.node if n.op_type == "Cast" and n.input[0] == x
                 for a in n.attribute] for x in names}
    assert casts == {"x": [], "w": [int64], "s": [f32], "f": []}  # int16: exact in float32
    feeds = {"x": _edges(10**8, "int64")[None], "w": _edges(C32, "int32")[None],
             "s": np.array([[5, 6, 7, 8, -32768]], "int16"),
             "f": np.array([[0.25, 0.5, 0.5000001, 1.0, -1.0]], "float32")}
    session = ort.InferenceSession(proto.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    got = session.run(None, feeds)
    want = [np.asarray(y) for y in model([tf.constant(feeds[n]) for n in names])]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    assert want[0].tolist() == [[True, True, False, False, False]]
    assert want[1].tolist() == [[False, False, False, True, True]]
