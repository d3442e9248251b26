"""The speed check: a built variant against the fp32 file, on this machine, before it is written.

Both files run on onnxruntime's CPU provider the way :class:`~edgekit.runtime.EdgeModel` runs
them by default (its default threads unless :class:`SpeedCheckConfig` sets some), on check
samples at the configured batch, timed interleaved by the one latency-ratio estimator
(:func:`edgekit.speed.measure_ratio`: median of per-round paired ratios, balanced orders) for
at most ``budget_s`` seconds; when that leaves the verdict to the noise (as fast, with a 95 %
interval wider than 0.1), once more for up to four times as long. With the default threads
on a machine with more than one CPU, a variant auto would keep is timed on one thread as well
(an app on a device often runs one), and the timing auto would not keep decides (on an AMD
EPYC with AVX2, MobileNetV3Small's int8 measured 0.92x fp32's latency on the default 2
threads, 0.60-1.11, and 1.27x on one). The decision is a pure function of the numbers
(:func:`speed_verdict`, :func:`keeps_variant`):

- **slower**: the ratio variant / fp32 is over ``1 + tolerance`` (default 0) and its 95 %
  interval lies above 1 (slower beyond this run's noise);
- **faster**: under ``1 - tolerance`` with the interval below 1;
- **as fast**: anything else.

An explicit mode (``--quantize int8``) writes a slower variant with a warning. ``auto`` writes
a variant only when its measured ratio is at most ``1 + tolerance``: a median over 1 whose
interval still reaches 1 (ConvNeXtTiny's int8 at batch 1: 1.21x, 0.99-1.38) is not surely
slower, but it is not the faster file either, so auto writes none and says why. fp16 is not
timed: it is meant for GPU and NPU providers (onnxruntime's CPU provider runs much of it
through casts); its record says so, and nothing is printed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.progress import StatusFn
from edgekit.progress import status as report_progress
from edgekit.quantize.options import QuantMode, SpeedCheckConfig
from edgekit.speed.machine import cpu_model, instruction_set, usable_cores
from edgekit.speed.ratio import LatencyRatio, RatioConfig, measure_ratio

__all__ = ["SLOWER", "FASTER", "AS_FAST", "NOT_CHECKED", "SpeedRecord", "speed_verdict",
           "keeps_variant", "check_speed", "speed_lines"]

SLOWER, FASTER, AS_FAST, NOT_CHECKED = "slower", "faster", "as fast", "not checked"

#: an as-fast verdict whose 95 % interval is wider than this is timed on, its rounds kept, up
#: to :data:`_LONGER` times the budget and as many times the rounds in all (on an AMD EPYC
#: with AVX2, 2 threads, MobileNetV3Large's int8 measured 0.87x [0.56, 1.43] in 15 rounds,
#: 2.2 s, and was written; the zoo then timed it 1.09x fp32's latency)
_DECISIVE_WIDTH = 0.10
_LONGER = 4


def speed_verdict(ratio: float, interval: tuple[float, float], tolerance: float) -> str:
    """``slower``, ``faster`` or ``as fast`` for a measured latency ``ratio`` (variant / fp32)
    and its ``interval`` (see the module doc)."""
    low, high = interval
    if ratio > 1.0 + tolerance and low > 1.0:
        return SLOWER
    if ratio < 1.0 - tolerance and high < 1.0:
        return FASTER
    return AS_FAST


def keeps_variant(verdict: str, requested: QuantMode, ratio: float | None = None,
                  tolerance: float = 0.0) -> bool:
    """Whether a variant with this speed ``verdict`` (and measured ``ratio``, None when not
    timed) is written: always when its mode was asked for by name; when ``auto`` chose it,
    unless it is slower than fp32 or its ratio is over ``1 + tolerance``."""
    if requested is not QuantMode.AUTO:
        return True
    return verdict != SLOWER and not _over(ratio, tolerance)


def _over(ratio: float | None, tolerance: float) -> bool:
    return ratio is not None and ratio > 1.0 + tolerance


@dataclass
class SpeedRecord:
    """The report's ``speed`` section of a variant: the mode timed, the verdict, the measured
    ratio (variant / fp32 latency) with its 95 % interval, how it was timed and on what, and
    ``reason``: why it was not checked, or what a slower verdict means."""

    mode: str
    verdict: str
    batch: int
    threads: int | None
    ratio_vs_fp32: float | None = None
    interval: tuple[float, float] | None = None
    variant_ms: float | None = None
    fp32_ms: float | None = None
    rounds: int = 0
    seconds: float = 0.0
    cpu: str = ""
    isa: str = ""
    reason: str | None = None
    tolerance: float = 0.0
    settle_s: float = 0.0
    #: the other thread setting's ratio and interval when both were timed (see check_speed)
    also: dict[str, Any] | None = None

    def keeps(self, requested: QuantMode) -> bool:
        """:func:`keeps_variant` of this record."""
        return keeps_variant(self.verdict, requested, self.ratio_vs_fp32, self.tolerance)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (latencies to 0.1 us; the ratios as measured, so that the
        verdict can be recomputed from them with :func:`speed_verdict`)."""
        return {"mode": self.mode, "verdict": self.verdict, "ratio_vs_fp32": self.ratio_vs_fp32,
                "interval": None if self.interval is None else list(self.interval),
                "variant_ms": _r4(self.variant_ms), "fp32_ms": _r4(self.fp32_ms),
                "rounds": self.rounds, "seconds": round(self.seconds, 3),
                "batch": self.batch, "threads": self.threads, "engine": "onnxruntime",
                "cpu": self.cpu, "isa": self.isa, "reason": self.reason,
                "tolerance": self.tolerance, "settle_s": self.settle_s, "also": self.also}

    def brief(self) -> dict[str, Any]:
        """The threads, ratio and interval of this timing (what :attr:`also` holds)."""
        return {"threads": self.threads, "ratio_vs_fp32": self.ratio_vs_fp32,
                "interval": None if self.interval is None else list(self.interval),
                "rounds": self.rounds}


