"""Inputs as Keras has them (issue #23, 3a and 3c): dict inputs of mixed dtypes, subclassed
models (a signature from ``--input-spec``, the build shapes or the data), and failures of
edgekit's own Keras call named as such, not as tf2onnx's.

Real Keras models built here, exported with real TensorFlow, tf2onnx and onnxruntime; values
are checked against Keras.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli.main import cli

for _needed in ("keras", "onnx", "onnxruntime"):
    pytest.importorskip(_needed)

import keras  # noqa: E402
import onnx  # noqa: E402

from edgekit.convert import (  # noqa: E402
    ExportConfig,
    InputSpec,
    convert,
    export_model,
    load_source,
)
from edgekit.errors import ConversionError, InputError  # noqa: E402
from edgekit.inputs.data import Dataset  # noqa: E402
from edgekit.runtime import EdgeModel  # noqa: E402

CFG = ExportConfig(validation_samples=16)
pytestmark = pytest.mark.file_seconds(10)

RNG = np.random.default_rng(0)


@keras.saving.register_keras_serializable(package="edgekit_test_inputs")
class TwoDense(keras.Model):
    """A subclassed model on one float input."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(6, activation="relu")
        self.head = keras.layers.Dense(3, activation="softmax")

    def call(self, x: object) -> object:
        return self.head(self.hidden(x))


