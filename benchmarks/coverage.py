"""Issue #12 coverage benchmark: the coverage zoo at realistic sizes, plus int8 vs TFLite.

For each model (``tests/_coverage_models.py``), in fresh processes:

1. build it at ``--size`` (ImageNet heads, 1000 classes), BatchNorm statistics calibrated
   on Fashion-MNIST images upscaled to the input size (real image structure; the family's
   own ``preprocess_input``), and save calibration / evaluation sets;
2. ``edgekit export`` it (the CLI, default options) and record the validation figures,
   the saturation of the reference outputs, the time and the process's peak RSS;
3. quantize the ONNX model to int8 with ``edgekit.quantize.core.quantize_model`` and the same
   calibration data through TFLite's int8 converter, and report each one's top-1 agreement
   with fp32 on held-out images.

``--fashion`` trains MobileNetV2 (alpha 0.35, 32x32) on Fashion-MNIST for a few epochs and
compares test accuracy of fp32, edgekit int8 and TFLite int8 on the same calibration data.
``--tune`` measures the peak RSS of ``edgekit tune`` on the MobileNetV2 model.

    python benchmarks/coverage.py --models mobilenet_v2,efficientnet_b0,resnet50 --size 224
    python benchmarks/coverage.py --fashion --no-zoo

Writes ``benchmarks/results/coverage_<size>.json`` (``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
FASHION = ROOT.parent / "shared" / "data" / "fashion-mnist"
RESULTS = ROOT / "benchmarks" / "results"

# keras.applications preprocess_input modes (imagenet_utils); "none": the model rescales.
PREPROCESS = {"mobilenet_v1": "tf", "mobilenet_v2": "tf", "resnet50_v2": "tf",
              "nasnet_mobile": "tf", "xception": "tf", "inception_v3": "tf",
              "resnet50": "caffe", "vgg16": "caffe", "densenet121": "torch"}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _images(n: int, size: int, split: str, offset: int = 0) -> np.ndarray:
    """``n`` Fashion-MNIST images as (n, size, size, 3) float pixels in [0, 255]."""
    import tensorflow as tf

    from edgekit.inputs.datasets import load_image_data

    data = load_image_data(FASHION)
    x = (data.x_train if split == "train" else data.x_test)[offset:offset + n]
    x = x.reshape(len(x), 28, 28, 1).astype("float32")
    return tf.image.resize(np.repeat(x, 3, axis=-1), (size, size)).numpy()


def _preprocess(name: str, pixels: np.ndarray) -> np.ndarray:
    from keras.applications import imagenet_utils

    mode = PREPROCESS.get(name)
    if mode is None:
        return pixels
    return np.asarray(imagenet_utils.preprocess_input(pixels.copy(), mode=mode), np.float32)


# --------------------------------------------------------------------------------------------
# stage 1: build (own process)
# --------------------------------------------------------------------------------------------
def stage_build(name: str, size: int, work: Path, calib_n: int, eval_n: int) -> dict[str, Any]:
    """Build, calibrate BatchNorm on images, save model.keras, calib.npz and eval.npz."""
    import _coverage_models as zoo

    from edgekit.convert import load_source, synthetic_inputs

    entry = next(z for z in zoo.ZOO if z.name == name)
    if name == "custom_layer":
        from edgekit.convert import load_custom_objects

        (work / "zoo_layers.py").write_text(zoo.CUSTOM_LAYER_SOURCE)
        load_custom_objects(work / "zoo_layers.py")
    classes = 1000 if name in PREPROCESS or name.startswith(("efficientnet", "convnext",
                                                            "mobilenet")) else 10
    model = zoo.build(entry, size if entry.image else None, classes)
    source = load_source(model)
    if entry.image and len(source.inputs) == 1 and source.inputs[0].shape[-1] == 3:
        side = source.inputs[0].shape[1] or size
        calib = _preprocess(name, _images(calib_n, side, "train"))
        evals = _preprocess(name, _images(eval_n, side, "test"))
        zoo.calibrate_batchnorm(model, calib[:32])
        calib_feeds = {source.inputs[0].name: calib}
        eval_feeds = {source.inputs[0].name: evals}
    else:
        calib_feeds = synthetic_inputs(source, calib_n, seed=1)
        eval_feeds = synthetic_inputs(source, eval_n, seed=2)
    model.save(work / "model.keras")
    np.savez(work / "calib.npz", **calib_feeds)
    np.savez(work / "eval.npz", **eval_feeds)
    return {"classes": classes, "inputs": [s.to_dict() for s in source.inputs]}


# --------------------------------------------------------------------------------------------
# stage 2: export through the CLI (own process: its peak RSS is the figure)
# --------------------------------------------------------------------------------------------
def stage_export(name: str, work: Path, synthetic: bool = False) -> dict[str, Any]:
    """``edgekit export`` validating on the held-out images (``synthetic``: edgekit's own
    synthetic inputs; the random-weight networks saturate on them more often)."""
    from click.testing import CliRunner

    from edgekit.cli.main import cli

    args = ["export", str(work / "model.keras"), "-o", str(work / "out"), "--force"]
    if not synthetic:
        args += ["--validation-data", str(work / "eval.npz")]
    if (work / "zoo_layers.py").exists():
        args += ["--custom-objects", str(work / "zoo_layers.py")]
    t0 = time.perf_counter()
    res = CliRunner().invoke(cli, args)
    out: dict[str, Any] = {"export_ok": res.exit_code == 0,
                           "export_s": round(time.perf_counter() - t0, 1),
                           "export_peak_rss_mb": round(_peak_rss_mb(), 0)}
    if res.exit_code != 0:
        out["error"] = res.output[-1500:]
        return out
    report = json.loads((work / "out" / "model.report.json").read_text())
    v = report["validation"]
    sat = [s for s in v["saturation"].values()]
    out.update({"max_abs_error": v["max_abs_error"], "validation_samples": v["n_samples"],
                "same_class_share": max((s["same_class_share"] or 0) for s in sat),
                "saturated_share": max((s["saturated_share"] or 0) for s in sat),
                "constant_share": max(s["constant_share"] or 0 for s in sat),
                "warnings": v["warnings"], "timings_s": report["timings_s"]})
    return out


# --------------------------------------------------------------------------------------------
# stage 3: int8, edgekit and TFLite on the same calibration data (own process)
# --------------------------------------------------------------------------------------------
def _top1(outputs: list[np.ndarray]) -> np.ndarray:
    return np.asarray(outputs[0]).reshape(len(outputs[0]), -1).argmax(1)


def _tflite_int8(work: Path, calib: dict[str, np.ndarray],
                 evals: dict[str, np.ndarray]) -> list[np.ndarray]:
    """TFLite full-integer (int8 weights and activations, float I/O) outputs on ``evals``."""
    import tensorflow as tf

    from edgekit.convert import load_source
    from edgekit.convert.tfconvert import tracing_for_conversion

    objects = [work / "zoo_layers.py"] if (work / "zoo_layers.py").exists() else None
    source = load_source(work / "model.keras", objects)
    sig = [tf.TensorSpec(s.shape, tf.as_dtype(s.dtype), name=s.name) for s in source.inputs]
    with tracing_for_conversion():
        concrete = source.function.get_concrete_function(*sig)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    names = [s.name for s in source.inputs]
    n = len(calib[names[0]])
    conv.representative_dataset = lambda: ([calib[k][i:i + 1] for k in names] for i in range(n))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    interp = tf.lite.Interpreter(model_content=conv.convert(), num_threads=2)
    interp.allocate_tensors()
    ins = {d["name"]: d for d in interp.get_input_details()}
    order = sorted(ins.values(), key=lambda d: d["index"])
    out = []
    for i in range(len(evals[names[0]])):
        for k, d in zip(names, order, strict=True):
            interp.set_tensor(d["index"], evals[k][i:i + 1])
        interp.invoke()
        out.append(interp.get_tensor(interp.get_output_details()[0]["index"]))
    return [np.concatenate(out)]


def _by_position(npz: Path, onnx_path: Path) -> dict[str, np.ndarray]:
    """Arrays of ``npz`` renamed, in order, to the ONNX model's inputs (a reloaded Keras
    model's input names may differ from those of the model that was built)."""
    import onnx

    names = [i.name for i in onnx.load(str(onnx_path), load_external_data=False).graph.input]
    with np.load(npz) as data:
        return {n: data[k] for n, k in zip(names, data.files, strict=True)}


