"""Correct, portable artifacts: the output contract, plain QDQ files that OpenVINO loads,
mixed precision in the file, honest `auto`, held-out agreement, no stray files, and a
runtime-only install that can inspect and run.

Models: the shipped Fashion-MNIST CNN and breast-cancer MLP, and a keras.applications
MobileNetV2 (96x96, alpha 0.35, weights=None with its BatchNorm statistics set on one batch so
that its outputs are not constant).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from edgekit.cli.main import cli
from edgekit.contract import OutputKind, to_probabilities
from edgekit.quantize.qdq import float_qdq_pairs, nonstandard_ops
from edgekit.runtime.model import EdgeModel

pytestmark = [pytest.mark.file_seconds(110), pytest.mark.slow]

if TYPE_CHECKING:
    import keras
else:
    keras = pytest.importorskip("keras")
ov = pytest.importorskip("openvino")

ROOT = Path(__file__).resolve().parents[1]
CNN = ROOT / "models" / "fashion_cnn.keras"
MLP = ROOT / "models" / "breast_cancer_mlp.keras"
CNN_CAL = ROOT / "calibration_data" / "fashion_mnist.npz"
MLP_CAL = ROOT / "calibration_data" / "breast_cancer.npz"


def _cli(*args: object) -> str:
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r.output


def _variants(out: Path, stem: str) -> list[Path]:
    return sorted(p for p in out.glob(f"{stem}.*.onnx"))


@pytest.fixture(scope="module")
def cnn_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped CNN: int8 (with --format ort), dynamic, fp16 and a tuned model."""
    out = tmp_path_factory.mktemp("cnn")
    _cli("export", CNN, "-o", out, "--quantize", "int8", "--calibration", CNN_CAL,
         "--format", "ort")
    for mode in ("dynamic", "fp16"):
        _cli("quantize", out / "fashion_cnn.onnx", "--quantize", mode, "--calibration", CNN_CAL)
    _cli("tune", out / "fashion_cnn.onnx", "-o", out, "--calibration", CNN_CAL, "--budget", "0.3",
         "--threads", "1")
    return out


