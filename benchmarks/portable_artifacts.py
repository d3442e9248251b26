"""Are edgekit's artifacts fast and portable outside edgekit? (issue: portable artifacts)

For the shipped Fashion-MNIST CNN this script builds the int8 and the tuned model (``edgekit
export --quantize int8`` and ``edgekit tune --threads 1 --batch 1``), then:

1. times fp32, int8 and tuned in a *plain* ``onnxruntime.InferenceSession`` (default session
   options, ``intra_op_num_threads=1``, no edgekit code on the timed path), interleaved in one
   process, batch 1; prints median / p90 / p99 and the speed-up over fp32;
2. loads every variant in OpenVINO (``INFERENCE_PRECISION_HINT=f32``) and compares its
   outputs with onnxruntime's;
3. lists the ops outside ai.onnx in each file (none expected).

    python benchmarks/portable_artifacts.py [--iters 3000] [--budget 1.5]

Writes ``benchmarks/results/portable_artifacts.json``. Target: tuned >= 1.2x faster than fp32.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CAL = ROOT / "calibration_data" / "fashion_mnist.npz"


def _edgekit(*args: object) -> None:
    subprocess.run([sys.executable, "-m", "edgekit.cli", *map(str, args)], check=True,
                   stdout=subprocess.DEVNULL)


def build(out: Path, budget: float) -> dict[str, Path]:
    """fp32, int8 and tuned CNN files in ``out``."""
    _edgekit("export", ROOT / "models" / "fashion_cnn.keras", "-o", out, "--quantize", "int8",
             "--calibration", CAL, "--force")
    _edgekit("tune", out / "fashion_cnn.onnx", "-o", out, "--calibration", CAL, "--threads", 1,
             "--batch", 1, "--budget", budget, "--force")
    return {name: out / f"fashion_cnn{suffix}.onnx"
            for name, suffix in [("fp32", ""), ("int8", ".int8"), ("tuned", ".tuned")]}


def plain_latency(files: dict[str, Path], iters: int) -> dict[str, dict[str, float]]:
    """Interleaved batch-1 latency of each file in a plain 1-thread InferenceSession (us)."""
    import onnxruntime as ort

    x = (np.load(CAL)["x"][:1].astype(np.float32) / 255.0).reshape(1, 28, 28, 1)
    sessions = {}
    for name, path in files.items():
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sessions[name] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    times: dict[str, list[int]] = {n: [] for n in sessions}
    clock = time.perf_counter_ns
    for i in range(iters + 200):
        order = list(sessions.items())
        for name, sess in order if i % 2 else reversed(order):
            t0 = clock()
            sess.run(None, {"image": x})
            if i >= 200:
                times[name].append(clock() - t0)
    ref = float(np.median(times["fp32"]))
    out = {}
    for name, ns in times.items():
        a = np.asarray(ns, np.float64) / 1000
        out[name] = {"median_us": float(np.median(a)), "p90_us": float(np.percentile(a, 90)),
                     "p99_us": float(np.percentile(a, 99)),
                     "speedup_vs_fp32": ref / float(np.median(ns))}
    return out


def openvino_check(files: list[Path]) -> dict[str, dict[str, object]]:
    """Each file in OpenVINO vs onnxruntime on 256 calibration images."""
    import onnx
    import onnxruntime as ort
    import openvino as ov

    from edgekit.quantize.qdq import nonstandard_ops

    x = (np.load(CAL)["x"][-256:].astype(np.float32) / 255.0).reshape(-1, 28, 28, 1)
    core = ov.Core()
    out: dict[str, dict[str, object]] = {}
    for path in files:
        row: dict[str, object] = {"nonstandard_ops": nonstandard_ops(onnx.load(str(path)))}
        want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
            None, {"image": x})[0]
        try:
            got = np.asarray(core.compile_model(str(path), "CPU", {
                "INFERENCE_PRECISION_HINT": "f32"})(x)[0])
            row.update(openvino="loads", mean_abs_diff=float(np.abs(got - want).mean()),
                       top1_agreement=float(np.mean(got.argmax(1) == want.argmax(1))))
        except Exception as exc:  # report, do not hide: this is what the benchmark checks
            row["openvino"] = f"fails: {str(exc).splitlines()[0][:120]}"
        out[path.name] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=3000, help="timed rounds (default 3000)")
    ap.add_argument("--budget", type=float, default=1.5, help="tune budget, minutes")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" /
                                         "portable_artifacts.json"))
    args = ap.parse_args()
    from edgekit.speed.machine import cpu_model, instruction_set

    with tempfile.TemporaryDirectory() as tmp:
        files = build(Path(tmp), args.budget)
        lat = plain_latency(files, args.iters)
        variants = sorted(Path(tmp).glob("fashion_cnn*.onnx"))
        ovr = openvino_check(variants)
    cpu = f"{cpu_model()} ({instruction_set()})"
    print(f"CPU: {cpu}; plain onnxruntime.InferenceSession, 1 thread, batch 1, "
          f"{args.iters} interleaved rounds")
    print("| model | median us | p90 us | p99 us | speed-up vs fp32 |")
    print("|:--|--:|--:|--:|--:|")
    for name, r in lat.items():
        print(f"| {name} | {r['median_us']:.1f} | {r['p90_us']:.1f} | {r['p99_us']:.1f} | "
              f"{r['speedup_vs_fp32']:.2f}x |")
    print("\n| file | ops outside ai.onnx | OpenVINO | mean abs diff vs onnxruntime |")
    print("|:--|:--|:--|--:|")
    for name, r in ovr.items():
        print(f"| {name} | {', '.join(r['nonstandard_ops']) or '-'} | {r['openvino']} | "  # type: ignore[arg-type]
              f"{r.get('mean_abs_diff', float('nan')):.2g} |")
    Path(args.out).write_text(json.dumps({"cpu": cpu, "iters": args.iters, "latency": lat,
                                          "openvino": ovr}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
