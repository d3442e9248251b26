"""The tune's shared pieces: its options, a candidate, the search context, and how one
candidate is measured (latency ratio vs fp32 at the requested batch) and gated on accuracy."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.agreement import compare_predictions, gate
from edgekit.errors import InputError
from edgekit.inputs.data import Dataset, run_in_batches
from edgekit.measure.ratio import RatioConfig, measure_ratio
from edgekit.progress import StatusFn
from edgekit.runtime.engine_registry import engine_class, parse_engines
from edgekit.runtime.model import EdgeModel
from edgekit.runtime.session import SessionOptionsConfig
from edgekit.validate import accuracy

__all__ = ["TuneConfig", "Candidate", "TuneResult"]


@dataclass
class TuneConfig:
    """Options of :func:`tune_model`.

    Attributes:
        max_accuracy_drop: accuracy budget in points vs fp32 (default 0.5); without labels,
            the budget on top-1 disagreement with fp32, in percent (both with a
            tolerance of one standard error, see :mod:`edgekit.agreement`).
        threads: intra-op threads the model will run with (default 1).
        batch: batch size latency is measured at (default 1).
        budget_minutes: stop starting new candidates after this long (default 10).
        calibration_samples: calibration samples per candidate (default 256).
        eval_samples: cap on evaluation samples (default 2000; 0 = all).
        min_pairs / max_pairs: interleaved fp32/candidate pairs per latency ratio
            (defaults 40 / 20000); measurement stops earlier once the ratio is stable.
        min_seconds / max_seconds: interleaved timing per candidate before the ratio may be
            called stable, and the most it takes (defaults 1.0 / 30.0 seconds).
        rel_tol: the ratio is stable when two successive estimates differ by less than this
            fraction (default 0.02).
        seed: seed of calibration/evaluation subsets (default 0).
        force: overwrite existing outputs (default False).
        engines: registered engines candidates run on (default None: every installed one,
            see :func:`edgekit.runtime.engine_registry.installed_engines`); onnxruntime is
            always searched. Names are checked against the registry (aliases are accepted).
    """

    max_accuracy_drop: float = 0.5
    threads: int = 1
    batch: int = 1
    budget_minutes: float = 10.0
    calibration_samples: int = 256
    eval_samples: int = 2000
    min_pairs: int = 40
    max_pairs: int = 20000
    min_seconds: float = 1.0
    max_seconds: float = 30.0
    rel_tol: float = 0.02
    seed: int = 0
    force: bool = False
    engines: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.engines is not None:
            self.engines = parse_engines(("onnxruntime", *self.engines))
        if self.max_accuracy_drop < 0:
            raise InputError("max_accuracy_drop must be >= 0")
        if self.threads < 1 or self.batch < 1:
            raise InputError("threads and batch must be >= 1")
        if self.budget_minutes <= 0:
            raise InputError("budget_minutes must be > 0")
        if not 0 < self.min_pairs <= self.max_pairs:
            raise InputError("need 0 < min_pairs <= max_pairs")
        if not 0 <= self.min_seconds <= self.max_seconds:
            raise InputError("need 0 <= min_seconds <= max_seconds")

    def ratio_config(self) -> RatioConfig:
        """How each candidate's latency ratio is measured (:mod:`edgekit.measure.ratio`)."""
        return RatioConfig(tolerance=self.rel_tol, min_rounds=self.min_pairs,
                           max_rounds=self.max_pairs, min_seconds=self.min_seconds,
                           max_seconds=self.max_seconds)


