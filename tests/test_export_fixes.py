"""Regression tests for issue #12: each export failure seen on real Keras models, fixed.

Real TensorFlow, tf2onnx and onnxruntime on small models built to hit one cause each.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from edgekit.cli.main import cli

if TYPE_CHECKING:
    import keras
else:
    keras = pytest.importorskip("keras")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from _coverage_models import CUSTOM_LAYER_SOURCE  # noqa: E402

from edgekit.convert import (  # noqa: E402
    ExportConfig,
    export_model,
    load_source,
    synthetic_inputs,
    validate_source,
)
from edgekit.convert.conversion import opset_hint  # noqa: E402
from edgekit.convert.graph import simplify  # noqa: E402
from edgekit.convert.tfconvert import bind_captured_constants, higher_opset_for  # noqa: E402
from edgekit.convert.validate import validate  # noqa: E402
from edgekit.errors import ConversionError, InputError, ValidationError  # noqa: E402
from edgekit.io.memory import BATCH_MEMORY_BYTES  # noqa: E402
from edgekit.io.onnxgraph import subgraph_inputs  # noqa: E402

pytestmark = [pytest.mark.file_seconds(25), pytest.mark.slow]

CFG = ExportConfig(validation_samples=16)


def _inputs(path: Path) -> list[str]:
    return [i.name for i in onnx.load(str(path)).graph.input]


def _adapted_normalization_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    norm = keras.layers.Normalization()
    norm.adapt(np.random.default_rng(0).normal(3.0, 2.0, (200, 5)).astype("float32"))
    return keras.Sequential([keras.Input((5,), name="features"), norm,
                             keras.layers.Dense(3, activation="softmax")], name="normalized")


def test_adapted_normalization_constants_are_bound(tmp_path: Path) -> None:
    res = export_model(_adapted_normalization_model(), tmp_path, CFG)
    assert res.validation.max_abs_error < 1e-5
    model = onnx.load(str(res.onnx_path))
    assert [i.name for i in model.graph.input] == ["features"]  # exactly the signature
    # The adapted mean is in the graph as a constant, not a missing feed.
    consts = [onnx.numpy_helper.to_array(i) for i in model.graph.initializer]
    assert any(c.size == 5 and abs(float(c.mean()) - 3.0) < 0.5 for c in consts)


def test_extra_graph_inputs_that_are_not_captures_are_refused() -> None:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
    k = helper.make_tensor_value_info("k", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])
    graph = helper.make_graph([helper.make_node("Add", ["x", "k"], ["y"])], "g", [x, k], [y])
    bound = bind_captured_constants(helper.make_model(graph), {"k": np.ones(2, np.float32)},
                                    ["x"])
    assert bound == ["k"]
    graph2 = helper.make_graph([helper.make_node("Add", ["x", "k"], ["y"])], "g", [x, k], [y])
    with pytest.raises(ConversionError, match="not the model's inputs") as err:
        bind_captured_constants(helper.make_model(graph2), {}, ["x"])
    assert "opset" not in str(err.value)


def _gru(time_distributed: bool) -> keras.Model:
    keras.utils.set_random_seed(0)
    if time_distributed:
        inp = keras.Input((3, 10, 4), name="frames")
        x = keras.layers.Flatten()(keras.layers.TimeDistributed(
            keras.layers.GRU(8, use_cudnn=False))(inp))
    else:
        inp = keras.Input((10, 4), name="sequence")
        x = keras.layers.GRU(8, use_cudnn=False)(inp)
    return keras.Model(inp, keras.layers.Dense(2)(x), name="td_gru" if time_distributed else "gru")


@pytest.mark.parametrize("time_distributed", [False, True])
def test_gru_loop_survives_simplification(tmp_path: Path, time_distributed: bool) -> None:
    res = export_model(_gru(time_distributed), tmp_path, CFG)
    assert res.validation.max_abs_error < 1e-5
    assert "Loop" in cast(dict[str, Any], res.report)["graph"]["op_histogram"]


def test_prune_keeps_tensors_read_only_inside_a_loop_body() -> None:
    from onnx import TensorProto, helper

    # t = Transpose(x) is read only inside the Loop body (an outer-scope reference).
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["acc_in", "t"], ["acc_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [2, 2])],
    )
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
        helper.make_node("Loop", ["n", "c", "x"], ["y"], body=body),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
        [onnx.numpy_helper.from_array(np.array(3, np.int64), "n"),
         onnx.numpy_helper.from_array(np.array(True), "c")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert subgraph_inputs(model.graph.node[1]) == {"t"}
    simplify(model)
    assert [n.op_type for n in model.graph.node] == ["Transpose", "Loop"]
    x = np.arange(4, dtype=np.float32).reshape(2, 2)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], x + 3 * x.T)


def _conv1d_text() -> keras.Model:
    keras.utils.set_random_seed(0)
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(100, 8)(tokens)
    for _ in range(3):
        x = keras.layers.MaxPooling1D(2)(keras.layers.Conv1D(8, 5, activation="relu")(x))
    x = keras.layers.GlobalMaxPooling1D()(x)
    return keras.Model(tokens, keras.layers.Dense(3, activation="softmax")(x), name="conv1d")


def test_dynamic_length_is_probed_against_keras(tmp_path: Path) -> None:
    model = _conv1d_text()
    res = export_model(model, tmp_path, CFG)
    assert res.validation.max_abs_error < 1e-5
    source = load_source(model)
    feeds = synthetic_inputs(source, 4)
    assert feeds["tokens"].shape == (4, 64)  # 8, 16 and 32 tokens are too short for Keras


def test_keras_failure_is_reported_as_keras_failure(tmp_path: Path) -> None:
    short = tmp_path / "short.npz"
    np.savez(short, tokens=np.ones((4, 10), np.int32))
    with pytest.raises(InputError, match="Keras itself cannot run") as err:
        export_model(_conv1d_text(), tmp_path / "out", CFG, validation_data=short)
    text = str(err.value)
    assert "negative" in text or "empty" in text or "size" in text  # Keras' own reason
    assert "onnxruntime" not in text and "opset" not in text


def _convnext_block() -> keras.Model:
    """ConvNeXt's two problem ops: a grouped (depthwise) Conv2D and exact GELU (Erfc)."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 8), name="image")
    x = keras.layers.Conv2D(8, 7, padding="same", groups=8)(inp)
    x = keras.layers.LayerNormalization(epsilon=1e-6)(x)
    x = keras.layers.Dense(16, activation=keras.activations.gelu)(x)  # exact: Erfc
    x = keras.layers.Dense(8)(x)
    x = keras.layers.GlobalAveragePooling2D()(inp + x)
    return keras.Model(inp, keras.layers.Dense(4, activation="softmax")(x), name="convnext_block")


