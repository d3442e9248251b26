"""Per-call overhead of ``EdgeModel.run`` over the bare engine call, for each engine.

onnxruntime: the same session, called through ``InferenceSession.run`` (public API), through
the C++ session ``sess._sess.run`` (what EdgeModel called before bound calls, and still calls
for inputs and outputs over ``MAX_BOUND_BYTES``), through the lowest-level call that gives
the same result (the inputs copied into buffers bound to an ``IOBinding`` once, the C++
``run_with_iobinding``, the bound outputs copied: what :mod:`edgekit.runtime.ort_binding`
calls) and through ``EdgeModel.run``, with bound calls and with them off (every call through
the C++ ``session.run``: EdgeModel before bound calls).
OpenVINO: the same compiled model, called through ``InferRequest.infer(feeds)`` (public API),
through ``set_input_tensor`` of a shared ``ov.Tensor`` + ``infer()`` + outputs copied (what the
engine called before it copied small inputs in), through the lowest-level call that gives the
same result (inputs up to ``COPY_INPUT_BYTES`` copied into views of the request's own buffers,
larger ones shared, ``infer()``, outputs copied from views made once: what the engine calls)
and through ``EdgeModel(engine="openvino").run``.
``EdgeModel.run`` is also timed with ``check_nan=True`` (the opt-in per-call NaN/Inf scan). Each
engine's calls are timed interleaved in one process, 1 thread, so machine noise hits all
equally, by ``edgekit.speed.timing.measure`` (balanced orders: every call follows every other
one equally often); the engines one after the other, since a call right after another
engine's call is slower (cold caches), which an app calling one engine does not see.
Target (issue 13): median overhead over the lowest-level bare call at most 3 % or 2
microseconds at batch 1 on the Fashion-MNIST CNN, taken as the median of the per-round
differences (both calls ran in the same round, so machine noise cancels).

    python benchmarks/runtime_overhead.py                      # exports models/fashion_cnn.keras
    python benchmarks/runtime_overhead.py --model out/fashion_cnn.int8.onnx --iters 5000
    python benchmarks/runtime_overhead.py --settle 0.01 --iters 300          # warm, per-call

Prints a table and writes ``benchmarks/results/runtime_overhead.json`` (``--out``). Exit status
1 when the target is missed and ``--check`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _runtime_common import add_model_args, model_path

from edgekit.speed.machine import cpu_model, instruction_set
from edgekit.speed.timing import make_inputs
from edgekit.speed.timing import measure as time_interleaved

RESULTS = Path(__file__).resolve().parent / "results" / "runtime_overhead.json"


def _stats(ns: list[int]) -> dict[str, float]:
    a = np.asarray(ns, dtype=np.float64) / 1000.0
    return {
        "median_us": float(np.median(a)),
        "p90_us": float(np.percentile(a, 90)),
        "p99_us": float(np.percentile(a, 99)),
        "mean_us": float(a.mean()),
    }


def _feeds(model: Any, batch: int) -> dict[str, np.ndarray]:
    """Inputs as ``edgekit bench`` draws them (:func:`edgekit.speed.timing.make_inputs`)."""
    return dict(zip(model.input_names, make_inputs(model.inputs, batch), strict=True))


def _ort_calls(path: Path, threads: int, batch: int) -> dict[str, Callable[[], Any]]:
    from edgekit.runtime import EdgeModel

    model = EdgeModel(path, "cpu", engine="onnxruntime", threads=threads)
    strict = EdgeModel(path, "cpu", engine="onnxruntime", threads=threads, check_nan=True)
    plain = EdgeModel(path, "cpu", engine="onnxruntime", threads=threads)
    if plain.engine.bound is not None:  # type: ignore[attr-defined]
        plain.engine.bound.close()  # type: ignore[attr-defined]  # every call plain (before)
    sess, feeds = model.session, _feeds(model, batch)
    c_run, names = sess._sess.run, list(model.output_names)
    bound = _ort_bound(sess, feeds, names)
    for a, *others in zip(sess.run(None, feeds), model.run(feeds), plain.run(feeds), bound(),
                          strict=True):
        for b in others:
            np.testing.assert_array_equal(a, b)
    return {
        "ort InferenceSession.run": lambda: sess.run(None, feeds),
        "ort bare C++ session.run": lambda: c_run(names, feeds, None),
        "ort bare bound copy-in+run": bound,
        "ort EdgeModel.run": lambda: model.run(feeds),
        "ort EdgeModel.run (bound calls off)": lambda: plain.run(feeds),
        "ort EdgeModel.run (check_nan=True)": lambda: strict.run(feeds),
    }


def _ort_bound(sess: Any, feeds: dict[str, np.ndarray], names: list[str]
               ) -> Callable[[], list[np.ndarray]]:  # fmt: skip
    """onnxruntime's lowest-level call: buffers bound once, inputs copied in, outputs out."""
    import onnxruntime as ort

    binding = sess.io_binding()
    ins = {n: np.empty_like(a) for n, a in feeds.items()}
    outs = [np.empty_like(a) for a in sess.run(None, feeds)]
    for n, buf in ins.items():
        binding.bind_input(n, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)
    for n, buf in zip(names, outs, strict=True):
        binding.bind_output(n, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)
    io, run, opts = binding._iobinding, sess._sess.run_with_iobinding, ort.RunOptions()

    def bare() -> list[np.ndarray]:
        for n, buf in ins.items():
            np.copyto(buf, feeds[n])
        run(io, opts)
        return [o.copy() for o in outs]

    return bare


