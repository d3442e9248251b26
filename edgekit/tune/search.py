"""``edgekit tune``: search engine, quantization, graph and session settings for the fastest
model whose accuracy holds.

Every candidate's latency is a *ratio* against the fp32 model, measured interleaved in the same
process (A B A B ...) and repeated until the ratio is stable, so the search holds on a shared,
noisy machine, and every one at ``TuneConfig.batch`` (``Candidate.batch`` records it). The
search runs in stages, the likeliest winners first (:func:`edgekit.tune.candidates._quant_space`):

0. defaults: the export's default variant (static int8 with every
   :class:`~edgekit.quantize.QuantizationConfig` default; dynamic int8 where ``auto`` picks it:
   recurrent and Dense-heavy models), then fp32 and it on every other installed engine, the
   file in the engine's own Q/DQ layout (``int8-openvino``: Q/DQ on Conv/MatMul/Gemm edges
   only, :attr:`Engine.qdq_ops <edgekit.runtime.engine_base.Engine.qdq_ops>`; on a bf16 CPU
   ``int8-bf16-openvino`` instead, the float parts in bf16 and the compute ops' outputs in
   float, with the f32 layout as its fallback), and
   the fp32 file computed in bf16 where the engine does so natively here (OpenVINO on CPUs
   with avx512_bf16/AMX: on an AMX Xeon it beat OpenVINO's int8 on ResNet50). This stage runs
   whatever the budget, so the tune is never worse than the default and never misses an
   engine;
1. quantization: static QDQ int8 with u8/s8 activations, per-channel or per-tensor weights,
   full or reduced weight range, and the calibration method (and full-range dynamic int8);
2. mixed precision: the stem conv (the first Conv) and the depthwise convs kept in float;
   and latency-aware: the fp32 and int8 graphs are profiled per node (onnxruntime's
   profiler); nodes where int8 is not faster than fp32 are kept in float;
3. kernels: the best static int8 file with each Conv on whichever of onnxruntime's int8 conv
   kernels (symmetric-conv, or im2col + GEMM: AMX on Xeons with it) profiles faster for it
   here, chosen by the weights' zero point without changing a value
   (:mod:`edgekit.tune.kernels`);
4. engine: on every other installed engine of ``TuneConfig.engines`` (default: every one in
   the registry, :mod:`edgekit.runtime.engine_registry`; OpenVINO ...), fp32 (pinned to f32),
   the best int8 file of every stage; files with ops outside ai.onnx, such as dynamic int8 of
   LSTMs, stay on the engines that run them (onnxruntime);
5. session: onnxruntime's intra-op spinning, graph optimization level, denormals as zero;
   then, with more than one thread, the fastest candidate of each of the
   :data:`~edgekit.tune.sessions.FEWER_THREADS_FILES` fastest files of every engine on fewer
   threads (one, and half of ``TuneConfig.threads``;
   :func:`edgekit.tune.sessions.fewer_threads`) where its call takes under
   :data:`~edgekit.tune.sessions.FEWER_THREADS_MAX_MS`: a small model can lose more to the
   thread pool's hand-offs than it gains, and the file that leads on all threads need not
   lead on fewer (the export's default file is tried too). The count that wins is stored in
   the tuned file's session settings, so ``TuneConfig.threads`` is the most the model uses;
6. streams: with more than one thread and a batch of more than one, the best candidate of
   every engine on all the threads with each call's batch split into one stream per thread
   (``batch_streams``, :mod:`edgekit.runtime.streams`), where the model's rows are
   independent. Like the defaults, it runs whatever the budget.

The run-off re-times the three fastest accepted candidates and the fastest accepted one of
every engine on every thread count at the requested batch, each thread count in rounds of its
own with fp32; a more complex candidate must win it by more than the noise, and one on more
threads by more than :data:`~edgekit.tune.engines.THREAD_MARGIN`.

Accuracy gate: a candidate is rejected only when it is over ``max_accuracy_drop`` by more than
one standard error: its paired accuracy drop with labelled evaluation data, else its top-1
disagreement with fp32 on held-out calibration samples (see :mod:`edgekit.agreement`). The
winner is the fastest accepted candidate. Its file is a QDQ (or dynamic int8) file; its engine
and session settings go into its metadata (``edgekit.session``), which the runtime applies
(falling back to onnxruntime where the engine is missing).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgekit.errors import DataError
from edgekit.inputs.data import Dataset
from edgekit.io.artifacts import file_entry
from edgekit.io.memory import release_memory
from edgekit.progress import FractionFn, StatusFn
from edgekit.quantize.options import QuantMode
from edgekit.runtime.engine_ort import share_cpu_arena
from edgekit.runtime.engine_registry import engine_class, installed_engines
from edgekit.runtime.session import SessionOptionsConfig
from edgekit.runtime.streams import split_problem
from edgekit.tune.candidates import (
    _float_config,
    _latency_aware,
    _quant_space,
    _region_candidates,
    _try_quant,
)
from edgekit.tune.core import (
    Candidate,
    TuneConfig,
    TuneResult,
    _Context,
    _measure,
    runs_on,
)
from edgekit.tune.engines import (
    _FINALISTS,
    _bf16_skip_reason,
    _engine_candidate,
    _runoff,
    layout_candidates,
)
from edgekit.tune.kernels import gemm_conv_candidate
from edgekit.tune.report import (
    _artifacts,
    _build_report,
    _package,
    _package_target,
    _pareto,
    _tuned_bytes,
    format_candidates,
)
from edgekit.tune.sessions import (
    FEWER_THREADS_FILES,
    _session_space,
    _skip_session,
    fewer_thread_bases,
    fewer_threads,
    session_candidate,
    stream_counts,
    streams_candidate,
    threads_candidate,
)
from edgekit.tune.setup import fp32_model, load_tune_data, tune_context

__all__ = ["TuneConfig", "Candidate", "TuneResult", "tune_model", "format_candidates"]


class _Search:
    """The staged search: one method per stage, a shared time budget and progress."""

    def __init__(self, ctx: _Context, on_progress: FractionFn | None, t_start: float) -> None:
        self.ctx, self.on_progress = ctx, on_progress
        self.deadline = t_start + 60 * ctx.config.budget_minutes
        self.engines = [e for e in (ctx.config.engines or installed_engines())
                        if e != "onnxruntime"]
        self.space = _quant_space(ctx.model)
        self.total = len(self.space) + len(_session_space()) + 6 + 7 * len(self.engines)
        self.done = 0
        self.fp32 = self._baseline()
        self.cands: list[Candidate] = [self.fp32]
        self.default_file: str | None = None  # the export's default variant, once built
        self.profile: list[dict[str, Any]] = []
        self.notes: set[str] = set()
        self.advance()

    def _baseline(self) -> Candidate:
        ctx = self.ctx
        fp32 = Candidate("fp32", "baseline", "fp32, graph optimization all")
        _measure(ctx, fp32, ctx.fp32_path, ctx.base_session).close()
        fp32.accuracy = ctx.fp32_accuracy
        if ctx.classes:
            fp32.agreement = 100.0
        else:
            fp32.relative_error = 0.0
        fp32.accuracy_drop = 0.0 if ctx.fp32_accuracy is not None else None
        fp32.accepted, fp32.reason = True, "reference"
        return fp32

    def advance(self) -> None:
        """One candidate done: its memory handed back to the OS (glibc keeps freed heap
        otherwise, and each candidate's calibration and engine buffers piled up: ConvNeXtTiny
        at batch 32 stayed 0.5 GB higher after its first int8 candidate), the bar moved."""
        release_memory()
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

    def static_int8(self, stage: str | None = None) -> list[Candidate]:
        """The static int8 candidates run by onnxruntime (of ``stage``; default every stage):
        what float regions and per-node profiles start from."""
        return [c for c in self.cands if c.engine == "onnxruntime" and c.quantization
                and c.quantization.mode is QuantMode.INT8 and c.stage != "session"
                and (stage is None or c.stage == stage)]

    def _quant(self, i: int) -> Candidate:
        spec = self.space[i]
        self.ctx.progress(f"[{i + 1}/{len(self.space)}] {spec.name}: {spec.description}")
        c = _try_quant(self.ctx, spec.name, spec.description,
                       spec.config(self.ctx.config.quantization))
        self.ctx.progress(f"    ratio {c.latency_ratio or float('nan'):.3f}, {c.reason}")
        self.cands.append(c)
        self.advance()
        return c

    def defaults(self) -> None:
        """The first quantization candidate (the export's default variant), then fp32, it and
        (where native) bf16 on every other engine at the requested batch: measured whatever
        the budget, so the search never ends worse than the default nor without having timed
        every engine."""
        first = self._quant(0)
        self.default_file = first.path
        for engine in self._installed():
            for base in (self.fp32, first):
                self._run_engine(engine, base)
            for layout in layout_candidates(self.ctx, engine):  # its own int8 layout
                self.cands.append(layout)
                self.advance()
            self._bf16(engine)

    def _bf16(self, engine: str) -> None:
        """The fp32 file on ``engine`` computed in bf16, where it does so natively here."""
        if "bf16" not in engine_class(engine).precisions:
            return
        reason = _bf16_skip_reason(engine)
        if reason is not None:
            self.ctx.progress(reason)
        else:
            self._run_engine(engine, self.fp32, "bf16")

    def quantization(self) -> None:
        """The rest of the quantization space, in order, while the budget lasts."""
        for i in range(1, len(self.space)):
            if self.over_budget():
                break
            self._quant(i)

    def mixed_precision(self) -> None:
        say = self.ctx.progress
        static = self.static_int8()
        if any(c.accepted for c in static) and not self.over_budget():
            say("profiling fp32 and int8 per node (latency-aware mixed precision)")
            mixed, self.profile = _latency_aware(self.ctx, self.best_of(static))
            if mixed is not None:
                say(f"    ratio {mixed.latency_ratio or float('nan'):.3f}, {mixed.reason}")
                self.cands.append(mixed)
            else:
                say("    int8 is faster than fp32 on every profiled node; nothing kept in float")
        self.advance()

    def kernels(self) -> None:
        """The best static int8 file of the quantization stage and the best of all, with their
        convs on onnxruntime's faster int8 kernels (a conv kept in float has none to pick)."""
        bases = [self.best_of(self.static_int8("quantization")), self.best_of(self.static_int8())]
        for best in {id(b): b for b in bases if b is not self.fp32}.values():
            if self.over_budget():
                break
            cand = gemm_conv_candidate(self.ctx, best)
            self.cands.extend([cand] if cand is not None else [])
        self.advance()

    def float_regions(self) -> None:
        """Stem conv, and stem plus depthwise convs, kept in float (from the best static int8)."""
        best = self.best_of(self.static_int8("quantization"))
        if best is not self.fp32:
            for name, desc, region in _region_candidates(self.ctx, best):
                if self.over_budget():
                    break
                self.ctx.progress(f"mixed precision: {name}")
                c = _try_quant(self.ctx, name, desc, _float_config(best, region),
                               stage="mixed precision")
                self.ctx.progress(f"    ratio {c.latency_ratio or float('nan'):.3f}, {c.reason}")
                self.cands.append(c)
        self.advance()

    def _installed(self) -> list[str]:
        """The other engines searched that are installed (the others are logged)."""
        out = []
        for engine in self.engines:
            if engine in installed_engines():
                out.append(engine)
            else:
                self.ctx.progress(f"engine {engine} is not installed: skipped")
        return out

    def engine(self) -> None:
        """The best file of every stage on every other installed engine, at the requested
        batch; pairs measured already (:meth:`defaults`) are not measured again."""
        for engine in self._installed():
            for base in self._engine_bases(engine):
                if self.over_budget():
                    return
                self._run_engine(engine, base)

    def _engine_bases(self, engine: str) -> list[Candidate]:
        """fp32, the default variant and the best accepted onnxruntime candidate of each stage
        whose file ``engine`` can run (ops outside ai.onnx are onnxruntime's: logged)."""
        ort = [c for c in self.cands if c.engine == "onnxruntime"]
        bases = [self.fp32, *[c for c in ort if c.name == self.space[0].name]]
        for stage in ("quantization", "mixed precision", "kernels"):
            pool = [c for c in ort if c.stage == stage]
            best = self.best_of(pool)
            if not runs_on(best, engine):
                bases.append(best)  # logged by _run_engine
                best = self.best_of([c for c in pool if runs_on(c, engine)])
            bases.append(best)
        return list({id(b): b for b in bases}.values())

    def _run_engine(self, engine: str, base: Candidate, precision: str = "f32") -> None:
        """``base``'s file on ``engine`` at ``precision``, unless measured already, not
        runnable there, or not accepted (a file over the accuracy budget stays over it)."""
        name = f"{base.name}@{engine}" if precision == "f32" else f"{precision}@{engine}"
        if any(c.name == name for c in self.cands) or not base.accepted:
            return
        if not runs_on(base, engine):
            note = (f"    {base.name} uses {', '.join(base.nonstandard_ops)} (onnxruntime only): "
                    f"not run on {engine}")
            if note not in self.notes:
                self.notes.add(note)
                self.ctx.progress(note)
            return
        self.advance()
        desc = (f"fp32 file on {engine}, f32 pinned" if base is self.fp32 and precision == "f32"
                else f"fp32 file on {engine} computed in bf16 (gated like any variant)"
                if precision == "bf16" else f"{base.name}'s file run by {engine}")
        self.ctx.progress(f"engine: {name}")
        c = _engine_candidate(self.ctx, base, engine, precision, name, desc)
        self.ctx.progress(f"    ratio {c.latency_ratio or float('nan'):.3f}, {c.reason}")
        self.cands.append(c)

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
            carried = "fp32 session settings" if best is self.fp32 else None
            self.cands.append(session_candidate(self.ctx, best, best_session.merged(extra),
                                                name, desc, carried))

    def engine_bests(self, on_all_threads: bool = False) -> list[Candidate]:
        """The fastest accepted candidate of each engine (``on_all_threads``: of those that run
        on the requested threads)."""
        pools: dict[str, list[Candidate]] = {}
        threads = self.ctx.config.threads
        for c in self.cands:
            if not on_all_threads or c.thread_count(threads) == threads:
                pools.setdefault(c.engine, []).append(c)
        return [self.best_of(pool) for pool in pools.values()]

    def engine_leaders(self, files: int) -> list[Candidate]:
        """The fastest accepted candidate of each of the ``files`` fastest files of every
        engine, and of the export's default file where it is not one of them (a file's
        session variants count once: its fastest one)."""
        ok = sorted((c for c in self.cands if c.accepted and c.latency_ratio is not None),
                    key=lambda c: c.latency_ratio or 0.0)
        out: list[Candidate] = []
        for engine in dict.fromkeys(c.engine for c in ok):
            paths: dict[str, Candidate] = {}
            for c in ok:
                key = c.path or c.name
                if c.engine == engine and (len(paths) < files or key == self.default_file):
                    paths.setdefault(key, c)
            out += paths.values()
        return out

    def threads(self) -> None:
        """The leading files of every engine on fewer intra-op threads than requested, where
        their call is short enough for the pool's hand-offs to matter."""
        for best in fewer_thread_bases(self.engine_leaders(FEWER_THREADS_FILES)):
            for n in fewer_threads(self.ctx.config.threads):
                if self.over_budget():
                    break
                self.cands.append(threads_candidate(self.ctx, best, n))
        self.advance()

    def streams(self) -> None:
        """The best candidate of every engine with its batch split into streams, where the
        batch and the threads are more than one and the model's rows are independent; measured
        whatever the budget, like the defaults: the split pays most on the large models whose
        budget ends first."""
        counts = stream_counts(self.ctx.config.threads, self.ctx.config.batch)
        ref = self.ctx.reference.engine
        why = split_problem(ref.inputs, ref.outputs, ref.props) if counts else None
        if why is not None:
            self.ctx.progress(f"no batch streams: {why}")
            counts = []
        bests = [b for b in self.engine_bests(on_all_threads=True) if b.accepted and b.path]
        for best in {id(b): b for b in bests}.values():
            for n in counts:
                self.cands.append(streams_candidate(self.ctx, best, n))
        self.advance()

    def finish(self) -> Candidate:
        """The run-off winner; marks the Pareto front."""
        self.ctx.progress(f"run-off: the {_FINALISTS} fastest candidates and the fastest of "
                          f"each engine and thread count re-timed together with fp32 at batch "
                          f"{self.ctx.config.batch}")
        winner = _runoff(self.ctx, self.cands)
        self.ctx.reference.close()
        if self.on_progress is not None:
            self.on_progress(1.0)
        _pareto(self.cands)
        return winner


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

    The onnxruntime sessions of this process share one CPU arena from then on
    (:func:`~edgekit.runtime.engine_ort.share_cpu_arena`): the candidates are timed in turns,
    so the tune holds the memory of its largest run rather than of every session it keeps open.

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
    share_cpu_arena()  # the reference and each candidate run in turns: one arena holds both
    with tempfile.TemporaryDirectory(prefix="edgekit-tune-") as tmpdir:
        fp32_path = fp32_model(src, Path(tmpdir), say)
        proto = load_onnx(fp32_path)
        data = load_tune_data(proto, calibration, eval_data, config)
        search = _Search(tune_context(config, fp32_path, proto, data, Path(tmpdir), say),
                         on_progress, t_start)
        search.defaults()
        search.quantization()
        search.float_regions()
        search.mixed_precision()
        search.kernels()
        search.engine()
        search.session()
        search.threads()
        search.streams()
        winner = search.finish()
        tuned = _tuned_bytes(winner, config)
        winner.size_bytes = len(tuned)  # the file as written, with the tune's metadata
        report = _build_report(search, winner, src, data, log, t_start)
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


def _require_calibration(calibration: Any) -> None:
    if calibration is None:
        raise DataError("tune needs calibration data for int8 candidates",
                        hint="pass --calibration FILE.npz "
                        "(e.g. calibration_data/fashion_mnist.npz)")
