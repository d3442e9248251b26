"""Timing worker of ``benchmarks/zoo.py``: one model's rows with one thread setting.

Runs in its own process (LiteRT and OpenVINO fix their thread pools when they load). Every
row is loaded through :func:`edgekit.measure.backends.load_backend` (ONNX on onnxruntime,
OpenVINO, or the engine and threads a tuned file stores; ``.tflite`` in LiteRT's interpreter)
and run once at each batch. Per batch:

- interleaved rounds by :func:`edgekit.speed.timing.measure` (one call per row and round,
  balanced orders) for ``seconds`` x rows (at least ``min_rounds`` rounds): p50/p90/p99 by
  :func:`~edgekit.speed.timing.latency_stats` and the median of per-round paired ratios
  against ORT fp32 (:func:`edgekit.speed.ratio.paired_ratio`), and of the tuned row against
  every other row; a row's sample in a round is the median of the later half of a block of
  its consecutive calls (``settle``, :func:`edgekit.speed.timing.settle_for`: 60 ms
  with more than one thread, where the other engines' idle pool threads spin into a lone
  call; 10 ms with one, where a call pays for the other engine's footprint in the caches);
- warm-cache blocks: 20 consecutive calls of one row (``measure`` on that row alone), the rows
  in balanced orders, for as long again (at least one block per row): the per-call median.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgekit.measure.backend import Backend
from edgekit.measure.backends import load_backend
from edgekit.speed.ratio import paired_ratio
from edgekit.speed.timing import (
    balanced_orders,
    latency_stats,
    make_inputs,
    measure,
    settle_for,
)

__all__ = ["bench_plan", "bench_inputs", "warm_blocks", "BLOCK"]

#: calls per warm-cache block
BLOCK = 20


def _error(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _load(path: str, engine: str, threads: int) -> Backend:
    if engine == "litert":
        return load_backend(path, threads=threads)
    if engine == "auto":  # a tuned file: the engine and threads its tune stored (at most the
        return load_backend(path, engine=engine)  # tune's --threads, which is ``threads``)
    return load_backend(path, threads=threads, engine=engine)


def warm_blocks(calls: Sequence[Callable[[], Any]], seconds: float,
                block: int = BLOCK) -> list[list[int]]:
    """Per-call nanoseconds of blocks of ``block`` consecutive calls of one row each, the rows
    in balanced orders, until ``seconds`` are spent (at least one block per row)."""
    orders = balanced_orders(len(calls))
    out: list[list[int]] = [[] for _ in calls]
    start, r = time.perf_counter(), 0
    while r == 0 or time.perf_counter() - start < seconds:
        for i in orders[r % len(orders)]:
            out[i] += measure([calls[i]], runs=block, warmup=0)[0]
        r += 1
    return out


def bench_inputs(plan: dict[str, Any], reference: Backend, batch: int) -> list[np.ndarray]:
    """``plan["data"]`` read for the reference row's file (the fp32 ONNX) and repeated to
    ``batch`` samples, in input order; synthetic inputs when the plan has no data."""
    if not plan.get("data"):
        return make_inputs(reference.inputs, batch)
    import onnx

    from edgekit.inputs.prepare import load_model_data, onnx_input_specs
    from edgekit.metadata import ModelMetadata

    proto = onnx.load(plan["rows"][0]["paths"][str(batch)], load_external_data=False)
    meta = ModelMetadata.from_props({p.key: p.value for p in proto.metadata_props})
    specs = onnx_input_specs(proto)
    feeds = load_model_data(plan["data"], specs, meta, "benchmark data")[0]
    out = []
    for spec in specs:
        x = feeds[spec.name]
        out.append(np.concatenate([x] * -(-batch // len(x)))[:batch])
    return out


def _time_rows(rows: list[tuple[str, Backend]], inputs: list[np.ndarray], batch: int,
               plan: dict[str, Any]) -> dict[str, Any]:
    """Interleaved and warm-cache statistics of ``rows`` (the first is the reference) on
    ``inputs``."""
    names = [r for r, _ in rows]
    calls = [b.bind(inputs) for _, b in rows]
    seconds = plan["seconds"] * len(calls)
    t0 = time.perf_counter()
    times = measure(calls, runs=None, duration=seconds, min_runs=plan["min_rounds"],
                    warmup=plan["warmup"], settle=settle_for(int(plan["threads"])))
    t1 = time.perf_counter()
    warm = warm_blocks(calls, seconds)
    stats: dict[str, Any] = {}
    for i, name in enumerate(names):
        s, w = latency_stats(times[i], batch), latency_stats(warm[i], batch)
        ratio = paired_ratio(times[i], times[0])
        stats[name] = {**s.to_dict(), "warm_p50_ms": w.p50_ms, "warm_p90_ms": w.p90_ms,
                       "warm_runs": w.runs, "ratio_vs_fp32": ratio, "speedup": 1.0 / ratio}
        stats[name].pop("ratio", None)  # bench's ratio of medians; paired_ratio is the figure
    if "tuned" in names:
        t = names.index("tuned")
        stats["tuned"]["vs_rows"] = {n: paired_ratio(times[t], times[j])
                                     for j, n in enumerate(names) if j != t}
    return {"rows": stats, "rounds": len(times[0]), "interleaved_s": round(t1 - t0, 2),
            "warm_s": round(time.perf_counter() - t1, 2), "block": BLOCK}


def bench_plan(plan: dict[str, Any]) -> dict[str, Any]:
    """Load and time every row of ``plan`` (see ``zoo.py``'s ``_plan``) at each batch."""
    threads = int(plan["threads"])
    loaded: dict[tuple[str, str], Backend] = {}
    out: dict[str, Any] = {"threads": threads, "settle_s": settle_for(threads), "batches": {},
                           "rows": {},
                           "inputs": "calibration samples" if plan.get("data") else "synthetic"}
    for batch in plan["batches"]:
        rows: list[tuple[str, Backend]] = []
        errors: dict[str, str] = {}
        inputs: list[np.ndarray] | None = None  # made with the first row (ORT fp32)
        for r in plan["rows"]:
            path = r["paths"].get(str(batch))
            if path is None:
                continue
            try:
                key = (path, r["engine"])
                if key not in loaded:
                    loaded[key] = _load(path, r["engine"], threads)
                b = loaded[key]
                out["rows"].setdefault(r["row"], {})[str(batch)] = {
                    "path": path, "kind": b.kind, "engine": getattr(b, "engine", b.kind),
                    "load_ms": b.load_time_ms}
                if inputs is None:
                    inputs = bench_inputs(plan, b, batch)
                b.infer(inputs)  # fail here, on the inputs it is timed on, not while timing
            except Exception as exc:  # a row that fails is reported; the others are timed
                errors[r["row"]] = _error(exc)
                continue
            rows.append((r["row"], b))
        res: dict[str, Any] = {"errors": errors}
        if rows and rows[0][0] == "ort-fp32" and inputs is not None:
            res.update(_time_rows(rows, inputs, batch, plan))
        else:
            res["errors"]["all"] = "ORT fp32 (the reference) did not run"
        out["batches"][str(batch)] = res
    for b in loaded.values():
        b.close()
    return out
