"""A batch split into streams against the whole batch on all threads, per model and engine.

For each model file and engine, the same file is loaded twice with ``--threads`` threads: once
as is (every op shares the threads) and once with ``batch_streams`` equal to the threads (the
batch split into one part per thread, the parts run at once: :mod:`edgekit.runtime.streams`).
Both are timed interleaved in one process by ``edgekit.speed.timing.measure`` (balanced
orders, settled samples for the thread count), so machine noise hits both; the ratio is the
median of the per-round ratios (split / whole; below 1 the split is faster). The outputs of
the two are compared first.

    python benchmarks/batch_streams.py                          # the shipped Fashion CNN
    python benchmarks/batch_streams.py --model a.onnx --model b.int8.onnx@openvino:bf16 \\
        --batch 32 --threads 2 --seconds 20

``--model FILE[@ENGINE[:PRECISION]]`` (repeatable; default engine: both, f32). Prints a table
(median, p90, p99 per call, the paired ratio) with the CPU and its instruction set, and writes
``benchmarks/results/batch_streams.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _runtime_common import DEFAULT_KERAS, model_path

from edgekit.runtime import EdgeModel
from edgekit.speed.machine import cpu_model, instruction_set
from edgekit.speed.ratio import paired_ratio
from edgekit.speed.timing import make_inputs, measure, settle_for

RESULTS = Path(__file__).resolve().parent / "results" / "batch_streams.json"


def _specs(models: list[str], default: Path) -> list[tuple[Path, str, str]]:
    """(file, engine, precision) per ``--model`` (both engines in f32 when none is named)."""
    out: list[tuple[Path, str, str]] = []
    for spec in models or [str(default)]:
        path, _, rest = spec.partition("@")
        engine, _, precision = rest.partition(":")
        for eng in [engine] if engine else ["onnxruntime", "openvino"]:
            out.append((Path(path), eng, precision or "f32"))
    return out


def _stats(ns: list[int]) -> dict[str, float]:
    a = np.asarray(ns, dtype=np.float64) / 1e6
    return {"median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99))}


def _row(path: Path, engine: str, precision: str, batch: int, threads: int,
         seconds: float) -> dict[str, Any]:
    base = {"threads": threads, "precision": precision}
    whole = EdgeModel(path, engine=engine, use_stored_session=False, session=base)
    split = EdgeModel(path, engine=engine, use_stored_session=False,
                      session={**base, "batch_streams": threads})
    feeds = dict(zip(whole.input_names, make_inputs(whole.inputs, batch), strict=True))
    diff = max(float(np.abs(a - b).max()) for a, b in
               zip(whole.run(feeds), split.run(feeds), strict=True))
    ns_whole, ns_split = measure([lambda: whole.run(feeds), lambda: split.run(feeds)],
                                 runs=None, duration=seconds, warmup=3,
                                 settle=settle_for(threads))
    whole.close()
    split.close()
    return {"model": str(path), "engine": engine, "precision": precision, "batch": batch,
            "threads": threads, "max_abs_diff": diff, "rounds": len(ns_whole),
            "whole": _stats(ns_whole), "split": _stats(ns_split),
            "ratio": paired_ratio(ns_split, ns_whole)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", default=[],
                    help="FILE[@ENGINE[:PRECISION]] (repeatable; default: the shipped CNN)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0, help="timing per row")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.threads < 2 or args.batch < 2:
        sys.exit("error: --threads and --batch must be at least 2 (one stream per thread)")
    cpu = f"{cpu_model()} ({instruction_set()})"
    print(f"CPU: {cpu}; batch {args.batch}, {args.threads} threads: one call on all threads "
          f"(whole) vs {args.threads} streams of one thread (split)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        default = model_path(None, DEFAULT_KERAS, Path(tmp)) if not args.model else Path()
        for path, engine, precision in _specs(args.model, default):
            r = _row(path, engine, precision, args.batch, args.threads, args.seconds)
            rows.append(r)
            name = str(Path(path.parent.name, path.name))[-40:]
            print(f"{name:40s} {engine:11s} {precision:4s} whole "
                  f"{r['whole']['median_ms']:9.2f} ms (p90 {r['whole']['p90_ms']:.2f}, p99 "
                  f"{r['whole']['p99_ms']:.2f})  split {r['split']['median_ms']:9.2f} ms (p90 "
                  f"{r['split']['p90_ms']:.2f}, p99 {r['split']['p99_ms']:.2f})  ratio "
                  f"{r['ratio']:.3f}  max|diff| {r['max_abs_diff']:.2g}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"cpu": cpu, "batch": args.batch,
                                          "threads": args.threads, "rows": rows}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
