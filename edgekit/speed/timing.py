"""Interleaved timing: the measurement loop of ``bench``, ``compare``, ``check`` and ``tune``.

Calls are timed in rounds: one call of each function per round, so that machine noise (other
processes, frequency changes) hits all of them alike and the *ratios* between them hold even on
a busy machine. The order within the rounds follows a balanced Latin square
(:func:`balanced_orders`): every call follows every other one equally often, because a call
pays for its predecessor's footprint in the caches (measured on the Fashion CNN at batch 1: an
onnxruntime call right after an OpenVINO call takes ~25 us longer than after another
onnxruntime call), and a plain rotation ``A B C, B C A ...`` keeps the same predecessor for
almost every call. Each call is timed with :func:`time.perf_counter_ns`. This module imports
numpy only.

With more than one thread, one call per row and round is not enough: the engines' idle pool
threads keep spinning after a call (onnxruntime's intra-op workers, OpenVINO's, XNNPACK's) and
take the cores the next row's call needs. Measured with MobileNetV2 at batch 1, 2 threads, on a
2-vCPU AMX Xeon with four rows in one process (ORT fp32, ORT int8, LiteRT int8, OpenVINO
fp32): alone 2.81 / 1.75 / 1.85 / 2.66 ms per call, interleaved one call at a time 6.10 / 3.22
/ 3.21 / 7.23 ms. In other runs of the same rows, four untimed calls of the same row before
each timed one still left 3.39 / 1.90 / 2.35 / 3.49 ms, and with onnxruntime's spinning off
the interleaved calls matched the alone ones but ORT itself took 4.43 ms alone instead of 2.84
(its workers sleep between parallel loops). So with ``settle`` > 0 (:func:`settle_for`)
each round runs each row for ``settle`` seconds of consecutive calls (at
least :data:`SETTLE_MIN_CALLS`) and records the median of the block's later half of calls
(a model slower than that: its second call), which measured 2.86 / 1.76 / 1.85 /
2.68 ms in the first run: the steady state an app's loop gets, with the rounds still
interleaved for the paired ratios.

With one thread there are no pool threads, but a call still pays for its predecessor's
footprint, and not every engine alike: the keras-io Conv1D text model at batch 1 on that Xeon,
one call per round (LiteRT int8, onnxruntime's tuned int8, OpenVINO's int8 in bf16 and in f32)
took 65 / 125 / 115 / 84 us, in blocks of 20 consecutive calls 42 / 71 / 51 / 49 us. A tune
timed one call per round picked onnxruntime (latency ratio to fp32 0.29 against OpenVINO's
0.50), the engine that is 1.4x slower in an app's loop. So one thread settles too, for
:data:`SETTLE_ONE_THREAD_S` (long enough to warm the caches; the same tune then measured
0.20 vs 0.17 and picked OpenVINO). ``settle=0`` still times one call per round.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from edgekit.inputs.data import TensorSpecInfo
from edgekit.inputs.synthetic import draw_inputs
from edgekit.progress import FractionFn

__all__ = ["LatencyStats", "make_inputs", "latency_stats", "balanced_orders", "measure",
           "settle_for", "SETTLE_S", "SETTLE_ONE_THREAD_S", "SETTLE_MIN_CALLS"]

#: seconds of consecutive calls per row and round when timing with more than one thread
SETTLE_S = 0.06
#: the same with one thread: no pool to wait for, only the caches to warm (a 50 us model makes
#: 200 calls, a 10 ms one two, the second timed)
SETTLE_ONE_THREAD_S = 0.01
#: calls per row and round at least when settling (the first one is never the sample)
SETTLE_MIN_CALLS = 2


def settle_for(threads: int | None) -> float:
    """The ``settle`` of :func:`measure` for ``threads`` intra-op threads:
    :data:`SETTLE_ONE_THREAD_S` with one thread (warm caches, as in an app's loop), else
    :data:`SETTLE_S` (None, each library's default, may be several threads: their idle pool
    threads spin into the next row's call)."""
    return SETTLE_ONE_THREAD_S if threads == 1 else SETTLE_S


@dataclass
class LatencyStats:
    """Latency of one model at one batch size, in milliseconds (throughput in samples/s)."""

    batch: int
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    throughput: float
    ratio: float = 1.0  # p50 / p50 of the first model, measured in the same rounds
    samples_ms: list[float] = field(default_factory=list, repr=False)

    def to_dict(self, samples: bool = False) -> dict[str, object]:
        d = asdict(self)
        if not samples:
            d.pop("samples_ms")
        return d


def make_inputs(inputs: Sequence[TensorSpecInfo], batch: int, seed: int = 0) -> list[np.ndarray]:
    """Seeded synthetic inputs (:func:`edgekit.inputs.synthetic.draw_inputs`): smooth image
    fields and uniform [0, 1) floats, ids uniform in ``[0, high)``; dynamic non-batch dimensions
    get length 8."""
    highs = {s.name: max(2, getattr(s, "high", 2)) for s in inputs}
    feeds = draw_inputs(inputs, batch, np.random.default_rng(seed), 8, {}, highs, image=True)
    return [feeds[s.name] for s in inputs]


def latency_stats(samples_ns: Sequence[int], batch: int) -> LatencyStats:
    """p50/p90/p99/mean/std/min (ms) and throughput (samples/s, from the mean) of one series."""
    a = np.asarray(samples_ns, dtype=np.float64) / 1e6
    if a.size == 0:
        raise ValueError("no latency samples")
    mean = float(a.mean())
    return LatencyStats(
        batch=batch,
        runs=int(a.size),
        p50_ms=float(np.median(a)),
        p90_ms=float(np.percentile(a, 90)),
        p99_ms=float(np.percentile(a, 99)),
        mean_ms=mean,
        std_ms=float(a.std()),
        min_ms=float(a.min()),
        throughput=batch * 1000.0 / mean if mean > 0 else float("inf"),
        samples_ms=[float(v) for v in a],
    )


def _timed(fn: Callable[[], object]) -> int:
    t0 = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - t0


def _settled(fn: Callable[[], object], seconds: float) -> int:
    """The median nanoseconds of the second half of ``seconds`` of consecutive calls of ``fn``
    (at least :data:`SETTLE_MIN_CALLS` calls; the later half by count, the first call never
    counted). By count, not by when a call began: on a loaded machine the OS may stop the
    process inside one call until after the block's end, and then no other call begins in
    its second half (a 10 us model timed at 8 ms a call, with four busy threads on two
    cores)."""
    start = time.perf_counter()
    block: list[int] = []
    while len(block) < SETTLE_MIN_CALLS or time.perf_counter() - start < seconds:
        block.append(_timed(fn))
    return int(np.median(block[max(1, len(block) // 2):]))


def balanced_orders(n: int) -> list[list[int]]:
    """Orders of ``range(n)`` for interleaved rounds in which every item directly follows every
    other item equally often: the rows of a Williams design (a balanced Latin square; ``n`` rows
    for even ``n``, ``2 n`` for odd ``n``, where the rows are also taken reversed)."""
    first, lo, hi = [0], 1, n - 1
    for k in range(1, n):
        if k % 2:
            first.append(lo)
            lo += 1
        else:
            first.append(hi)
            hi -= 1
    rows = [[(x + r) % n for x in first] for r in range(n)] if n else [[]]
    return rows + [row[::-1] for row in rows] if n % 2 and n > 1 else rows


def measure(
    calls: Sequence[Callable[[], object]],
    *,
    runs: int | None = 100,
    duration: float | None = None,
    min_runs: int = 5,
    warmup: int = 10,
    on_progress: FractionFn | None = None,
    settle: float = 0.0,
) -> list[list[int]]:
    """Time ``calls`` interleaved; returns per-call lists of nanoseconds.

    Each round calls every function once, in the orders of :func:`balanced_orders` (every call
    follows every other one equally often over a cycle of rounds). With more than two calls,
    each round's first call is also made once untimed just before it, so that the call before a
    timed one is balanced across rounds too: otherwise the last call of one round precedes the
    first of the next, and that pairing is not balanced (with four rows, the second row
    followed one of them twice per cycle and measured 1.11x the first on the same file). It
    stops after
    ``runs`` rounds (default 100), or, with ``duration`` seconds, when the time is up and every
    call has ``min_runs`` samples (default 5). ``warmup`` (default 10) untimed rounds come first.
    ``on_progress`` gets the done fraction in [0, 1]. With ``settle`` seconds (see the module
    docstring; :func:`settle_for`), a row's sample in a round is the median of the later half of
    ``settle`` seconds of its consecutive calls (one sample per row and round still).
    """
    if settle < 0:
        raise ValueError(f"settle must be >= 0 seconds, got {settle}")
    n = len(calls)
    for _ in range(warmup):
        for fn in calls:
            fn()
    orders = balanced_orders(n)
    times: list[list[int]] = [[] for _ in range(n)]
    start = time.perf_counter()
    total = (runs or 100) if duration is None else None
    r = 0
    last_report = start
    while True:
        if total is not None and r >= total:
            break
        elapsed = time.perf_counter() - start
        if duration is not None and elapsed >= duration and r >= min_runs:
            break
        order = orders[r % len(orders)]
        if n > 2 and not settle:  # the round's first call follows itself (see above)
            calls[order[0]]()
        for i in order:
            times[i].append(_settled(calls[i], settle) if settle else _timed(calls[i]))
        r += 1
        if on_progress is not None:
            now = time.perf_counter()
            if now - last_report > 0.1:
                last_report = now
                frac = r / total if total else min(1.0, (now - start) / duration)  # type: ignore[operator]
                on_progress(frac)
    if on_progress is not None:
        on_progress(1.0)
    return times
