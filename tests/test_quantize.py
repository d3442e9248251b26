"""Quantization (int8 / dynamic / fp16), the accuracy gate and ORT format, on small real models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli.main import cli

keras = pytest.importorskip("keras")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("sympy")

from edgekit.convert import ExportConfig, export_model  # noqa: E402
from edgekit.errors import AccuracyGateError, InputError  # noqa: E402
from edgekit.metadata import ModelMetadata, Preprocessing, save_keras_metadata  # noqa: E402
from edgekit.quantize import (  # noqa: E402
    PRESETS,
    CalibrationConfig,
    CalibrationMethod,
    GateConfig,
    OutputConfig,
    QuantizationConfig,
    QuantMode,
    QuantScheme,
    SpeedCheckConfig,
    export_hook,
    quantize_model,
    resolve_mode,
)

pytestmark = pytest.mark.file_seconds(25)


def _files(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()} if d.exists() else set()


@pytest.fixture(scope="module")
def cnn(fashion_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small CNN trained 1 epoch on 3,000 Fashion-MNIST images, its fp32 export, and data."""
    from edgekit.inputs.datasets import load_image_data

    d = tmp_path_factory.mktemp("cnn")
    data = load_image_data(fashion_dir)
    keras.utils.set_random_seed(0)
    m = keras.Sequential([
        keras.Input((28, 28, 1), name="image"),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax", name="probs"),
    ], name="cnn")
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    m.fit(data.x_train[:3000] / 255.0, data.y_train[:3000], epochs=1, batch_size=64, verbose=0)
    path = d / "cnn.keras"
    m.save(path)
    save_keras_metadata(path, ModelMetadata(
        preprocessing=Preprocessing(kind="image", scale=1 / 255, raw_dtype="uint8")))
    np.savez(d / "calib.npz", x=data.x_train[:300], y=data.y_train[:300])  # uint8
    np.savez(d / "eval.npz", x=data.x_test[:1000], y=data.y_test[:1000])
    res = export_model(path, d / "fp32", ExportConfig())
    return {"keras": path, "onnx": res.onnx_path, "calib": d / "calib.npz",
            "eval": d / "eval.npz", "dir": d}