def test_grouped_conv_and_exact_gelu_convert(tmp_path: Path) -> None:
    res = export_model(_convnext_block(), tmp_path, CFG)
    assert res.validation.max_abs_error < 1e-5
    ops = cast(dict[str, Any], res.report)["graph"]["op_histogram"]
    assert "Erf" in ops and "Conv" in ops
    assert not {"Erfc", "StatefulPartitionedCall"} & set(ops)


def _unconvertible() -> keras.Model:
    import tensorflow as tf

    class Igamma(keras.layers.Layer):
        def call(self, x: object) -> object:
            return tf.math.igamma(tf.abs(x) + 1.0, tf.abs(x) + 1.0)

    inp = keras.Input((3,), name="x")
    return keras.Model(inp, keras.layers.Dense(2)(Igamma()(inp)), name="igamma")


def test_unconvertible_op_hint_names_the_layer_not_the_opset(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="Igamma") as err:
        export_model(_unconvertible(), tmp_path, CFG)
    assert "opset" not in (err.value.hint or "")
    assert not (tmp_path / "igamma.onnx").exists()


def test_opset_hint_only_when_the_opset_is_the_cause() -> None:
    assert opset_hint("Required inputs ([a:0]) are missing from input feed", 17) is None
    assert "--opset" in (opset_hint("Opset 18 is under development and not supported", 18)
                         or "")
    # tf2onnx converts TensorScatterMax from opset 16 on, Conv2D at every opset, Igamma never
    assert higher_opset_for({"TensorScatterMax"}, 13) == 16
    assert higher_opset_for({"Conv2D"}, 13) is None
    assert higher_opset_for({"Igamma"}, 13) is None


@pytest.fixture(scope="module")
def custom_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    from edgekit.convert import load_custom_objects

    d = tmp_path_factory.mktemp("custom")
    module = d / "zoo_layers.py"
    module.write_text(CUSTOM_LAYER_SOURCE)
    cls = load_custom_objects(module)["ScaledSwish"]
    assert isinstance(cls, type)
    keras.utils.set_random_seed(0)
    inp = keras.Input((6,), name="x")
    model = keras.Model(inp, keras.layers.Dense(3)(cls()(keras.layers.Dense(4)(inp))))
    path = d / "custom.keras"
    model.save(path)
    registered = dict(keras.saving.get_custom_objects())
    keras.saving.get_custom_objects().clear()  # a fresh process knows nothing of the layer
    yield path, module
    keras.saving.get_custom_objects().update(registered)  # the other tests' registrations


