"""``edgekit tune``: search engine, quantization, graph and session settings for the fastest
model whose accuracy holds.

Every candidate's latency is a *ratio* against the fp32 model, measured interleaved in the same
process (A B A B ...) and repeated until the ratio is stable, so the search holds on a shared,
noisy machine. The search runs in stages:

1. quantization: static QDQ int8 with u8/s8 activations, per-channel or per-tensor weights,
   full or reduced weight range, and the calibration method;
2. mixed precision: the stem conv (the first Conv) and the depthwise convs kept in float;
   and latency-aware: the fp32 and int8 graphs are profiled per node (onnxruntime's
   profiler); nodes where int8 is not faster than fp32 are kept in float;
3. engine: when ``openvino`` is installed, fp32 (pinned to f32), the best int8 file of stages
   1 and 2, and bf16 (only on CPUs with bf16) run by OpenVINO;
4. session: onnxruntime's intra-op spinning, graph optimization level, denormals as zero.

Accuracy gate: a candidate is rejected only when it is over ``max_accuracy_drop`` by more than
one standard error: its paired accuracy drop with labelled evaluation data, else its top-1
disagreement with fp32 on held-out calibration samples (see :mod:`edgekit.agreement`). The
winner is the fastest accepted candidate. Its file is a plain QDQ file; its engine and session
settings go into its metadata (``edgekit.session``), which the runtime applies (falling back to
onnxruntime where the engine is missing).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import __version__
from edgekit.agreement import compare_predictions, gate
from edgekit.errors import DataError, InputError
from edgekit.inputs.data import Dataset, run_in_batches
from edgekit.io.artifacts import ArtifactSet, file_entry
from edgekit.measure.bench import ENGINES, cpu_model, installed_engines, instruction_set, measure
from edgekit.measure.profile import attribute_fp32, attribute_int8, node_profile
from edgekit.measure.ratio import RatioConfig, measure_ratio, paired_ratio
from edgekit.metadata import PREFIX, ModelMetadata, set_props
from edgekit.progress import FractionFn, StatusFn
from edgekit.quantize.regions import float_region, stem_and_depthwise
from edgekit.runtime.model import EdgeModel, SessionOptionsConfig
from edgekit.validate import accuracy

__all__ = ["TuneConfig", "Candidate", "TuneResult", "tune_model", "node_profile",
           "format_candidates"]



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
        engines: engines candidates run on (default None: every installed one, see
            :func:`edgekit.measure.bench.installed_engines`); onnxruntime is always searched.
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
            self.engines = tuple(dict.fromkeys(("onnxruntime", *self.engines)))
            unknown = [e for e in self.engines if e not in ENGINES]
            if unknown:
                raise InputError(f"unknown engine(s) {unknown}", hint=f"use {', '.join(ENGINES)}")
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
    """One configuration tried and what it measured."""

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


# ---------------------------------------------------------------------------------------------
# The search
# ---------------------------------------------------------------------------------------------
#: evaluation batch: memory grows with the model, not with the sample count (224x224 at 256
#: would be gigabytes of activations)
_EVAL_BATCH = 16


def _quant_space() -> list[tuple[str, str, dict[str, Any]]]:
    """(name, description, QuantizationConfig overrides) of the quantization stage."""
    return [
        ("int8-u8s8-pc", "QDQ, u8 activations, s8 per-channel weights (avx512_vnni preset)",
         {"preset": "avx512_vnni"}),
        ("int8-u8s8-pc-rr", "as above with 7-bit weights (avx2 preset, reduce_range)",
         {"preset": "avx2"}),
        ("int8-u8s8-pt", "QDQ, u8 activations, s8 per-tensor weights",
         {"preset": "avx512_vnni", "per_channel": False}),
        ("int8-s8s8-pc", "QDQ, s8 symmetric activations, s8 per-channel weights",
         {"preset": "avx512_vnni", "activation_type": "QInt8", "activation_symmetric": True}),
        ("int8-u8s8-pc-rr-minmax", "avx2 preset with minmax calibration",
         {"preset": "avx2", "calibration_method": "minmax"}),
    ]


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
    engine = getattr(session, "engine", None)
    extra: dict[str, Any] = {"engine": engine} if engine else {}
    return EdgeModel(path, "cpu", session_options=session, use_stored_session=False,
                     check_nan=False, **extra)


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
    cand.path = str(path)
    cand.size_bytes = path.stat().st_size
    return model


def _try_quant(ctx: _Context, name: str, desc: str, overrides: dict[str, Any],
               stage: str = "quantization", session: SessionOptionsConfig | None = None,
               ) -> Candidate:
    """Quantize with ``overrides``, then measure latency (``session``, default the base
    settings) and accuracy. Files are plain QDQ: onnxruntime optimizes them at load."""
    from edgekit.quantize import QuantizationConfig, quantize_model

    cand = Candidate(name, stage, desc)
    outdir = ctx.tmp / name
    outdir.mkdir(parents=True, exist_ok=True)
    overrides.setdefault("stem_in_float", False)  # the stem is a candidate of its own
    qcfg = QuantizationConfig.from_preset(
        overrides.pop("preset", None),
        mode="int8",
        calibration_samples=ctx.config.calibration_samples,
        seed=ctx.config.seed,
        **overrides,
    )
    cand.quantization = qcfg.to_dict()
    try:
        variant = quantize_model(ctx.fp32_path, outdir, stem=ctx.fp32_path.stem, config=qcfg,
                                 calibration=ctx.calibration)
    except Exception as exc:  # a config onnxruntime rejects is a failed candidate, not a crash
        cand.reason = f"quantization failed: {str(exc).splitlines()[0][:160]}"
        return cand
    model = _measure(ctx, cand, variant.path, session or ctx.base_session)
    _check_accuracy(ctx, cand, model)
    model.close()
    return cand


def _latency_aware(ctx: _Context, best: Candidate) -> tuple[Candidate | None, list[dict[str, Any]]]:
    """Profile fp32 and ``best`` per node; keep in float the nodes where int8 is not faster."""
    assert best.path is not None and best.quantization is not None
    feeds = ctx.bench_feeds
    fp32_prof = attribute_fp32(node_profile(ctx.fp32_path, feeds, ctx.base_session), ctx.graph)
    names = {n.name for n in ctx.graph.node}
    int8_prof = attribute_int8(node_profile(best.path, feeds, ctx.base_session), names)
    rows = []
    slower = []
    for node in ctx.graph.node:
        if node.name in fp32_prof and node.name in int8_prof:
            f, q = fp32_prof[node.name], int8_prof[node.name]
            rows.append({"node": node.name, "op": node.op_type, "fp32_us": round(f, 2),
                         "int8_us": round(q, 2), "speedup": round(f / q, 3) if q else None})
            if q >= 0.95 * f:
                slower.append(node.name)
    rows.sort(key=lambda r: -r["fp32_us"])
    if not slower:
        return None, rows
    region = float_region(ctx.graph, slower)
    overrides = _float_overrides(best, region)
    cand = _try_quant(
        ctx, "int8-latency-aware",
        f"{best.name} with {len(slower)} node(s) where int8 was not faster kept in float "
        f"({len(region)} with their activations/pooling); the float regions stay float in a "
        "plain onnxruntime session (no session setting needed)",
        overrides, stage="mixed precision",
    )
    return cand, rows


def _float_overrides(best: Candidate, region: Sequence[str]) -> dict[str, Any]:
    """``best``'s quantization settings with the nodes of ``region`` kept in float."""
    assert best.quantization is not None
    quant = dict(best.quantization)
    overrides = {k: quant[k] for k in ("per_channel", "activation_type", "weight_type",
                                       "activation_symmetric", "weight_symmetric",
                                       "reduce_range", "calibration_method")}
    overrides["nodes_to_exclude"] = sorted(set(quant.get("nodes_to_exclude") or [])
                                           | set(region))
    return overrides


