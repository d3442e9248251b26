"""The one latency-ratio estimator (used by ``tune``, ``check`` and the pytest plugin).

Two calls are timed interleaved, round by round (:func:`edgekit.speed.timing.measure`
alternates which goes first), so a busy machine slows both alike. The estimate is the **median
of the per-round ratios** ``candidate / reference``: each ratio pairs two timings taken
microseconds apart, which cancels drift that a ratio of two medians would keep. Rounds are
timed in blocks; it stops once the estimate moved by at most ``tolerance`` over the last two
blocks (after ``min_rounds`` rounds and ``min_seconds``), or at ``max_rounds`` /
``max_seconds``. With the estimate comes a distribution-free 95 % interval of that median
(:func:`ratio_interval`), for decisions such as ``quantize``'s speed check ("slower beyond
noise" is an interval above 1).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from statistics import NormalDist
from typing import Any

import numpy as np

from edgekit.errors import InputError
from edgekit.progress import FractionFn
from edgekit.speed.timing import measure, settle_for

__all__ = ["RatioConfig", "LatencyRatio", "measure_ratio", "paired_ratio", "ratio_interval",
           "SETTLED_MIN_ROUNDS", "MAX_SETTLE_S"]

#: ``min_rounds`` at most when settling (:meth:`RatioConfig.for_threads`): three blocks of five
#: rounds, what the stop rule needs anyway. Measured on an Intel Xeon (AMX + AVX-512 VNNI), 2
#: threads, int8 vs fp32, six estimates each: the Conv1D text model's spread (sd) 0.0031 with
#: 15 rounds in 1.8 s vs 0.0024 with 40 in 4.8 s; EfficientNetB0's 0.020 in 3.1 s vs 0.014 in
#: 5.4 s, both within the tune's run-off, which re-times the fastest candidates
SETTLED_MIN_ROUNDS = 15
#: the longest ``settle`` a :class:`RatioConfig` accepts, in seconds
MAX_SETTLE_S = 10.0


@dataclass(frozen=True)
class RatioConfig:
    """When :func:`measure_ratio` stops.

    Attributes:
        tolerance: relative change of the estimate over the last two blocks that counts as
            stable (default 0.02).
        min_rounds: rounds before it may stop (default 40).
        max_rounds: rounds at most (default 100,000).
        min_seconds: seconds before it may stop (default 0).
        max_seconds: seconds at most (default 30).
        block_seconds: seconds per block of rounds (default 0.25; at least 5 rounds a block).
        warmup: untimed rounds first (default 10).
        settle: seconds of consecutive calls per model and round; the median of their later
            half is the round's sample; 0: one call per model and
            round. Default None: :meth:`for_threads` resolves it
            (:func:`~edgekit.speed.timing.settle_for`: warm caches with one thread, and with
            more the other model's idle pool threads done spinning); :func:`measure_ratio`
            on an unresolved config times one call.
    """

    tolerance: float = 0.02
    min_rounds: int = 40
    max_rounds: int = 100_000
    min_seconds: float = 0.0
    max_seconds: float = 30.0
    block_seconds: float = 0.25
    warmup: int = 10
    settle: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.tolerance < 1:
            raise InputError(f"tolerance must be in (0, 1), got {self.tolerance}")
        if self.min_rounds < 1 or self.max_rounds < self.min_rounds:
            raise InputError(f"need 1 <= min_rounds <= max_rounds, got {self.min_rounds}, "
                             f"{self.max_rounds}")
        if self.min_seconds < 0 or self.max_seconds <= 0 or self.max_seconds < self.min_seconds:
            raise InputError(f"need 0 <= min_seconds <= max_seconds and max_seconds > 0, got "
                             f"{self.min_seconds}, {self.max_seconds}")
        if self.block_seconds <= 0:
            raise InputError(f"block_seconds must be > 0, got {self.block_seconds}")
        if self.settle is not None and not 0 <= self.settle <= MAX_SETTLE_S:
            raise InputError(f"settle must be in [0, {MAX_SETTLE_S:g}] seconds, got {self.settle}")

    def for_threads(self, threads: int | None) -> RatioConfig:
        """This config with the ``settle`` of a timing with ``threads`` intra-op threads
        (:func:`~edgekit.speed.timing.settle_for`) unless one is set (0 included); a settled
        config needs at most :data:`SETTLED_MIN_ROUNDS` rounds (each sample is already the
        median of a block of calls)."""
        if self.settle is not None:
            return self
        return replace(self, settle=settle_for(threads),
                       min_rounds=min(self.min_rounds, SETTLED_MIN_ROUNDS))


@dataclass
class LatencyRatio:
    """A measured ratio: ``ratio`` = candidate / reference (median of per-round ratios), the
    two median latencies in ms, the rounds timed, the seconds taken, the estimate after
    each block, the 95 % interval of the ratio (:func:`ratio_interval`; None when not
    computed) and the ``settle`` seconds each sample was taken with (:class:`RatioConfig`:
    0 = one call per model and round). ``candidate_ns`` / ``reference_ns`` keep the samples,
    so that :func:`measure_ratio` can go on from them (``resume``); not in :meth:`to_dict`."""

    ratio: float
    candidate_ms: float
    reference_ms: float
    rounds: int
    seconds: float
    history: list[float] = field(default_factory=list)
    interval: tuple[float, float] | None = None
    settle: float = 0.0
    candidate_ns: list[int] = field(default_factory=list, repr=False)
    reference_ns: list[int] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (history rounded; ``interval`` when there is one)."""
        d: dict[str, Any] = {"ratio": self.ratio, "candidate_ms": self.candidate_ms,
                             "reference_ms": self.reference_ms, "rounds": self.rounds,
                             "seconds": round(self.seconds, 3), "settle_s": self.settle,
                             "history": [round(h, 4) for h in self.history]}
        if self.interval is not None:
            d["interval"] = [round(v, 4) for v in self.interval]
        return d


def paired_ratio(candidate_ns: Sequence[float], reference_ns: Sequence[float]) -> float:
    """The median of per-round ratios candidate / reference (round ``i`` of each series ran
    in the same interleaved round, so machine drift cancels)."""
    return float(np.median(np.asarray(candidate_ns, float) / np.asarray(reference_ns, float)))


def ratio_interval(candidate_ns: Sequence[float], reference_ns: Sequence[float],
                   confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free ``confidence`` interval of :func:`paired_ratio` (the median of the
    per-round ratios): the order statistics ``k`` and ``n + 1 - k`` of the ``n`` sorted
    ratios, ``k`` from the binomial(n, 1/2) count of ratios below the median (normal
    approximation, ``k >= 1``: the whole range for up to 10 rounds). Rounds timed back to
    back are not quite independent, so read it as the noise of this run, not a guarantee."""
    if not 0 < confidence < 1:
        raise InputError(f"confidence must be in (0, 1), got {confidence}")
    r = np.sort(np.asarray(candidate_ns, float) / np.asarray(reference_ns, float))
    n = int(r.size)
    if n == 0:
        raise InputError("no timed rounds to take an interval of")
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    k = max(1, math.floor((n - z * math.sqrt(n)) / 2.0))
    return float(r[k - 1]), float(r[n - k])


def _stable(history: list[float], tolerance: float) -> bool:
    if len(history) < 3:
        return False
    last = history[-1]
    return all(abs(h / last - 1.0) <= tolerance for h in history[-3:-1])


def measure_ratio(reference: Callable[[], Any], candidate: Callable[[], Any],
                  config: RatioConfig | None = None,
                  on_progress: FractionFn | None = None,
                  resume: LatencyRatio | None = None) -> LatencyRatio:
    """Latency of ``candidate`` relative to ``reference`` (see the module docstring).

    ``on_progress`` gets the fraction of ``max_seconds`` used, in [0, 1]. ``resume``: an
    earlier result of the same two calls, taken with the same ``settle``; its rounds, blocks
    and seconds count towards ``config``'s limits and the new rounds are added to them (no
    warm-up: the calls are warm), so a longer timing keeps what the first one measured.
    """
    cfg = config or RatioConfig()
    settle = cfg.settle or 0.0
    if resume is not None and resume.settle != settle:
        raise ValueError(f"cannot resume a timing taken with settle {resume.settle} s with "
                         f"settle {settle} s")
    ref_ns = list(resume.reference_ns) if resume is not None else []
    cand_ns = list(resume.candidate_ns) if resume is not None else []
    history = list(resume.history) if resume is not None else []
    start = time.perf_counter() - (resume.seconds if resume is not None else 0.0)
    warm = cfg.warmup if resume is None else 0
    while True:
        a, b = measure([reference, candidate], runs=None, duration=cfg.block_seconds,
                       min_runs=5, warmup=warm, settle=settle)
        warm = 0
        ref_ns += a
        cand_ns += b
        history.append(paired_ratio(cand_ns, ref_ns))
        elapsed = time.perf_counter() - start
        if on_progress is not None:
            on_progress(min(1.0, elapsed / cfg.max_seconds))
        done = len(ref_ns) >= cfg.min_rounds and elapsed >= cfg.min_seconds \
            and _stable(history, cfg.tolerance)
        if done or elapsed >= cfg.max_seconds or len(ref_ns) >= cfg.max_rounds:
            break
    return LatencyRatio(history[-1], float(np.median(cand_ns)) / 1e6,
                        float(np.median(ref_ns)) / 1e6, len(ref_ns),
                        time.perf_counter() - start, history, ratio_interval(cand_ns, ref_ns),
                        settle, cand_ns, ref_ns)
