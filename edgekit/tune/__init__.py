"""Search quantization and session settings for the fastest model within an accuracy budget."""

from __future__ import annotations

from edgekit.tune.candidates import QuantCandidate
from edgekit.tune.core import TUNE_RATIO, Candidate, TuneConfig, TuneResult
from edgekit.tune.report import format_candidates
from edgekit.tune.search import tune_model

__all__ = [
    "tune_model",
    "TuneConfig",
    "TUNE_RATIO",
    "TuneResult",
    "Candidate",
    "QuantCandidate",
    "format_candidates",
]
