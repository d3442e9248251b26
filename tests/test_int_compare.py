"""Integer comparisons convert exactly (issue #23).

tf2onnx 1.17 converts TensorFlow ``Less``/``Greater`` on integers through float32 casts at
every opset, so integers above 2**24 compare rounded (``99999999 < 10**8`` came out False).
edgekit's conversion compares 32- and 64-bit integers as 64-bit integers
(:func:`edgekit.convert.tfconvert.custom_op_handlers`). Real Keras models exported with real
TensorFlow, tf2onnx and onnxruntime, on values around 2**24..2**62 where float32 rounds;
outputs are checked against Keras bit for bit, and the graphs for casts to float.

``TopKV2`` had the same bug (tf2onnx ranks every input but float32 as float32): 32- and 64-bit
integers and doubles now rank as they are (:func:`edgekit.convert.tfconvert._exact_top_k`).
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
pytestmark = [pytest.mark.slow, pytest.mark.file_seconds(5)]

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


def _top_k_int64() -> np.ndarray:
    """[N, 7] int64 whose top 3 float32 cannot rank: neighbours of 2**24, 2**40 and 2**62,
    exact ties (the lower index first) and random values in 2**24..2**62."""
    rows = [[2**40, 2**40 + 1, 2**40 - 1, 3, -C64, 2**24, 2**24 + 1],
            [2**24 - 1, 2**24 + 1, -5, 2**24, 2**24 + 2, 0, -(2**62)],
            [2**62 - 1, 2**62, 2**62 + 1, 2**63 - 1, 2**63 - 2, -(2**63), 1],
            [5, C64, 5, C64, C64 - 1, C64, 2**40]]
    rows += list(np.random.default_rng(3).integers(2**24, 2**62, (20, 7)))
    return np.asarray(rows, "int64")


def _top_k_inputs(proto: onnx.ModelProto) -> list[tuple[int, int]]:
    """``(element type ranked, element type before any Cast)`` for each ``TopK``'s data."""
    producers = {o: n for n in proto.graph.node for o in n.output}
    types = _elem_types(proto)
    found = []
    for node in proto.graph.node:
        if node.op_type == "TopK":
            producer = producers.get(node.input[0])
            source = producer.input[0] if producer and producer.op_type == "Cast" else None
            found.append((types[node.input[0]], types[source or node.input[0]]))
    return sorted(found)


def test_top_k_exports_exactly(tmp_path: Path) -> None:
    """``edgekit export`` of ``tf.math.top_k`` on int64 (and int32) values float32 rounds and
    ties: onnxruntime gives Keras' values and indices bit for bit, ``TopK`` ranks the
    integers themselves; on float32 the graph is tf2onnx's (``TopK`` straight on the input)."""
    from edgekit.runtime import EdgeModel

    x = keras.Input((7,), dtype="int64", name="x")
    w = keras.Input((7,), dtype="int32", name="w")
    f = keras.Input((7,), dtype="float32", name="f")
    outs = [layers.Lambda(lambda t: tuple(tf.math.top_k(t, k=3)), name=n)(t)
            for n, t in (("top_x", x), ("top_w", w), ("top_f", f))]
    model = keras.Model([x, w, f], [y for pair in outs for y in pair])
    xs = _top_k_int64()
    ws = np.random.default_rng(5).integers(2**24, 2**31 - 1, xs.shape).astype("int32")
    ws[0] = [C32, 2**31 - 3, 5, 2**31 - 1, -C32, 2**31 - 2, C32 + 1]  # float32: 2**30, 2**31
    data = {"x": xs, "w": ws,
            "f": np.random.default_rng(4).uniform(-1, 1, xs.shape).astype("float32")}
    np.savez(tmp_path / "val.npz", **data)  # type: ignore[arg-type]
    result = export_model(model, tmp_path / "out", ExportConfig(),
                          validation_data=tmp_path / "val.npz")
    want = [np.asarray(y) for y in model([tf.constant(data[k]) for k in ("x", "w", "f")])]
    assert want[0][0].tolist() == [2**40 + 1, 2**40, 2**40 - 1]
    assert want[1][:4].tolist() == [[1, 0, 2], [4, 1, 3], [3, 4, 2], [1, 3, 5]]  # ties: lower first
    assert want[2][0].tolist() == [2**31 - 1, 2**31 - 2, 2**31 - 3]  # not -2**31
    with EdgeModel(result.onnx_path) as onnx_model:
        got = onnx_model.run(data)
    assert len(got) == len(want) == 6
    for i, (g, y) in enumerate(zip(got, want, strict=True)):
        assert g.dtype == y.dtype and g.shape == y.shape, i
        np.testing.assert_array_equal(g, y, err_msg=str(i))
    proto = onnx.load(result.onnx_path)
    int64, int32, f32 = onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.FLOAT
    assert _top_k_inputs(proto) == sorted([(int64, int64), (int32, int32), (f32, f32)])
    assert sorted(n.input[0] for n in proto.graph.node if n.op_type == "TopK") == ["f", "w", "x"]
    assert result.report["engines"]["onnxruntime"]["passed"] is True  # type: ignore[index]