def _r4(v: float | None) -> float | None:
    """``v`` rounded to 4 places (None stays None)."""
    return None if v is None else round(v, 4)


def _batch_feeds(feeds: Mapping[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """The first ``batch`` samples of ``feeds`` (repeated when there are fewer)."""
    return {k: np.ascontiguousarray(np.take(v, np.arange(batch) % len(v), axis=0))
            for k, v in feeds.items()}


def _not_checked(mode: QuantMode, cfg: SpeedCheckConfig, reason: str) -> SpeedRecord:
    return SpeedRecord(mode.value, NOT_CHECKED, cfg.batch, cfg.threads, reason=reason)


def check_speed(fp32: Path, variant: Path, feeds: Mapping[str, np.ndarray], mode: QuantMode,
                requested: QuantMode, cfg: SpeedCheckConfig,
                progress: StatusFn | None = None) -> SpeedRecord:
    """Time ``variant`` against ``fp32`` on ``feeds`` (check samples; see the module doc).
    Not checked when disabled, for fp16, or when a file does not run at the batch."""
    if not cfg.enabled:
        return _not_checked(mode, cfg, "disabled (--no-speed-check)")
    if mode is QuantMode.FP16:
        return _not_checked(mode, cfg, "fp16 is meant for GPU and NPU providers: not timed "
                            "on the CPU")
    report_progress(progress, f"{mode.value}: timing it against fp32 on this machine")
    batch = _batch_feeds(feeds, cfg.batch)
    try:
        record = _timed(fp32, variant, batch, mode, cfg)
        if cfg.threads is None and record.keeps(QuantMode.AUTO) and usable_cores() > 1:
            report_progress(progress, f"{mode.value}: timing it against fp32 on one thread")
            record = _worse(record, _timed(fp32, variant, batch, mode,
                                           replace(cfg, threads=1)))
    except EdgekitError as exc:
        return _not_checked(mode, cfg, f"could not time it at batch {cfg.batch}: {exc.message}")
    # the reason is there exactly when auto would not write it (keeps_variant, the one rule)
    record.reason = None if record.keeps(QuantMode.AUTO) else _slower_reason(record, mode,
                                                                             requested)
    return record


def _worse(default: SpeedRecord, one: SpeedRecord) -> SpeedRecord:
    """Of the default threads' timing and one thread's, the one auto would not write (one
    thread's when it is slower there), else the default threads'; the other in ``also``."""
    decides, other = (one, default) if not one.keeps(QuantMode.AUTO) else (default, one)
    decides.also = other.brief()
    return decides


def _timed(fp32: Path, variant: Path, feeds: dict[str, np.ndarray], mode: QuantMode,
           cfg: SpeedCheckConfig) -> SpeedRecord:
    from edgekit.runtime.model import EdgeModel
    from edgekit.runtime.session import SessionOptionsConfig

    session = SessionOptionsConfig(engine="onnxruntime", intra_op_num_threads=cfg.threads)
    models = [EdgeModel(p, "cpu", engine="onnxruntime", session=session, check_nan=False,
                        use_stored_session=False, check_engine=False) for p in (fp32, variant)]
    try:
        ref, cand = models
        stop = RatioConfig(min_rounds=20, max_seconds=cfg.budget_s,
                           block_seconds=cfg.budget_s / 8, warmup=3).for_threads(cfg.threads)
        lr = _until_decided(
            lambda c, r: measure_ratio(lambda: ref.run(feeds), lambda: cand.run(feeds), c,
                                       resume=r), stop, cfg.tolerance)
    finally:
        for m in models:
            m.close()
    interval = lr.interval or (lr.ratio, lr.ratio)
    return SpeedRecord(mode.value, speed_verdict(lr.ratio, interval, cfg.tolerance), cfg.batch,
                       cfg.threads, lr.ratio, interval, lr.candidate_ms, lr.reference_ms,
                       lr.rounds, lr.seconds, cpu_model(), instruction_set(),
                       tolerance=cfg.tolerance, settle_s=lr.settle)


def _until_decided(timing: Callable[[RatioConfig, LatencyRatio | None], LatencyRatio],
                   stop: RatioConfig, tolerance: float) -> LatencyRatio:
    """``timing(stop, None)``; when that leaves the verdict to the noise (:func:`_undecided`),
    ``timing`` again from its rounds (``resume``) for up to :data:`_LONGER` times the seconds
    and rounds in all."""
    lr = timing(stop, None)
    if not _undecided(lr.ratio, lr.interval, tolerance):
        return lr
    longer = replace(stop, min_rounds=_LONGER * lr.rounds,
                     max_seconds=_LONGER * stop.max_seconds)
    return timing(longer, lr)


def _undecided(ratio: float, interval: tuple[float, float] | None, tolerance: float) -> bool:
    """Whether a first measurement leaves the verdict to its noise: as fast, with a 95 %
    interval wider than :data:`_DECISIVE_WIDTH` (it cannot tell a few percent either way)."""
    low, high = interval or (ratio, ratio)
    return speed_verdict(ratio, (low, high), tolerance) == AS_FAST and \
        high - low > _DECISIVE_WIDTH


def _slower_reason(rec: SpeedRecord, mode: QuantMode, requested: QuantMode) -> str:
    """What a slower verdict (or a ratio over 1 within the noise) means, and what to try."""
    where = _where(rec)
    if rec.verdict != SLOWER and rec.interval is not None:
        where += f"; 95% interval {rec.interval[0]:.2f}-{rec.interval[1]:.2f}"
        why = "not surely slower, but not faster either"
    elif mode is QuantMode.DYNAMIC:
        why = "dynamic int8 quantizes the activations at every call"
    else:
        why = "the Q/DQ work outweighs what the int8 kernels save"
    if rec.verdict == SLOWER and ("no VNNI" in rec.isa or rec.isa == "unknown"):
        why += " (no VNNI int8 dot-product instructions here)"
    head = (f"{mode.value} takes {rec.ratio_vs_fp32:.2f}x fp32's latency on this machine "
            f"({where}): {why}")
    if requested is QuantMode.AUTO:
        return (f"auto: no variant written: {head}, so fp32 is the better file here "
                f"(--quantize {mode.value} writes it anyway; edgekit tune searches for a "
                "faster one)")
    return (f"{head}; written because --quantize {mode.value} asked for it: edgekit tune "
            "finds which nodes to keep in float on this CPU, or use --quantize auto, which "
            "writes no variant that is slower than fp32")


def _where(rec: Mapping[str, Any] | SpeedRecord) -> str:
    d = rec.to_dict() if isinstance(rec, SpeedRecord) else rec
    return f"{d['cpu']}, {d['isa']}; onnxruntime, batch {d['batch']}, {_threads(d['threads'])}"


def _threads(threads: int | None) -> str:
    return "default threads" if threads is None else f"{threads} thread(s)"


def _also(also: Mapping[str, Any] | None) -> str:
    """The other thread setting's timing, when there was one."""
    if not also or also.get("ratio_vs_fp32") is None:
        return ""
    low, high = also["interval"] or (also["ratio_vs_fp32"],) * 2
    return f"; {_threads(also['threads'])}: {also['ratio_vs_fp32']:.2f}x ({low:.2f}-{high:.2f})"


def speed_lines(speed: Mapping[str, Any] | None, written: bool) -> list[str]:
    """A report's ``speed`` section as lines for people: the measurement, then a ``warning:``
    line for a variant written although slower (an unwritten one's notes say why). fp16,
    never timed, gets no line."""
    if not speed or speed["mode"] == QuantMode.FP16.value:
        return []
    if speed["verdict"] == NOT_CHECKED:
        return [f"speed: not checked ({speed['reason']})"]
    low, high = speed["interval"]
    lines = [f"speed: {speed['mode']} {speed['ratio_vs_fp32']:.2f}x fp32's latency (95% interval "
             f"{low:.2f}-{high:.2f}, {speed['rounds']} rounds; {_where(speed)}): "
             f"{speed['verdict']}{_also(speed.get('also'))}"]
    if written and speed["verdict"] == SLOWER and speed.get("reason"):
        lines.append(f"warning: {speed['reason']}")
    return lines