def test_custom_layer_without_its_module_names_the_cause(custom_model, tmp_path: Path) -> None:
    path, _ = custom_model
    res = CliRunner().invoke(cli, ["export", str(path), "-o", str(tmp_path)])
    assert res.exit_code == 1
    assert "Could not locate class 'ScaledSwish'" in res.output
    assert "--custom-objects" in res.output
    assert "truncated" not in res.output and "corrupt" not in res.output
    assert "Traceback" not in res.output


def test_custom_layer_exports_with_custom_objects(custom_model, tmp_path: Path) -> None:
    path, module = custom_model
    res = CliRunner().invoke(cli, ["export", str(path), "-o", str(tmp_path),
                                   "--custom-objects", str(module)])
    assert res.exit_code == 0, res.output
    assert _inputs(tmp_path / "custom.onnx") == ["x"]


def test_custom_objects_module_that_fails_to_import(tmp_path: Path) -> None:
    bad = tmp_path / "broken.py"
    bad.write_text("import keras\nraise RuntimeError('boom in user code')\n")
    with pytest.raises(InputError, match="boom in user code"):
        load_source(_adapted_normalization_model(), custom_objects=bad)
    with pytest.raises(InputError, match="does not exist"):
        load_source(_adapted_normalization_model(), custom_objects=tmp_path / "missing.py")


def test_validation_runs_keras_and_onnx_in_bounded_batches(tmp_path: Path) -> None:
    model = _gru(False)
    res = export_model(model, tmp_path, CFG)
    source = load_source(model)
    seen: list[int] = []
    call = source.call

    def recording(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        seen.append(len(feeds["sequence"]))
        return call(feeds)

    source.call = recording
    feeds = synthetic_inputs(source, 40)
    result = validate_source(source, res.onnx_path, feeds, 1e-4, batch_size=8)
    # the batches, after the per-sample probe (the first 8 samples, then 7 of them twice)
    assert max(seen) == 8 and seen[:3] == [8, 7, 7] and sum(seen[3:]) == 40
    assert result.n_samples == 40 and result.passed and not result.batch_dependent
    # activations of a quarter of the memory budget a sample: 4 samples a batch at most
    seen.clear()
    session = ort.InferenceSession(str(res.onnx_path), providers=["CPUExecutionProvider"])
    bounded = validate(source, session, feeds, CFG, per_sample_bytes=BATCH_MEMORY_BYTES // 4)
    assert max(seen) == 4 and seen[:3] == [4, 3, 3] and sum(seen[3:]) == 40
    assert bounded.n_samples == 40 and bounded.passed


def _rescaling_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(x))
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x), name="rescaled")


def test_synthetic_inputs_follow_preprocessing_layers() -> None:
    pixels = synthetic_inputs(load_source(_rescaling_model()), 64)["image"]
    assert pixels.min() >= 0 and pixels.max() > 200  # the [0, 255] range Rescaling expects
    normal = synthetic_inputs(load_source(_adapted_normalization_model()), 256)["features"]
    assert abs(float(normal.mean()) - 3.0) < 0.3 and abs(float(normal.std()) - 2.0) < 0.3


def _constant_model() -> keras.Model:
    inp = keras.Input((4,), name="x")
    dense = keras.layers.Dense(3, activation="softmax", kernel_initializer="zeros",
                               bias_initializer=keras.initializers.Constant([9.0, 0.0, 0.0]))
    return keras.Model(inp, dense(inp), name="constant")


def test_degenerate_outputs_warn_and_fail_with_strict(tmp_path: Path) -> None:
    res = export_model(_constant_model(), tmp_path / "a", CFG)
    assert res.validation.passed and res.validation.warnings
    sat = cast(dict[str, Any], res.report)["validation"]["saturation"]
    only = next(iter(sat.values()))
    assert only["constant_share"] == 1.0 and only["same_class_share"] == 1.0
    with pytest.raises(ValidationError, match="proves little"):
        export_model(_constant_model(), tmp_path / "b", ExportConfig(validation_samples=16,
                                                                     strict=True))
    assert not (tmp_path / "b" / "constant.onnx").exists()
    fine = export_model(_adapted_normalization_model(), tmp_path / "c", CFG)
    assert fine.validation.warnings == []
    report = json.loads(fine.report_path.read_text())
    (entry,) = report["validation"]["saturation"].values()
    assert entry["constant_share"] == 0.0 and entry["same_class_share"] < 0.9


