"""edgekit.speed.ratio: the latency-ratio estimator and its stop rule, on plain Python calls
(no engine, no model; tests/test_tune.py times a real model)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from edgekit.errors import InputError
from edgekit.speed.ratio import (
    SETTLED_MIN_ROUNDS,
    LatencyRatio,
    RatioConfig,
    measure_ratio,
    paired_ratio,
    ratio_interval,
)


def _work(n: int) -> None:
    sum(range(n))


def test_paired_ratio_is_the_median_of_per_round_ratios() -> None:
    """What measure_ratio and the tune's run-off report: not a ratio of medians (which a
    slow round of the reference alone would move)."""
    reference, candidate = [1.0, 2.0, 100.0], [0.5, 50.0, 60.0]
    assert paired_ratio(candidate, reference) == pytest.approx(0.6)  # medians' ratio: 25
    assert paired_ratio(reference, reference) == 1.0
    assert paired_ratio([2, 6, 3, 8], [1, 2, 1, 2]) == pytest.approx(3.0)  # even count: mean


def test_ratio_interval_is_a_pair_of_order_statistics_of_the_per_round_ratios() -> None:
    """100 rounds with ratios 1..100 (shuffled): the 95 % interval of their median is the
    40th and 61st smallest (the binomial's normal approximation); up to 10 rounds it is the
    whole range; the order of the rounds does not matter."""
    ratios = [float(v) for v in range(1, 101)]
    shuffled = ratios[50:] + ratios[:50]
    reference = [2.0] * 100
    assert ratio_interval([2 * r for r in shuffled], reference) == (40.0, 61.0)
    assert ratio_interval([2 * r for r in shuffled], reference, 0.5) == (46.0, 55.0)
    assert ratio_interval([3.0, 1.0, 2.0], [1.0, 1.0, 1.0]) == (1.0, 3.0)
    low, high = ratio_interval([1.0] * 10 + [9.0], [1.0] * 11)
    assert (low, high) == (1.0, 1.0)  # 11 rounds: the 2nd and 10th smallest
    with pytest.raises(InputError, match="confidence must be in"):
        ratio_interval([1.0], [1.0], 1.0)
    with pytest.raises(InputError, match="no timed rounds"):
        ratio_interval([], [])


@pytest.mark.parametrize(("fields", "message"), [
    ({"tolerance": 0.0}, "tolerance must be in"),
    ({"tolerance": 1.0}, "tolerance must be in"),
    ({"min_rounds": 0}, "min_rounds <= max_rounds"),
    ({"min_rounds": 10, "max_rounds": 9}, "min_rounds <= max_rounds"),
    ({"min_seconds": -1.0}, "min_seconds <= max_seconds"),
    ({"max_seconds": 0.0}, "max_seconds > 0"),
    ({"min_seconds": 5.0, "max_seconds": 1.0}, "min_seconds <= max_seconds"),
    ({"block_seconds": 0.0}, "block_seconds must be > 0"),
])
def test_ratio_config_rejects(fields: dict[str, float], message: str) -> None:
    with pytest.raises(InputError, match=message):
        RatioConfig(**fields)  # type: ignore[arg-type]


def test_ratio_config_defaults() -> None:
    c = RatioConfig()
    assert (c.tolerance, c.min_rounds, c.max_rounds) == (0.02, 40, 100_000)
    assert (c.min_seconds, c.max_seconds, c.block_seconds, c.warmup) == (0.0, 30.0, 0.25, 10)


def test_latency_ratio_to_dict_rounds_seconds_and_history() -> None:
    lr = LatencyRatio(1.23456, 2.0, 1.5, 80, 1.23456789, [1.234567, 1.23456])
    assert lr.to_dict() == {"ratio": 1.23456, "candidate_ms": 2.0, "reference_ms": 1.5,
                            "rounds": 80, "seconds": 1.235, "settle_s": 0.0,
                            "history": [1.2346, 1.2346]}
    lr.interval = (1.111111, 1.333333)
    assert lr.to_dict()["interval"] == [1.1111, 1.3333]


def test_max_rounds_stops_after_the_first_block_and_warmup_is_untimed() -> None:
    calls = {"reference": 0, "candidate": 0}

    def call(name: str) -> None:
        calls[name] += 1

    cfg = RatioConfig(min_rounds=5, max_rounds=5, warmup=3, block_seconds=0.001)
    lr = measure_ratio(lambda: call("reference"), lambda: call("candidate"), cfg)
    assert lr.rounds >= 5 and len(lr.history) == 1 and lr.ratio == lr.history[-1]
    assert calls == {"reference": lr.rounds + 3, "candidate": lr.rounds + 3}


def test_resume_goes_on_from_the_earlier_rounds_without_a_warmup() -> None:
    """A longer timing (the speed check's second look) keeps the first one's samples, blocks
    and seconds, adds only new rounds, and makes no untimed calls."""
    calls = {"reference": 0, "candidate": 0}

    def call(name: str) -> None:
        calls[name] += 1

    cfg = RatioConfig(min_rounds=5, max_rounds=5, warmup=3, block_seconds=0.001)
    first = measure_ratio(lambda: call("reference"), lambda: call("candidate"), cfg)
    assert len(first.reference_ns) == len(first.candidate_ns) == first.rounds
    assert "reference_ns" not in first.to_dict()
    before = dict(calls)
    longer = replace(cfg, min_rounds=4 * first.rounds, max_rounds=4 * first.rounds)
    lr = measure_ratio(lambda: call("reference"), lambda: call("candidate"), longer,
                       resume=first)
    assert lr.rounds >= 4 * first.rounds
    assert lr.reference_ns[:first.rounds] == first.reference_ns
    assert lr.candidate_ns[:first.rounds] == first.candidate_ns
    assert lr.history[:len(first.history)] == first.history
    assert len(lr.history) > len(first.history) and lr.seconds >= first.seconds
    new_rounds = lr.rounds - first.rounds
    assert calls == {k: before[k] + new_rounds for k in calls}  # no warm-up calls
    assert lr.interval is not None and lr.ratio == lr.history[-1]


def test_resume_refuses_samples_taken_with_another_settle() -> None:
    cfg = RatioConfig(min_rounds=1, max_rounds=1, warmup=0, block_seconds=0.001, settle=0.0)
    first = measure_ratio(lambda: None, lambda: None, cfg)
    with pytest.raises(ValueError, match="settle"):
        measure_ratio(lambda: None, lambda: None, replace(cfg, settle=0.002), resume=first)


def test_stops_once_three_block_estimates_agree_within_the_tolerance() -> None:
    """A tolerance every estimate meets: the third block (the first with two before it to
    compare) ends it, once min_rounds are timed."""
    cfg = RatioConfig(tolerance=0.99, min_rounds=10, warmup=0, block_seconds=0.005)
    lr = measure_ratio(lambda: _work(100), lambda: _work(100), cfg)
    assert len(lr.history) == 3 and lr.rounds >= 15
    assert lr.interval is not None and lr.interval[0] <= lr.ratio <= lr.interval[1]
    assert lr.to_dict()["history"] == [round(h, 4) for h in lr.history]


def test_max_seconds_ends_an_unstable_estimate_and_progress_is_a_fraction() -> None:
    fractions: list[float] = []
    cfg = RatioConfig(min_rounds=10**6, max_rounds=10**9, max_seconds=0.2, warmup=0,
                      block_seconds=0.02)
    lr = measure_ratio(lambda: None, lambda: None, cfg, on_progress=fractions.append)
    assert 0.2 <= lr.seconds < 5 and lr.rounds < 10**6
    assert len(fractions) == len(lr.history) >= 2
    assert fractions == sorted(fractions) and 0 < fractions[0] and fractions[-1] == 1.0


def test_the_ratio_is_candidate_over_reference() -> None:
    """Ten times the work is several times slower (a loose bound: the machine may be busy)."""
    cfg = RatioConfig(min_rounds=20, warmup=2, block_seconds=0.01, max_seconds=2.0)
    slow = measure_ratio(lambda: _work(2_000), lambda: _work(20_000), cfg)
    fast = measure_ratio(lambda: _work(20_000), lambda: _work(2_000), cfg)
    assert slow.ratio > 3 and fast.ratio < 1 / 3
    assert slow.candidate_ms > slow.reference_ms > 0


class _Clock:
    """A stand-in for the ``time`` module of :mod:`edgekit.speed.timing` whose clock only the
    timed calls move, so that the settled samples are exact."""

    def __init__(self) -> None:
        self.ns = 0

    def perf_counter_ns(self) -> int:
        return self.ns

    def perf_counter(self) -> float:
        return self.ns / 1e9


def _interfering(clock: _Clock, costs: dict[str, tuple[int, int]]) -> list[Callable[[], None]]:
    """Calls whose cost in ms is ``costs[name][0]`` right after another call's (the other
    engine's idle threads still spinning) and ``costs[name][1]`` after its own."""
    last: list[str] = [""]

    def make(name: str) -> Callable[[], None]:
        def call() -> None:
            after_other, after_self = costs[name]
            clock.ns += (after_self if last[0] == name else after_other) * 1_000_000
            last[0] = name
        return call
    return [make(n) for n in costs]


def test_settle_times_the_steady_state_of_consecutive_calls(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``settle``, a row's sample in a round is the median of the second half of its
    block of consecutive calls: the cost an app's loop pays, not the first call after another
    engine's (whose pool threads spin into it). One sample per row and round, so the paired
    ratio holds; without it every call pays the switch."""
    from edgekit.speed import timing

    clock = _Clock()
    monkeypatch.setattr(timing, "time", clock)
    calls = _interfering(clock, {"a": (10, 1), "b": (8, 2)})
    a, b = timing.measure(calls, runs=6, warmup=0, settle=0.06)
    assert len(a) == len(b) == 6
    assert set(a) == {1_000_000} and set(b) == {2_000_000}
    assert paired_ratio(a, b) == 0.5
    a, b = timing.measure(calls, runs=6, warmup=0)  # one call per round: the switch costs
    assert max(a) == 10_000_000 and paired_ratio(a, b) > 1  # a pays its switch from b
    with pytest.raises(ValueError, match="settle"):
        timing.measure(calls, runs=1, settle=-1.0)


def test_a_call_longer_than_settle_is_timed_once_more(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model slower than ``settle`` gets SETTLE_MIN_CALLS calls a round, and its sample is
    the second (the first paid for the switch)."""
    from edgekit.speed import timing

    clock = _Clock()
    monkeypatch.setattr(timing, "time", clock)
    count = [0]

    def slow() -> None:
        count[0] += 1
        clock.ns += (300 if count[0] % timing.SETTLE_MIN_CALLS == 1 else 200) * 1_000_000

    (samples,) = timing.measure([slow], runs=4, warmup=0, settle=0.06)
    assert count[0] == 4 * timing.SETTLE_MIN_CALLS and set(samples) == {200_000_000}


def test_a_call_the_os_stops_past_the_block_is_not_the_sample(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On a loaded machine the process may be stopped inside one call until after the block's
    end: no other call then begins in the block's second half. The sample is the median of the
    later half of the calls by count (a fast call), not that stopped one."""
    from edgekit.speed import timing

    clock = _Clock()
    monkeypatch.setattr(timing, "time", clock)
    count = [0]

    def preempted() -> None:  # 300 calls of 10 us, then one stopped for 8 ms, then fast again
        count[0] += 1
        clock.ns += 8_000_000 if count[0] % 301 == 0 else 10_000

    (samples,) = timing.measure([preempted], runs=3, warmup=0, settle=0.01)
    assert set(samples) == {10_000}


def test_timings_settle_for_their_thread_count() -> None:
    """One thread settles briefly (warm caches, as in an app's loop), more threads (or each
    library's default) for longer (idle pool threads); a settle a config sets is kept, 0 (one
    call per round) included."""
    from edgekit.speed.timing import SETTLE_ONE_THREAD_S, SETTLE_S, settle_for

    assert 0 < SETTLE_ONE_THREAD_S < SETTLE_S
    assert settle_for(1) == SETTLE_ONE_THREAD_S
    assert settle_for(2) == settle_for(None) == SETTLE_S
    assert RatioConfig().settle is None
    assert RatioConfig().for_threads(1) == RatioConfig(settle=SETTLE_ONE_THREAD_S,
                                                       min_rounds=SETTLED_MIN_ROUNDS)
    assert RatioConfig().for_threads(4) == RatioConfig(settle=SETTLE_S,
                                                       min_rounds=SETTLED_MIN_ROUNDS)
    assert RatioConfig(min_rounds=5).for_threads(4).min_rounds == 5  # a lower floor is kept
    assert RatioConfig(settle=0.2).for_threads(4) == RatioConfig(settle=0.2)
    assert RatioConfig(settle=0.0).for_threads(1) == RatioConfig(settle=0.0)
    with pytest.raises(InputError, match="settle"):
        RatioConfig(settle=-0.1)


def test_tune_and_check_configs_resolve_their_settle() -> None:
    """The configs resolve ``settle`` for their thread count when they are made, so every
    caller times with it and the config saved with a tune or a baseline says so; a settle the
    user set is kept."""
    from edgekit.check.regression import CheckConfig
    from edgekit.speed.timing import SETTLE_ONE_THREAD_S, SETTLE_S
    from edgekit.tune.core import TuneConfig

    assert TuneConfig(threads=1).ratio.settle == SETTLE_ONE_THREAD_S
    assert TuneConfig(threads=2).ratio.settle == SETTLE_S
    assert TuneConfig(threads=2).ratio.min_rounds == SETTLED_MIN_ROUNDS
    assert TuneConfig(threads=2).to_dict()["ratio"]["settle"] == SETTLE_S  # type: ignore[index]
    assert TuneConfig.from_dict(TuneConfig(threads=2).to_dict()).ratio.settle == SETTLE_S
    assert TuneConfig(threads=2, ratio=RatioConfig(settle=0.2)).ratio.settle == 0.2
    assert CheckConfig(threads=1).ratio.settle == SETTLE_ONE_THREAD_S
    per_call = TuneConfig(ratio=RatioConfig(settle=0.0))  # 0: one call per round, kept
    assert TuneConfig.from_dict(per_call.to_dict()).ratio.settle == 0.0
    assert CheckConfig(threads=None).ratio.settle == CheckConfig(threads=2).ratio.settle == SETTLE_S


def test_a_settled_measurement_says_so() -> None:
    """``measure_ratio`` hands the ``settle`` it timed with to its result and its JSON."""
    cfg = RatioConfig(min_rounds=1, max_rounds=1, warmup=0, block_seconds=0.001, settle=0.002)
    lr = measure_ratio(lambda: None, lambda: None, cfg)
    assert lr.settle == 0.002 and lr.to_dict()["settle_s"] == 0.002
    assert measure_ratio(lambda: None, lambda: None, replace(cfg, settle=0.0)).settle == 0.0