def _ov_calls(path: Path, threads: int, batch: int) -> dict[str, Callable[[], Any]]:
    import openvino as ov

    from edgekit.runtime import EdgeModel, SessionOptionsConfig
    from edgekit.runtime.engine_openvino import COPY_INPUT_BYTES

    cfg = SessionOptionsConfig(threads=threads, precision="f32")
    model = EdgeModel(path, engine="openvino", session=cfg)
    strict = EdgeModel(path, engine="openvino", session=cfg, check_nan=True)
    feeds = _feeds(model, batch)
    model.run(feeds)  # compiles for this shape
    compiled = model.engine._by_shape[next(iter(feeds.values())).shape].compiled  # type: ignore[attr-defined]
    req, req2, req3 = (compiled.create_infer_request() for _ in range(3))
    arrays, n_out = list(feeds.values()), range(len(model.outputs))
    views = [req3.get_input_tensor(i).data for i in range(len(arrays))]
    outs = [req3.get_output_tensor(i).data for i in n_out]
    for i, a in enumerate(arrays):
        if a.nbytes > COPY_INPUT_BYTES:
            req3.set_input_tensor(i, ov.Tensor(a, shared_memory=True))

    def wrapped() -> list[np.ndarray]:
        for i, a in enumerate(arrays):
            req.set_input_tensor(i, ov.Tensor(a, shared_memory=True))
        req.infer()
        return [req.get_output_tensor(i).data.copy() for i in n_out]

    def bare() -> list[np.ndarray]:
        for v, a in zip(views, arrays, strict=True):
            if a.nbytes <= COPY_INPUT_BYTES:
                np.copyto(v, a)
        req3.infer()
        return [o.copy() for o in outs]

    for a, b, c in zip(bare(), wrapped(), model.run(feeds), strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, c)
    return {
        "ov InferRequest.infer(feeds)": lambda: req2.infer(feeds),
        "ov set_input_tensor(shared)+infer": wrapped,
        "ov bare copy-in+infer": bare,
        "ov EdgeModel.run": lambda: model.run(feeds),
        "ov EdgeModel.run (check_nan=True)": lambda: strict.run(feeds),
    }


def _verdict(times: dict[str, list[int]], bare: str, wrapped: str) -> dict[str, Any]:
    """Overhead as the median of per-round differences (both calls ran in the same round, so
    machine noise cancels), in microseconds and in % of the bare call's median."""
    b, w = (np.asarray(times[k], dtype=np.float64) / 1000.0 for k in (bare, wrapped))
    over = float(np.median(w - b))
    pct = 100.0 * over / float(np.median(b))
    return {"bare": bare, "edgemodel": wrapped, "overhead_us": over, "overhead_pct": pct,
            "target": "<= 3% or <= 2 us", "pass": bool(over <= 2.0 or pct <= 3.0)}  # fmt: skip


