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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import __version__
from edgekit.errors import DataError, InputError
from edgekit.inputs.data import Dataset, run_in_batches
from edgekit.io.artifacts import ArtifactSet, file_entry
from edgekit.measure.bench import cpu_model, installed_engines, instruction_set
from edgekit.metadata import PREFIX, ModelMetadata, set_props
from edgekit.progress import FractionFn, StatusFn
from edgekit.runtime.model import SessionOptionsConfig
from edgekit.tune.candidates import (
    _float_overrides,
    _latency_aware,
    _quant_space,
    _region_candidates,
    _try_quant,
    node_profile,
)
from edgekit.tune.core import (
    _EVAL_BATCH,
    Candidate,
    TuneConfig,
    TuneResult,
    _check_accuracy,
    _Context,
    _measure,
    _open,
)
from edgekit.tune.engines import _FINALISTS, _bf16_skip_reason, _engine_candidate, _runoff
from edgekit.tune.report import _pareto, _why, format_candidates
from edgekit.validate import accuracy

__all__ = ["TuneConfig", "Candidate", "TuneResult", "tune_model", "node_profile",
           "format_candidates"]


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


def _require_calibration(calibration: Any) -> None:
    if calibration is None:
        raise DataError("tune needs calibration data for int8 candidates",
                        hint="pass --calibration FILE.npz "
                        "(e.g. calibration_data/fashion_mnist.npz)")