# -- int8 through the export command, with ORT format -----------------------------------------
@pytest.mark.slow
def test_export_int8_ort(cnn: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, [
        "export", str(cnn["keras"]), "-o", str(out), "--quantize", "int8",
        "--calibration", str(cnn["calib"]), "--eval-data", str(cnn["eval"]), "--format", "ort"])
    assert r.exit_code == 0, r.output
    assert _files(out) == {"cnn.onnx", "cnn.report.json", "cnn.int8.onnx", "cnn.int8.quant.json",
                           "cnn.int8.ort", "cnn.int8.required_operators.config"}
    assert "accuracy" in r.output and "NNAPI" in r.output and "CoreML" in r.output
    report = json.loads((out / "cnn.report.json").read_text())
    v = report["variants"]["int8"]
    assert v["size_ratio"] <= 0.5
    assert (out / "cnn.int8.onnx").stat().st_size <= 0.5 * (out / "cnn.onnx").stat().st_size
    ev = v["evaluation"]
    assert ev["samples"] == 1000 and abs(ev["accuracy_drop"]) <= 2.0 and ev["top1_agreement"] > 0.9
    assert any("uint8" in n or "preprocessed" in n for n in v["notes"])
    assert v["calibration"]["samples"] == 256 and {m["ep"] for m in v["mobile"]} >= {"NNAPI"}
    qm = onnx.load(str(out / "cnn.int8.onnx"))
    props = {p.key: p.value for p in qm.metadata_props}
    saved = json.loads(props["edgekit.quantization"])
    assert saved == json.loads((out / "cnn.int8.quant.json").read_text())
    assert saved["scheme"]["per_channel"] is True and saved["mode"] == "int8"
    assert "edgekit.preprocessing" in props  # the fp32 metadata is kept
    # a plain QDQ file: ai.onnx ops only (no QLinearConv / com.microsoft.QGemm)
    assert {n.domain for n in qm.graph.node} <= {"", "ai.onnx"}
    ops = {n.op_type for n in qm.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops and "QLinearConv" not in ops
    # the .ort file (batch fixed to 1 for NNAPI/CoreML) loads and agrees with the .onnx file
    # within int8 rounding (without the saved runtime optimizations replayed, onnxruntime runs
    # its Q/DQ pairs in float instead of fusing them into integer kernels)
    x = (np.load(cnn["eval"])["x"][:16] / 255.0).astype(np.float32)
    a = ort.InferenceSession(str(out / "cnn.int8.onnx"), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(out / "cnn.int8.ort"), providers=["CPUExecutionProvider"])
    assert b.get_inputs()[0].shape[0] == 1
    pa = a.run(None, {"image": x})[0]
    pb = np.concatenate([b.run(None, {"image": x[i:i + 1]})[0] for i in range(len(x))])
    assert np.abs(pa - pb).mean() < 0.01 and (pa.argmax(1) == pb.argmax(1)).mean() >= 0.9
    assert "ai.onnx;11;Conv" in (out / "cnn.int8.required_operators.config").read_text()


def test_fp16_and_dynamic_cnn(cnn: dict[str, Path], tmp_path: Path) -> None:
    cfg = QuantizationConfig(mode=QuantMode.FP16)
    r = quantize_model(cnn["onnx"], tmp_path, config=cfg, eval_data=cnn["eval"])
    assert r.path == tmp_path / "cnn.fp16.onnx" and r.evaluation is not None
    ev = cast(dict[str, Any], r.evaluation)
    assert ev["max_abs_error"] < 1e-2
    # the API's summary is what the CLI prints for the variant
    assert r.summary().splitlines() == [
        f"wrote {r.path} ({r.size_bytes / 1024:.1f} KiB, "
        f"{100 * cast(float, r.to_dict()['size_ratio']):.1f}% of fp32)",
        f"fp16 accuracy {ev['accuracy']:.2f}% vs fp32 {ev['fp32_accuracy']:.2f}% (drop "
        f"{ev['accuracy_drop']:+.2f} pt), top-1 agreement {100 * ev['top1_agreement']:.2f}%, "
        f"mean abs diff {ev['mean_abs_error']:.2g}, max {ev['max_abs_error']:.2g} on 1000 "
        f"held-out samples ({ev['data']})",
        "engines: " + ", ".join(f"{e} passed" for e in r.engines),
        *(f"note: {n}" for n in r.notes),
    ]
    assert list(r.engines)[0] == "onnxruntime" and all(e["passed"] for e in r.engines.values())
    assert r.size_ratio <= 0.65  # tiny model: metadata weighs; the shipped CNN is checked in bench
    sess = ort.InferenceSession(str(r.path), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].type == "tensor(float)"
    assert sess.get_outputs()[0].type == "tensor(float)"
    init_types = {i.data_type for i in onnx.load(str(r.path)).graph.initializer if i.dims}
    assert onnx.TensorProto.FLOAT16 in init_types
    d = quantize_model(cnn["onnx"], tmp_path, config=QuantizationConfig(mode=QuantMode.DYNAMIC))
    assert d.path.name == "cnn.dynamic.onnx" and d.size_ratio < 0.5


def test_percentile_calibration_keeps_stdout_clean(cnn: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # onnxruntime's histogram calibrators print progress; edgekit's stdout (--json) stays clean
    cfg = QuantizationConfig(mode=QuantMode.INT8, calibration=CalibrationConfig(
        method=CalibrationMethod.PERCENTILE, samples=32))
    r = quantize_model(cnn["onnx"], tmp_path, config=cfg, calibration=cnn["calib"])
    assert r.path.exists() and r.config.calibration.method.value == "percentile"
    assert capsys.readouterr().out == ""


# -- dynamic int8 on an LSTM -------------------------------------------------------------------
@pytest.mark.slow
def test_dynamic_lstm_and_auto(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    m = keras.Sequential([
        keras.Input((20,), dtype="int32", name="tokens"),
        keras.layers.Embedding(200, 16),
        keras.layers.LSTM(16, use_cudnn=False),
        keras.layers.Dense(2, activation="softmax"),
    ], name="lstm")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 200, (64, 20)).astype(np.int32)
    np.savez(tmp_path / "eval.npz", x=x, y=rng.integers(0, 2, 64))
    # auto's choice of mode, not its speed check (tests/test_quantize_speed.py), which could
    # drop the variant on a machine where it is slower
    res = export_model(m, tmp_path / "out", ExportConfig(), extra_outputs=export_hook(
        QuantizationConfig(mode=QuantMode.AUTO, speed=SpeedCheckConfig(enabled=False)),
        eval_data=tmp_path / "eval.npz"))
    v = cast(dict[str, Any], res.report)["variants"]["dynamic"]
    assert v["requested_mode"] == "auto" and any("recurrent" in n for n in v["notes"])
    assert "DynamicQuantizeLSTM" in v["op_histogram"]
    assert v["evaluation"]["top1_agreement"] >= 0.9
    assert (tmp_path / "out" / "lstm.dynamic.onnx").exists()


def test_resolve_mode_and_config(cnn: dict[str, Path]) -> None:
    proto = onnx.load(str(cnn["onnx"]))
    assert resolve_mode(proto, "auto")[0] is QuantMode.INT8
    assert resolve_mode(proto, "fp16") == (QuantMode.FP16, None)
    c = QuantizationConfig(scheme=QuantScheme.from_preset("avx2", per_channel=None),
                           calibration=CalibrationConfig(samples=10))
    assert c.scheme.reduce_range is True and c.scheme.per_channel is True
    assert QuantizationConfig.from_dict(c.to_dict()) == c
    assert set(PRESETS) == {"avx512_vnni", "avx2", "arm64"}
    for bad in [lambda: QuantScheme(preset="x86"), lambda: CalibrationConfig(samples=0),
                lambda: QuantizationConfig(mode="int4"),  # type: ignore[arg-type]
                lambda: GateConfig(max_accuracy_drop=-1), lambda: OutputConfig(mobile_batch=-1)]:
        with pytest.raises(InputError):
            bad()


# -- the accuracy gate -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sensitive(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A digits MLP made sensitive to activation quantization: one hidden unit is scaled up
    1000x (and its outgoing weights down 1000x), which leaves the fp32 function unchanged (ReLU
    is positively homogeneous) but makes per-tensor uint8 activation ranges useless."""
    from sklearn.datasets import load_digits

    d = tmp_path_factory.mktemp("gate")
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((64,), name="x"),
                          keras.layers.Dense(32, activation="relu", name="hidden"),
                          keras.layers.Dense(10, activation="softmax", name="probs")], name="mlp")
    m.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    m.fit(x[:1400], y[:1400], epochs=15, batch_size=64, verbose=0)
    w1, b1 = m.layers[0].get_weights()
    w2, b2 = m.layers[1].get_weights()
    w1[:, 0] *= 1000
    b1[0] = b1[0] * 1000 + 1000  # large and always active
    w2[0] /= 1000
    b2 -= w2[0] * 1000
    m.layers[0].set_weights([w1, b1])
    m.layers[1].set_weights([w2, b2])
    np.savez(d / "calib.npz", x=x[:400])
    np.savez(d / "eval.npz", x=x[1400:], y=y[1400:])
    res = export_model(m, d / "fp32", ExportConfig(atol=1e-3))
    return {"onnx": res.onnx_path, "calib": d / "calib.npz", "eval": d / "eval.npz"}


@pytest.mark.slow
def test_gate_keeps_nodes_in_float(sensitive: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, [
        "quantize", str(sensitive["onnx"]), "-o", str(out), "--quantize", "int8", "--per-tensor",
        "--calibration", str(sensitive["calib"]), "--eval-data", str(sensitive["eval"]),
        "--max-accuracy-drop", "1.0"])
    assert r.exit_code == 0, r.output
    assert "kept in float" in r.output
    v = json.loads((out / "mlp.report.json").read_text())["variants"]["int8"]
    gate = v["gate"]
    assert gate["met"] and gate["kept_in_float"]
    assert not gate["steps"][0]["met"]  # the model really is sensitive
    assert gate["steps"][0]["lower_bound_pt"] > 1.0
    assert v["evaluation"]["accuracy_drop"] <= 1.0
    saved = json.loads((out / "mlp.int8.quant.json").read_text())
    assert saved["scheme"]["nodes_to_exclude"] == gate["kept_in_float"]


def test_gate_failure_writes_nothing(sensitive: dict[str, Path], tmp_path: Path) -> None:
    cfg = QuantizationConfig(scheme=QuantScheme(per_channel=False),
                             gate=GateConfig(max_accuracy_drop=0.0, max_steps=0))
    with pytest.raises(AccuracyGateError, match="cannot meet .* no int8 model was written"):
        quantize_model(sensitive["onnx"], tmp_path, config=cfg,
                       calibration=sensitive["calib"], eval_data=sensitive["eval"])
    assert _files(tmp_path) == set()


# -- calibration data errors (CLI: message, exit code, nothing written) -----------------------
def _bad_data(d: Path) -> dict[str, tuple[Path | None, str]]:
    rng = np.random.default_rng(0)
    good = rng.integers(0, 255, (20, 28, 28, 1)).astype(np.uint8)
    nan = rng.random((8, 28, 28, 1)).astype(np.float32)
    nan[0, 0, 0, 0] = np.nan
    cases = {
        "shape": (rng.random((8, 32, 32, 1)).astype(np.float32), "expects (N, 28, 28, 1)"),
        "nan": (nan, "NaN/inf"),
        "empty": (np.zeros((0, 28, 28, 1), np.float32), "empty"),
        "strings": (np.array(["a", "b"]), "non-numeric"),
    }
    out: dict[str, tuple[Path | None, str]] = {}
    for name, (arr, msg) in cases.items():
        np.savez(d / f"{name}.npz", x=arr)
        out[name] = (d / f"{name}.npz", msg)
    out["missing"] = (d / "nope.npz", "does not exist")
    np.savez(d / "few.npz", x=good)
    return out


def test_calibration_errors(cnn: dict[str, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    for name, (path, msg) in _bad_data(tmp_path).items():
        r = runner.invoke(cli, ["quantize", str(cnn["onnx"]), "-o", str(out), "--quantize",
                                "int8", "--calibration", str(path)])
        assert r.exit_code == (2 if name == "missing" else 1), (name, r.output)  # 2: usage
        assert "error:" in r.output and msg in r.output, (name, r.output)
        assert _files(out) == {"keep.txt"}, name
    r = runner.invoke(cli, ["quantize", str(cnn["onnx"]), "-o", str(out), "--quantize", "int8"])
    assert r.exit_code == 1 and "needs calibration data" in r.output
    r = runner.invoke(cli, ["quantize", str(tmp_path / "none.onnx"), "-o", str(out)])
    assert r.exit_code == 2 and "does not exist" in r.output
    # fewer samples than asked: a clearly reported adjustment, and uint8 scaled with a note
    r = runner.invoke(cli, ["quantize", str(cnn["onnx"]), "-o", str(out), "--quantize", "int8",
                            "--calibration", str(tmp_path / "few.npz"),
                            "--calibration-samples", "100"])
    assert r.exit_code == 0, r.output
    assert "100 samples asked" in r.output and "only 20" in r.output
    assert "preprocessed with the model's metadata" in r.output
    assert (out / "cnn.int8.onnx").exists()
    r = runner.invoke(cli, ["quantize", str(cnn["onnx"]), "-o", str(out), "--quantize", "int8",
                            "--calibration", str(tmp_path / "few.npz")])
    assert r.exit_code == 1 and "already exist" in r.output


def test_export_quantize_option_errors(cnn: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["export", str(cnn["keras"]), "-o", str(out), "--quantize",
                                 "int8", "--calibration", str(tmp_path / "missing.npz")])
    assert r.exit_code == 2 and "does not exist" in r.output and not out.exists()
    r = CliRunner().invoke(cli, ["export", str(cnn["keras"]), "-o", str(out), "--quantize",
                                 "int8", "--calibration", str(cnn["calib"]),
                                 "--max-accuracy-drop", "1"])
    assert r.exit_code == 1 and "needs labelled --eval-data" in r.output and not out.exists()
    # a failing hook leaves nothing at all behind, fp32 included
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 5), np.float32))
    r = CliRunner().invoke(cli, ["export", str(cnn["keras"]), "-o", str(out), "--quantize",
                                 "int8", "--calibration", str(tmp_path / "bad.npz")])
    assert r.exit_code == 1 and "shape" in r.output and not out.exists()


# -- structural default: a stem conv with few input channels stays in float -----------------
def _conv_inputs_from(model: object, name: str) -> list[str]:
    """What feeds the data and weight inputs of node ``name``: a producer's op type, or
    ``-`` for a graph input / initializer."""
    graph = model.graph  # type: ignore[attr-defined]
    producers = {o: n for n in graph.node for o in n.output}
    conv = next(n for n in graph.node if n.name == name)
    return [producers[i].op_type if i in producers else "-" for i in conv.input[:2]]


def test_int8_keeps_a_few_channel_stem_conv_in_float(cnn: dict[str, Path], tmp_path: Path
                                                     ) -> None:
    """The 1-channel stem conv of an image CNN is slower in int8 than in fp32 on every CPU
    measured (regions.STEM_FLOAT_MAX_CHANNELS): the default int8 file keeps it, its Relu and
    MaxPool in float and says so; --no-stem-in-float quantizes it."""
    from edgekit.quantize.qdq import float_qdq_pairs
    from edgekit.quantize.regions import float_region, stem_and_depthwise

    graph = onnx.load(str(cnn["onnx"])).graph
    stem = stem_and_depthwise(graph)[0]
    region = float_region(graph, stem)
    assert [next(n.op_type for n in graph.node if n.name == r) for r in region] == [
        "Conv", "Relu", "MaxPool"]
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["quantize", str(cnn["onnx"]), "-o", str(out), "--quantize",
                                 "int8", "--calibration", str(cnn["calib"])])
    assert r.exit_code == 0, r.output
    assert f"the stem conv {stem[0]} and its activation/pooling kept in float (1 input" in r.output
    default = onnx.load(str(out / "cnn.int8.onnx"))
    assert "DequantizeLinear" not in _conv_inputs_from(default, stem[0])
    assert float_qdq_pairs(default, region) == []
    saved = json.loads((out / "cnn.int8.quant.json").read_text())
    assert set(region) <= set(saved["scheme"]["nodes_to_exclude"])
    second = next(n.name for n in default.graph.node if n.op_type == "Conv" and n.name != stem[0])
    assert _conv_inputs_from(default, second) == ["DequantizeLinear", "DequantizeLinear"]
    plain = quantize_model(cnn["onnx"], tmp_path, config=QuantizationConfig(
        scheme=QuantScheme(stem_in_float=False)), calibration=cnn["calib"])
    plain_model = onnx.load(str(plain.path))
    assert _conv_inputs_from(plain_model, stem[0]) == ["DequantizeLinear", "DequantizeLinear"]
    assert not any("stem conv" in n for n in plain.notes)


@pytest.mark.parametrize(("channels", "group", "kept"),
                         [(1, 1, True), (3, 1, True), (4, 1, True), (5, 1, False),
                          (16, 1, False), (1, 16, False)])
def test_stem_rule_counts_input_channels(channels: int, group: int, kept: bool) -> None:
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.quantize.regions import stem_float_region

    cin = channels * group
    w = numpy_helper.from_array(np.zeros((16, channels, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="stem", group=group),
         helper.make_node("Relu", ["c"], ["y"], name="relu")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 6, 6])], [w])
    region, note = stem_float_region(graph)
    assert (region == ["stem", "relu"]) is kept and (note is not None) is kept
    assert stem_float_region(graph, always=True)[0] == ["stem", "relu"]


def test_a_regression_output_is_gated_by_its_relative_error(tmp_path: Path) -> None:
    """A declared regression output has no top-1: its real-valued targets in 'y' are not read
    as labels (a classifier's file would be refused), the variant is compared with fp32 by its
    relative error, and the gate holds that error to the budget in percent, without
    --eval-data."""
    from _runtime_models import make_regression_model

    model, data = make_regression_model(tmp_path)
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["quantize", str(model), "-o", str(out), "--quantize", "int8",
                                 "--calibration", str(data), "--max-accuracy-drop", "50"])
    assert r.exit_code == 0, r.output
    v = json.loads((out / "reg.report.json").read_text())["variants"]["int8"]
    ev = v["evaluation"]
    assert ev["classes"] is False and ev["top1_agreement"] is None
    assert ev["accuracy"] is None and ev["fp32_correct_variant_wrong"] is None
    rel = ev["relative_error"]
    assert 0 < rel < 0.5
    assert f"int8 vs fp32: relative error {100 * rel:.2f}%, mean abs diff" in r.output
    for check in v["engines"].values():  # each engine held to the mean difference alone
        assert check["passed"] and check["top1_agreement"] is None, check
    assert v["gate"]["met"] and v["gate"]["steps"][0]["lower_bound_pt"] == \
        pytest.approx(100 * rel, abs=1e-3)  # rounded in the report
    assert "relative error" in v["gate"]["steps"][0]["reason"]
    strict = QuantizationConfig(gate=GateConfig(max_accuracy_drop=100 * rel / 2, max_steps=0))
    with pytest.raises(AccuracyGateError, match="relative error"):
        quantize_model(model, tmp_path / "strict", config=strict, calibration=data)
    assert _files(tmp_path / "strict") == set()


def test_export_gates_a_declared_regression_output_without_eval_data(tmp_path: Path) -> None:
    """``export --output-kind regression --quantize int8 --max-accuracy-drop``: the hooks that
    check the options before the slow export let the gate run against fp32 without
    --eval-data, as quantize and tune do; a classifier's export is still refused up front."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,), name="x"),
                              keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(1)])
    model.save(tmp_path / "reg.keras")
    np.savez(tmp_path / "cal.npz", x=x, y=rng.normal(20.0, 10.0, 200).astype(np.float32))
    args = ["export", str(tmp_path / "reg.keras"), "--quantize", "int8", "--calibration",
            str(tmp_path / "cal.npz"), "--max-accuracy-drop", "50"]
    refused = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "c")])
    assert refused.exit_code != 0
    assert "error: --max-accuracy-drop needs labelled --eval-data" in refused.output
    assert not (tmp_path / "c").exists()
    r = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "r"), "--output-kind",
                                 "regression", "--package", str(tmp_path / "pkg")])
    assert r.exit_code == 0, r.output
    v = json.loads((tmp_path / "r" / "reg.report.json").read_text())["variants"]["int8"]
    assert v["gate"]["met"] and v["evaluation"]["classes"] is False
