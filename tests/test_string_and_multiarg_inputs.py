"""Inputs as Keras has them, continued (issue #23): subclassed models whose ``call`` takes
several tensors (``call(self, x, y)``), and models that read text themselves (a string input
into a ``StringLookup``), exported end to end: synthetic and file validation, int8, the
per-engine proof (OpenVINO has no string tensors) and the runtime.

Real Keras models built here, exported with real TensorFlow, tf2onnx, onnxruntime and
OpenVINO; values are checked against Keras.
"""

from __future__ import annotations

import json
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
    export_model,
    load_source,
    synthetic_inputs,
)
from edgekit.errors import DataError, InputError, ModelLoadError  # noqa: E402
from edgekit.inputs.data import Dataset, load_dataset  # noqa: E402
from edgekit.inputs.synthetic import OOV_WORDS  # noqa: E402
from edgekit.runtime import EdgeModel  # noqa: E402

pytestmark = pytest.mark.file_seconds(15)

CFG = ExportConfig(validation_samples=16)
RNG = np.random.default_rng(0)
STR = onnx.TensorProto.STRING
FLOAT = onnx.TensorProto.FLOAT


def _input_types(path: Path) -> dict[str, tuple[int, list[int]]]:
    """ONNX input name -> (elem type, dims; 0 = dynamic), in the file's order."""
    return {i.name: (i.type.tensor_type.elem_type,
                     [d.dim_value for d in i.type.tensor_type.shape.dim])
            for i in onnx.load(str(path)).graph.input}


# ------------------------------------------------------------------ call(self, x, y)
@keras.saving.register_keras_serializable(package="edgekit_test_multiarg")
class ScaledByY(keras.Model):
    """``call(x, y)`` with x (N, 4) and y (N, 1), built by ``build(y_shape, x_shape)``: the
    build names its shapes in the other order than the call (as in Keras' own export test),
    and x and y differ in shape, so a swap cannot go unnoticed."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(3)

    def build(self, y_shape: tuple[int, ...], x_shape: tuple[int, ...]) -> None:
        self.dense.build(x_shape)

    def call(self, x: object, y: object) -> object:
        return self.dense(x) * y + y


class KerasTwoInputs(keras.Model):
    """Keras' ``ExportONNXTest.test_model_with_multiple_inputs`` model, as it is there."""

    def call(self, x: object, y: object) -> object:
        return keras.ops.add(x, y)

    def build(self, y_shape: object, x_shape: object) -> None:
        self.built = True


class OneShapeForTwo(keras.Model):
    """``call(x, y)`` whose ``build`` takes one shape: Keras records only x's."""

    def build(self, input_shape: object) -> None:
        self.built = True

    def call(self, x: object, y: object) -> object:
        return keras.ops.multiply(x, y)


def _xy(n: int) -> dict[str, np.ndarray]:
    return {"x": RNG.normal(size=(n, 4)).astype("float32"),
            "y": RNG.uniform(0.5, 2.0, (n, 1)).astype("float32")}


def _scaled() -> ScaledByY:
    keras.utils.set_random_seed(0)
    model = ScaledByY()
    xy = _xy(2)
    model(xy["x"], xy["y"])  # built by one call, as Keras' export requires
    return model


