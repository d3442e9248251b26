"""LiteRT's ``CompiledModel`` API against its ``Interpreter`` on the same ``.tflite`` file.

The shipped Fashion CNN (``models/fashion_cnn.keras``) converted to full-integer int8 TFLite
the way ``edgekit compare`` does (TensorFlow's converter, float I/O, 200 calibration images of
``calibration_data/fashion_mnist.npz``), loaded twice by :class:`edgekit.measure.litert.
TFLiteBackend`: through ``CompiledModel`` (buffers made once, inputs written into them) and with
``api="interpreter"``. Both give the same outputs (checked first), then are timed interleaved by
:func:`edgekit.measure.bench.bench_models` (balanced orders, same rounds) at batch 1 and 32,
1 thread.

    python benchmarks/litert_api.py                    # ~1 min on 2 cores
    python benchmarks/litert_api.py --tflite m.tflite --duration 10

Prints the CPU and its instruction set, p50/p90 per API and batch and the ratio of medians
(Interpreter / CompiledModel: above 1 means CompiledModel is faster); writes
``benchmarks/results/litert_api.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "litert_api.json"


def build_int8(out: Path, samples: int = 200) -> Path:
    """The shipped CNN as int8 TFLite, calibrated like ``edgekit compare`` calibrates it."""
    import keras

    from edgekit.measure.backends import KerasBackend
    from edgekit.measure.compare_variants import tflite_bytes

    src = ROOT / "models" / "fashion_cnn.keras"
    kb = KerasBackend(src)
    ds = kb.load_data(ROOT / "calibration_data" / "fashion_mnist.npz", "calibration data",
                      "train", samples)
    out.write_bytes(tflite_bytes(keras.models.load_model(src, compile=False), kb.prepare(ds)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tflite", help="a .tflite file (default: the shipped CNN as int8)")
    ap.add_argument("--batch", default="1,32", help="batch sizes (default 1,32)")
    ap.add_argument("--duration", type=float, default=8.0,
                    help="seconds of interleaved timing per batch size (default 8)")
    ap.add_argument("--threads", type=int, default=1, help="threads (default 1)")
    ap.add_argument("--out", default=str(RESULTS), help="JSON results")
    args = ap.parse_args(argv)

    from edgekit.measure.bench import BenchConfig, bench_models
    from edgekit.measure.litert import API_COMPILED, TFLiteBackend
    from edgekit.speed.machine import cpu_model, instruction_set
    from edgekit.speed.timing import make_inputs

    batches = tuple(int(b) for b in args.batch.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        path = (Path(args.tflite) if args.tflite
                else build_int8(Path(tmp) / "fashion_cnn.int8.tflite"))
        cm = TFLiteBackend(path, "CompiledModel", threads=args.threads)
        it = TFLiteBackend(path, "Interpreter", threads=args.threads, api="interpreter")
        if cm.api != API_COMPILED:
            print(f"error: CompiledModel does not run {path}: {cm.runtime}", file=sys.stderr)
            return 1
        for b in batches:
            x = make_inputs(cm.inputs, b, seed=b)
            diff = float(np.abs(cm.infer(x) - it.infer(x)).max())
            print(f"batch {b}: max |CompiledModel - Interpreter| = {diff:.3g}")
        res = bench_models([cm, it], BenchConfig(batches=batches, threads=args.threads,
                                                 duration=args.duration, warmup=50))
    cpu, isa = cpu_model(), instruction_set()
    print(f"\n{path.name}, {args.threads} thread(s); CPU: {cpu}, {isa}\n")
    print(res.table())
    summary = {}
    for b in batches:
        c, i = res.models[0].latency[b], res.models[1].latency[b]
        summary[str(b)] = {"compiled_p50_us": c.p50_ms * 1e3, "compiled_p90_us": c.p90_ms * 1e3,
                           "interpreter_p50_us": i.p50_ms * 1e3,
                           "interpreter_p90_us": i.p90_ms * 1e3,
                           "interpreter_over_compiled": i.p50_ms / c.p50_ms}
        print(f"batch {b}: CompiledModel p50 {c.p50_ms * 1e3:.1f} / p90 {c.p90_ms * 1e3:.1f} µs, "
              f"Interpreter p50 {i.p50_ms * 1e3:.1f} / p90 {i.p90_ms * 1e3:.1f} µs "
              f"(Interpreter / CompiledModel {i.p50_ms / c.p50_ms:.2f}x, {c.runs} runs each)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": path.name, "cpu": cpu, "instruction_set": isa,
                               "summary": summary, "bench": res.to_dict()}, indent=1) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