@pytest.fixture(scope="module")
def mlp_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped MLP, every explicit mode (auto writes nothing for it, see below)."""
    out = tmp_path_factory.mktemp("mlp")
    _cli("export", MLP, "-o", out, "--quantize", "int8", "--calibration", MLP_CAL)
    for mode in ("dynamic", "fp16"):
        _cli("quantize", out / "breast_cancer_mlp.onnx", "--quantize", mode,
             "--calibration", MLP_CAL)
    return out


def _calibrated_mobilenet(x: np.ndarray) -> keras.Model:
    """MobileNetV2 96x96 alpha 0.35 (weights=None) whose BatchNorm statistics are set from one
    batch of ``x``, so activations neither vanish nor explode and outputs differ per sample."""
    keras.utils.set_random_seed(0)
    m = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None,
                                       classes=10)
    for layer in m.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    m.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0),
              loss="sparse_categorical_crossentropy")
    m.fit(x[:64], np.zeros(64, np.int64), epochs=1, batch_size=64, verbose=0)
    return m


@pytest.fixture(scope="module")
def mnv2_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mnv2")
    rng = np.random.default_rng(0)
    # smooth random images in [-1, 1] (MobileNetV2's input range)
    base = rng.uniform(-1, 1, (400, 12, 12, 3)).astype(np.float32)
    x = np.repeat(np.repeat(base, 8, axis=1), 8, axis=2)
    m = _calibrated_mobilenet(x)
    m.save(out / "mnv2.keras")
    np.savez(out / "calib.npz", x=x)
    (out / "labels.txt").write_text("\n".join(str(i) for i in range(10)))
    _cli("export", out / "mnv2.keras", "-o", out, "--quantize", "int8", "--calibration",
         out / "calib.npz", "--labels", out / "labels.txt", "--validation-data", out / "calib.npz",
         "--validation-samples", "32")
    for mode in ("dynamic", "fp16"):
        _cli("quantize", out / "mnv2.onnx", "--quantize", mode, "--calibration", out / "calib.npz")
    return out


def _inputs(model: Path, n: int) -> np.ndarray:
    name = model.name
    if name.startswith("fashion_cnn"):
        return (np.load(CNN_CAL)["x"][-n:].astype(np.float32) / 255.0).reshape(-1, 28, 28, 1)
    if name.startswith("breast_cancer"):
        em = EdgeModel(model, "cpu")
        return em.prepare(np.load(MLP_CAL)["x"][-n:])[em.input_names[0]]
    return np.load(model.parent / "calib.npz")["x"][-n:]


# -- portable files: ai.onnx only, and OpenVINO runs them like onnxruntime ---------------------
@pytest.mark.slow
@pytest.mark.parametrize("which", ["cnn_out", "mlp_out", "mnv2_out"])
def test_every_variant_is_standard_onnx_and_runs_in_openvino(
        which: str, request: pytest.FixtureRequest) -> None:
    out: Path = request.getfixturevalue(which)
    stem = {"cnn_out": "fashion_cnn", "mlp_out": "breast_cancer_mlp", "mnv2_out": "mnv2"}[which]
    files = _variants(out, stem)
    modes = {p.name.split(".")[1] for p in files}
    assert {"int8", "dynamic", "fp16"} <= modes, files
    core = ov.Core()
    x = _inputs(files[0], 64)
    fp32 = _ort(out / f"{stem}.onnx", x)
    for path in files:
        model = onnx.load(str(path))
        assert nonstandard_ops(model) == [], path.name
        assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}, path.name
        want = _ort(path, x)
        compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        got = np.asarray(compiled(x)[0])
        assert got.shape == want.shape, path.name
        # within the variant's own quantization error: the engines round requantization
        # differently, by no more than quantizing itself moved the outputs from fp32
        own = float(np.abs(want - fp32).mean())
        assert np.abs(got - want).mean() <= max(1e-3, 1.25 * own), (path.name, own)
        if want.shape[-1] > 1:
            own_top1 = np.mean(want.argmax(-1) == fp32.argmax(-1))
            assert np.mean(got.argmax(-1) == want.argmax(-1)) >= min(0.9, own_top1), path.name


def _file_entries(node: object) -> list[dict[str, object]]:
    """Every ``{"path", "size_bytes", ...}`` a report holds, at any depth."""
    if isinstance(node, list):
        return [e for item in node for e in _file_entries(item)]
    if not isinstance(node, dict):
        return []
    here = [node] if {"path", "size_bytes"} <= node.keys() and node["path"] else []
    return here + [e for v in node.values() for e in _file_entries(v)]


@pytest.mark.parametrize("which", ["cnn_out", "mlp_out"])
def test_every_size_in_every_report_is_the_file_as_written(
        which: str, request: pytest.FixtureRequest) -> None:
    """Sizes and sha256 in the export, quantize and tune reports are those of the files on
    disk (the int8 size was once taken before its metadata was added)."""
    out: Path = request.getfixturevalue(which)
    checked: set[str] = set()
    for report_path in [*out.glob("*.report.json"), *out.glob("*.tune.json")]:
        report = json.loads(report_path.read_text())
        for entry in _file_entries(report):
            path = Path(str(entry["path"]))
            path = path if path.is_absolute() else out / path
            assert entry["size_bytes"] == path.stat().st_size, (report_path.name, entry)
            if "sha256" in entry:
                assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest(), entry
            checked.add(path.name)
        for variant in report.get("variants", {}).values():
            stem = report_path.name.removesuffix(".report.json")
            assert variant["fp32_size_bytes"] == (out / f"{stem}.onnx").stat().st_size
    written = {p.name for p in out.iterdir() if not p.name.endswith((".report.json", ".tune.json"))}
    assert written <= checked, written - checked


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {sess.get_inputs()[0].name: x})[0])


def test_the_outputs_of_the_mobilenet_are_not_degenerate(mnv2_out: Path) -> None:
    report = json.loads((mnv2_out / "mnv2.report.json").read_text())
    sess = ort.InferenceSession(str(mnv2_out / "mnv2.onnx"), providers=["CPUExecutionProvider"])
    p = sess.run(None, {sess.get_inputs()[0].name: _inputs(mnv2_out / "mnv2.onnx", 64)})[0]
    assert len(set(p.argmax(1).tolist())) >= 3 and p.std(axis=0).mean() > 1e-3
    ev = report["variants"]["int8"]["evaluation"]
    assert ev["held_out"] and ev["samples"] == 144 and ev["top1_agreement"] is not None


# -- the output contract: int8 probabilities are probabilities ---------------------------------
def test_int8_predict_matches_fp32_probabilities(cnn_out: Path, fashion_dir: Path) -> None:
    from edgekit.inputs.datasets import load_image_data

    x = load_image_data(fashion_dir).x_test[:1000]  # uint8: predict() scales by the metadata
    fp32 = EdgeModel(cnn_out / "fashion_cnn.onnx", "cpu")
    assert fp32.output_kind is OutputKind.PROBABILITIES
    p32 = fp32.predict(x)
    for name in ("fashion_cnn.int8.onnx", "fashion_cnn.tuned.onnx", "fashion_cnn.fp16.onnx",
                 "fashion_cnn.dynamic.onnx"):
        p = EdgeModel(cnn_out / name, "cpu").predict(x)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5, err_msg=name)
        assert np.abs(p - p32).mean() < 0.05, name
        assert np.abs(p.max(1) - p32.max(1)).mean() < 0.05, name  # no second softmax
    ort_model = EdgeModel(cnn_out / "fashion_cnn.int8.ort", "cpu")
    p = np.concatenate([ort_model.predict(x[i:i + 1]) for i in range(50)])
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(p - p32[:50]).mean() < 0.05


def test_edgekit_run_prints_the_same_probability_as_fp32(cnn_out: Path, tmp_path: Path) -> None:
    x = np.load(CNN_CAL)["x"][-1:]
    np.save(tmp_path / "one.npy", x)
    rows = {}
    for name in ("fashion_cnn.onnx", "fashion_cnn.int8.onnx", "fashion_cnn.tuned.onnx"):
        out = _cli("run", cnn_out / name, tmp_path / "one.npy", "--json")
        rows[name] = json.loads(out)["predictions"][0][0]
    top = rows["fashion_cnn.onnx"]
    for name, row in rows.items():
        assert row["label"] == top["label"], name
        assert abs(row["probability"] - top["probability"]) < 0.05, (name, row, top)


def test_output_kinds_from_keras_and_override(tmp_path: Path) -> None:
    from edgekit.convert import ExportConfig, export_model
    from edgekit.metadata import ModelMetadata, save_keras_metadata

    keras.utils.set_random_seed(0)
    logits = keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(3)], name="lg")
    logits.save(tmp_path / "lg.keras")
    save_keras_metadata(tmp_path / "lg.keras", ModelMetadata(labels=["a", "b", "c"]))
    res = export_model(tmp_path / "lg.keras", tmp_path / "o1", ExportConfig())
    em = EdgeModel(res.onnx_path, "cpu")
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    raw = em.run({"x": x})[0]
    assert em.output_kind is OutputKind.LOGITS
    np.testing.assert_allclose(em.predict(x), to_probabilities(raw, "logits"), rtol=1e-6)
    # no labels, no recipe: a linear end is not read as logits
    res = export_model(logits, tmp_path / "o2", ExportConfig())
    em = EdgeModel(res.onnx_path, "cpu")
    assert em.output_kind is OutputKind.OTHER
    np.testing.assert_array_equal(em.predict(x), em.run({"x": x})[0])
    res = export_model(logits, tmp_path / "o3", ExportConfig(output_kinds=["logits"]))
    assert EdgeModel(res.onnx_path, "cpu").output_kind is OutputKind.LOGITS
    r = CliRunner().invoke(cli, ["export", str(tmp_path / "lg.keras"), "-o", str(tmp_path / "o4"),
                                 "--output-kind", "logits", "--output-kind", "other"])
    assert r.exit_code == 1 and "2 output kind(s) given but the model has 1" in r.output
    assert not (tmp_path / "o4").exists()


# -- --format ort: what the mobile EPs take ----------------------------------------------------
def test_ort_format_usability_report(cnn_out: Path) -> None:
    v = json.loads((cnn_out / "fashion_cnn.report.json").read_text())["variants"]["int8"]
    mobile = {m["ep"]: m for m in v["mobile"]}
    assert mobile["NNAPI"]["percent"] >= 90 and mobile["NNAPI"]["compute_share"] >= 0.9
    for ep in ("CoreML NeuralNetwork", "CoreML MLProgram"):
        m = mobile[ep]  # CoreML's op lists have no Q/DQ: the report names the blocker and why
        assert m["percent"] >= 90 or (
            "ai.onnx:QuantizeLinear" in m["unsupported_ops"] and "fp16" in m["note"]), m
    assert mobile["XNNPACK"]["nodes"] is None and "no op list" in mobile["XNNPACK"]["note"]


def test_ort_format_fp16_goes_to_coreml(cnn_out: Path, tmp_path: Path) -> None:
    out = _cli("quantize", cnn_out / "fashion_cnn.onnx", "-o", tmp_path, "--quantize", "fp16",
               "--format", "ort")
    v = json.loads((tmp_path / "fashion_cnn.report.json").read_text())["variants"]["fp16"]
    mobile = {m["ep"]: m for m in v["mobile"]}
    assert mobile["CoreML MLProgram"]["percent"] >= 90 and mobile["NNAPI"]["percent"] >= 90
    assert "CoreML MLProgram:" in out and (tmp_path / "fashion_cnn.fp16.ort").exists()


# -- mixed precision lives in the file ---------------------------------------------------------
def _first_ops_until_quantize(path: Path) -> list[str]:
    """Op types onnxruntime runs (default optimizations) before its first QuantizeLinear."""
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(path.with_suffix(".opt.onnx"))
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]
    return ops[:ops.index("QuantizeLinear")]


def _relu_before_pool(model: onnx.ModelProto) -> None:
    """Undo the commute: MaxPool -> Relu back to Relu -> MaxPool (what the quantizer writes)."""
    from edgekit.quantize.qdq import topological_sort

    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    for relu in g.node:
        pool = producer.get(relu.input[0]) if relu.op_type == "Relu" else None
        if pool is not None and pool.op_type == "MaxPool":
            x, mid, y = pool.input[0], pool.output[0], relu.output[0]
            relu.input[0], relu.output[0] = x, mid
            pool.input[0], pool.output[0] = mid, y
    topological_sort(g)
    del g.value_info[:]


def test_float_region_stays_float_in_a_plain_session(cnn_out: Path, tmp_path: Path) -> None:
    from edgekit.quantize import (
        QuantizationConfig,
        QuantMode,
        QuantScheme,
        quantize_model,
    )

    fp32 = onnx.load(str(cnn_out / "fashion_cnn.onnx"))
    region = [n.name for n in fp32.graph.node if n.op_type in ("Conv", "Relu", "MaxPool")][:3]
    cfg = QuantizationConfig(mode=QuantMode.INT8, scheme=QuantScheme(nodes_to_exclude=region))
    r = quantize_model(cnn_out / "fashion_cnn.onnx", tmp_path, config=cfg, calibration=CNN_CAL)
    model = onnx.load(str(r.path))
    assert float_qdq_pairs(model, region) == []
    before = _first_ops_until_quantize(r.path)
    assert "MaxPool" in before and "Conv" in before, before  # pooled in float, then quantized
    # the mechanism: left as Relu -> MaxPool, onnxruntime's QDQ propagation at load pulls the
    # boundary Q above the MaxPool, which then runs as a slow uint8 MaxPool
    _relu_before_pool(model)
    control = tmp_path / "control.onnx"
    onnx.save(model, str(control))
    assert "MaxPool" not in _first_ops_until_quantize(control)
    # tune's mixed-precision candidates need no session setting (only its session stage may
    # try switching the propagation off, as a bonus, when that measures faster)
    report = json.loads((cnn_out / "fashion_cnn.tune.json").read_text())
    mixed = [c for c in report["candidates"] if c["stage"] == "mixed precision"]
    assert all(not (c["session"] or {}).get("disabled_optimizers") for c in mixed)
    tuned = onnx.load(str(cnn_out / "fashion_cnn.tuned.onnx"))
    session = json.loads({p.key: p.value for p in tuned.metadata_props}["edgekit.session"])
    winner = report["winner"]["stage"] if isinstance(report.get("winner"), dict) else None
    if winner != "session":
        assert "disabled_optimizers" not in session


# -- auto is honest about size; every variant has agreement evidence ---------------------------
def _tiny_dense(tmp_path: Path) -> Path:
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((5,), name="x"), keras.layers.Dense(5, activation="relu"),
                          keras.layers.Dense(1)], name="tiny")
    m.save(tmp_path / "tiny.keras")
    return tmp_path / "tiny.keras"


def test_auto_writes_no_variant_bigger_than_fp32(tmp_path: Path) -> None:
    out = tmp_path / "out"
    text = _cli("export", _tiny_dense(tmp_path), "-o", out, "--quantize", "auto")
    assert "no quantized variant" in text and "KiB of Dense and Embedding weights" in text
    assert sorted(p.name for p in out.iterdir()) == ["tiny.onnx", "tiny.report.json"]
    report = json.loads((out / "tiny.report.json").read_text())
    assert report["variants"]["none"]["written"] is False
    # asked explicitly, it is written, with a warning that says how much bigger it is
    text = _cli("quantize", out / "tiny.onnx", "--quantize", "dynamic")
    size = (out / "tiny.dynamic.onnx").stat().st_size
    assert size >= (out / "tiny.onnx").stat().st_size and "warning: the dynamic model is" in text


def test_mlp_auto_chooses_none_and_says_why(mlp_out: Path, tmp_path: Path) -> None:
    text = _cli("quantize", mlp_out / "breast_cancer_mlp.onnx", "-o", tmp_path,
                "--quantize", "auto")
    assert "auto: no quantized variant" in text
    assert not list(tmp_path.glob("*.onnx"))


def test_agreement_without_labels_on_held_out_samples(cnn_out: Path, tmp_path: Path) -> None:
    x = np.load(CNN_CAL)["x"][:400]
    np.savez(tmp_path / "nolabels.npz", x=x)
    from edgekit.quantize import (
        CalibrationConfig,
        QuantizationConfig,
        quantize_model,
    )

    (tmp_path / "o").mkdir()
    r = quantize_model(cnn_out / "fashion_cnn.onnx", tmp_path / "o", config=QuantizationConfig(
        calibration=CalibrationConfig(samples=300)), calibration=tmp_path / "nolabels.npz")
    assert r.evaluation is not None
    ev = cast(dict[str, Any], r.evaluation)
    assert ev["samples"] == 100 and ev["held_out"] is True and ev["accuracy"] is None
    assert 0.9 <= ev["top1_agreement"] <= 1.0 and ev["mean_abs_error"] < 0.05
    text = _cli("quantize", cnn_out / "fashion_cnn.onnx", "-o", tmp_path / "o2", "--quantize",
                "int8", "--calibration", tmp_path / "nolabels.npz", "--calibration-samples", 300)
    assert "top-1 agreement" in text and "100 held-out samples" in text


# -- no file outside OUTDIR and the temp dir ---------------------------------------------------
def test_quantize_leaves_no_stray_files_in_the_working_dir(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    keras.utils.set_random_seed(0)
    a, b = keras.Input((6,), name="a"), keras.Input((4,), name="b")
    h = keras.layers.Concatenate()([keras.layers.Dense(8, activation="relu")(a), b])
    m = keras.Model([a, b], keras.layers.Dense(3, activation="softmax")(h), name="two")
    m.save(tmp_path / "two.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cal.npz", a=rng.normal(size=(64, 6)).astype(np.float32),
             b=rng.normal(size=(64, 4)).astype(np.float32))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)  # in-process (no TensorFlow start-up per mode): same working dir
    for mode in ("int8", "dynamic", "fp16"):
        _cli("export", tmp_path / "two.keras", "-o", tmp_path / f"out_{mode}", "--quantize", mode,
             "--calibration", tmp_path / "cal.npz")
        assert list(work.iterdir()) == [], (mode, list(work.iterdir()))
        assert not list((tmp_path / f"out_{mode}").glob(".edgekit-tmp-*"))


# -- the runtime-only install: inspect, run and check without TensorFlow ------------------------
_BLOCK = ("import sys\n"
          "for m in ('tensorflow', 'keras', 'tf2onnx', 'sympy', 'onnxconverter_common', "
          "'sklearn', 'openvino'):\n"
          "    sys.modules[m] = None\n"
          "from edgekit.cli.main import main\n"
          "main(sys.argv[1:])\n")


def _runtime_only(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _BLOCK, *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def test_runtime_only_install_can_inspect_run_and_check(cnn_out: Path, tmp_path: Path) -> None:
    model = cnn_out / "fashion_cnn.int8.onnx"
    r = _runtime_only("inspect", model, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["op_histogram"]["QuantizeLinear"] > 0
    np.save(tmp_path / "x.npy", np.load(CNN_CAL)["x"][:2])
    r = _runtime_only("run", model, tmp_path / "x.npy", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["predictions"][0][0]["probability"] > 0.3
    r = _runtime_only("check", model, "--baseline", tmp_path / "base.json", "--update-baseline")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "base.json").exists()
    # quantizing needs only the small [quantize] extra, and says so
    r = _runtime_only("quantize", cnn_out / "fashion_cnn.onnx", "-o", tmp_path / "q",
                      "--quantize", "int8", "--calibration", CNN_CAL)
    assert r.returncode == 1 and "edgekit[quantize]" in r.stderr + r.stdout
    assert "Traceback" not in r.stderr and not (tmp_path / "q").exists()


def test_histogram_calibration_memory_is_bounded(cnn_out: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # entropy/percentile keep every sample's activations before building histograms: a large
    # set goes through onnxruntime's strided calibration in passes that fit the budget, so
    # peak memory grows with the model, not with the calibration set (MobileNetV2-224: 75 MiB
    # a sample), and every sample is still used
    import edgekit.quantize as q
    import edgekit.quantize.calibration as calibration
    from edgekit.io.memory import activation_bytes

    per_sample = activation_bytes(cnn_out / "fashion_cnn.onnx")
    assert 100_000 < per_sample < 2_000_000  # 26x26x32 + 11x11x64 ... floats
    cfg = q.QuantizationConfig(mode=q.QuantMode.INT8,
                               calibration=q.CalibrationConfig(
                                   method=q.CalibrationMethod.PERCENTILE))
    whole = q.quantize_model(cnn_out / "fashion_cnn.onnx", tmp_path / "whole", config=cfg,
                             calibration=CNN_CAL)
    monkeypatch.setattr(calibration, "HISTOGRAM_MEMORY_BYTES", 40 * per_sample)
    paced = q.quantize_model(cnn_out / "fashion_cnn.onnx", tmp_path / "paced", config=cfg,
                             calibration=CNN_CAL)
    assert whole.calibration is not None and paced.calibration is not None
    assert "passes" not in whole.calibration
    # the preprocessed graph's activations: about 40 samples a pass, batches of 16
    passes = cast(int, paced.calibration["passes"])
    assert paced.calibration["samples"] == 256 and 4 <= passes <= 16
    assert any(f"the 256 samples went in {passes} passes of {256 // passes}" in x
               for x in paced.notes)

    def scales(r: q.VariantResult) -> dict[str, float]:
        model = onnx.load(str(r.path))
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
        return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node
                if n.op_type == "QuantizeLinear" and inits[n.input[1]].size == 1}

    # the passes' merged histograms give the one-pass activation ranges, near enough
    a, b = scales(whole), scales(paced)
    assert a.keys() == b.keys() and len(a) >= 4
    for name in a:
        assert b[name] == pytest.approx(a[name], rel=0.1), name