def _region_candidates(ctx: _Context, best: Candidate) -> list[tuple[str, str, list[str]]]:
    """(name, description, float region) of the stem / depthwise-in-float candidates; skipped
    ones are logged with their reason."""
    stem, dw = stem_and_depthwise(ctx.graph)
    out: list[tuple[str, str, list[str]]] = []
    if stem:
        out.append(("int8-stem-float", f"{best.name} with the stem conv ({stem[0]}) and its "
                    "activation/pooling kept in float", float_region(ctx.graph, stem)))
    else:
        ctx.progress("    no Conv: no stem-in-float candidate")
    if dw:
        out.append(("int8-stem-dw-float", f"{best.name} with the stem conv and the {len(dw)} "
                    "depthwise conv(s) kept in float", float_region(ctx.graph, stem + dw)))
    else:
        ctx.progress("    no depthwise Conv: no depthwise-in-float candidate")
    return out


#: onnxruntime moves Quantize/Dequantize nodes across pooling/reshape at load (the session
#: stage tries switching that off; mixed-precision files no longer need it, see quantize.qdq)
_NO_PROPAGATION = SessionOptionsConfig(disabled_optimizers=["QDQPropagationTransformer"])


def _session_space() -> list[tuple[str, str, SessionOptionsConfig]]:
    return [
        ("no-qdq-propagation", "onnxruntime's QDQ propagation disabled", _NO_PROPAGATION),
        ("no-spin", "intra-op threads do not spin between runs",
         SessionOptionsConfig(allow_spinning=False)),
        ("denormal-zero", "denormals flushed to zero",
         SessionOptionsConfig(session_config={"session.set_denormal_as_zero": "1"})),
        ("opt-extended", "graph optimization level extended (no layout transforms)",
         SessionOptionsConfig(graph_optimization_level="extended")),
    ]


