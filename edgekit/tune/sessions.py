"""The tune's session stage: the onnxruntime session settings tried on the best onnxruntime
candidate, the thread counts below the requested one and the batch split into streams tried on
the best candidate of every engine, and when one is not worth trying."""

from __future__ import annotations

from pathlib import Path

from edgekit.runtime.session import SessionOptionsConfig
from edgekit.tune.core import Candidate, _check_accuracy, _Context, _measure

__all__ = ["FEWER_THREADS_FILES", "FEWER_THREADS_MAX_MS", "fewer_threads", "fewer_thread_bases",
           "session_candidate", "stream_counts", "streams_candidate", "threads_candidate"]

#: a candidate whose call takes longer than this (ms, at the requested threads and batch) is not
#: tried on fewer threads: the pool's hand-offs cost microseconds a call, so it is a model this
#: small that can be faster on fewer threads (the Fashion-MNIST CNN on 2 vCPUs: 1 thread
#: 41.9 us, 2 threads 46.9 us, blocks of 20 calls, 2026-12-04, AMX Xeon), and a longer one
#: would only spend the budget (ConvNeXtTiny at batch 32: seconds per round)
FEWER_THREADS_MAX_MS = 20.0

#: how many of each engine's fastest files the fewer-threads stage tries: a file whose extra
#: work splits well across threads can lead on all of them and lose on one (the Fashion CNN at
#: batch 1 on 2 vCPUs, AMX Xeon, latency / fp32's on 2 threads: per-tensor int8 with its
#: 1-channel stem conv in int8 0.92 on 2 threads and 1.01 on 1; the stem-in-float file 0.94
#: and 0.62; the export's default file, stem in float, is tried as well). Each try takes a
#: second or two: only calls under FEWER_THREADS_MAX_MS get them
FEWER_THREADS_FILES = 3

#: onnxruntime moves Quantize/Dequantize nodes across pooling/reshape at load (the session
#: stage tries switching that off; mixed-precision files no longer need it, see quantize.qdq)
_NO_PROPAGATION = SessionOptionsConfig(disabled_optimizers=["QDQPropagationTransformer"])


def _session_space() -> list[tuple[str, str, SessionOptionsConfig]]:
    return [
        ("no-qdq-propagation", "onnxruntime's QDQ propagation disabled", _NO_PROPAGATION),
        ("no-spin", "intra-op threads do not spin between runs",
         SessionOptionsConfig(allow_spinning=False)),
        ("denormal-zero", "denormals flushed to zero",
         SessionOptionsConfig(session_config={"session.set_denormal_as_zero": "1"})),
        ("opt-extended", "graph optimization level extended (no layout transforms)",
         SessionOptionsConfig(graph_optimization_level="extended")),
    ]


def _skip_session(extra: SessionOptionsConfig, best: Candidate,
                  best_session: SessionOptionsConfig, threads: int) -> bool:
    if extra.disabled_optimizers and (
            best.quantization is None
            or set(extra.disabled_optimizers) <= set(best_session.disabled_optimizers)):
        return True  # no Q/DQ to propagate, or already off
    # one thread has no pool threads to spin; a "win" would be noise
    return extra.allow_spinning is not None and threads == 1


def session_candidate(ctx: _Context, best: Candidate, session: SessionOptionsConfig,
                      name: str, desc: str, carried: str | None = None) -> Candidate:
    """``best``'s file with ``session`` (its settings with one changed): timed, and gated on
    accuracy; with ``carried`` (the reason), ``best``'s accuracy is carried over instead (the
    fp32 reference, or the same file and kernels on fewer threads)."""
    assert best.path is not None
    c = Candidate(f"{best.name}+{name}", "session", f"{best.name}, {desc}",
                  quantization=best.quantization, nonstandard_ops=list(best.nonstandard_ops))
    ctx.progress(f"session: {c.name}")
    m = _measure(ctx, c, Path(best.path), session)
    if carried is not None:
        c.accuracy, c.agreement, c.accuracy_drop = best.accuracy, best.agreement, best.accuracy_drop
        c.relative_error = best.relative_error
        c.accepted, c.reason = True, carried
    else:
        _check_accuracy(ctx, c, m)
    m.close()
    ctx.progress(f"    ratio {c.latency_ratio or float('nan'):.3f}")
    return c


def fewer_threads(threads: int) -> list[int]:
    """The intra-op thread counts below ``threads`` the tune tries: one, and half of
    ``threads`` (rounded down) when that is more than one; none for one thread."""
    return sorted({1, threads // 2} - {threads}) if threads > 1 else []


def fewer_thread_bases(leaders: list[Candidate]) -> list[Candidate]:
    """Of ``leaders`` (accepted candidates, each once: ``_Search.engine_leaders``), those whose
    call at the requested threads takes at most :data:`FEWER_THREADS_MAX_MS`."""
    return [b for b in leaders
            if b.latency_ms is not None and b.latency_ms <= FEWER_THREADS_MAX_MS]


def threads_candidate(ctx: _Context, best: Candidate, threads: int) -> Candidate:
    """``best``'s file, engine and settings on ``threads`` intra-op threads: timed; its
    accuracy is ``best``'s (the same file computed by the same kernels)."""
    session = SessionOptionsConfig.from_dict(best.session).merged(
        SessionOptionsConfig(intra_op_num_threads=threads))
    return session_candidate(ctx, best, session, f"{threads}-thread",
                             f"on {threads} of the {ctx.config.threads} threads",
                             f"{best.name}'s file and engine: its accuracy")


def stream_counts(threads: int, batch: int) -> list[int]:
    """The ``batch_streams`` the tune tries: one part per thread, when the threads and the
    batch are both more than one."""
    return [threads] if threads > 1 and batch > 1 else []


def streams_candidate(ctx: _Context, best: Candidate, streams: int) -> Candidate:
    """``best``'s file, engine and settings with each call's batch split into ``streams``
    parts that run at once (:mod:`edgekit.runtime.streams`): timed, and gated on accuracy
    (the parts run at a smaller batch, which an engine may compile with other kernels)."""
    session = SessionOptionsConfig.from_dict(best.session).merged(
        SessionOptionsConfig(batch_streams=streams))
    each = session.stream_threads()
    return session_candidate(ctx, best, session, f"{streams}-streams",
                             f"its batch split into {streams} parts run at once, on {each} "
                             f"thread{'s' if each > 1 else ''} each")