def test_cli_prints_degenerate_warning(tmp_path: Path) -> None:
    path = tmp_path / "constant.keras"
    _constant_model().save(path)
    res = CliRunner().invoke(cli, ["export", str(path), "-o", str(tmp_path / "out"),
                                   "--validation-samples", "16"])
    assert res.exit_code == 0, res.output
    assert "warning: output" in res.output and "degenerate" in res.output
    res = CliRunner().invoke(cli, ["export", str(path), "-o", str(tmp_path / "out2"),
                                   "--validation-samples", "16", "--strict"])
    assert res.exit_code == 1 and "error: validation proves little" in res.output


def test_faster_conversion_gives_tf2onnx_own_graph() -> None:
    """tfconvert.from_function (gc.freeze, one sort for constant Reshape folds, the lean
    freeze without tf2onnx's extra graph copies) converts a
    SeparableConv2D model, whose conversion folds constant Reshapes, into the graph tf2onnx's
    own from_function gives: the same ops, bit-identical outputs."""
    import collections

    import tensorflow as tf
    from tf2onnx import convert

    from edgekit.convert import tfconvert

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.SeparableConv2D(8, 3),
                              keras.layers.DepthwiseConv2D(3), keras.layers.ReLU(6.0),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4)])
    x = np.random.default_rng(0).random((2, 16, 16, 3), dtype=np.float32)
    model(x)
    fn = tf.function(lambda t: model(t))
    spec = [tf.TensorSpec((None, 16, 16, 3), tf.float32, name="x")]
    folds: list[int] = []
    fold = tfconvert._fold_constant_reshapes

    def counting(self: object) -> None:
        folds.append(sum(n.type == "Reshape" and n.inputs[0].is_const()
                         and n.inputs[1].is_const() for n in self._g.get_nodes()))  # type: ignore[attr-defined]
        fold(self)

    from tf2onnx import tf_loader
    frozen: list[str] = []  # tf2onnx's own freezing, which the lean one replaces
    freeze = tf_loader.convert_variables_to_constants_v2

    def recording(*args: Any, **kwargs: Any) -> Any:
        frozen.append("tf2onnx")
        return freeze(*args, **kwargs)

    tfconvert._fold_constant_reshapes = counting
    tf_loader.convert_variables_to_constants_v2 = recording
    try:
        fast = tfconvert.from_function(fn, spec, 17)
        assert not frozen  # the lean freeze ran, not its fallback
        plain, _ = convert.from_function(fn, input_signature=spec, opset=17)
        assert frozen  # tf2onnx's own way, for the comparison
    finally:
        tfconvert._fold_constant_reshapes = fold
        tf_loader.convert_variables_to_constants_v2 = freeze
    assert sum(folds) > 0  # the replaced pass had work to do
    hist = [collections.Counter(n.op_type for n in m.graph.node) for m in (fast, plain)]
    assert hist[0] == hist[1]
    weights = [sorted(numpy_helper.to_array(i).tobytes() for i in m.graph.initializer)
               for m in (fast, plain)]
    assert weights[0] == weights[1]  # the same weights (tf2onnx names folded ones at random)
    outs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
            .run(None, {"x": x})[0] for m in (fast, plain)]
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_allclose(outs[0], model(x).numpy(), atol=1e-5)


_MODES: list[bool] = []  # a module list: Keras would copy a list set on the layer


class _Recording(keras.layers.Layer):
    """Identity that records in :data:`_MODES` whether it ran eagerly; ``eager_only`` reads
    the tensor's value, which only an eager call can."""

    def __init__(self, eager_only: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.eager_only = eager_only

    def call(self, x: Any) -> Any:
        import tensorflow as tf

        _MODES.append(tf.executing_eagerly())
        if self.eager_only:
            return x + float(np.asarray(x).mean()) * 0.0
        return x

    def compute_output_shape(self, shape: Any) -> Any:
        return shape


def test_the_keras_reference_runs_as_a_graph_or_eagerly_where_it_must() -> None:
    """The reference call traces the model once (as model.predict does: eager calls keep every
    activation in TensorFlow's allocator), and a model that cannot be traced runs eagerly."""
    feeds = {"x": np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)}
    for eager_only in (False, True):
        inp = keras.Input((3,), name="x")
        model = keras.Model(inp, keras.layers.Dense(2)(_Recording(eager_only)(inp)))
        source = load_source(model)
        _MODES.clear()  # loading probes the model
        for _ in range(3):
            out = source.call(feeds)[0]
        if eager_only:  # the trace failed once, then every call ran eagerly
            assert _MODES[-3:] == [True, True, True]
        else:  # run as a graph: Python ran at most to trace, never eagerly
            assert _MODES and True not in _MODES
        np.testing.assert_allclose(out, model(feeds["x"]).numpy(), rtol=1e-6)