@dataclass
class Candidate:
    """One configuration tried and what it measured: ``batch`` is the batch size its latency
    was measured at (0: not measured); ``nonstandard_ops`` the ops of its file outside ai.onnx
    (dynamic int8 of LSTMs: onnxruntime only)."""

    name: str
    stage: str
    description: str
    quantization: dict[str, Any] | None = None
    session: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    size_bytes: int = 0
    latency_ratio: float | None = None
    latency_ms: float | None = None
    fp32_latency_ms: float | None = None
    pairs: int = 0
    accuracy: float | None = None
    accuracy_drop: float | None = None
    agreement: float | None = None
    accepted: bool = False
    reason: str = ""
    pareto: bool = False
    first_ratio: float | None = None
    finalist: bool = False
    engine: str = "onnxruntime"
    batch: int = 0
    nonstandard_ops: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("path", None)
        return d

    @property
    def loss(self) -> float:
        """Accuracy drop in points, or disagreement with fp32 in percent without labels."""
        if self.accuracy_drop is not None:
            return self.accuracy_drop
        return 100.0 - (self.agreement or 0.0)


@dataclass
class TuneResult:
    """What :func:`tune_model` chose and wrote."""

    model_path: Path
    report_path: Path
    winner: Candidate
    candidates: list[Candidate]
    report: dict[str, Any]



#: evaluation batch: memory grows with the model, not with the sample count (224x224 at 256
#: would be gigabytes of activations)
_EVAL_BATCH = 16


@dataclass
class _Context:
    config: TuneConfig
    fp32_path: Path
    graph: Any
    eval_feeds: dict[str, np.ndarray]
    eval_labels: np.ndarray | None
    fp32_probs: np.ndarray
    fp32_accuracy: float | None
    bench_feeds: dict[str, np.ndarray]
    calibration: Dataset
    reference: EdgeModel
    base_session: SessionOptionsConfig
    tmp: Path
    progress: StatusFn
    model: Any = None  #: the fp32 ModelProto (``graph`` is its graph)


def _check_accuracy(ctx: _Context, cand: Candidate, model: EdgeModel) -> None:
    """Accept ``cand`` unless it is over the budget by more than one standard error (paired
    accuracy drop with labels, top-1 disagreement without; see :mod:`edgekit.agreement`)."""
    probs = run_in_batches(model.run, ctx.eval_feeds, _EVAL_BATCH)[0]
    agree = compare_predictions(ctx.fp32_probs, probs, ctx.eval_labels)
    cand.agreement = 100.0 * (agree.top1_agreement if agree.top1_agreement is not None else 1.0)
    if ctx.eval_labels is not None and ctx.fp32_accuracy is not None:
        cand.accuracy = accuracy(probs, ctx.eval_labels)
        cand.accuracy_drop = ctx.fp32_accuracy - cand.accuracy
    cand.accepted, _, cand.reason = gate(agree, ctx.config.max_accuracy_drop)


def _open(path: Path, session: SessionOptionsConfig) -> EdgeModel:
    """``path`` on the CPU with exactly ``session`` (its engine; not the settings stored in
    the file)."""
    return EdgeModel(path, "cpu", engine=session.engine or "auto", session=session,
                     use_stored_session=False, check_nan=False)


def _measure(ctx: _Context, cand: Candidate, path: Path,
             session: SessionOptionsConfig) -> EdgeModel:
    model = _open(path, session)
    feeds_ref = ctx.bench_feeds
    ref_run, cand_run = ctx.reference.run, model.run
    cfg = ctx.config
    lr = measure_ratio(lambda: ref_run(feeds_ref), lambda: cand_run(feeds_ref), cfg.ratio_config())
    cand.latency_ratio, cand.latency_ms = lr.ratio, lr.candidate_ms
    cand.fp32_latency_ms, cand.pairs = lr.reference_ms, lr.rounds
    cand.session = session.to_dict()
    cand.engine = str(getattr(model, "engine_name", "onnxruntime"))
    cand.batch = _batch_of(feeds_ref)
    cand.path = str(path)
    cand.size_bytes = path.stat().st_size
    return model



def _batch_of(feeds: dict[str, np.ndarray]) -> int:
    """The batch size of ``feeds`` (their first dimension)."""
    return int(len(next(iter(feeds.values()))))


def runs_on(cand: Candidate, engine: str) -> bool:
    """Whether ``cand``'s file can run on ``engine`` (ops outside ai.onnx run only on engines
    that say so: onnxruntime)."""
    return cand.path is not None and (
        engine_class(engine).runs_nonstandard_ops or not cand.nonstandard_ops)