def _engine_candidate(ctx: _Context, base: Candidate, engine: str, precision: str,
                      name: str, desc: str) -> Candidate:
    """``base``'s file run by ``engine`` at ``precision`` (base session threads), measured and
    gated on accuracy like every candidate."""
    assert base.path is not None
    cand = Candidate(name, "engine", desc, quantization=base.quantization, engine=engine)
    session = ctx.base_session.merged(
        SessionOptionsConfig(engine=engine, precision=precision))
    try:
        model = _measure(ctx, cand, Path(base.path), session)
    except Exception as exc:  # an engine that rejects the file is a failed candidate
        cand.reason = f"{engine} failed: {str(exc).strip().splitlines()[0][:160]}"
        return cand
    _check_accuracy(ctx, cand, model)
    model.close()
    return cand


def _bf16_skip_reason() -> str | None:
    """None when OpenVINO can compute in bf16 on this CPU (``BF16`` in its optimization
    capabilities: the avx512_bf16 / amx_bf16 flags), else why the bf16 candidate is skipped."""
    try:
        import openvino as ov

        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception as exc:  # no openvino, or no CPU plugin
        return f"no bf16 candidate: OpenVINO's CPU plugin is unavailable ({exc})"
    if "BF16" in caps:
        return None
    return ("no bf16 candidate: this CPU has no bf16 instructions (no avx512_bf16/amx_bf16; "
            f"OpenVINO capabilities {', '.join(caps)})")


_FINALISTS = 3
#: simpler settings first: a more complex candidate wins only when it is faster by more than
#: the measurement noise (``rel_tol``)
_STAGE_ORDER = {"baseline": 0, "quantization": 1, "mixed precision": 2, "session": 3,
                "engine": 4}


def _runoff(ctx: _Context, cands: Sequence[Candidate]) -> Candidate:
    """Re-time the fastest accepted candidates interleaved with fp32 and each other (one
    measurement, so they share the machine's state); returns the winner."""
    cfg = ctx.config
    timed = [c for c in cands if c.accepted and c.latency_ratio is not None and c.path]
    finalists = sorted(timed, key=lambda c: c.latency_ratio)[:_FINALISTS]  # type: ignore[arg-type, return-value]
    if len(finalists) > 1:
        models = [_open(Path(c.path), SessionOptionsConfig.from_dict(c.session))  # type: ignore[arg-type]
                  for c in finalists]
        feeds = ctx.bench_feeds
        calls = [lambda: ctx.reference.run(feeds)] + [
            (lambda m=m: m.run(feeds)) for m in models]
        times = measure(calls, runs=None, duration=min(2 * cfg.min_seconds, cfg.max_seconds),
                        min_runs=min(cfg.min_pairs, 20), warmup=3)
        ref_ms = float(np.median(times[0])) / 1e6
        for c, t in zip(finalists, times[1:], strict=True):
            c.first_ratio, c.finalist = c.latency_ratio, True
            c.latency_ratio = paired_ratio(t, times[0])  # the estimator of measure_ratio
            c.latency_ms, c.fp32_latency_ms = float(np.median(t)) / 1e6, ref_ms
            c.pairs += len(t)
        for m in models:
            m.close()
    winner: Candidate | None = None
    for c in sorted(finalists, key=lambda c: (_STAGE_ORDER.get(c.stage, 9), c.latency_ratio)):
        if winner is None or c.latency_ratio < winner.latency_ratio * (1 - cfg.rel_tol):  # type: ignore[operator]
            winner = c
    return winner or cands[0]


