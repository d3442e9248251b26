"""Batch streams: one call's batch split into parts that run at once, each on its share of the
threads (:attr:`~edgekit.runtime.session.SessionOptionsConfig.batch_streams`).

Splitting the rows of a batch between threads beats splitting every op between them wherever
the ops are too small to share well: depthwise convs, squeeze-excite blocks, the per-op
hand-offs of a thread pool. Measured on 2 vCPUs (AMX Xeon), batch 32, one call on 2 threads
against two halves on one thread each, run at once: EfficientNetB0 in OpenVINO bf16 122.9 ->
110.9 ms, MobileNetV3Large 53.0 -> 43.5 ms, but a Conv1D text model's 0.53 ms call 0.92 ms
(``benchmarks/batch_streams.py``; the README's table has the figures of every model).

An engine takes its part of the threads itself: onnxruntime gives each call
``intra_op_num_threads // batch_streams`` threads (the parts then run through one session at
once, which onnxruntime allows), OpenVINO compiles ``NUM_STREAMS`` streams and each part runs on
its own infer request (one per thread). A call of a single row runs alone on one stream's
threads.

Only a model whose rows are computed independently can be split: every input and output
has a dynamic first (batch) axis, and the file is not marked as mixing the batch
(:data:`BATCH_KEY`). :func:`split_problem` says why a model cannot be split.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from edgekit.metadata import PREFIX
from edgekit.runtime.specs import InputSpec

__all__ = ["BATCH_KEY", "BatchStreams", "batch_prop", "mixes_batch", "split_problem"]

#: metadata key of a file whose outputs are not per-sample (value ``true``; absent otherwise)
BATCH_KEY = PREFIX + "batch_dependent"

RunFn = Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]


def batch_prop(batch_dependent: bool) -> dict[str, str]:
    """The :data:`BATCH_KEY` metadata entry of a file (none for per-sample outputs)."""
    return {BATCH_KEY: "true"} if batch_dependent else {}


def mixes_batch(props: Mapping[str, str]) -> bool:
    """Whether a file's ``metadata_props`` mark its outputs as not per-sample."""
    return props.get(BATCH_KEY, "").strip().lower() == "true"


def split_problem(inputs: Sequence[InputSpec], outputs: Sequence[InputSpec],
                  props: Mapping[str, str]) -> str | None:
    """None when a model's batch can be split into independent parts, else why not."""
    if mixes_batch(props):
        return "its outputs mix the rows of a batch (its export marked it " + BATCH_KEY + ")"
    fixed = [s.name for s in (*inputs, *outputs) if not s.shape or s.shape[0] is not None]
    if fixed:
        return f"{', '.join(map(repr, fixed[:3]))} {'has' if len(fixed) == 1 else 'have'} " \
            "no dynamic batch axis"
    return None


class BatchStreams:
    """``run`` over a batch split into ``streams`` parts: the first part on the calling thread,
    the others on a pool of ``streams - 1`` threads kept for the model's life; the outputs
    concatenated in order. A batch whose inputs disagree on their row count, or of fewer rows
    than two, runs whole. Thread-safe like ``run`` itself."""

    def __init__(self, run: RunFn, streams: int) -> None:
        self._run = run
        self.streams = streams
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        rows = {len(a) for a in feeds.values()}
        n = rows.pop() if len(rows) == 1 else 0
        parts = min(self.streams, n)
        if parts < 2:
            return self._run(feeds)
        bounds = [n * i // parts for i in range(parts + 1)]
        pool = self._pool or self._start()
        futures: list[Future[list[np.ndarray]]] = [
            pool.submit(self._run, {k: a[lo:hi] for k, a in feeds.items()})
            for lo, hi in zip(bounds[1:-1], bounds[2:], strict=True)]
        first = self._run({k: a[:bounds[1]] for k, a in feeds.items()})
        outs = [first, *[f.result() for f in futures]]
        return [np.concatenate([o[i] for o in outs]) for i in range(len(first))]

    def _start(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.streams - 1,
                                                thread_name_prefix="edgekit-stream")
            return self._pool

    def close(self) -> None:
        """Stop the pool's threads (after the parts they run)."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
