"""The tune's engine candidates (files run by the other registered engines: OpenVINO ...) and
the run-off that picks the winner among the fastest candidates, timed together."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.io.memory import current_rss_bytes
from edgekit.quantize.options import QuantMode
from edgekit.runtime.engine_registry import engine_class
from edgekit.runtime.model import EdgeModel
from edgekit.runtime.session import SessionOptionsConfig
from edgekit.speed.ratio import paired_ratio
from edgekit.speed.timing import measure
from edgekit.tune.candidates import _try_quant
from edgekit.tune.core import (
    Candidate,
    _batch_of,
    _check_accuracy,
    _Context,
    _measure,
    _open,
)


def _engine_failure(engine: str, exc: BaseException) -> str:
    """A candidate's reason when ``engine`` rejected its file or failed to run it."""
    return f"{engine} failed: {str(exc).strip().splitlines()[0][:160]}"


def _engine_candidate(ctx: _Context, base: Candidate, engine: str, precision: str,
                      name: str, desc: str) -> Candidate:
    """``base``'s file run by ``engine`` at ``precision`` (base session threads), measured and
    gated on accuracy like every candidate."""
    assert base.path is not None
    cand = Candidate(name, "engine", desc, quantization=base.quantization, engine=engine,
                     nonstandard_ops=list(base.nonstandard_ops))
    session = ctx.base_session.merged(
        SessionOptionsConfig(engine=engine, precision=precision))
    model = None
    try:
        model = _measure(ctx, cand, Path(base.path), session)
        _check_accuracy(ctx, cand, model)
    except Exception as exc:  # an engine that rejects or fails to run the file: a failed candidate
        cand.accepted = False
        cand.reason = _engine_failure(engine, exc)
    finally:
        if model is not None:
            model.close()
    return cand


def layout_candidates(ctx: _Context, engine: str) -> list[Candidate]:
    """The engine's own int8 layout: static int8 with Q/DQ on the edges of its
    :attr:`~edgekit.runtime.engine_base.Engine.qdq_ops` only (the tune's base quantization
    config otherwise), measured on that engine and gated like every candidate. Where the
    engine computes in bf16 here, first ``int8-bf16-<engine>`` (its float parts in bf16, the
    :attr:`~edgekit.runtime.engine_base.Engine.qdq_bf16_scheme` layout), and the f32
    ``int8-<engine>`` only when that one is not accepted; else ``int8-<engine>``. Empty for an
    engine without such a layout or a model without those ops."""
    cls = engine_class(engine)
    present = sorted({n.op_type for n in ctx.graph.node} & set(cls.qdq_ops or ()))
    if not present:
        return []
    out = []
    if _bf16_skip_reason(engine) is None:  # precision_problem: None only where it has bf16
        out.append(_layout(ctx, engine, present, "bf16", {**cls.qdq_scheme,
                                                           **cls.qdq_bf16_scheme}))
        if out[0].accepted:
            return out
    return [*out, _layout(ctx, engine, present, "f32", dict(cls.qdq_scheme))]


def _layout(ctx: _Context, engine: str, present: list[str], precision: str,
            scheme: dict[str, Any]) -> Candidate:
    """One layout candidate: the file quantized with ``scheme`` over the base config, run by
    ``engine`` at ``precision``."""
    cls = engine_class(engine)
    name = f"int8-{engine}" if precision == "f32" else f"int8-{precision}-{engine}"
    extra = "".join(f", {k}={v}" for k, v in scheme.items())
    where = "" if precision == "f32" else f", the float parts in {precision}"
    desc = (f"static int8 with Q/DQ on the inputs of {', '.join(present)} only{extra}, the "
            f"layout {cls.display_name()} fuses into its int8 kernels{where}")
    base = ctx.config.quantization
    qcfg = dataclasses.replace(base, mode=QuantMode.INT8, scheme=dataclasses.replace(
        base.scheme, op_types_to_quantize=cls.qdq_ops, **scheme))
    session = ctx.base_session.merged(SessionOptionsConfig(engine=engine, precision=precision))
    ctx.progress(f"engine: {name}: {desc}")
    try:
        c = _try_quant(ctx, name, desc, qcfg, stage="engine", session=session)
    except Exception as exc:  # the engine rejects or fails to run the file
        c = Candidate(name, "engine", desc, quantization=qcfg, engine=engine,
                      reason=_engine_failure(engine, exc))
    ctx.progress(f"    ratio {c.latency_ratio or float('nan'):.3f}, {c.reason}")
    return c


def _bf16_skip_reason(engine: str) -> str | None:
    """None when ``engine`` computes in bf16 here (:meth:`Engine.precision_problem`: OpenVINO
    on CPUs with avx512_bf16 / amx_bf16), else why its bf16 candidate is skipped."""
    why = engine_class(engine).precision_problem("bf16")
    return None if why is None else f"no bf16 candidate on {engine}: {why}"


_FINALISTS = 3
#: simpler settings first: a more complex candidate wins only when it is faster by more than
#: the measurement noise (``ratio.tolerance``)
_STAGE_ORDER = {"baseline": 0, "quantization": 1, "mixed precision": 2, "kernels": 3,
                "session": 4, "engine": 5}


#: an extra intra-op thread must buy this much latency: a run-off finalist on fewer threads
#: within it of the winner (and no slower than fp32 on all the threads) wins instead. A call
#: of microseconds gains little from a second thread and waits on the pool's hand-offs when
#: another thread takes the core: the Fashion CNN at batch 1 on a 2-vCPU AMD EPYC Zen 4 took
#: 27 µs on 2 threads and 28.5 on one in the tune's quiet rounds, and 46-58 µs on 2 threads
#: interleaved with the other engines' calls in the zoo (the one-thread rows 28-29 µs)
THREAD_MARGIN = 0.10