def measure(path: Path, batch: int, iters: int, warmup: int, threads: int, engines: list[str],
            settle: float = 0.0) -> dict[str, Any]:  # fmt: skip
    """Time each engine's calls interleaved, one engine after the other (an app calls one
    engine; a call right after another engine's is slower); return stats and verdicts."""
    makers = {"onnxruntime": _ort_calls, "openvino": _ov_calls}
    times: dict[str, list[int]] = {}
    for engine in (e for e in makers if e in engines):
        calls = makers[engine](path, threads, batch)
        timed = time_interleaved(list(calls.values()), runs=iters, warmup=warmup, settle=settle)
        times.update(zip(calls, timed, strict=True))
    stats = {k: _stats(v) for k, v in times.items()}
    verdicts = []
    for engine, tag, bare, other in [
        ("onnxruntime", "ort", "ort bare bound copy-in+run", "ort bare C++ session.run"),
        ("openvino", "ov", "ov bare copy-in+infer", "ov InferRequest.infer(feeds)"),
    ]:
        if engine in engines:
            verdicts += [_verdict(times, bare, f"{tag} EdgeModel.run"),
                         _verdict(times, bare, f"{tag} EdgeModel.run (check_nan=True)"),
                         _verdict(times, other, f"{tag} EdgeModel.run")]  # fmt: skip
    result = {"model": str(path), "batch": batch, "iters": iters, "threads": threads,
              "settle_s": settle,
              "cpu": cpu_model(), "instruction_set": instruction_set(), "calls": stats,
              "verdicts": verdicts}  # fmt: skip
    if "onnxruntime" in engines:
        result["bound_calls"] = _gain(times, "ort EdgeModel.run (bound calls off)",
                                      "ort EdgeModel.run")
    return result


def _gain(times: dict[str, list[int]], before: str, after: str) -> dict[str, Any]:
    """What ``after`` saves over ``before``: the median per-round difference (microseconds)
    and the median per-round ratio after / before."""
    b, a = (np.asarray(times[k], dtype=np.float64) / 1000.0 for k in (before, after))
    return {"before": before, "after": after, "saved_us": float(np.median(b - a)),
            "ratio": float(np.median(a / b))}


def _print(r: dict[str, Any]) -> None:
    how = (f", a sample the median of the later half of {1000 * r['settle_s']:.0f} ms of one "
           "call's consecutive runs" if r.get("settle_s") else ", one call per row and round")
    print(f"model {r['model']}  batch {r['batch']}  threads {r['threads']}  "
          f"{r['iters']} interleaved rounds{how}")  # fmt: skip
    print(f"CPU: {r['cpu']} ({r['instruction_set']})")
    print(f"{'call':40}{'median':>10}{'p90':>10}{'p99':>10}  (microseconds per call)")
    for name, s in r["calls"].items():
        print(f"{name:40}{s['median_us']:10.2f}{s['p90_us']:10.2f}{s['p99_us']:10.2f}")
    for v in r["verdicts"]:
        print(f"{v['edgemodel']} vs {v['bare']}: {v['overhead_us']:+.2f} us "
              f"({v['overhead_pct']:+.1f} %); target {v['target']}: "
              + ("PASS" if v["pass"] else "FAIL"))  # fmt: skip
    if "bound_calls" in r:
        g = r["bound_calls"]
        print(f"{g['after']} vs {g['before']}: {-g['saved_us']:+.2f} us per call "
              f"(paired ratio {g['ratio']:.3f})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap)
    ap.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    ap.add_argument("--iters", type=int, default=3000, help="timed rounds (default 3000)")
    ap.add_argument("--warmup", type=int, default=300, help="untimed rounds (default 300)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    ap.add_argument("--settle", type=float, default=0.0,
                    help="seconds of consecutive calls per row and round, whose later half's "
                    "median is the round's sample (warm caches, as in an app's loop; e.g. 0.01 "
                    "with --iters 300); default 0: one call per row and round, each after "
                    "another session's call")
    ap.add_argument(
        "--engines",
        default="onnxruntime,openvino",
        help="comma-separated engines (default onnxruntime,openvino)",
    )
    ap.add_argument("--out", default=str(RESULTS), help=f"JSON file (default {RESULTS})")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        path = model_path(args.model, args.keras, Path(tmp))
        r = measure(path, args.batch, args.iters, args.warmup, args.threads, engines,
                    args.settle)
    _print(r)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(r, indent=2) + "\n")
    print(f"wrote {out}")
    target = [v for v in r["verdicts"]  # the default EdgeModel.run against the bare call
              if "bare" in v["bare"] and v["edgemodel"].endswith("EdgeModel.run")]  # fmt: skip
    return 0 if all(v["pass"] for v in target) or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
