"""The tune's shared pieces: its options, a candidate, the search context, and how one
candidate is measured (latency ratio vs fp32 at the requested batch) and gated on accuracy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.agreement import compare_predictions, gate, relative_error_percent
from edgekit.configs import check_groups, config_from_dict, config_to_dict
from edgekit.errors import InputError
from edgekit.inputs.data import Dataset, run_in_batches
from edgekit.progress import StatusFn
from edgekit.quantize.config import QuantizationConfig
from edgekit.runtime.engine_registry import engine_class, parse_engines
from edgekit.runtime.model import EdgeModel
from edgekit.runtime.session import SessionOptionsConfig
from edgekit.speed.ratio import RatioConfig, measure_ratio
from edgekit.validate import accuracy

__all__ = ["TuneConfig", "TUNE_RATIO", "Candidate", "TuneResult"]


#: how the tune times each candidate against fp32 (see :class:`TuneConfig`)
TUNE_RATIO = RatioConfig(tolerance=0.02, min_rounds=40, max_rounds=20000, min_seconds=1.0,
                         max_seconds=30.0)

#: keys of the flat tune config written before it held a RatioConfig and a QuantizationConfig
_FLAT_KEYS = {"rel_tol": "ratio.tolerance", "min_pairs": "ratio.min_rounds",
              "max_pairs": "ratio.max_rounds", "min_seconds": "ratio.min_seconds",
              "max_seconds": "ratio.max_seconds",
              "calibration_samples": "quantization.calibration.samples",
              "seed": "quantization.calibration.seed"}


@dataclass
class TuneConfig:
    """Options of :func:`tune_model`.

    Attributes:
        max_accuracy_drop: accuracy budget in points vs fp32 (default 0.5); without labels,
            the budget on top-1 disagreement with fp32, in percent (both with a
            tolerance of one standard error, see :mod:`edgekit.agreement`); a regression
            output: on its relative error against fp32, in percent.
        threads: the most intra-op threads the model will run with (default 1); with more,
            the best candidates are also tried on fewer
            (:func:`~edgekit.tune.sessions.fewer_threads`) and the tuned file stores the
            count that won; with ``batch`` above one too, the best of every engine is also
            tried with its batch split into one stream per thread
            (:func:`~edgekit.tune.sessions.stream_counts`).
        batch: batch size latency is measured at (default 1).
        budget_minutes: stop starting new candidates after this long (default 10).
        eval_samples: cap on evaluation samples (default 2000; 0 = all).
        force: overwrite existing outputs (default False).
        engines: registered engines candidates run on (default None: every installed one,
            see :func:`edgekit.runtime.engine_registry.installed_engines`); onnxruntime is
            always searched. Names are checked against the registry (aliases are accepted).
        ratio: how each candidate's latency ratio to fp32 is measured (interleaved rounds,
            :class:`~edgekit.speed.ratio.RatioConfig`; default :data:`TUNE_RATIO`: 40 (15
            when settled) to 20,000 rounds, 1 to 30 seconds, stable at 2 %); its ``tolerance``
            is also the margin by which a more complex candidate must win the run-off. Its
            ``settle`` is resolved for ``threads`` when unset (:meth:`RatioConfig.for_threads`),
            so the config saved with the tune says how it timed.
        quantization: the base of every quantized candidate (default ``QuantizationConfig()``:
            256 calibration samples, seed 0): each candidate is this config with the fields it
            varies replaced, so every other option is carried over. Its calibration seed also
            draws the evaluation subset; its gate must stay unset (``max_accuracy_drop`` above
            is the tune's gate).
    """

    max_accuracy_drop: float = 0.5
    threads: int = 1
    batch: int = 1
    budget_minutes: float = 10.0
    eval_samples: int = 2000
    force: bool = False
    engines: tuple[str, ...] | None = None
    ratio: RatioConfig = TUNE_RATIO
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)

    def __post_init__(self) -> None:
        if self.engines is not None:
            self.engines = parse_engines(("onnxruntime", *self.engines))
        if self.max_accuracy_drop < 0:
            raise InputError("max_accuracy_drop must be >= 0")
        if self.threads < 1 or self.batch < 1:
            raise InputError("threads and batch must be >= 1")
        if self.budget_minutes <= 0:
            raise InputError("budget_minutes must be > 0")
        check_groups(self)
        self.ratio = self.ratio.for_threads(self.threads)
        if self.quantization.gate.max_accuracy_drop is not None:
            raise InputError("TuneConfig.quantization.gate.max_accuracy_drop must be None: the "
                             "tune gates every candidate on TuneConfig.max_accuracy_drop",
                             hint="set TuneConfig(max_accuracy_drop=...) instead")

    def to_dict(self) -> dict[str, object]:
        """JSON-ready nested dict (the ``config`` section of the tune report)."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> TuneConfig:
        """Inverse of :meth:`to_dict`; also reads the flat ``config`` of reports written before
        (``rel_tol``, ``min_pairs`` ... into ``ratio``, ``calibration_samples`` and ``seed`` into
        ``quantization.calibration``). Unknown keys are ignored."""
        return config_from_dict(cls, d, _FLAT_KEYS)


@dataclass
class Candidate:
    """One configuration tried and what it measured: ``quantization`` is the config its file
    was quantized with (None: fp32); ``batch`` is the batch size its latency was measured at
    (0: not measured); ``nonstandard_ops`` the ops of its file outside ai.onnx (dynamic int8 of
    LSTMs: onnxruntime only)."""

    name: str
    stage: str
    description: str
    quantization: QuantizationConfig | None = None
    session: dict[str, object] = field(default_factory=dict)
    path: str | None = None
    size_bytes: int = 0
    latency_ratio: float | None = None
    latency_ms: float | None = None
    fp32_latency_ms: float | None = None
    pairs: int = 0
    accuracy: float | None = None
    accuracy_drop: float | None = None
    agreement: float | None = None
    relative_error: float | None = None  #: a regression output's error vs fp32, in percent
    accepted: bool = False
    reason: str = ""
    pareto: bool = False
    first_ratio: float | None = None
    finalist: bool = False
    engine: str = "onnxruntime"
    batch: int = 0
    nonstandard_ops: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready fields (the quantization config nested, no file path)."""
        d: dict[str, object] = dict(self.__dict__)
        d.pop("path", None)
        d["quantization"] = None if self.quantization is None else self.quantization.to_dict()
        return d

    @property
    def loss(self) -> float:
        """Accuracy drop in points; without labels, disagreement with fp32 in percent (a
        regression output: its relative error in percent)."""
        if self.accuracy_drop is not None:
            return self.accuracy_drop
        if self.relative_error is not None:
            return self.relative_error
        return 100.0 - (self.agreement or 0.0)

    @property
    def threads(self) -> int | None:
        """The intra-op threads its session settings ask for (None: the engine's default)."""
        return SessionOptionsConfig.from_dict(self.session).intra_op_num_threads

    def thread_count(self, requested: int) -> int:
        """The intra-op threads it runs on: its session's, else the tune's ``requested``."""
        return self.threads or requested


@dataclass
class TuneResult:
    """What :func:`tune_model` chose and wrote."""

    model_path: Path
    report_path: Path
    winner: Candidate
    candidates: list[Candidate]
    report: dict[str, object]



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
    classes: bool = True  #: the first output scores classes (False: a regression output)


def _check_accuracy(ctx: _Context, cand: Candidate, model: EdgeModel) -> None:
    """Accept ``cand`` unless it is over the budget by more than one standard error (paired
    accuracy drop with labels, top-1 disagreement without; see :mod:`edgekit.agreement`)."""
    probs = run_in_batches(model.run, ctx.eval_feeds, _EVAL_BATCH)[0]
    agree = compare_predictions(ctx.fp32_probs, probs, ctx.eval_labels, ctx.classes)
    if ctx.classes:
        top1 = agree.top1_agreement
        cand.agreement = 100.0 * (top1 if top1 is not None else 1.0)
    else:
        cand.relative_error = relative_error_percent(agree)
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
    try:
        lr = measure_ratio(lambda: ref_run(feeds_ref), lambda: cand_run(feeds_ref),
                           ctx.config.ratio)
    except BaseException:  # the caller gets no model to close: close it here
        model.close()
        raise
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