def _pareto(cands: Sequence[Candidate]) -> None:
    pts = [c for c in cands if c.latency_ratio is not None]
    for c in pts:
        c.pareto = not any(
            o is not c
            and o.latency_ratio <= c.latency_ratio  # type: ignore[operator]
            and o.loss <= c.loss
            and o.size_bytes <= c.size_bytes
            and (o.latency_ratio, o.size_bytes) != (c.latency_ratio, c.size_bytes)
            for o in pts
        )


def format_candidates(cands: Sequence[Candidate], winner: Candidate | None = None) -> str:
    """The candidates table (latency ratio vs fp32, accuracy, size)."""
    from edgekit.measure.bench import render_table

    rows = []
    for c in cands:
        rows.append([
            ("* " if c is winner else "  ") + c.name,
            c.stage,
            c.engine,
            "-" if c.latency_ratio is None else f"{c.latency_ratio:.3f}",
            "-" if c.latency_ms is None else f"{c.latency_ms:.3f}",
            "-" if c.accuracy is None else f"{c.accuracy:.2f}",
            "-" if c.agreement is None else f"{c.agreement:.2f}",
            f"{c.size_bytes / 1024:.0f}" if c.size_bytes else "-",
            ("yes" if c.accepted else "no") + (" P" if c.pareto else "")
            + (" R" if c.finalist else ""),
        ])
    header = ["candidate", "stage", "engine", "ratio vs fp32", "median ms", "acc %", "agree %",
              "KiB",
              "ok (P=pareto, R=run-off)"]
    return render_table(header, rows)


@dataclass
class _Data:
    """What the search measures on: calibration, evaluation and benchmark inputs."""

    calibration: Dataset
    eval_feeds: dict[str, np.ndarray]
    eval_labels: np.ndarray | None
    eval_desc: str
    bench_feeds: dict[str, np.ndarray]
    notes: list[str]


def _fp32_model(src: Path, tmp: Path, say: StatusFn) -> Path:
    """``src`` itself when it is ONNX, else its validated fp32 export in ``tmp``."""
    if src.suffix.lower() == ".onnx":
        return src
    from edgekit.convert.export import ExportConfig, export_model

    say("exporting the fp32 model")
    return export_model(src, tmp / "fp32", ExportConfig()).onnx_path


