"""Keras -> ONNX export: real TensorFlow, tf2onnx and onnxruntime on small models."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli.main import cli

if TYPE_CHECKING:
    import keras
else:
    keras = pytest.importorskip("keras")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edgekit.convert import ExportConfig, export_model  # noqa: E402
from edgekit.errors import ConversionError, InputError, ValidationError  # noqa: E402
from edgekit.metadata import ModelMetadata, Preprocessing, save_keras_metadata  # noqa: E402

pytestmark = pytest.mark.file_seconds(25)


def _randomize(model: keras.Model) -> keras.Model:
    """Non-zero weights everywhere (fresh biases are zeros, which converters fold away)."""
    rng = np.random.default_rng(0)
    for w in model.weights:
        w.assign(rng.normal(0, 0.1, w.shape).astype("float32"))
    return model


def _image_cnn() -> keras.Model:
    return _randomize(keras.Sequential(
        [
            keras.Input((28, 28, 1), name="image"),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax", name="probs"),
        ],
        name="image_cnn",
    ))


def _text_lstm() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((100,), dtype="int32", name="tokens"),
            keras.layers.Embedding(10_000, 64),
            keras.layers.LSTM(32, use_cudnn=False),
            keras.layers.Dense(2, activation="softmax"),
        ],
        name="text_lstm",
    )


def _two_inputs() -> keras.Model:
    a = keras.Input((8,), name="features")
    b = keras.Input((4,), name="extra")
    h = keras.layers.Concatenate()([keras.layers.Dense(16, activation="relu")(a), b])
    return keras.Model([a, b], keras.layers.Dense(3, activation="softmax", name="probs")(h))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    keras.utils.set_random_seed(0)
    paths = {}
    for name, build in [("cnn", _image_cnn), ("lstm", _text_lstm), ("two", _two_inputs)]:
        paths[name] = d / f"{name}.keras"
        build().save(paths[name])
    return paths


@pytest.fixture(scope="module")
def cnn_export(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    return export_model(models["cnn"], tmp_path_factory.mktemp("cnn_out"))


def _snapshot(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")} if d.exists() else set()


# --- acceptance ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_cnn_matches_keras_at_batch_1_and_64(models: dict[str, Path], cnn_export) -> None:
    assert cnn_export.onnx_path.name == "cnn.onnx"
    assert cnn_export.report_path.name == "cnn.report.json"
    model = keras.models.load_model(models["cnn"])
    x = np.random.default_rng(1).random((1000, 28, 28, 1), dtype=np.float32)
    ref = model.predict(x, batch_size=100, verbose=0)
    sess = ort.InferenceSession(str(cnn_export.onnx_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    assert sess.get_inputs()[0].shape[0] != 1  # dynamic batch dimension
    for bs in (1, 64):
        got = np.concatenate([sess.run(None, {name: x[i : i + bs]})[0] for i in range(0, 1000, bs)])
        assert np.abs(got - ref).max() <= 1e-5, bs


@pytest.mark.slow
def test_text_lstm_is_one_lstm_op(models: dict[str, Path], tmp_path: Path) -> None:
    result = export_model(models["lstm"], tmp_path)
    ops = [n.op_type for n in onnx.load(str(result.onnx_path)).graph.node]
    assert ops.count("LSTM") == 1
    assert "Loop" not in ops and "Scan" not in ops
    assert result.validation.max_abs_error <= 1e-5
    model = keras.models.load_model(models["lstm"])
    ids = np.random.default_rng(2).integers(0, 10_000, (200, 100)).astype(np.int32)
    sess = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert inp.type == "tensor(int32)"
    got = sess.run(None, {inp.name: ids})[0]
    assert np.abs(got - model.predict(ids, verbose=0)).max() <= 1e-5


@pytest.mark.slow
def test_two_input_functional_model(models: dict[str, Path], tmp_path: Path) -> None:
    result = export_model(models["two"], tmp_path)
    assert result.validation.passed
    report = cast(dict[str, Any], result.report)
    assert [i["name"] for i in report["inputs"]] == ["features", "extra"]
    sess = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["features", "extra"]
    assert [o.name for o in sess.get_outputs()] == ["probs"]


def test_report_and_metadata(cnn_export, models: dict[str, Path]) -> None:
    report = json.loads(cnn_export.report_path.read_text())
    for lib in ("tensorflow-cpu", "tf2onnx", "onnx", "onnxruntime"):
        assert lib in report["versions"]
    assert set(report["timings_s"]) >= {"load", "convert", "validate"}
    blob = cnn_export.onnx_path.read_bytes()
    assert report["files"]["onnx"] == {"path": "cnn.onnx", "size_bytes": len(blob),
                                       "sha256": hashlib.sha256(blob).hexdigest()}
    # only the opsets its nodes use: tf2onnx imports ai.onnx.ml, which no node here needs
    assert [(o.domain, o.version) for o in onnx.load(str(cnn_export.onnx_path)).opset_import
            ] == [("", 17)]
    v = report["validation"]
    assert v["max_abs_error"] <= 1e-4 and v["top1_agreement"] == 1.0 and v["n_samples"] == 256
    props = {p.key: p.value for p in onnx.load(str(cnn_export.onnx_path)).metadata_props}
    assert props["edgekit.source"] == "cnn.keras"
    assert len(props["edgekit.source_sha256"]) == 64
    assert props["edgekit.opset"] == "17"
    assert json.loads(props["edgekit.inputs"]) == [
        {"name": "image", "shape": [None, 28, 28, 1], "dtype": "float32"}
    ]
    assert json.loads(props["edgekit.outputs"])[0]["shape"] == [None, 10]


@pytest.mark.slow
def test_keras_metadata_and_labels_reach_onnx(tmp_path: Path) -> None:
    path = tmp_path / "m.keras"
    _two_inputs().save(path)
    pre = Preprocessing(kind="tabular", mean=[0.0] * 8, std=[1.0] * 8)
    save_keras_metadata(path, ModelMetadata(labels=["a", "b", "c"], preprocessing=pre))
    result = export_model(path, tmp_path / "out")
    props = {p.key: p.value for p in onnx.load(str(result.onnx_path)).metadata_props}
    meta = ModelMetadata.from_props(props)
    assert meta.labels == ["a", "b", "c"]
    assert meta.preprocessing == pre
    labels = tmp_path / "labels.txt"
    labels.write_text("x\ny\n")
    args = ["export", str(path), "-o", str(tmp_path / "o2"), "--labels", str(labels)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1 and "2 labels given but the model has 3 output classes" in res.output
    assert not (tmp_path / "o2").exists()


@pytest.mark.slow
def test_validation_data_uint8_is_scaled_by_metadata(tmp_path: Path) -> None:
    path = tmp_path / "img.keras"
    _image_cnn().save(path)
    save_keras_metadata(
        path,
        ModelMetadata(preprocessing=Preprocessing(kind="image", scale=1 / 255, raw_dtype="uint8")),
    )
    data = tmp_path / "val.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.integers(0, 256, (50, 28, 28), dtype=np.uint8), y=rng.integers(0, 10, 50))
    result = export_model(path, tmp_path / "out", validation_data=data)
    v = cast(dict[str, Any], result.report)["validation"]
    assert v["n_samples"] == 50 and "preprocessed" in v["notes"][0]


@pytest.mark.slow
def test_h5_and_savedmodel_sources(tmp_path: Path) -> None:
    model = _two_inputs()
    model.save(tmp_path / "legacy.h5")
    r1 = export_model(tmp_path / "legacy.h5", tmp_path / "out")
    assert r1.onnx_path.name == "legacy.onnx" and r1.validation.passed
    single = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, activation="softmax")])
    single.export(tmp_path / "saved")
    r2 = export_model(tmp_path / "saved", tmp_path / "out")
    assert r2.onnx_path.name == "saved.onnx" and r2.validation.max_abs_error <= 1e-5


@pytest.mark.slow
def test_in_memory_model_and_force(tmp_path: Path) -> None:
    model = _two_inputs()
    export_model(model, tmp_path)
    before = (tmp_path / f"{model.name}.onnx").stat().st_mtime_ns
    export_model(model, tmp_path, ExportConfig(force=True))
    assert (tmp_path / f"{model.name}.onnx").stat().st_mtime_ns >= before


# --- errors: message, exit code, nothing new in OUTDIR ------------------------------------------
def _run_cli(args: list[str]):
    res = CliRunner().invoke(cli, args)
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output
    return res


def _expect_error(args: list[str], outdir: Path, message: str, code: int = 1) -> None:
    before = _snapshot(outdir)
    res = _run_cli(args)
    assert res.exit_code == code, res.output
    assert "error:" in res.output and message in res.output, res.output
    assert _snapshot(outdir) == before


def test_error_missing_path(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _expect_error(["export", str(tmp_path / "nope.keras"), "-o", str(out)], out, "does not exist",
                  code=2)  # a missing input is a usage error
    assert not out.exists()


def test_error_not_a_model(tmp_path: Path) -> None:
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    out = tmp_path / "out"
    out.mkdir()
    _expect_error(["export", str(txt), "-o", str(out)], out, "not a model edgekit can export")
    fake = tmp_path / "fake.keras"
    fake.write_text("this is not a zip")
    _expect_error(["export", str(fake), "-o", str(out)], out, "not a valid .keras file")
    folder = tmp_path / "folder"
    folder.mkdir()
    _expect_error(["export", str(folder), "-o", str(out)], out, "not a SavedModel")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_error_truncated_file(tmp_path: Path, models: dict[str, Path], suffix: str) -> None:
    src = tmp_path / f"full{suffix}"
    if suffix == ".keras":
        src.write_bytes(models["cnn"].read_bytes())
    else:
        _two_inputs().save(src)
    bad = tmp_path / f"truncated{suffix}"
    data = src.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    _expect_error(["export", str(bad), "-o", str(out)], out, "truncated or corrupt")
    assert (out / "keep.txt").read_text() == "user file"


@pytest.mark.slow
def test_error_existing_output_without_force(tmp_path: Path, models: dict[str, Path]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "cnn.onnx").write_bytes(b"precious")
    _expect_error(["export", str(models["cnn"]), "-o", str(out)], out, "already exists")
    assert (out / "cnn.onnx").read_bytes() == b"precious"
    res = _run_cli(["export", str(models["cnn"]), "-o", str(out), "--force"])
    assert res.exit_code == 0, res.output
    assert (out / "cnn.onnx").read_bytes()[:8] != b"precious"


@pytest.mark.slow
@keras.saving.register_keras_serializable(package="test_export")
class RawBucketize(keras.layers.Layer):
    """TensorFlow's Bucketize op called directly (Keras' Discretization is lowered to standard
    ops by edgekit; the raw op has no ONNX conversion)."""

    def call(self, x: Any) -> Any:
        import tensorflow as tf

        return tf.cast(tf.raw_ops.Bucketize(input=x, boundaries=[0.0, 1.0]), "float32")


def test_error_unsupported_layer(tmp_path: Path) -> None:
    model = keras.Sequential([keras.Input((4,)), RawBucketize(), keras.layers.Dense(2)])
    path = tmp_path / "bucket.keras"
    model.save(path)
    out = tmp_path / "out"
    _expect_error(["export", str(path), "-o", str(out)], out, "unsupported layer")
    with pytest.raises(ConversionError, match="Bucketize"):
        export_model(path, out)
    assert not out.exists()


def test_error_opset_above_18(tmp_path: Path, models: dict[str, Path]) -> None:
    out = tmp_path / "out"
    _expect_error(["export", str(models["cnn"]), "-o", str(out), "--opset", "19"], out, "opset 19")
    with pytest.raises(InputError, match="18 at most"):
        ExportConfig(opset=19)


@pytest.mark.slow
def test_error_validation_above_atol_writes_nothing(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    out = tmp_path / "out"
    _expect_error(
        ["export", str(models["cnn"]), "-o", str(out), "--atol", "1e-12", "--rtol", "0",
         "--no-noise-envelope"], out,  # float noise passes within Keras' own noise otherwise
        "differ from Keras beyond atol 1e-12 + rtol 0 x |reference|",
    )
    with pytest.raises(ValidationError, match="elements .* fail, worst at"):
        export_model(models["cnn"], out, ExportConfig(atol=1e-12, rtol=0, noise_envelope=False))
    assert not out.exists()


def test_error_bad_validation_data(tmp_path: Path, models: dict[str, Path]) -> None:
    out = tmp_path / "out"
    bad_shape = tmp_path / "shape.npz"
    np.savez(bad_shape, x=np.zeros((4, 32, 32, 1), np.float32))
    _expect_error(
        ["export", str(models["cnn"]), "-o", str(out), "--validation-data", str(bad_shape)],
        out, "the model expects (N, 28, 28, 1)",
    )
    nan = tmp_path / "nan.npz"
    x = np.zeros((4, 28, 28, 1), np.float32)
    x[0, 0, 0, 0] = np.nan
    np.savez(nan, x=x)
    _expect_error(
        ["export", str(models["cnn"]), "-o", str(out), "--validation-data", str(nan)], out, "NaN"
    )
    empty = tmp_path / "empty.npz"
    np.savez(empty, x=np.zeros((0, 28, 28, 1), np.float32))
    _expect_error(
        ["export", str(models["cnn"]), "-o", str(out), "--validation-data", str(empty)],
        out,
        "empty",
    )


def test_usage_error_exit_2(tmp_path: Path) -> None:
    model = tmp_path / "m.keras"
    model.write_bytes(b"")  # exists: the missing -o is what is reported
    res = _run_cli(["export", str(model)])
    assert res.exit_code == 2 and "Missing option" in res.output and "-o" in res.output


# --- inspect ------------------------------------------------------------------------------------
def test_inspect_text_and_json(cnn_export, tmp_path: Path) -> None:
    res = _run_cli(["inspect", str(cnn_export.onnx_path)])
    assert res.exit_code == 0 and "Conv" in res.output and "parameters" in res.output
    res = _run_cli(["inspect", str(cnn_export.onnx_path), "--json"])
    info = json.loads(res.output)
    assert info["op_histogram"]["Conv"] == 2
    assert info["parameters"] == _image_cnn().count_params()
    assert info["opset"]["ai.onnx"] == 17
    assert info["inputs"][0]["name"] == "image"
    assert info["metadata"]["edgekit.source"] == "cnn.keras"
    corrupt = tmp_path / "bad.onnx"
    corrupt.write_bytes(cnn_export.onnx_path.read_bytes()[:100])
    res = _run_cli(["inspect", str(corrupt)])
    assert res.exit_code == 1 and "not a valid ONNX model" in res.output
    res = _run_cli(["inspect", str(tmp_path / "missing.onnx")])
    assert res.exit_code == 2 and "does not exist" in res.output


# --- packaging ----------------------------------------------------------------------------------
def _python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


def test_import_edgekit_does_not_import_tensorflow() -> None:
    res = _python(
        "import sys, edgekit, edgekit.cli, edgekit.convert, edgekit.metadata, edgekit.io.onnxfile\n"
        "heavy = [m for m in ('tensorflow', 'tf2onnx', 'keras', 'onnx') if m in sys.modules]\n"
        "print(heavy)"
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_missing_extra_names_it(tmp_path: Path, models: dict[str, Path]) -> None:
    # Simulate an install without the export extra: tensorflow cannot be imported.
    res = _python(
        "import sys; sys.modules['tensorflow'] = None\n"
        "from edgekit.cli.main import main\n"
        f"main(['export', {str(models['cnn'])!r}, '-o', {str(tmp_path / 'o')!r}])"
    )
    assert res.returncode == 1
    assert 'pip install "edgekit[export]"' in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "o").exists()


def test_unused_opset_imports_are_dropped_and_used_ones_kept() -> None:
    """A domain used only inside a Loop body or a local function stays; unused ones go."""
    from onnx import TensorProto, helper

    from edgekit.convert.graph import drop_unused_opsets

    body = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["c_out"]),
         helper.make_node("Binarizer", ["v"], ["v_out"], domain="ai.onnx.ml")],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("c", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [2])])
    loop = helper.make_node("Loop", ["n", "cond", "x"], ["y"], body=body)
    fn = helper.make_function("custom.fn", "Twice", ["a"], ["b"],
                              [helper.make_node("Add", ["a", "a"], ["b"])],
                              [helper.make_opsetid("", 17)])
    graph = helper.make_graph(
        [loop, helper.make_node("Twice", ["y"], ["z"], domain="custom.fn")], "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in
         [("n", TensorProto.INT64, []), ("cond", TensorProto.BOOL, []),
          ("x", TensorProto.FLOAT, [2])]],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])])
    opsets = [("", 17), ("ai.onnx.ml", 2), ("custom.fn", 1), ("com.microsoft", 1)]
    model = helper.make_model(graph, functions=[fn],
                              opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    assert drop_unused_opsets(model) == ["com.microsoft"]
    assert [o.domain for o in model.opset_import] == ["", "ai.onnx.ml", "custom.fn"]
    model.graph.node.pop()  # Twice gone; the function's own domain is still declared by it
    del model.graph.node[0].attribute[:]
    assert drop_unused_opsets(model) == ["ai.onnx.ml"]
