"""Latency, memory and accuracy measurement; side-by-side comparisons.

The face: ``bench`` (:func:`bench_models`), its backends (:func:`load_backend`), the
interleaved timing loop (:func:`measure`) and the one latency-ratio estimator
(:func:`measure_ratio`), ``compare`` (:func:`compare_model`), tables and the machine's
description. The timing loop, the ratio estimator and the machine's description live in
:mod:`edgekit.speed` (layer 0, so ``quantize`` can time its files too); they are part of this
face as before.
"""

from __future__ import annotations

from edgekit.measure.backend import Backend, InputInfo, evaluate
from edgekit.measure.backends import KerasBackend, OnnxBackend, load_backend
from edgekit.measure.bench import BenchConfig, BenchResult, ModelResult, bench_models
from edgekit.measure.compare import CompareConfig, compare_model
from edgekit.measure.compare_report import CompareResult, VariantRow
from edgekit.measure.compare_variants import build_variants, default_variants, variant_table
from edgekit.measure.tables import format_table, render_table
from edgekit.speed.machine import cpu_model, instruction_set, machine_info
from edgekit.speed.ratio import LatencyRatio, RatioConfig, measure_ratio, paired_ratio
from edgekit.speed.timing import (
    LatencyStats,
    balanced_orders,
    latency_stats,
    make_inputs,
    measure,
)

__all__ = [
    "BenchConfig",
    "BenchResult",
    "ModelResult",
    "LatencyStats",
    "bench_models",
    "Backend",
    "InputInfo",
    "OnnxBackend",
    "KerasBackend",
    "load_backend",
    "evaluate",
    "make_inputs",
    "measure",
    "balanced_orders",
    "latency_stats",
    "RatioConfig",
    "LatencyRatio",
    "measure_ratio",
    "paired_ratio",
    "CompareConfig",
    "CompareResult",
    "VariantRow",
    "compare_model",
    "build_variants",
    "default_variants",
    "variant_table",
    "format_table",
    "render_table",
    "cpu_model",
    "instruction_set",
    "machine_info",
]
