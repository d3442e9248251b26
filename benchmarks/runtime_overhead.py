"""Per-call overhead of ``EdgeModel.run`` over a bare ``onnxruntime.InferenceSession.run``.

Both paths use the *same* session and the same inputs and are timed alternately (A B, B A,
A B ...) in one process, so machine noise hits both equally. Target (issue 5): the median
overhead is <= 5 % or <= 10 microseconds per call at batch 1 on the Fashion-MNIST CNN.

    python benchmarks/runtime_overhead.py                      # exports models/fashion_cnn.keras
    python benchmarks/runtime_overhead.py --model out/fashion_cnn.onnx --iters 5000 --json

Exit status 1 when the target is missed and ``--check`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _runtime_common import add_model_args, model_path


def _stats(ns: list[int]) -> dict[str, float]:
    a = np.asarray(ns, dtype=np.float64) / 1000.0
    return {
        "median_us": float(np.median(a)),
        "p90_us": float(np.percentile(a, 90)),
        "p99_us": float(np.percentile(a, 99)),
        "mean_us": float(a.mean()),
    }


def measure(model_path: Path, batch: int, iters: int, warmup: int, threads: int | None) -> dict:
    """Time bare vs wrapped runs alternately; return stats and the verdict."""
    from edgekit.runtime.model import EdgeModel

    model = EdgeModel(model_path, "cpu", threads=threads)
    sess = model.session
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in model.inputs:
        shape = [batch if d is None else d for d in spec.shape]
        dtype = spec.dtype if spec.dtype is not None else np.float32
        if dtype.kind == "f":
            feeds[spec.name] = rng.random(shape).astype(dtype)
        else:
            feeds[spec.name] = rng.integers(0, 2, shape).astype(dtype)
    bare_run, wrapped_run = sess.run, model.run
    for a, b in zip(bare_run(None, feeds), wrapped_run(feeds), strict=True):
        np.testing.assert_array_equal(a, b)
    for _ in range(warmup):
        bare_run(None, feeds)
        wrapped_run(feeds)
    bare: list[int] = []
    wrapped: list[int] = []
    clock = time.perf_counter_ns
    for i in range(iters):
        for which in (0, 1) if i % 2 == 0 else (1, 0):
            if which == 0:
                t0 = clock()
                bare_run(None, feeds)
                bare.append(clock() - t0)
            else:
                t0 = clock()
                wrapped_run(feeds)
                wrapped.append(clock() - t0)
    sb, sw = _stats(bare), _stats(wrapped)
    diff = (np.asarray(wrapped) - np.asarray(bare)) / 1000.0
    overhead = sw["median_us"] - sb["median_us"]
    pct = 100.0 * overhead / sb["median_us"]
    return {
        "model": str(model_path),
        "batch": batch,
        "iters": iters,
        "threads": threads,
        "bare": sb,
        "edgemodel": sw,
        "overhead_us": overhead,
        "overhead_pct": pct,
        "paired_diff_median_us": float(np.median(diff)),
        "target": "<= 5% or <= 10 us",
        "pass": bool(overhead <= 10.0 or pct <= 5.0),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap)
    ap.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    ap.add_argument("--iters", type=int, default=3000, help="timed pairs (default 3000)")
    ap.add_argument("--warmup", type=int, default=300, help="untimed pairs (default 300)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = model_path(args.model, args.keras, Path(tmp))
        r = measure(path, args.batch, args.iters, args.warmup, args.threads or None)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"model {r['model']}  batch {r['batch']}  {r['iters']} alternating pairs")
        print(f"{'':12}{'median':>10}{'p90':>10}{'p99':>10}  (microseconds per call)")
        for name in ("bare", "edgemodel"):
            s = r[name]
            print(f"{name:12}{s['median_us']:10.2f}{s['p90_us']:10.2f}{s['p99_us']:10.2f}")
        print(
            f"overhead    {r['overhead_us']:.2f} us ({r['overhead_pct']:.1f} %), paired median "
            f"{r['paired_diff_median_us']:.2f} us; target {r['target']}: "
            + ("PASS" if r["pass"] else "FAIL")
        )
    return 0 if r["pass"] or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
