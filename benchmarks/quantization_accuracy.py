"""Acceptance figures of issue 4: quantized variants of the shipped models vs fp32.

- ``models/fashion_cnn.keras``: static int8 (QDQ, calibrated on 1,024 training images;
  256, the default, gives a 0.49 pt drop) and fp16,
  evaluated on the 10,000 Fashion-MNIST test images.
- the ``text_lstm`` recipe trained on the SMS Spam Collection (read in place, never copied):
  dynamic int8 on the recipe's 20% test split.

Prints a table and writes ``benchmarks/results/quantization_accuracy.json``.

    /work/venv/bin/python benchmarks/quantization_accuracy.py [--skip-lstm]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FASHION = DATA / "fashion-mnist"
SMS = DATA / "sms-spam" / "SMSSpamCollection.tsv"
RESULTS = ROOT / "benchmarks" / "results" / "quantization_accuracy.json"


def _row(model: str, v: dict[str, Any], limit_ratio: float,
         limit_drop: float | None) -> dict[str, Any]:
    ev = v["evaluation"]
    ok_size = v["size_ratio"] <= limit_ratio
    if limit_drop is None:  # fp16: output tolerance
        ok_acc = ev["max_abs_error"] <= 1e-2
    else:
        ok_acc = abs(ev["accuracy_drop"]) <= limit_drop
    return {"model": model, "variant": v["mode"], "fp32_bytes": v["fp32_size_bytes"],
            "bytes": v["size_bytes"], "size_ratio": v["size_ratio"], "size_limit": limit_ratio,
            "fp32_accuracy": ev["fp32_accuracy"], "accuracy": ev["accuracy"],
            "accuracy_drop": ev["accuracy_drop"], "drop_limit": limit_drop,
            "top1_agreement": ev["top1_agreement"], "max_abs_error": ev["max_abs_error"],
            "samples": ev["samples"], "passed": bool(ok_size and ok_acc),
            "timings_s": v["timings_s"]}


def fashion_rows(tmp: Path) -> list[dict[str, Any]]:
    from edgekit.convert import ExportConfig, export_model
    from edgekit.quantize import CalibrationConfig, QuantizationConfig, quantize_model

    model = ROOT / "models" / "fashion_cnn.keras"
    res = export_model(model, tmp / "cnn", ExportConfig())
    calib = ROOT / "calibration_data" / "fashion_mnist.npz"
    calib_src: Path = calib if calib.exists() else FASHION
    rows = []
    for mode, ratio, drop in (("int8", 0.35, 0.5), ("fp16", 0.55, None)):
        cfg = QuantizationConfig(mode=mode, calibration=CalibrationConfig(samples=1024))
        v = quantize_model(res.onnx_path, tmp / "cnn", config=cfg,
                           calibration=calib_src, eval_data=FASHION, progress=print)
        rows.append(_row("fashion_cnn", v.to_dict(), ratio, drop))
    return rows


def lstm_rows(tmp: Path) -> list[dict[str, Any]]:
    from edgekit.convert import ExportConfig, export_model
    from edgekit.quantize import QuantizationConfig, quantize_model
    from edgekit.recipes import TrainConfig, train_recipe

    keras_path = tmp / "sms_lstm.keras"
    t0 = time.perf_counter()
    train_recipe("text_lstm", TrainConfig(verbose=0), data=SMS, output=keras_path)
    print(f"trained text_lstm on {SMS.name} in {time.perf_counter() - t0:.0f}s")
    res = export_model(keras_path, tmp / "lstm", ExportConfig(atol=1e-3))
    v = quantize_model(res.onnx_path, tmp / "lstm", config=QuantizationConfig(mode="dynamic"),
                       eval_data=SMS, progress=print)
    return [_row("sms_text_lstm", v.to_dict(), 0.35, 1.0)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--skip-lstm", action="store_true", help="only the Fashion-MNIST CNN")
    args = ap.parse_args(argv)
    from edgekit.convert import library_versions
    from edgekit.io.artifacts import atomic_write_json

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgekit-qbench-") as tmp_s:
        tmp = Path(tmp_s)
        rows += fashion_rows(tmp)
        if not args.skip_lstm:
            rows += lstm_rows(tmp)
    head = (f"{'model':<15} {'variant':<8} {'size %':>7} {'fp32 acc':>9} {'acc':>7} "
            f"{'drop pt':>8} {'agree %':>8} {'max err':>9} {'n':>6}  ok")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['model']:<15} {r['variant']:<8} {100 * r['size_ratio']:>6.1f}% "
              f"{r['fp32_accuracy']:>8.2f}% {r['accuracy']:>6.2f}% {r['accuracy_drop']:>+8.2f} "
              f"{100 * r['top1_agreement']:>7.2f}% {r['max_abs_error']:>9.2e} {r['samples']:>6}  "
              f"{'yes' if r['passed'] else 'NO'}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS, {"rows": rows, "versions": library_versions(),
                                "cpu_count": os.cpu_count()}, force=True)
    print(f"wrote {RESULTS}")
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