@keras.saving.register_keras_serializable(package="edgekit_test_inputs")
class IdsAndFeatures(keras.Model):
    """A subclassed model whose call takes a dict of int ids and float features."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.embed = keras.layers.Embedding(20, 4)
        self.head = keras.layers.Dense(2)

    def call(self, inputs: dict[str, object]) -> object:
        pooled = keras.ops.mean(self.embed(inputs["ids"]), axis=1)
        return self.head(keras.ops.concatenate([pooled, inputs["feats"]], axis=-1))


class Broken(keras.layers.Layer):
    """A layer whose call raises when it runs (Keras builds the model from its output shape)."""

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def call(self, x: object) -> object:
        raise ValueError("broken layer cannot run")


def _dict_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    ids = keras.Input((8,), dtype="int32", name="ids")
    feats = keras.Input((3,), dtype="float32", name="feats")
    emb = keras.layers.Flatten()(keras.layers.Embedding(50, 4)(ids))
    h = keras.layers.Concatenate()([emb, feats])
    out = keras.layers.Dense(4, activation="softmax")(keras.layers.Dense(8, "relu")(h))
    return keras.Model({"ids": ids, "feats": feats}, out, name="tabular")


def _dict_feeds(n: int) -> dict[str, np.ndarray]:
    return {"ids": RNG.integers(0, 50, (n, 8)).astype("int32"),
            "feats": RNG.normal(size=(n, 3)).astype("float32")}


def _input_types(path: Path) -> dict[str, tuple[int, list[int]]]:
    """ONNX input name -> (elem type, dims; 0 = dynamic)."""
    return {i.name: (i.type.tensor_type.elem_type,
                     [d.dim_value for d in i.type.tensor_type.shape.dim])
            for i in onnx.load(str(path)).graph.input}


def test_dict_inputs_of_mixed_dtypes_export_and_match_keras(tmp_path: Path) -> None:
    model = _dict_model()
    model.save(tmp_path / "tabular.keras")
    res = export_model(tmp_path / "tabular.keras", tmp_path / "out", CFG)
    types = _input_types(res.onnx_path)
    assert types == {"ids": (onnx.TensorProto.INT32, [0, 8]),
                     "feats": (onnx.TensorProto.FLOAT, [0, 3])}  # the Keras names and dtypes
    feeds = _dict_feeds(5)
    want = np.asarray(model(feeds))
    edge = EdgeModel(res.onnx_path)
    np.testing.assert_allclose(edge.run(feeds)[0], want, atol=1e-5)
    np.testing.assert_allclose(edge.predict(feeds), want, atol=1e-5)


def test_dict_inputs_validate_on_npz_named_after_the_inputs(tmp_path: Path) -> None:
    feeds = _dict_feeds(24)
    # numpy's stub also types savez's allow_pickle: bool, which mypy checks ** against
    np.savez(tmp_path / "val.npz", **feeds, y=RNG.integers(0, 4, 24))  # type: ignore[arg-type]
    res = export_model(_dict_model(), tmp_path / "out", CFG, validation_data=tmp_path / "val.npz")
    assert res.validation.n_samples == 16  # capped by validation_samples
    assert str(tmp_path / "val.npz") in str(res.report["validation"]["data"])  # type: ignore[index]


def test_nested_dict_inputs_are_called_in_their_structure(tmp_path: Path) -> None:
    keras.utils.set_random_seed(1)
    ids = keras.Input((5,), dtype="int32", name="ids")
    age = keras.Input((1,), dtype="float32", name="age")
    h = keras.layers.Concatenate()([keras.layers.Flatten()(keras.layers.Embedding(9, 2)(ids)),
                                    age])
    model = keras.Model({"text": {"ids": ids}, "age": age}, keras.layers.Dense(2)(h))
    res = export_model(model, tmp_path, CFG)
    assert set(_input_types(res.onnx_path)) == {"ids", "age"}
    x = {"ids": RNG.integers(0, 9, (3, 5)).astype("int32"),
         "age": RNG.normal(size=(3, 1)).astype("float32")}
    want = np.asarray(model({"text": {"ids": x["ids"]}, "age": x["age"]}))
    np.testing.assert_allclose(EdgeModel(res.onnx_path).run(x)[0], want, atol=1e-5)


def test_dict_outputs_keep_their_names_on_their_values(tmp_path: Path) -> None:
    """Keras flattens a dict of outputs by sorted key; each ONNX output carries its own."""
    keras.utils.set_random_seed(5)
    x = keras.Input((4,), name="x")
    model = keras.Model(x, {"zeta": keras.layers.Dense(2, name="zeta")(x),
                            "alpha": keras.layers.Dense(3, name="alpha")(x)})
    res = export_model(model, tmp_path, CFG)
    feeds = RNG.normal(size=(3, 4)).astype("float32")
    want = model(feeds)
    got = EdgeModel(res.onnx_path).run(feeds)
    names = [o.name for o in onnx.load(str(res.onnx_path)).graph.output]
    for name, value in zip(names, got, strict=True):
        np.testing.assert_allclose(value, np.asarray(want[name]), atol=1e-5)


def _built_subclassed(tmp_path: Path) -> tuple[keras.Model, Path]:
    keras.utils.set_random_seed(2)
    model = TwoDense()
    model(np.zeros((2, 5), "float32"))  # built by one call, as Keras' export requires
    model.save(tmp_path / "sub.keras")
    return model, tmp_path / "sub.keras"


def test_subclassed_model_exports_from_its_build_shapes(tmp_path: Path) -> None:
    model, path = _built_subclassed(tmp_path)
    res = export_model(path, tmp_path / "out", CFG)
    assert _input_types(res.onnx_path) == {"input": (onnx.TensorProto.FLOAT, [0, 5])}
    x = RNG.normal(size=(7, 5)).astype("float32")
    np.testing.assert_allclose(EdgeModel(res.onnx_path).run(x)[0], np.asarray(model(x)),
                               atol=1e-5)


def test_subclassed_dict_model_takes_dtypes_from_the_data(tmp_path: Path) -> None:
    keras.utils.set_random_seed(3)
    model = IdsAndFeatures()
    feeds = {"ids": RNG.integers(0, 20, (16, 6)).astype("int32"),
             "feats": RNG.normal(size=(16, 3)).astype("float32")}
    model(feeds)
    model.save(tmp_path / "ids.keras")
    # numpy's stub also types savez's allow_pickle: bool, which mypy checks ** against
    np.savez(tmp_path / "val.npz", **feeds)  # type: ignore[arg-type]
    res = export_model(tmp_path / "ids.keras", tmp_path / "out", CFG,
                       validation_data=tmp_path / "val.npz")
    assert _input_types(res.onnx_path) == {"ids": (onnx.TensorProto.INT32, [0, 6]),
                                           "feats": (onnx.TensorProto.FLOAT, [0, 3])}
    np.testing.assert_allclose(EdgeModel(res.onnx_path).run(feeds)[0], np.asarray(model(feeds)),
                               atol=1e-5)


def test_cli_input_spec_names_and_shapes_the_inputs(tmp_path: Path) -> None:
    model, path = _built_subclassed(tmp_path)
    res = CliRunner().invoke(cli, ["export", str(path), "-o", str(tmp_path / "out"),
                                   "--validation-samples", "16", "--input-spec",
                                   "features:None,5:float32"])
    assert res.exit_code == 0, res.output
    onnx_path = tmp_path / "out" / "sub.onnx"
    assert _input_types(onnx_path) == {"features": (onnx.TensorProto.FLOAT, [0, 5])}
    x = RNG.normal(size=(4, 5)).astype("float32")
    np.testing.assert_allclose(EdgeModel(onnx_path).run(x)[0], np.asarray(model(x)), atol=1e-5)
    assert "NAME:SHAPE" in CliRunner().invoke(cli, ["export", "--help"]).output


def test_unbuilt_subclassed_model_takes_its_signature_from_the_data(tmp_path: Path) -> None:
    keras.utils.set_random_seed(4)
    model = TwoDense()  # never called: Keras recorded no build shapes
    x = RNG.normal(size=(12, 5)).astype("float64")
    res = export_model(model, tmp_path, CFG, validation_data=Dataset({"x": x}))
    assert _input_types(res.onnx_path) == {"x": (onnx.TensorProto.FLOAT, [0, 5])}
    xf = x.astype("float32")
    np.testing.assert_allclose(EdgeModel(res.onnx_path).run(xf)[0], np.asarray(model(xf)),
                               atol=1e-5)


def test_subclassed_model_without_any_signature_says_to_pass_input_spec(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no defined inputs") as err:
        export_model(TwoDense(), tmp_path, CFG)
    assert "--input-spec" in (err.value.hint or "")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("text, match", [
    ("x:28,28:float32", "batch dimension"),
    ("x:None,28:complex64", "dtype"),
    ("x:None,a:float32", "not an integer"),
    ("x", "NAME:SHAPE"),
    ("x/y:None,3", "valid input name"),
])
def test_input_spec_syntax_is_checked(text: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        InputSpec.parse(text)


def test_input_spec_parses_and_the_config_takes_only_specs() -> None:
    spec = InputSpec.parse("ids: None,16 :int32")
    assert spec == InputSpec("ids", (None, 16), "int32")
    assert InputSpec.parse("x:?,3").dtype == "float32"
    with pytest.raises(InputError, match="InputSpec"):
        ExportConfig(input_specs=[{"name": "x"}])  # type: ignore[list-item]
    with pytest.raises(InputError, match="twice"):
        ExportConfig(input_specs=[spec, spec])


def test_input_spec_must_name_a_functional_models_inputs(tmp_path: Path) -> None:
    cfg = ExportConfig(validation_samples=16, input_specs=[InputSpec("x", (None, 3))])
    with pytest.raises(InputError, match="not the inputs"):
        export_model(_dict_model(), tmp_path, cfg)


def test_a_layer_failing_in_edgekits_keras_call_is_not_a_tf2onnx_failure() -> None:
    model = keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(3), Broken()])
    with pytest.raises(ConversionError) as err:
        convert(load_source(model))
    text = str(err.value)
    assert "Keras fails calling" in text and "broken layer cannot run" in text
    assert "Broken" in text and "tf2onnx" not in text


def test_the_old_dict_failure_is_named_as_keras_call_failure() -> None:
    """edgekit used to call a dict-input model with a list: Keras refuses that call, and the
    refusal was reported as 'tf2onnx failed'."""
    import tensorflow as tf

    model = _dict_model()
    source = load_source(model)
    signature = [tf.TensorSpec(s.shape, s.dtype, name=s.name) for s in source.inputs]

    @tf.function(input_signature=signature, autograph=False)
    def as_a_list(*xs: object) -> object:
        return [model(list(xs), training=False)]

    source.function = as_a_list
    with pytest.raises(ConversionError) as err:
        convert(source)
    text = str(err.value)
    assert "Keras fails calling tabular" in text and "structure of `inputs`" in text
    assert "tf2onnx" not in text
