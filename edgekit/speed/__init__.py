"""Timing on this machine: the interleaved timing loop (:mod:`edgekit.speed.timing`), the one
latency-ratio estimator (:mod:`edgekit.speed.ratio`) and the machine's description
(:mod:`edgekit.speed.machine`: CPU model, int8 instruction set, memory).

A shared layer-0 unit (numpy and the standard library; psutil for memory), so every stage can
time what it builds: ``quantize``'s speed check, ``measure``'s ``bench``/``compare``,
``tune`` and ``check``.
"""

from __future__ import annotations

from edgekit.speed.machine import cpu_model, instruction_set, machine_info
from edgekit.speed.ratio import (
    LatencyRatio,
    RatioConfig,
    measure_ratio,
    paired_ratio,
    ratio_interval,
)
from edgekit.speed.timing import (
    LatencyStats,
    balanced_orders,
    latency_stats,
    make_inputs,
    measure,
)

__all__ = [
    "measure",
    "balanced_orders",
    "latency_stats",
    "make_inputs",
    "LatencyStats",
    "RatioConfig",
    "LatencyRatio",
    "measure_ratio",
    "paired_ratio",
    "ratio_interval",
    "cpu_model",
    "instruction_set",
    "machine_info",
]