def _finalists(cands: Sequence[Candidate], threads: int) -> list[Candidate]:
    """The run-off's candidates: the :data:`_FINALISTS` fastest accepted ones, and the fastest
    accepted one of every engine and thread count (unset: ``threads``), so every engine's best,
    and its best on fewer threads, is compared side by side."""
    timed = sorted((c for c in cands if c.accepted and c.latency_ratio is not None and c.path),
                   key=lambda c: c.latency_ratio or 0.0)
    finalists = timed[:_FINALISTS]
    for key in dict.fromkeys((c.engine, c.thread_count(threads)) for c in timed):
        best = next(c for c in timed if (c.engine, c.thread_count(threads)) == key)
        if all(best is not f for f in finalists):
            finalists.append(best)
    return finalists


def _on_fewer_threads(winner: Candidate, finalists: Sequence[Candidate],
                      threads: int) -> Candidate:
    """Of the finalists on fewer threads than ``winner`` (unset: ``threads``), within
    :data:`THREAD_MARGIN` of its ratio and no slower than fp32 on all the threads (unless the
    winner is), the one on the fewest (then the fastest); else ``winner``."""
    ratio = winner.latency_ratio or 0.0
    bound = min(ratio * (1 + THREAD_MARGIN), max(ratio, 1.0))
    close = [c for c in finalists if c.thread_count(threads) < winner.thread_count(threads)
             and c.latency_ratio is not None and c.latency_ratio <= bound]
    return min(close, key=lambda c: (c.thread_count(threads), c.latency_ratio or 0.0),
               default=winner)


#: memory the run-off's finalists may add to the process while open together (their first run
#: included): beyond it, the rest are timed in a later group (ConvNeXtTiny at 224, batch 32:
#: its 4 finalists open at once took the tune to 5.4 GB)
RUNOFF_GROWTH_BYTES = 512 << 20


def _time_group(ctx: _Context, pending: list[Candidate]) -> None:
    """Open finalists from ``pending`` (removing them) while they add at most
    :data:`RUNOFF_GROWTH_BYTES` to the process (one at least), and time them interleaved with
    fp32."""
    cfg, feeds = ctx.config, ctx.bench_feeds
    group: list[tuple[Candidate, EdgeModel]] = []
    start = current_rss_bytes()
    try:
        while pending:
            c = pending[0]
            model = _open(Path(c.path), SessionOptionsConfig.from_dict(c.session))  # type: ignore[arg-type]
            model.run(feeds)  # its memory is taken on the first run
            if group and current_rss_bytes() - start > RUNOFF_GROWTH_BYTES:
                model.close()
                break
            group.append((pending.pop(0), model))
        calls = [lambda: ctx.reference.run(feeds)] + [
            (lambda m=m: m.run(feeds)) for _, m in group]
        times = measure(calls, runs=None,
                        duration=min(2 * cfg.ratio.min_seconds, cfg.ratio.max_seconds),
                        min_runs=min(cfg.ratio.min_rounds, 20), warmup=3,
                        settle=cfg.ratio.settle or 0.0)
    finally:
        for _, m in group:
            m.close()
    ref_ms = float(np.median(times[0])) / 1e6
    for (c, _), t in zip(group, times[1:], strict=True):
        c.first_ratio, c.finalist = c.latency_ratio, True
        c.latency_ratio = paired_ratio(t, times[0])  # the estimator of measure_ratio
        c.latency_ms, c.fp32_latency_ms = float(np.median(t)) / 1e6, ref_ms
        c.pairs += len(t)
        c.batch = _batch_of(feeds)


def _by_threads(finalists: Sequence[Candidate], threads: int) -> list[list[Candidate]]:
    """The finalists by thread count (unset: ``threads``), most first, each timed in groups of
    its own: a session's pool threads that spin after its calls slow the next row's threads,
    which in a mixed group penalizes the rows on all the threads against those on one (the SMS
    LSTM at batch 32 on 2 threads of a Zen 4: fp32 took 1.44 ms in a mixed run-off and 0.93
    alone, and the dynamic int8 file on one thread timed 0.84x fp32's latency there and 1.43x
    alone)."""
    groups: dict[int, list[Candidate]] = {}
    for c in finalists:
        groups.setdefault(c.thread_count(threads), []).append(c)
    return [groups[n] for n in sorted(groups, reverse=True)]


def _runoff(ctx: _Context, cands: Sequence[Candidate]) -> Candidate:
    """Re-time the finalists (:func:`_finalists`) interleaved with fp32 and each other at the
    requested batch (so they share the machine's state), each thread count apart
    (:func:`_by_threads`) and in as few groups as :data:`RUNOFF_GROWTH_BYTES` allows (each group
    interleaved with fp32, so every ratio is paired with the same reference); returns the
    winner: the simplest finalist that no more complex one beats by more than the noise, or
    one on fewer threads within :data:`THREAD_MARGIN` of it (:func:`_on_fewer_threads`)."""
    finalists = _finalists(cands, ctx.config.threads)
    if len(finalists) > 1:
        for pending in _by_threads(finalists, ctx.config.threads):
            while pending:
                _time_group(ctx, pending)
    tolerance = ctx.config.ratio.tolerance
    winner: Candidate | None = None
    for c in sorted(finalists, key=lambda c: (_STAGE_ORDER.get(c.stage, 9), c.latency_ratio)):
        if winner is None or c.latency_ratio < winner.latency_ratio * (1 - tolerance):  # type: ignore[operator]
            winner = c
    return cands[0] if winner is None else _on_fewer_threads(winner, finalists,
                                                             ctx.config.threads)


