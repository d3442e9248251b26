"""Interleaved latency benchmarks: ``edgekit bench`` (and the timing of ``compare`` and
``check``).

Every model is loaded once (load time and memory are recorded), warmed up, and then timed in
interleaved rounds per batch size (:mod:`edgekit.speed.timing`: balanced orders, so the
*ratios* against the first model hold even on a busy machine). Models are loaded by suffix
(:func:`edgekit.measure.backends.load_backend`): ONNX files on a registered engine
(``BenchConfig.engine``; ``"all"``: one row per installed engine), ``.tflite`` through LiteRT,
Keras through TensorFlow. Tables: :mod:`edgekit.measure.tables`. This module imports numpy
only; the runtimes are imported when a backend needs them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import InputError
from edgekit.measure.backend import Backend
from edgekit.measure.backends import load_backend
from edgekit.measure.tables import format_table
from edgekit.progress import FractionFn
from edgekit.speed.machine import machine_info, peak_rss_mb, reset_peak_rss, rss_mb
from edgekit.speed.timing import LatencyStats, latency_stats, make_inputs, measure, settle_for

if TYPE_CHECKING:
    from edgekit.measure.profile_report import ProfileReport

__all__ = ["BenchConfig", "ModelResult", "BenchResult", "bench_models"]


# ---------------------------------------------------------------------------------------------
# configuration and results
# ---------------------------------------------------------------------------------------------
@dataclass
class BenchConfig:
    """How to measure.

    Attributes:
        batches: batch sizes to measure (default ``(1,)``).
        warmup: untimed calls per model and batch size before timing (default 10).
        runs: timed calls per model and batch size (default 100 when ``duration`` is unset).
        duration: seconds of timing per batch size, shared by all models (default None); when
            set it replaces ``runs`` (at least ``min_runs`` calls per model are made).
        min_runs: lower bound on timed calls per model with ``duration`` (default 5).
        threads: intra-op threads of every backend (default None: each library's default).
        provider: onnxruntime provider of ONNX models (default ``"cpu"``).
        graph_optimization: onnxruntime graph optimization level (default None: all).
        seed: seed of the synthetic inputs (default 0).
        engine: engine of ONNX models: a registered engine (``"onnxruntime"``, default;
            ``"openvino"`` ...; see :mod:`edgekit.runtime.engine_registry`), ``"auto"`` (the
            engine a tuned model stores, else onnxruntime), or ``"all"``: each ONNX model once
            per installed engine, as separate rows.
        profile: after the timing, profile every ONNX row per op kind at the first batch size
            (:func:`edgekit.measure.profile_report.profile_backends`; default False).
    """

    batches: tuple[int, ...] = (1,)
    warmup: int = 10
    runs: int | None = None
    duration: float | None = None
    min_runs: int = 5
    threads: int | None = None
    provider: str = "cpu"
    graph_optimization: str | None = None
    seed: int = 0
    engine: str = "onnxruntime"
    profile: bool = False

    def __post_init__(self) -> None:
        self.engine = _engine_choice(self.engine)
        self.batches = tuple(int(b) for b in self.batches)
        if not self.batches or any(b < 1 for b in self.batches):
            raise InputError(f"batch sizes must be >= 1, got {list(self.batches)}")
        if self.warmup < 0:
            raise InputError("warmup must be >= 0")
        if self.runs is not None and self.runs < 1:
            raise InputError("runs must be >= 1")
        if self.duration is not None and not self.duration > 0:
            raise InputError("duration must be > 0 seconds")
        if self.threads is not None and self.threads < 0:
            raise InputError("threads must be >= 0")

    @property
    def n_runs(self) -> int:
        """Timed calls per model and batch size when no ``duration`` is set (default 100)."""
        return self.runs if self.runs is not None else 100


def _engine_choice(engine: str) -> str:
    """``engine`` as a canonical engine name, ``"auto"`` or ``"all"`` (read from the registry
    now, so engines registered after import count)."""
    from edgekit.runtime.engine_registry import engine_names, normalize_engine

    key = str(engine).strip().lower()
    if key in ("auto", "all"):
        return key
    try:
        return normalize_engine(key) or "auto"
    except InputError:
        raise InputError(f"unknown engine {engine!r}",
                         hint=f"use {', '.join(engine_names())}, auto or all") from None


@dataclass
class ModelResult:
    """Everything measured about one model."""

    name: str
    path: str
    kind: str
    size_bytes: int
    load_time_ms: float
    load_rss_mb: float
    peak_rss_mb: float
    latency: dict[int, LatencyStats] = field(default_factory=dict)
    error: str | None = None
    runtime: str | None = None  # Backend.runtime after the measurement

    def to_dict(self, samples: bool = False) -> dict[str, object]:
        return {
            "name": self.name,
            "path": self.path,
            "kind": self.kind,
            "runtime": self.runtime,
            "size_bytes": self.size_bytes,
            "load_time_ms": self.load_time_ms,
            "load_rss_mb": self.load_rss_mb,
            "peak_rss_mb": self.peak_rss_mb,
            "latency": {str(b): s.to_dict(samples) for b, s in self.latency.items()},
            "error": self.error,
        }


@dataclass
class BenchResult:
    """Results of one :func:`bench_models` call (models in the order given)."""

    config: BenchConfig
    models: list[ModelResult]
    machine: dict[str, Any]
    profile: ProfileReport | None = None  # with BenchConfig.profile

    def to_dict(self, samples: bool = False) -> dict[str, object]:
        cfg = asdict(self.config)
        cfg["batches"] = list(self.config.batches)
        return {
            "config": cfg,
            "machine": self.machine,
            "models": [m.to_dict(samples) for m in self.models],
            **({"profile": self.profile.to_dict()} if self.profile is not None else {}),
        }

    def table(self, baseline: int = 0) -> str:
        """The Markdown-ish table (see :func:`format_table`), then which API ran the models
        that have a choice (TFLite)."""
        notes = [f"{m.name}: {m.runtime}" for m in self.models if m.runtime]
        return "\n".join([format_table(self.models, baseline), *notes])


def _size_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size if path.exists() else 0


# ---------------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------------
def bench_models(
    models: Sequence[str | os.PathLike[str] | Backend],
    config: BenchConfig | None = None,
    names: Sequence[str] | None = None,
    on_progress: FractionFn | None = None,
) -> BenchResult:
    """Load and measure ``models`` interleaved (ratios are against the first one).

    Args:
        models: paths (see :func:`load_backend`) or loaded backends.
        config: measurement settings (default :class:`BenchConfig()`); with
            ``engine="all"`` every ONNX path becomes one row per installed engine
            (``name@engine``).
        names: display names (default: file names).
        on_progress: called with the overall done fraction in [0, 1].
    """
    config = config or BenchConfig()
    if not models:
        raise InputError("no models to benchmark")
    backends: list[Backend] = []
    results: list[ModelResult] = []
    for m, name, engine in _expand_engines(models, names, config.engine):
        b, res = _load_measured(m, name, engine, config)
        backends.append(b)
        results.append(res)
    ref_inputs = backends[0].inputs
    n_b = len(config.batches)
    for j, batch in enumerate(config.batches):
        arrays = make_inputs(ref_inputs, batch, config.seed)
        calls = [b.bind(arrays) for b in backends]

        def prog(f: float, j: int = j) -> None:
            if on_progress is not None:
                on_progress((j + f) / n_b)

        times = measure(calls, runs=None if config.duration else config.n_runs,
                        duration=config.duration, min_runs=config.min_runs,
                        warmup=config.warmup, on_progress=prog,
                        settle=settle_for(config.threads))
        for res, t in zip(results, times, strict=True):
            res.latency[batch] = latency_stats(t, batch)
        base = results[0].latency[batch].p50_ms
        for res in results:
            res.latency[batch].ratio = res.latency[batch].p50_ms / base if base > 0 else 1.0
    for res, b in zip(results, backends, strict=True):
        res.runtime = b.runtime
    result = BenchResult(config, results, machine_info())
    if config.profile:
        from edgekit.measure.profile_report import profile_backends

        b0 = config.batches[0]
        result.profile = profile_backends(backends, b0, config.seed,
                                          [r.latency[b0].p50_ms for r in results])
    return result


def _expand_engines(models: Sequence[str | os.PathLike[str] | Backend],
                    names: Sequence[str] | None, engine: str,
                    ) -> list[tuple[str | os.PathLike[str] | Backend, str | None, str]]:
    """(model, display name, engine) per row: ``engine="all"`` makes one row per installed
    engine of each ONNX path, named ``<name>@<engine>``."""
    from edgekit.runtime.engine_registry import installed_engines

    rows: list[tuple[str | os.PathLike[str] | Backend, str | None, str]] = []
    for i, m in enumerate(models):
        name = names[i] if names else None
        onnx = not isinstance(m, Backend) and Path(m).suffix.lower() in (".onnx", ".ort")
        if engine != "all" or not onnx:
            rows.append((m, name, "onnxruntime" if engine == "all" else engine))
            continue
        base = name or Path(m).name  # type: ignore[arg-type]
        rows += [(m, f"{base}@{e}", e) for e in installed_engines()]
    return rows


def _load_measured(m: str | os.PathLike[str] | Backend, name: str | None, engine: str,
                   config: BenchConfig) -> tuple[Backend, ModelResult]:
    """Load one model (time, RSS) and run it once at the largest batch (lazy runtimes)."""
    rss0 = rss_mb()
    reset_peak_rss()
    t0 = time.perf_counter()
    if isinstance(m, Backend):
        b = m
        if name:
            b.name = name
    else:
        b = load_backend(m, name, threads=config.threads, provider=config.provider,
                         graph_optimization=config.graph_optimization, engine=engine)
    load_ms = (time.perf_counter() - t0) * 1000.0
    load_ms = getattr(b, "load_time_ms", None) or load_ms
    # the first call is part of "load" for lazy runtimes (TF traces, TFLite allocates)
    b.infer(make_inputs(b.inputs, max(config.batches), config.seed))
    return b, ModelResult(
        name=b.name, path=str(b.path), kind=b.kind, size_bytes=_size_bytes(b.path),
        load_time_ms=load_ms, load_rss_mb=max(0.0, rss_mb() - rss0), peak_rss_mb=peak_rss_mb(),
    )
