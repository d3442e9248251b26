"""Interleaved latency benchmarks: the measurement engine of ``bench``, ``compare`` and ``check``.

Every model is loaded once (load time and memory are recorded), warmed up, and then timed in
rounds, per batch size: one call of each model per round, so that machine noise (other
processes, frequency changes) hits all models alike and the *ratios* against the first model
hold even on a busy machine. The order within the rounds follows a balanced Latin square
(:func:`balanced_orders`): every model follows every other one equally often, because a call
pays for its predecessor's footprint in the caches (measured on the Fashion CNN at batch 1: an
onnxruntime call right after an OpenVINO call takes ~25 us longer than after another
onnxruntime call), and a plain rotation ``A B C, B C A ...`` keeps the same predecessor for
almost every call. Each call is timed with :func:`time.perf_counter_ns`.

Backends (chosen by file suffix, see :func:`load_backend`): ``.onnx``/``.ort`` through
:class:`edgekit.runtime.model.EdgeModel` (onnxruntime, or OpenVINO with ``engine="openvino"``);
``.tflite`` through LiteRT's ``CompiledModel`` API, its Interpreter as the fallback
(:mod:`edgekit.measure.litert`); ``.keras``,
``.h5`` and SavedModel folders through TensorFlow (the model's ``tf.function``, i.e. graph
mode, not eager). This module imports numpy only; TensorFlow, onnxruntime and matplotlib are
imported when a backend or the plot needs them.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import InputError, require
from edgekit.inputs.data import Dataset, TensorSpecInfo, batches
from edgekit.inputs.prepare import prepare_dataset, read_data
from edgekit.inputs.synthetic import draw_inputs
from edgekit.measure.machine import (  # noqa: F401 - re-exported under the old names
    cpu_model,
    instruction_set,
    machine_info,
    peak_rss_mb,
    reset_peak_rss,
    rss_mb,
)
from edgekit.measure.plots import plot_latencies  # noqa: F401 - re-exported (moved there)
from edgekit.metadata import ModelMetadata

__all__ = [
    "instruction_set",
    "balanced_orders",
    "BenchConfig",
    "Backend",
    "OnnxBackend",
    "OpenVinoBackend",
    "ENGINES",
    "installed_engines",
    "KerasBackend",
    "LatencyStats",
    "ModelResult",
    "BenchResult",
    "load_backend",
    "measure",
    "bench_models",
    "make_inputs",
    "latency_stats",
    "format_table",
    "render_table",
    "plot_latencies",
    "evaluate",
    "rss_mb",
    "peak_rss_mb",
    "reset_peak_rss",
    "cpu_model",
    "machine_info",
]

ProgressFn = Callable[[float], None]

#: engines an ONNX model can run on (:data:`edgekit.runtime.session.ENGINE_NAMES`, kept here so
#: that this module imports numpy only); ``BenchConfig.engine`` also takes "auto" and "all"
ENGINES: tuple[str, ...] = ("onnxruntime", "openvino")


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
        engine: engine of ONNX models, ``"onnxruntime"`` (default), ``"openvino"``,
            ``"auto"`` (the engine a tuned model stores, else onnxruntime), or ``"all"``: each
            ONNX model once per installed engine, as separate rows.
        profile: after the timing, profile every ONNX row per op kind at the first batch size
            (:func:`edgekit.measure.profile.profile_backends`; default False).
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
        if self.engine not in (*ENGINES, "auto", "all"):
            raise InputError(f"unknown engine {self.engine!r}",
                             hint=f"use {', '.join(ENGINES)}, auto or all")
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


@dataclass
class LatencyStats:
    """Latency of one model at one batch size, in milliseconds (throughput in samples/s)."""

    batch: int
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    throughput: float
    ratio: float = 1.0  # p50 / p50 of the first model, measured in the same rounds
    samples_ms: list[float] = field(default_factory=list, repr=False)

    def to_dict(self, samples: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not samples:
            d.pop("samples_ms")
        return d


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

    def to_dict(self, samples: bool = False) -> dict[str, Any]:
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
    profile: Any = None  # edgekit.measure.profile.ProfileReport with BenchConfig.profile

    def to_dict(self, samples: bool = False) -> dict[str, Any]:
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
# backends
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InputInfo(TensorSpecInfo):
    """A model input (:class:`~edgekit.inputs.data.TensorSpecInfo`) and, for ids, the exclusive
    upper bound of valid values (default 2)."""

    high: int = 2


class Backend:
    """One loaded model. Subclasses set ``kind``, ``inputs`` and implement ``_infer``.

    ``bind(batch)`` prepares a zero-argument callable that runs one inference on fixed inputs
    (so the timed loop measures only the model); ``infer(arrays)`` runs inputs given in model
    input order and returns the first output.
    """

    kind = "?"

    def __init__(self, path: str | os.PathLike[str], name: str | None = None) -> None:
        self.path = Path(path)
        self.name = name or self.path.name
        self.inputs: list[InputInfo] = []
        self.metadata: Any = None  # edgekit ModelMetadata when known
        self.load_time_ms: float | None = None  # set by load_backend

    def infer(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """First output for inputs in model order."""
        raise NotImplementedError

    def bind(self, arrays: Sequence[np.ndarray]) -> Callable[[], Any]:
        """A callable running one inference on ``arrays`` (default: :meth:`infer`)."""
        arrays = list(arrays)
        return lambda: self.infer(arrays)

    @property
    def runtime(self) -> str | None:
        """Which API runs the model, in words, where a backend has a choice (TFLite:
        ``CompiledModel`` or the Interpreter fallback and why); None otherwise."""
        return None

    def close(self) -> None:
        """Free the session / interpreter."""

    def prepare(self, data: Dataset) -> list[np.ndarray]:
        """Model-ready inputs (model order) from raw data, by the one input pipeline
        (:func:`edgekit.inputs.prepare.prepare_dataset`, the rule ``EdgeModel.predict``
        follows); arrays are matched by name, else by position."""
        meta = self.metadata if isinstance(self.metadata, ModelMetadata) else ModelMetadata()
        ds = read_data(data, self.inputs, meta, "data")
        feeds, _ = prepare_dataset(ds, self.inputs, meta)
        return [feeds[s.name] for s in self.inputs]

    def load_data(self, data: str | os.PathLike[str] | Dataset, what: str,
                  split: str = "test", limit: int = 0) -> Dataset:
        """Raw data for this model from a file, folder or Dataset
        (:func:`edgekit.inputs.prepare.read_data`: ``.npz``/``.npy``, IDX folders, text tables
        for models with a tokenizer); ``limit`` samples at most (0 = all)."""
        meta = self.metadata if isinstance(self.metadata, ModelMetadata) else ModelMetadata()
        return read_data(data, self.inputs, meta, what, split, limit)


class OnnxBackend(Backend):
    """An ONNX model through :class:`edgekit.runtime.model.EdgeModel` (checked ``run`` path) on
    ``engine`` (default ``"onnxruntime"``; ``"openvino"``; ``"auto"``: the stored engine),
    ``precision`` default None (the runtime's: f32 pinned); ``path`` may also be a loaded
    ``EdgeModel``."""

    kind = "onnx"

    def __init__(self, path: str | os.PathLike[str] | Any, name: str | None = None, *,
                 provider: str = "cpu", threads: int | None = None,
                 graph_optimization: str | None = None, engine: str = "onnxruntime",
                 precision: str | None = None) -> None:
        from edgekit.runtime.model import EdgeModel

        if isinstance(path, EdgeModel):  # wrap a loaded model (its own settings apply)
            super().__init__(path.path, name)
            self.model = path
        else:
            super().__init__(path, name)
            self.model = _open_edge_model(self.path, provider, threads, graph_optimization,
                                          engine, precision)
        if getattr(self.model, "package", None) is not None:  # the variant file that runs
            self.path = self.model.path
        self.engine = str(getattr(self.model, "engine_name", engine))
        if self.engine == "openvino":
            self.kind = "openvino"
        self.metadata = self.model.metadata
        self.inputs = [
            InputInfo(s.name, s.shape, (s.dtype or np.dtype("float32")).name,
                      _int_high(self.metadata, s.name))
            for s in self.model.inputs
        ]

    def infer(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        return self.model.run(dict(zip(self.model.input_names, arrays, strict=True)))[0]

    def bind(self, arrays: Sequence[np.ndarray]) -> Callable[[], Any]:
        feeds = dict(zip(self.model.input_names, arrays, strict=True))
        run = self.model.run
        return lambda: run(feeds)

    def close(self) -> None:
        self.model.close()


class OpenVinoBackend(OnnxBackend):
    """An ONNX model run by OpenVINO through ``EdgeModel(path, engine="openvino")`` (needs
    ``edgekit[openvino]``); ``precision`` default None: f32 pinned (``"bf16"`` on purpose)."""

    kind = "openvino"

    def __init__(self, path: str | os.PathLike[str] | Any, name: str | None = None, *,
                 threads: int | None = None, precision: str | None = None,
                 graph_optimization: str | None = None) -> None:
        super().__init__(path, name, threads=threads, engine="openvino", precision=precision,
                         graph_optimization=graph_optimization)


def installed_engines() -> list[str]:
    """The ONNX engines installed here, in :data:`ENGINES` order (onnxruntime always)."""
    from edgekit.runtime.engines import openvino_available

    return [e for e in ENGINES if e == "onnxruntime" or openvino_available()]


def _open_edge_model(path: Path, provider: str, threads: int | None,
                     graph_optimization: str | None, engine: str, precision: str | None) -> Any:
    """``EdgeModel`` on ``engine`` (``"auto"``: the engine stored by ``edgekit tune``, else
    onnxruntime)."""
    from edgekit.runtime.model import EdgeModel, SessionOptionsConfig

    session = SessionOptionsConfig(precision=precision)
    return EdgeModel(path, provider if engine != "openvino" else "cpu", engine=engine,
                     threads=threads, graph_optimization=graph_optimization,
                     session_options=session)


def _int_high(meta: Any, name: str) -> int:
    tok = getattr(meta, "tokenizer", None) or {}
    vocab = tok.get("vocabulary") if isinstance(tok, dict) else None
    return max(2, len(vocab)) if vocab else 2


def _set_tf_threads(threads: int | None) -> bool:
    """Apply ``threads`` to TensorFlow; False when TF was already initialised differently."""
    if threads is None:
        return True
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1 if threads == 1 else threads)
        return True
    except RuntimeError:
        return tf.config.threading.get_intra_op_parallelism_threads() == threads


class KerasBackend(Backend):
    """A Keras model run through its ``tf.function`` (graph mode, ``training=False``).

    ``threads`` sets TensorFlow's intra-op pool; TensorFlow fixes it at its first op, so a later
    different value is ignored with a warning (run such cases in separate processes).
    """

    kind = "keras"

    def __init__(self, path: str | os.PathLike[str] | Any, name: str | None = None, *,
                 threads: int | None = None) -> None:
        from edgekit.convert import load_source

        if isinstance(path, str | os.PathLike):
            super().__init__(path, name)
            src_arg: Any = self.path
        else:  # an in-memory Keras model
            super().__init__(getattr(path, "name", "model"), name)
            src_arg = path
        if not _set_tf_threads(threads):
            warnings.warn(f"TensorFlow already runs with other thread settings; "
                          f"threads={threads} is ignored for {self.name}", stacklevel=2)
        self.source = load_source(src_arg)
        self.metadata = self.source.metadata
        self.inputs = [
            InputInfo(s.name, s.shape, s.dtype, self.source.int_ranges.get(s.name, 2))
            for s in self.source.inputs
        ]

    def infer(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        return np.asarray(self.source.function(*arrays)[0])

    def bind(self, arrays: Sequence[np.ndarray]) -> Callable[[], Any]:
        import tensorflow as tf

        tensors = [tf.constant(a) for a in arrays]
        fn = self.source.function
        return lambda: fn(*tensors)[0].numpy()


def load_backend(path: str | os.PathLike[str], name: str | None = None, *,
                 threads: int | None = None, provider: str = "cpu",
                 graph_optimization: str | None = None, engine: str = "auto",
                 precision: str | None = None) -> Backend:
    """A backend for ``path`` chosen by suffix: .onnx/.ort or an ONNX Runtime model package
    folder (on ``engine``, default ``"auto"``: the engine stored by ``edgekit tune``, else
    onnxruntime; ``precision`` see :class:`OnnxBackend`), .tflite, .keras/.h5/SavedModel."""
    from edgekit.measure.litert import TFLiteBackend, import_litert
    from edgekit.runtime.modelpackage import is_model_package

    p = Path(path)
    if not p.exists():
        raise InputError(f"model {p} does not exist", hint="check the path")
    suffix = p.suffix.lower()
    package = is_model_package(p)
    keras = not package and (suffix in (".keras", ".h5") or p.is_dir())
    if keras:  # import TensorFlow (or LiteRT) outside of the load time
        require("tensorflow", "export", "tensorflow-cpu")
    elif suffix == ".tflite":
        import_litert()
    t0 = time.perf_counter()
    b: Backend
    if suffix in (".onnx", ".ort") or package:
        b = OnnxBackend(p, name, provider=provider, threads=threads,
                        graph_optimization=graph_optimization, engine=engine,
                        precision=precision)
    elif suffix == ".tflite":
        b = TFLiteBackend(p, name, threads=threads)
    elif keras:
        b = KerasBackend(p, name, threads=threads)
    else:
        raise InputError(f"{p}: unknown model format {suffix!r}",
                         hint="use .onnx, .ort, .tflite, .keras, .h5 or a SavedModel folder")
    b.load_time_ms = (time.perf_counter() - t0) * 1000.0
    return b


# ---------------------------------------------------------------------------------------------
# inputs and statistics
# ---------------------------------------------------------------------------------------------
def make_inputs(inputs: Sequence[InputInfo], batch: int, seed: int = 0) -> list[np.ndarray]:
    """Seeded synthetic inputs (:func:`edgekit.inputs.synthetic.draw_inputs`): smooth image
    fields and uniform [0, 1) floats, ids uniform in ``[0, high)``; dynamic non-batch dimensions
    get length 8."""
    highs = {s.name: max(2, getattr(s, "high", 2)) for s in inputs}
    feeds = draw_inputs(inputs, batch, np.random.default_rng(seed), 8, {}, highs, image=True)
    return [feeds[s.name] for s in inputs]


def latency_stats(samples_ns: Sequence[int], batch: int) -> LatencyStats:
    """p50/p90/p99/mean/std/min (ms) and throughput (samples/s, from the mean) of one series."""
    a = np.asarray(samples_ns, dtype=np.float64) / 1e6
    if a.size == 0:
        raise ValueError("no latency samples")
    mean = float(a.mean())
    return LatencyStats(
        batch=batch,
        runs=int(a.size),
        p50_ms=float(np.median(a)),
        p90_ms=float(np.percentile(a, 90)),
        p99_ms=float(np.percentile(a, 99)),
        mean_ms=mean,
        std_ms=float(a.std()),
        min_ms=float(a.min()),
        throughput=batch * 1000.0 / mean if mean > 0 else float("inf"),
        samples_ms=[float(v) for v in a],
    )


def balanced_orders(n: int) -> list[list[int]]:
    """Orders of ``range(n)`` for interleaved rounds in which every item directly follows every
    other item equally often: the rows of a Williams design (a balanced Latin square; ``n`` rows
    for even ``n``, ``2 n`` for odd ``n``, where the rows are also taken reversed)."""
    first, lo, hi = [0], 1, n - 1
    for k in range(1, n):
        if k % 2:
            first.append(lo)
            lo += 1
        else:
            first.append(hi)
            hi -= 1
    rows = [[(x + r) % n for x in first] for r in range(n)] if n else [[]]
    return rows + [row[::-1] for row in rows] if n % 2 and n > 1 else rows


def measure(
    calls: Sequence[Callable[[], Any]],
    *,
    runs: int | None = 100,
    duration: float | None = None,
    min_runs: int = 5,
    warmup: int = 10,
    on_progress: ProgressFn | None = None,
) -> list[list[int]]:
    """Time ``calls`` interleaved; returns per-call lists of nanoseconds.

    Each round calls every function once, in the orders of :func:`balanced_orders` (every call
    follows every other one equally often over a cycle of rounds). It stops after
    ``runs`` rounds (default 100), or, with ``duration`` seconds, when the time is up and every
    call has ``min_runs`` samples (default 5). ``warmup`` (default 10) untimed rounds come first.
    ``on_progress`` gets the done fraction in [0, 1].
    """
    n = len(calls)
    for _ in range(warmup):
        for fn in calls:
            fn()
    orders = balanced_orders(n)
    times: list[list[int]] = [[] for _ in range(n)]
    clock = time.perf_counter_ns
    start = time.perf_counter()
    total = (runs or 100) if duration is None else None
    r = 0
    last_report = start
    while True:
        if total is not None and r >= total:
            break
        elapsed = time.perf_counter() - start
        if duration is not None and elapsed >= duration and r >= min_runs:
            break
        for i in orders[r % len(orders)]:
            fn = calls[i]
            t0 = clock()
            fn()
            times[i].append(clock() - t0)
        r += 1
        if on_progress is not None:
            now = time.perf_counter()
            if now - last_report > 0.1:
                last_report = now
                frac = r / total if total else min(1.0, (now - start) / duration)  # type: ignore[operator]
                on_progress(frac)
    if on_progress is not None:
        on_progress(1.0)
    return times


# ---------------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------------
def bench_models(
    models: Sequence[str | os.PathLike[str] | Backend],
    config: BenchConfig | None = None,
    names: Sequence[str] | None = None,
    on_progress: ProgressFn | None = None,
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
                        warmup=config.warmup, on_progress=prog)
        for res, t in zip(results, times, strict=True):
            res.latency[batch] = latency_stats(t, batch)
        base = results[0].latency[batch].p50_ms
        for res in results:
            res.latency[batch].ratio = res.latency[batch].p50_ms / base if base > 0 else 1.0
    for res, b in zip(results, backends, strict=True):
        res.runtime = b.runtime
    result = BenchResult(config, results, machine_info())
    if config.profile:
        from edgekit.measure.profile import profile_backends

        b0 = config.batches[0]
        result.profile = profile_backends(backends, b0, config.seed,
                                          [r.latency[b0].p50_ms for r in results])
    return result


def _expand_engines(models: Sequence[str | os.PathLike[str] | Backend],
                    names: Sequence[str] | None, engine: str,
                    ) -> list[tuple[str | os.PathLike[str] | Backend, str | None, str]]:
    """(model, display name, engine) per row: ``engine="all"`` makes one row per installed
    engine of each ONNX path, named ``<name>@<engine>``."""
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


# ---------------------------------------------------------------------------------------------
# accuracy
# ---------------------------------------------------------------------------------------------
def evaluate(backend: Backend, data: Dataset, batch_size: int = 256) -> np.ndarray:
    """First-output predictions of ``backend`` on ``data`` (raw data is preprocessed by the
    model's metadata), in batches of ``batch_size`` (default 256)."""
    arrays = backend.prepare(data)
    n = len(arrays[0])
    outs = [backend.infer([a[sl] for a in arrays]) for sl in batches(n, batch_size)]
    return np.concatenate([np.asarray(o, dtype=np.float32) for o in outs])


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------
def _fmt_ms(ms: float) -> str:
    if ms < 1.0:
        return f"{ms * 1000:.0f} µs"
    if ms < 100:
        return f"{ms:.2f} ms"
    return f"{ms:.0f} ms"


def _fmt_size(n: int) -> str:
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024 / 1024:.2f} MiB"


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                 right: Sequence[bool] | None = None) -> str:
    """A Markdown table, columns padded to equal width (``right``: right-align columns)."""
    right = list(right) if right is not None else [i > 0 for i in range(len(header))]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(
            str(c).rjust(w) if a else str(c).ljust(w)
            for c, w, a in zip(cells, widths, right, strict=True)) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if a else (":" + "-" * (w + 1))
                         for w, a in zip(widths, right, strict=True)) + "|"
    return "\n".join([line(header), sep, *[line(r) for r in rows]])


def format_table(models: Sequence[ModelResult], baseline: int = 0) -> str:
    """One row per model and batch size: p50/p90/p99/mean±std, ratio of p50 to the first
    model, throughput, load time, memory and file size."""
    header = ["model", "batch", "p50", "p90", "p99", "mean ± std", "vs " + models[baseline].name,
              "samples/s", "load", "RSS +load", "peak RSS", "size"]
    rows = []
    for m in models:
        for b, s in m.latency.items():
            rows.append([
                m.name, str(b), _fmt_ms(s.p50_ms), _fmt_ms(s.p90_ms), _fmt_ms(s.p99_ms),
                f"{_fmt_ms(s.mean_ms)} ± {_fmt_ms(s.std_ms)}", f"{s.ratio:.2f}x",
                f"{s.throughput:,.0f}", f"{m.load_time_ms:.0f} ms", f"{m.load_rss_mb:.0f} MiB",
                f"{m.peak_rss_mb:.0f} MiB", _fmt_size(m.size_bytes),
            ])
    return render_table(header, rows, [False] + [True] * (len(header) - 1))