def _load_tune_data(proto: Any, calibration: Any, eval_data: Any, config: TuneConfig) -> _Data:
    """Calibration samples; evaluation on ``eval_data``, else on calibration samples held out
    (not used to calibrate), else on the calibration samples; a batch for timing."""
    from edgekit.inputs.prepare import load_model_data, onnx_input_specs
    from edgekit.quantize import QuantizationConfig, calibration_split

    specs = onnx_input_specs(proto)
    meta = ModelMetadata.from_props({p.key: p.value for p in proto.metadata_props})
    qcfg = QuantizationConfig(calibration_samples=config.calibration_samples, seed=config.seed)
    feeds, cal_info, held, notes = calibration_split(calibration, specs, meta, qcfg)
    desc = cal_info["data"]
    if eval_data is not None:
        ev, labels, more, ev_desc = load_model_data(
            eval_data, specs, meta, "evaluation data", "test", config.eval_samples, config.seed)
        notes += more
    elif held is not None:
        ev, labels, ev_desc = held[0], held[1], f"{held[2]} (held out)"
    else:
        ev, labels, ev_desc = feeds, None, f"{desc} (agreement only)"
    reps = -(-config.batch // len(next(iter(feeds.values()))))
    bench = {k: np.concatenate([v] * reps)[: config.batch] for k, v in feeds.items()}
    return _Data(Dataset(feeds, None, desc), ev, labels, ev_desc, bench, notes)


def _context(config: TuneConfig, fp32_path: Path, graph: Any, data: _Data, tmp: Path,
             say: StatusFn) -> _Context:
    base_session = SessionOptionsConfig(
        intra_op_num_threads=config.threads, inter_op_num_threads=1,
        execution_mode="sequential", graph_optimization_level="all",
        engine="onnxruntime",
    )
    reference = _open(fp32_path, base_session)
    fp32_probs = run_in_batches(reference.run, data.eval_feeds, _EVAL_BATCH)[0]
    labels = data.eval_labels
    fp32_acc = accuracy(fp32_probs, labels) if labels is not None else None
    return _Context(config, fp32_path, graph, data.eval_feeds, labels, fp32_probs, fp32_acc,
                    data.bench_feeds, data.calibration, reference, base_session, tmp, say)


class _Search:
    """The staged search: one method per stage, a shared time budget and progress."""

    def __init__(self, ctx: _Context, on_progress: FractionFn | None, t_start: float) -> None:
        self.ctx, self.on_progress = ctx, on_progress
        self.deadline = t_start + 60 * ctx.config.budget_minutes
        self.engines = [e for e in (ctx.config.engines or installed_engines())
                        if e != "onnxruntime"]
        self.total = len(_quant_space()) + len(_session_space()) + 3 + 4 * len(self.engines)
        self.done = 0
        self.fp32 = self._baseline()
        self.cands: list[Candidate] = [self.fp32]
        self.profile: list[dict[str, Any]] = []
        self.advance()

    def _baseline(self) -> Candidate:
        ctx = self.ctx
        fp32 = Candidate("fp32", "baseline", "fp32, graph optimization all")
        _measure(ctx, fp32, ctx.fp32_path, ctx.base_session).close()
        fp32.accuracy, fp32.agreement = ctx.fp32_accuracy, 100.0
        fp32.accuracy_drop = 0.0 if ctx.fp32_accuracy is not None else None
        fp32.accepted, fp32.reason = True, "reference"
        return fp32

    def advance(self) -> None:
        self.done += 1
        if self.on_progress is not None:
            self.on_progress(min(1.0, self.done / self.total))

    def over_budget(self) -> bool:
        if time.perf_counter() > self.deadline:
            self.ctx.progress("time budget reached: no more candidates")
            return True
        return False

    def best_of(self, pool: Sequence[Candidate]) -> Candidate:
        ok = [c for c in pool if c.accepted and c.latency_ratio is not None]
        return min(ok, key=lambda c: c.latency_ratio or 0.0) if ok else self.fp32

    def quantization(self) -> None:
        space, say = _quant_space(), self.ctx.progress
        for i, (name, desc, overrides) in enumerate(space):
            if i and self.over_budget():
                break
            say(f"[{i + 1}/{len(space)}] {name}: {desc}")
            c = _try_quant(self.ctx, name, desc, dict(overrides))
            say(f"    ratio {c.latency_ratio or float('nan'):.3f}, {c.reason}")
            self.cands.append(c)
            self.advance()

    def mixed_precision(self) -> None:
        say = self.ctx.progress
        if any(c.accepted for c in self.cands[1:]) and not self.over_budget():
            say("profiling fp32 and int8 per node (latency-aware mixed precision)")
            mixed, self.profile = _latency_aware(self.ctx, self.best_of(self.cands[1:]))
            if mixed is not None:
                say(f"    ratio {mixed.latency_ratio or float('nan'):.3f}, {mixed.reason}")
                self.cands.append(mixed)
            else:
                say("    int8 is faster than fp32 on every profiled node; nothing kept in float")
        self.advance()

    def float_regions(self) -> None:
        """Stem conv, and stem plus depthwise convs, kept in float (from the best int8)."""
        best = self.best_of([c for c in self.cands if c.stage == "quantization"])
        if best is not self.fp32:
            for name, desc, region in _region_candidates(self.ctx, best):
                if self.over_budget():
                    break
                self.ctx.progress(f"mixed precision: {name}")
                c = _try_quant(self.ctx, name, desc, _float_overrides(best, region),
                               stage="mixed precision")
                self.ctx.progress(f"    ratio {c.latency_ratio or float('nan'):.3f}, {c.reason}")
                self.cands.append(c)
        self.advance()

    def engine(self) -> None:
        """The fp32 file, the best int8 files and bf16 on every other installed engine."""
        for engine in self.engines:
            if engine not in installed_engines():
                self.ctx.progress(f"engine {engine} is not installed: skipped")
                continue
            for base, precision, name, desc in self._engine_space(engine):
                self.advance()
                if self.over_budget():
                    return
                self.ctx.progress(f"engine: {name}")
                c = _engine_candidate(self.ctx, base, engine, precision, name, desc)
                self.ctx.progress(f"    ratio {c.latency_ratio or float('nan'):.3f}, {c.reason}")
                self.cands.append(c)

    def _engine_space(self, engine: str) -> list[tuple[Candidate, str, str, str]]:
        """(base candidate, precision, name, description) of ``engine``'s candidates."""
        space = [(self.fp32, "f32", f"fp32@{engine}", f"fp32 file on {engine}, f32 pinned")]
        seen = {self.fp32.name}
        for stage in ("quantization", "mixed precision"):
            best = self.best_of([c for c in self.cands if c.stage == stage])
            if best.name not in seen:
                seen.add(best.name)
                space.append((best, "f32", f"{best.name}@{engine}",
                              f"{best.name}'s QDQ file run by {engine}"))
        reason = _bf16_skip_reason() if engine == "openvino" else "bf16 is OpenVINO's only"
        if reason is None:
            space.append((self.fp32, "bf16", f"bf16@{engine}",
                          f"fp32 file on {engine} computed in bf16 (gated like any variant)"))
        elif engine == "openvino":
            self.ctx.progress(reason)
        return space

    def session(self) -> None:
        """onnxruntime session settings on the best onnxruntime candidate."""
        best = self.best_of([c for c in self.cands if c.engine == "onnxruntime"])
        best_session = SessionOptionsConfig.from_dict(best.session)
        for name, desc, extra in _session_space():
            self.advance()
            if _skip_session(extra, best, best_session, self.ctx.config.threads):
                continue
            if self.over_budget():
                break
            self.cands.append(self._session_candidate(best, best_session, name, desc, extra))

    def _session_candidate(self, best: Candidate, best_session: SessionOptionsConfig,
                           name: str, desc: str, extra: SessionOptionsConfig) -> Candidate:
        assert best.path is not None
        c = Candidate(f"{best.name}+{name}", "session", f"{best.name}, {desc}",
                      quantization=best.quantization)
        self.ctx.progress(f"session: {c.name}")
        m = _measure(self.ctx, c, Path(best.path), best_session.merged(extra))
        if best is self.fp32:
            c.accuracy, c.agreement, c.accuracy_drop = best.accuracy, 100.0, best.accuracy_drop
            c.accepted, c.reason = True, "fp32 session settings"
        else:
            _check_accuracy(self.ctx, c, m)
        m.close()
        self.ctx.progress(f"    ratio {c.latency_ratio or float('nan'):.3f}")
        return c

    def finish(self) -> Candidate:
        """The run-off winner; marks the Pareto front."""
        self.ctx.progress(f"run-off: the {_FINALISTS} fastest candidates re-timed together "
                          "with fp32")
        winner = _runoff(self.ctx, self.cands)
        self.ctx.reference.close()
        if self.on_progress is not None:
            self.on_progress(1.0)
        _pareto(self.cands)
        return winner


def _skip_session(extra: SessionOptionsConfig, best: Candidate,
                  best_session: SessionOptionsConfig, threads: int) -> bool:
    if extra.disabled_optimizers and (
            best.quantization is None
            or set(extra.disabled_optimizers) <= set(best_session.disabled_optimizers)):
        return True  # no Q/DQ to propagate, or already off
    # one thread has no pool threads to spin; a "win" would be noise
    return extra.allow_spinning is not None and threads == 1


def _report(search: _Search, winner: Candidate, src: Path, data: _Data, log: list[str],
            t_start: float) -> dict[str, Any]:
    ctx, cands = search.ctx, search.cands
    return {
        "edgekit_version": __version__,
        "model": str(src),
        "fp32_model": ctx.fp32_path.name,
        "machine": {"cpu": cpu_model(), "instruction_set": instruction_set(),
                    "cores": os.cpu_count(), "engines": installed_engines()},
        "config": ctx.config.__dict__,
        "calibration": data.calibration.source,
        "evaluation": data.eval_desc,
        "notes": data.notes,
        "fp32": {"accuracy": ctx.fp32_accuracy, "latency_ms": search.fp32.latency_ms},
        "winner": winner.to_dict(),
        "why": _why(winner, search.fp32, cands, ctx.config),
        "candidates": [c.to_dict() for c in cands],
        "pareto_front": [c.name for c in cands if c.pareto],
        "node_profile": search.profile,
        "elapsed_s": round(time.perf_counter() - t_start, 1),
        "log": log,
    }


def _tuned_bytes(winner: Candidate, config: TuneConfig) -> bytes:
    """The winner's file with its session settings and the search summary in metadata."""
    import onnx

    tuned = onnx.load(winner.path)  # type: ignore[arg-type]
    session = SessionOptionsConfig.from_dict(winner.session)
    summary = {"winner": winner.name, "latency_ratio": winner.latency_ratio,
               "threads": config.threads, "batch": config.batch, "edgekit": __version__}
    set_props(tuned, {PREFIX + "session": json.dumps(session.to_dict()),
                      PREFIX + "tune": json.dumps(summary)})
    return bytes(tuned.SerializeToString())


def tune_model(
    model: str | os.PathLike[str],
    outdir: str | os.PathLike[str],
    calibration: str | os.PathLike[str] | Dataset,
    eval_data: str | os.PathLike[str] | Dataset | None = None,
    config: TuneConfig | None = None,
    progress: StatusFn | None = None,
    on_progress: FractionFn | None = None,
    package: str | os.PathLike[str] | None = None,
) -> TuneResult:
    """Search for the fastest int8 variant of ``model`` whose accuracy holds.

    Args:
        model: a Keras model file (exported to fp32 ONNX first) or an fp32 ``.onnx`` file.
        outdir: gets ``<stem>.tuned.onnx`` (with its session settings in metadata) and
            ``<stem>.tune.json`` (candidates, Pareto front, per-node profile, the reasons).
        calibration: calibration data (see :func:`edgekit.quantize.core.load_model_data`).
        eval_data: labelled evaluation data (default: agreement with fp32 on calibration
            samples held out from calibration).
        config: options (default :class:`TuneConfig()`).
        progress: called with one-line status messages (default: none).
        on_progress: called with the fraction of the search done, 0..1 (default: none).
        package: also write an ONNX Runtime model package folder there (default none): the
            tuned file as its int8 (or fp32) variant, fp32 and fp16 (see
            :func:`edgekit.packaging.tune_package`); checked before the search starts.
    """
    from edgekit.io.onnxfile import load_onnx

    config = config or TuneConfig()
    log: list[str] = []

    def say(message: str) -> None:
        log.append(message)
        if progress is not None:
            progress(message)

    _require_calibration(calibration)
    src = Path(model)
    artifacts, names = _artifacts(src, outdir, config.force)
    target = _package_target(package, outdir, config.force)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgekit-tune-") as tmpdir:
        fp32_path = _fp32_model(src, Path(tmpdir), say)
        proto = load_onnx(fp32_path)
        data = _load_tune_data(proto, calibration, eval_data, config)
        search = _Search(_context(config, fp32_path, proto.graph, data, Path(tmpdir), say),
                         on_progress, t_start)
        search.quantization()
        search.float_regions()
        search.mixed_precision()
        search.engine()
        search.session()
        winner = search.finish()
        tuned = _tuned_bytes(winner, config)
        winner.size_bytes = len(tuned)  # the file as written, with the tune's metadata
        report = _report(search, winner, src, data, log, t_start)
        report["files"] = {"tuned": file_entry(names[0], tuned)}
        say(report["why"])
        report["log"] = log
        with artifacts.open():
            if target is not None:
                report["package"] = _package(target, artifacts, fp32_path, winner, tuned,
                                             (calibration, eval_data), say)
            artifacts.write_bytes(names[0], tuned)
            artifacts.write_json(names[1], report)
    return TuneResult(artifacts.final(names[0]), artifacts.final(names[1]), winner,
                      search.cands, report)


def _artifacts(src: Path, outdir: str | os.PathLike[str],
               force: bool) -> tuple[ArtifactSet, list[str]]:
    """The checked outputs ``<stem>.tuned.onnx`` and ``<stem>.tune.json`` of ``src``."""
    if not src.exists():
        raise InputError(f"model path {src} does not exist", hint="check the path")
    stem = src.stem if not src.is_dir() else src.name
    names = [f"{stem}.tuned.onnx", f"{stem}.tune.json"]
    artifacts = ArtifactSet(outdir, names, force=force)
    artifacts.check()
    return artifacts, names


def _package_target(package: str | os.PathLike[str] | None, outdir: str | os.PathLike[str],
                    force: bool) -> Any:
    """The checked :class:`edgekit.packaging.PackageTarget` of ``--package`` (None without)."""
    if package is None:
        return None
    from edgekit.packaging import PackageTarget

    return PackageTarget(package, force, outdir)


def _package(target: Any, artifacts: ArtifactSet, fp32_path: Path, winner: Candidate,
             tuned: bytes, data: tuple[Any, Any], say: StatusFn) -> dict[str, Any]:
    """The model package of the tune (the tuned file as int8 when quantized, else as fp32)."""
    from edgekit.packaging import tune_package

    precision = "int8" if winner.quantization is not None else "fp32"
    return tune_package(target, artifacts, fp32_path, tuned, precision, data[0], data[1], say)


def _why(winner: Candidate, fp32: Candidate, cands: Sequence[Candidate], cfg: TuneConfig) -> str:
    if winner is fp32 or (winner.quantization is None and winner.stage != "engine"):
        int8 = [c for c in cands if c.quantization is not None and c.latency_ratio is not None]
        accepted = [c for c in int8 if c.accepted]
        if not accepted:
            return (f"no int8 candidate met the accuracy budget ({cfg.max_accuracy_drop:g} pt); "
                    f"keeping fp32 ({winner.name})")
        fastest = min(accepted, key=lambda c: c.latency_ratio)  # type: ignore[arg-type, return-value]
        return (f"fp32 ({winner.name}) is fastest: the fastest int8 candidate within the "
                f"accuracy budget, {fastest.name}, takes {fastest.latency_ratio:.2f}x the fp32 "
                f"latency here ({cfg.threads} thread(s), batch {cfg.batch}); see node_profile "
                "for where the time goes")
    faster = 1 / winner.latency_ratio if winner.latency_ratio else float("nan")
    acc = (f"accuracy drop {winner.accuracy_drop:+.2f} pt" if winner.accuracy_drop is not None
           else f"top-1 agreement {winner.agreement:.2f}%")
    return (f"{winner.name} ({winner.engine}) is the fastest candidate within the accuracy "
            "budget: "
            f"{faster:.2f}x faster than fp32 ({winner.latency_ms:.3f} ms vs "
            f"{winner.fp32_latency_ms:.3f} ms, {cfg.threads} thread(s), batch {cfg.batch}), "
            f"{acc}, {winner.size_bytes / 1024:.0f} KiB{_runoff_note(winner, cands)}")


def _runoff_note(winner: Candidate, cands: Sequence[Candidate]) -> str:
    others = [f"{c.name} {c.latency_ratio:.3f}" for c in cands if c.finalist and c is not winner]
    if not winner.finalist or not others:
        return ""
    return (f"; run-off ratio {winner.latency_ratio:.3f} vs " + ", ".join(others)
            + " (a more complex setting must win by more than the noise)")


def _require_calibration(calibration: Any) -> None:
    if calibration is None:
        raise DataError("tune needs calibration data for int8 candidates",
                        hint="pass --calibration FILE.npz "
                        "(e.g. calibration_data/fashion_mnist.npz)")