@pytest.mark.slow
def test_call_with_two_tensors_exports_inputs_named_after_its_arguments(tmp_path: Path) -> None:
    model = _scaled()
    assert model._build_shapes_dict == {"y_shape": (2, 1), "x_shape": (2, 4)}  # build's order
    res = export_model(model, tmp_path, CFG)
    assert _input_types(res.onnx_path) == {"x": (FLOAT, [0, 4]), "y": (FLOAT, [0, 1])}
    assert res.validation.max_abs_error < 1e-5
    feeds = _xy(5)
    want = np.asarray(model(feeds["x"], feeds["y"]))
    with EdgeModel(res.onnx_path) as edge:
        np.testing.assert_allclose(edge.run(feeds)[0], want, rtol=1e-5, atol=1e-6)
        swapped = {"y": feeds["y"], "x": feeds["x"]}  # by name, whatever the dict order
        np.testing.assert_allclose(edge.run(swapped)[0], want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_keras_own_two_input_test_model_exports_like_keras(tmp_path: Path) -> None:
    model = KerasTwoInputs()
    feeds = _xy(3) | {"y": RNG.normal(size=(3, 4)).astype("float32")}
    model(feeds["x"], feeds["y"])
    res = export_model(model, tmp_path, CFG)
    assert list(_input_types(res.onnx_path)) == ["x", "y"]
    np.testing.assert_allclose(EdgeModel(res.onnx_path).run(feeds)[0],
                               np.asarray(model(feeds["x"], feeds["y"])), atol=1e-6)


@pytest.mark.slow
def test_input_specs_named_after_the_arguments_take_the_calls_order(tmp_path: Path) -> None:
    keras.utils.set_random_seed(1)
    model = ScaledByY()  # never called: no build shapes
    specs = [InputSpec("y", (None, 1)), InputSpec("x", (None, 4))]  # given in another order
    res = export_model(model, tmp_path, ExportConfig(validation_samples=16, input_specs=specs))
    assert list(_input_types(res.onnx_path)) == ["x", "y"]
    feeds = _xy(4)
    np.testing.assert_allclose(EdgeModel(res.onnx_path).run(feeds)[0],
                               np.asarray(model(feeds["x"], feeds["y"])), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_data_arrays_named_after_the_arguments_give_the_signature(tmp_path: Path) -> None:
    keras.utils.set_random_seed(2)
    model = ScaledByY()  # never called
    data = _xy(12)
    res = export_model(model, tmp_path, CFG, validation_data=Dataset(dict(data)))
    assert _input_types(res.onnx_path) == {"x": (FLOAT, [0, 4]), "y": (FLOAT, [0, 1])}
    assert res.validation.n_samples == 12
    np.testing.assert_allclose(EdgeModel(res.onnx_path).run(data)[0],
                               np.asarray(model(data["x"], data["y"])), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_cli_input_spec_per_argument_of_a_saved_model(tmp_path: Path) -> None:
    model = _scaled()
    model.save(tmp_path / "scaled.keras")
    res = CliRunner().invoke(cli, ["export", str(tmp_path / "scaled.keras"), "-o",
                                   str(tmp_path / "out"), "--validation-samples", "16",
                                   "--input-spec", "y:None,1", "--input-spec", "x:None,4"])
    assert res.exit_code == 0, res.output
    onnx_path = tmp_path / "out" / "scaled.onnx"
    assert _input_types(onnx_path) == {"x": (FLOAT, [0, 4]), "y": (FLOAT, [0, 1])}
    feeds = _xy(3)
    want = np.asarray(model(feeds["x"], feeds["y"]))
    np.testing.assert_allclose(EdgeModel(onnx_path).run(feeds)[0], want, rtol=1e-5, atol=1e-6)
    # without specs: the build shapes saved in the file, per argument
    res = CliRunner().invoke(cli, ["export", str(tmp_path / "scaled.keras"), "-o",
                                   str(tmp_path / "own"), "--validation-samples", "16"])
    assert res.exit_code == 0, res.output
    assert list(_input_types(tmp_path / "own" / "scaled.onnx")) == ["x", "y"]
    np.testing.assert_allclose(EdgeModel(tmp_path / "own" / "scaled.onnx").run(feeds)[0], want,
                               rtol=1e-5, atol=1e-6)


def test_one_recorded_shape_for_two_arguments_says_which_specs_to_pass(tmp_path: Path) -> None:
    model = OneShapeForTwo()
    model(np.ones((2, 3), "float32"), np.ones((2, 3), "float32"))
    assert list(model._build_shapes_dict) == ["input_shape"]
    with pytest.raises(InputError, match=r"called with 2 tensors \(x, y\)") as err:
        export_model(model, tmp_path, CFG)
    assert "--input-spec" in (err.value.hint or "") and "x, y" in (err.value.hint or "")
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------ string inputs
CITIES = ["paris", "rome", "oslo", "lima"]


def _city_model(name: str = "cities") -> keras.Model:
    """Text in, a StringLookup (lowered), an Embedding and Dense layers big enough (256 KiB)
    for ``--quantize auto`` to build a dynamic int8 variant."""
    keras.utils.set_random_seed(3)
    city = keras.Input((1,), dtype="string", name="city")
    ids = keras.layers.StringLookup(vocabulary=CITIES)(city)
    h = keras.layers.Flatten()(keras.layers.Embedding(len(CITIES) + 1, 64)(ids))
    h = keras.layers.Dense(1024, activation="relu")(h)
    return keras.Model(city, keras.layers.Dense(3, activation="softmax")(h), name=name)


def _mixed_model() -> keras.Model:
    """A dict of a string input and a float input."""
    keras.utils.set_random_seed(4)
    city = keras.Input((1,), dtype="string", name="city")
    num = keras.Input((2,), name="num")
    ids = keras.layers.StringLookup(vocabulary=CITIES)(city)
    h = keras.layers.Flatten()(keras.layers.Embedding(len(CITIES) + 1, 3)(ids))
    h = keras.layers.Concatenate()([h, num])
    return keras.Model({"city": city, "num": num}, keras.layers.Dense(2)(h), name="mixed")


def _cities(n: int) -> np.ndarray:
    """``(n, 1)`` str: vocabulary words and out-of-vocabulary ones (the empty string too)."""
    words = np.array([*CITIES, "bergen", "", "Zürich"])
    return words[RNG.integers(0, len(words), (n, 1))]


def _keras(model: keras.Model, x: object) -> np.ndarray:
    return np.asarray(model(x, training=False))


def _openvino_record(report: dict[str, object]) -> dict[str, object] | None:
    engines = report.get("engines")
    assert isinstance(engines, dict)
    return engines.get("openvino")


@pytest.mark.slow
def test_string_model_from_a_keras_file_through_the_cli_with_int8(tmp_path: Path) -> None:
    model = _city_model()
    model.save(tmp_path / "cities.keras")
    data = _cities(40)
    np.savez(tmp_path / "cal.npz", city=data)  # a str array: no pickle
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["export", str(tmp_path / "cities.keras"), "-o", str(out),
                                   "--calibration", str(tmp_path / "cal.npz"),
                                   "--quantize", "int8"])
    assert res.exit_code == 0, res.output
    for name in ("cities.onnx", "cities.int8.onnx"):  # strings stay strings
        assert _input_types(out / name) == {"city": (STR, [0, 1])}
    report = json.loads((out / "cities.report.json").read_text())
    assert str(tmp_path / "cal.npz") in report["validation"]["data"]
    assert report["validation"]["max_abs_error"] < 1e-5
    ov = _openvino_record(report)
    if ov is not None:  # OpenVINO installed: a failed check with the reason, no crash
        assert ov["loads"] is False and ov["passed"] is False
        assert "no string tensors" in str(ov["reason"]) and "'city'" in str(ov["reason"])
    want = _keras(model, data)
    with EdgeModel(out / "cities.onnx") as fp32:
        np.testing.assert_allclose(fp32.run({"city": data})[0], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(fp32.predict(data.astype(object)), want, rtol=1e-4,
                                   atol=1e-6)
        one = fp32.predict("rome")  # one string is one sample of the (N, 1) input
        np.testing.assert_allclose(one, _keras(model, np.array([["rome"]])), rtol=1e-4,
                                   atol=1e-6)
        batch = fp32.predict(["oslo", "nowhere"])  # a list of strings: a batch
        np.testing.assert_allclose(batch, _keras(model, np.array([["oslo"], ["nowhere"]])),
                                   rtol=1e-4, atol=1e-6)
    with EdgeModel(out / "cities.int8.onnx") as int8:
        got = int8.predict(data)
    assert np.abs(got - want).max() < 0.05
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.9
    ran = CliRunner().invoke(cli, ["run", str(out / "cities.onnx"), "--text", "lima"])
    assert ran.exit_code == 0, ran.output
    row = _keras(model, np.array([["lima"]]))[0]
    assert f"{row.max():.4f}" in ran.output


@pytest.mark.slow
def test_string_model_quantize_auto_and_synthetic_validation(tmp_path: Path) -> None:
    model = _city_model()
    source = load_source(model)
    assert [(s.name, s.dtype) for s in source.inputs] == [("city", "object")]
    words = synthetic_inputs(source, 64)["city"]
    assert words.dtype == object and words.shape == (64, 1)
    drawn = set(words.reshape(-1))  # the lookup's words and OOV words, never random bytes
    assert drawn <= set(CITIES) | set(OOV_WORDS)
    assert drawn & set(CITIES) and drawn & set(OOV_WORDS)
    # auto's choice of mode, not its speed check (tests/test_quantize_speed.py), which could
    # drop the variant on a machine where it is slower
    res = CliRunner().invoke(cli, ["export", str(_save(model, tmp_path)), "-o",
                                   str(tmp_path / "out"), "--quantize", "auto",
                                   "--no-speed-check"])
    assert res.exit_code == 0, res.output
    assert "synthetic" in res.output and "dynamic" in res.output
    variant = tmp_path / "out" / "cities.dynamic.onnx"
    assert _input_types(variant) == {"city": (STR, [0, 1])}
    report = json.loads((tmp_path / "out" / "cities.report.json").read_text())
    assert report["validation"]["data"].startswith("synthetic")
    data = _cities(16)
    with EdgeModel(variant) as edge:
        got = edge.predict(data)
    assert np.abs(got - _keras(model, data)).max() < 0.05


def _save(model: keras.Model, where: Path) -> Path:
    path = where / f"{model.name}.keras"
    model.save(path)
    return path


@pytest.mark.slow
def test_mixed_string_and_float_dict_model_exports_and_runs(tmp_path: Path) -> None:
    model = _mixed_model()
    res = export_model(model, tmp_path, CFG)
    assert _input_types(res.onnx_path) == {"city": (STR, [0, 1]), "num": (FLOAT, [0, 2])}
    assert res.validation.max_abs_error < 1e-5
    ov = _openvino_record(res.report)
    if ov is not None:
        assert ov["loads"] is False and "no string tensors" in str(ov["reason"])
    feeds = {"city": _cities(6), "num": RNG.normal(size=(6, 2)).astype("float32")}
    want = _keras(model, feeds)
    with EdgeModel(res.onnx_path) as edge:
        np.testing.assert_allclose(edge.run(feeds)[0], want, rtol=1e-5, atol=1e-6)
        objects = {"city": feeds["city"].astype(object), "num": feeds["num"]}
        np.testing.assert_allclose(edge.run(objects)[0], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(edge.predict(feeds), want, rtol=1e-5, atol=1e-6)
        with pytest.raises(InputError, match="takes text") as err:
            edge.run({"city": np.zeros((2, 1), "float32"), "num": feeds["num"][:2]})
        assert err.value.hint
        with pytest.raises(InputError, match="element 1 is int"):
            edge.run({"city": np.array([["rome"], [3]], object), "num": feeds["num"][:2]})
    if _openvino_record(res.report) is not None:
        with pytest.raises(ModelLoadError, match="no string tensors") as load_err:
            EdgeModel(res.onnx_path, engine="openvino", check_engine=False)
        assert "onnxruntime" in (load_err.value.hint or "")


@pytest.mark.slow
def test_mixed_model_validates_on_an_npz_of_str_and_floats(tmp_path: Path) -> None:
    model = _mixed_model()
    data = {"city": _cities(20), "num": RNG.normal(size=(20, 2)).astype("float32")}
    np.savez(tmp_path / "val.npz", city=data["city"], num=data["num"])
    res = export_model(_save(model, tmp_path), tmp_path / "out", CFG,
                       validation_data=tmp_path / "val.npz")
    assert res.validation.n_samples == 16 and res.validation.max_abs_error < 1e-5
    with EdgeModel(res.onnx_path) as edge:
        np.testing.assert_allclose(edge.run(data)[0], _keras(model, data), rtol=1e-5,
                                   atol=1e-6)


# ------------------------------------------------------------------ text data, refused
def test_text_arrays_load_as_str_objects_and_pickled_ones_are_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "str.npz", city=np.array([["oslo"], ["Zürich"]]),
             raw=np.array([[b"rome"], [b"lima"]]))
    ds = load_dataset(tmp_path / "str.npz", ["city", "raw"])
    assert ds.inputs["city"].dtype == object and ds.inputs["city"][1, 0] == "Zürich"
    assert ds.inputs["raw"].tolist() == [["rome"], ["lima"]]  # bytes decoded as UTF-8
    np.savez(tmp_path / "obj.npz", city=np.array([["oslo"]], dtype=object))
    with pytest.raises(DataError, match="pickle") as err:
        load_dataset(tmp_path / "obj.npz", ["city"])
    assert "dtype=str" in (err.value.hint or "")


def test_string_input_spec_and_text_for_numbers_are_checked() -> None:
    spec = InputSpec.parse("city:None,1:string")
    assert spec.info().dtype == "object"
    from edgekit.inputs.prepare import prepare_inputs
    from edgekit.metadata import ModelMetadata

    with pytest.raises(DataError, match=r"takes float32 numbers, got non-numeric data \(text"):
        prepare_inputs([InputSpec("num", (None, 2)).info()],
                       Dataset({"num": np.array([["a", "b"]])}, source="t.npz"), ModelMetadata())
    with pytest.raises(DataError, match="takes text"):
        prepare_inputs([spec.info()], Dataset({"city": np.ones((2, 1))}, source="t.npz"),
                       ModelMetadata())
    feeds, _ = prepare_inputs([spec.info()], Dataset({"city": np.array([["a"], ["b"]])}),
                              ModelMetadata())
    assert feeds["city"].dtype == object and feeds["city"].tolist() == [["a"], ["b"]]
