"""Accuracy and latency regression checks for CI."""

from __future__ import annotations

from edgekit.check.regression import (
    BASELINE_VERSION,
    CHECK_RATIO,
    CheckConfig,
    CheckResult,
    Finding,
    check_model,
    latency_ratio,
    model_accuracy,
    reference_model,
)

__all__ = [
    "check_model",
    "CheckConfig",
    "CHECK_RATIO",
    "CheckResult",
    "Finding",
    "latency_ratio",
    "model_accuracy",
    "reference_model",
    "BASELINE_VERSION",
]
