"""Accuracy and latency regression checks for CI."""

from __future__ import annotations

from edgekit.check.regression import (
    BASELINE_VERSION,
    CheckConfig,
    CheckResult,
    Finding,
    check_model,
    latency_ratio,
    model_accuracy,
    reference_model,
)

__all__ = [
    "CheckConfig",
    "Finding",
    "CheckResult",
    "reference_model",
    "latency_ratio",
    "model_accuracy",
    "check_model",
    "BASELINE_VERSION",
]