@pytest.mark.parametrize("opset", [13, 18])
def test_tf2onnx_through_edgekit_ranks_top_k_exactly(opset: int) -> None:
    """The conversion itself on every kind of input: int64, int32 and float64 rank as they
    are, uint32 as int64 (onnxruntime has no uint32 TopK); int16 keeps tf2onnx's float32 cast
    (exact) and float32 is untouched; a ``k`` computed in the graph and ``sorted=False`` work."""
    kinds = {"x": "int64", "w": "int32", "u": "uint32", "d": "float64", "s": "int16",
             "f": "float32"}
    signature = [tf.TensorSpec((None, None), t, name=n) for n, t in kinds.items()]

    @tf.function(input_signature=signature, autograph=False)
    def function(*xs: tf.Tensor) -> list[tf.Tensor]:
        k = tf.shape(xs[0])[1] // 2  # 3, known only when it runs
        tops = [tf.math.top_k(t, k=k) for t in xs]
        return [y for top in tops for y in top] + list(tf.math.top_k(xs[0], k=2, sorted=False))

    proto = tfconvert.from_function(function, signature, opset)
    onnx.checker.check_model(proto)
    t = onnx.TensorProto
    assert _top_k_inputs(proto) == sorted(  # no Cast to float but int16's (exact)
        [(t.INT64, t.INT64), (t.INT32, t.INT32), (t.INT64, t.UINT32), (t.DOUBLE, t.DOUBLE),
         (t.FLOAT, t.INT16), (t.FLOAT, t.FLOAT), (t.INT64, t.INT64)])
    casts = {x: [a.i for n in proto.graph.node if n.op_type == "Cast" and n.input[0] == x
                 for a in n.attribute] for x in kinds}
    assert casts == {"x": [], "w": [], "u": [t.INT64], "d": [], "s": [t.FLOAT], "f": []}
    feeds = {"x": _top_k_int64()[:4, :6],
             "w": np.array([[2**31 - 1, C32, C32 - 1, 2**31 - 2, -C32, C32 + 1]], "int32"),
             "u": np.array([[2**32 - 1, 2**31, 2**31 + 1, 2**32 - 2, 2**24, 7]], "uint32"),
             "d": np.array([[1 + 2**-40, 1, 1 + 2**-41, 0.5, 3 + 2**-50, 3]]),
             "s": np.array([[5, -3, 7, 7, -32768, 32767]], "int16"),
             "f": np.array([[0.5, 0.25, 1.0, -1.0, 0.75, 0.5000001]], "float32")}
    session = ort.InferenceSession(proto.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    got = session.run(None, feeds)
    want = [np.asarray(y) for y in function(*[tf.constant(feeds[n]) for n in kinds])]
    assert len(got) == len(want) == 14
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.dtype == w.dtype, i
        np.testing.assert_array_equal(g, w, err_msg=str(i))
    assert want[2].tolist() == [[2**31 - 1, 2**31 - 2, C32 + 1]]
    assert want[5].tolist() == [[0, 3, 2]]  # uint32: 2**32 - 2 is not 2**32 - 1
    assert want[7].tolist() == [[4, 5, 0]]  # float64: 3 + 2**-50 first, 1 + 2**-40 above 1
