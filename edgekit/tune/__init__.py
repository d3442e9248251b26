"""Search quantization and session settings for the fastest model within an accuracy budget."""

from __future__ import annotations

from edgekit.tune.search import (
    Candidate,
    TuneConfig,
    TuneResult,
    float_region,
    format_candidates,
    node_profile,
    tune_model,
)

__all__ = [
    "TuneConfig",
    "Candidate",
    "TuneResult",
    "tune_model",
    "node_profile",
    "float_region",
    "format_candidates",
]