def stage_int8(work: Path, method: str = "minmax", per_channel: bool = True,
               symmetric: bool = False, tflite: bool = True) -> dict[str, Any]:
    from edgekit.inputs.data import Dataset
    from edgekit.quantize import (
        CalibrationConfig,
        QuantizationConfig,
        QuantScheme,
        quantize_model,
    )
    from edgekit.validate import run_onnx

    fp32_path = work / "out" / "model.onnx"
    calib = _by_position(work / "calib.npz", fp32_path)
    evals = _by_position(work / "eval.npz", fp32_path)
    qdir = work / f"q_{method}_{int(per_channel)}_{int(symmetric)}"
    qdir.mkdir(exist_ok=True)
    cfg = QuantizationConfig(
        mode="int8",
        scheme=QuantScheme(per_channel=per_channel, activation_symmetric=symmetric),
        calibration=CalibrationConfig(method=method, samples=len(next(iter(calib.values())))))
    t0 = time.perf_counter()
    res = quantize_model(fp32_path, qdir, "model", cfg, calibration=Dataset(calib))
    q_s = time.perf_counter() - t0
    ref = _top1(run_onnx(fp32_path, evals, batch_size=8))
    got = _top1(run_onnx(res.path, evals, batch_size=8))
    out = {"int8_agreement": float(np.mean(ref == got)), "int8_s": round(q_s, 1),
           "int8_config": {"method": method, "per_channel": per_channel,
                           "activation_symmetric": symmetric}}
    if not tflite:
        return out
    try:
        out["tflite_int8_agreement"] = float(np.mean(ref == _top1(_tflite_int8(work, calib,
                                                                               evals))))
    except Exception as exc:  # report, do not hide: the table shows the reason
        out["tflite_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    out["int8_peak_rss_mb"] = round(_peak_rss_mb(), 0)
    return out


def stage_tune(work: Path, budget: float) -> dict[str, Any]:
    from click.testing import CliRunner

    from edgekit.cli.main import cli

    t0 = time.perf_counter()
    res = CliRunner().invoke(cli, ["tune", str(work / "model.keras"), "-o", str(work / "tune"),
                                   "--calibration", str(work / "calib.npz"),
                                   "--budget", str(budget), "--force"])
    return {"tune_ok": res.exit_code == 0, "tune_s": round(time.perf_counter() - t0, 1),
            "tune_peak_rss_mb": round(_peak_rss_mb(), 0),
            **({} if res.exit_code == 0 else {"tune_error": res.output[-1500:]})}


# --------------------------------------------------------------------------------------------
# Fashion-MNIST: a trained MobileNetV2-0.35, fp32 vs edgekit int8 vs TFLite int8
# --------------------------------------------------------------------------------------------
def _fashion_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fashion-MNIST as (N, 32, 32, 3) float32 pixels (padded by 2, grey to RGB) + labels."""
    from edgekit.inputs.datasets import load_image_data

    d = load_image_data(FASHION)

    def prep(x: np.ndarray) -> np.ndarray:
        x = np.pad(x.reshape(len(x), 28, 28), ((0, 0), (2, 2), (2, 2)))
        return np.repeat(x[..., None], 3, axis=-1).astype("float32")

    return prep(d.x_train), d.y_train.astype("int64"), prep(d.x_test), d.y_test.astype("int64")


def _train_fashion(path: Path, x: np.ndarray, y: np.ndarray, epochs: int) -> None:
    import keras

    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(alpha=0.35, weights=None, input_shape=(32, 32, 3),
                                          classes=10)
    bns = [lay for lay in base.layers if isinstance(lay, keras.layers.BatchNormalization)]
    for bn in bns:  # keras.applications' 0.999 needs far more steps than a few epochs give
        bn.momentum = 0.9
    model = keras.Sequential([keras.Input((32, 32, 3), name="image"),
                              keras.layers.Rescaling(1 / 127.5, offset=-1.0), base],
                             name="fashion_mobilenet_v2")
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=128, epochs=epochs, verbose=2)
    for bn in bns:  # moving statistics re-estimated on 2,048 training images
        bn.momentum = 0.0
    model(x[:2048], training=True)
    for bn in bns:
        bn.momentum = 0.9
    model.save(path)


def _tflite_accuracy(model_path: Path, calib: np.ndarray, x: np.ndarray,
                     y: np.ndarray) -> float:
    import tensorflow as tf

    from edgekit.convert import load_source

    source = load_source(model_path)
    concrete = source.function.get_concrete_function(
        tf.TensorSpec(source.inputs[0].shape, tf.float32, name=source.inputs[0].name))
    conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([calib[i:i + 1]] for i in range(len(calib)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    interp = tf.lite.Interpreter(model_content=conv.convert(), num_threads=2)
    batch = 250
    inp = interp.get_input_details()[0]["index"]
    interp.resize_tensor_input(inp, [batch, 32, 32, 3])
    interp.allocate_tensors()
    preds = []
    for i in range(0, len(x), batch):
        interp.set_tensor(inp, x[i:i + batch])
        interp.invoke()
        preds.append(interp.get_tensor(interp.get_output_details()[0]["index"]).argmax(1))
    return 100.0 * float(np.mean(np.concatenate(preds) == y))


FASHION_VARIANTS = [("minmax", True, False), ("entropy", True, False),
                    ("percentile", True, False), ("minmax", True, True),
                    ("minmax", False, False)]


def run_fashion(work: Path, epochs: int) -> dict[str, Any]:
    """Train, export, quantize (several calibration settings) and compare test accuracy."""
    from edgekit.convert import ExportConfig, export_model
    from edgekit.inputs.data import Dataset
    from edgekit.quantize import (
        CalibrationConfig,
        QuantizationConfig,
        QuantScheme,
        quantize_model,
    )
    from edgekit.validate import accuracy, run_onnx

    work.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_test, y_test = _fashion_arrays()
    t0 = time.perf_counter()
    _train_fashion(work / "model.keras", x_train, y_train, epochs)
    train_s = time.perf_counter() - t0
    calib = x_train[np.random.default_rng(0).permutation(len(x_train))[:256]]
    exp = export_model(work / "model.keras", work / "out", ExportConfig(force=True),
                       validation_data=Dataset({"image": x_test[:256]}))
    fp32 = accuracy(run_onnx(exp.onnx_path, {"image": x_test}, 256)[0], y_test)
    out: dict[str, Any] = {"epochs": epochs, "train_s": round(train_s, 1),
                           "calibration_samples": len(calib), "test_samples": len(x_test),
                           "fp32_accuracy": fp32, "edgekit_int8": []}
    for method, per_channel, sym in FASHION_VARIANTS:
        cfg = QuantizationConfig(
            mode="int8", scheme=QuantScheme(per_channel=per_channel, activation_symmetric=sym),
            calibration=CalibrationConfig(method=method, samples=len(calib)))
        qdir = work / f"q_{method}_{int(per_channel)}_{int(sym)}"
        qdir.mkdir()
        res = quantize_model(exp.onnx_path, qdir, "model", cfg,
                             calibration=Dataset({"image": calib}))
        acc = accuracy(run_onnx(res.path, {"image": x_test}, 256)[0], y_test)
        out["edgekit_int8"].append({"method": method, "per_channel": per_channel,
                                    "activation_symmetric": sym, "accuracy": acc,
                                    "drop": round(fp32 - acc, 2)})
    tfl = _tflite_accuracy(work / "model.keras", calib, x_test, y_test)
    out["tflite_int8"] = {"accuracy": tfl, "drop": round(fp32 - tfl, 2)}
    return out


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------
def _child(stage: str, *args: str, timeout: int = 3600) -> dict[str, Any]:
    """Run ``stage`` in a fresh interpreter; its JSON result (or the error)."""
    cmd = [sys.executable, __file__, "--child", stage, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return dict(json.loads(line[7:]))
    return {"child_error": f"{stage} exited {proc.returncode}: {proc.stderr[-2000:]}"}


def run_model(name: str, size: int, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    row: dict[str, Any] = {"model": name, "size": size}
    row.update(_child("build", name, str(size), str(work), str(args.calib), str(args.eval)))
    row.update(_child("export", name, str(work), "synthetic" if args.synthetic else "images"))
    if row.get("export_ok") and not args.no_int8:
        for variant in args.int8_variants:
            first = variant == args.int8_variants[0]
            r = _child("int8", str(work), *variant.split(":"), "tflite" if first else "-")
            key = "" if first else f"[{variant}]"
            row.update({f"{k}{key}": v for k, v in r.items()})
    if args.tune and name == "mobilenet_v2" and row.get("export_ok"):
        row.update(_child("tune", str(work), str(args.tune_budget)))
    return row


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "ok" if v else "FAIL"
    if pct:
        return f"{100 * v:.0f}%"
    return f"{v:.2g}" if isinstance(v, float) and v < 1 else str(v)


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = [("model", "model", False), ("size", "size", False), ("export", "export_ok", False),
            ("max abs err", "max_abs_error", False), ("same class", "same_class_share", True),
            ("saturated", "saturated_share", True), ("int8 agree", "int8_agreement", True),
            ("TFLite int8 agree", "tflite_int8_agreement", True),
            ("export s", "export_s", False), ("peak RSS MB", "export_peak_rss_mb", False)]
    print(" | ".join(c[0] for c in cols))
    print(" | ".join("---" for _ in cols))
    for r in rows:
        print(" | ".join(_fmt(r.get(k), pct) for _, k, pct in cols))


def _run_child(argv: list[str]) -> None:
    stage, rest = argv[0], argv[1:]
    if stage == "build":
        res = stage_build(rest[0], int(rest[1]), Path(rest[2]), int(rest[3]), int(rest[4]))
    elif stage == "export":
        res = stage_export(rest[0], Path(rest[1]), rest[2] == "synthetic")
    elif stage == "int8":
        res = stage_int8(Path(rest[0]), rest[1], rest[2] == "pc", rest[3] == "sym",
                         rest[4] == "tflite")
    elif stage == "tune":
        res = stage_tune(Path(rest[0]), float(rest[1]))
    else:
        res = run_fashion(Path(rest[0]), int(rest[1]))
    print("RESULT " + json.dumps(res, default=str), flush=True)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        _run_child(sys.argv[2:])
        return
    import _coverage_models as zoo

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(z.name for z in zoo.ZOO))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--calib", type=int, default=64, help="calibration images")
    ap.add_argument("--eval", type=int, default=64, help="held-out images for int8 agreement")
    ap.add_argument("--int8-variants", default="minmax:pc:asym",
                    help="comma list of METHOD:pc|pt:sym|asym (first is the table's)")
    ap.add_argument("--no-int8", action="store_true")
    ap.add_argument("--synthetic", action="store_true",
                    help="validate exports on synthetic inputs (default: held-out images)")
    ap.add_argument("--tune", action="store_true", help="also tune MobileNetV2 (peak RSS)")
    ap.add_argument("--tune-budget", type=float, default=2.0)
    ap.add_argument("--fashion", action="store_true", help="Fashion-MNIST accuracy comparison")
    ap.add_argument("--fashion-epochs", type=int, default=3)
    ap.add_argument("--no-zoo", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    args.int8_variants = args.int8_variants.split(",")
    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {"machine": {"cpu": platform.processor() or platform.machine(),
                                          "cores": os.cpu_count(), "python": sys.version}}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_zoo:
            for name in args.models.split(","):
                rows.append(run_model(name, args.size, Path(tmp) / name, args))
                print(json.dumps(rows[-1], default=str)[:600], file=sys.stderr, flush=True)
            print_table(rows)
        if args.fashion:
            result["fashion"] = _child("fashion", str(Path(tmp) / "fashion"),
                                       str(args.fashion_epochs))
            print(json.dumps(result["fashion"], indent=1))
    result["rows"] = rows
    out = Path(args.out) if args.out else RESULTS / (
        f"coverage_{args.size}.json" if not args.no_zoo else "coverage_fashion.json")
    out.write_text(json.dumps(result, indent=1, default=str))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
