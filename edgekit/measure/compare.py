"""``edgekit compare``: one Keras model as Keras, TFLite fp32/int8, ONNX fp32/int8/fp16 and,
when OpenVINO is installed, the ONNX int8 file run by OpenVINO.

Every variant is built from the same model and the same calibration samples, evaluated on the
same inputs (accuracy when labels are given, top-1 agreement with Keras always) and timed
interleaved by :mod:`edgekit.measure.bench`. The recommendation is the fastest deployable variant
(TFLite or ONNX) whose accuracy is within the budget of the Keras model's.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import InputError, require
from edgekit.inputs.data import Dataset
from edgekit.logs import quiet_fds
from edgekit.measure.bench import (
    Backend,
    BenchConfig,
    BenchResult,
    KerasBackend,
    bench_models,
    evaluate,
    installed_engines,
    load_backend,
    render_table,
)

__all__ = [
    "VARIANTS",
    "default_variants",
    "CompareConfig",
    "VariantRow",
    "CompareResult",
    "compare_model",
    "build_variants",
    "tflite_bytes",
    "onnx_variant",
    "agreement",
    "is_recurrent",
    "quiet_fds",
]

#: variant name -> (format, precision), in table order
VARIANTS: dict[str, tuple[str, str]] = {
    "keras": ("keras", "fp32"),
    "tflite-fp32": ("tflite", "fp32"),
    "tflite-int8": ("tflite", "int8"),
    "onnx-fp32": ("onnx", "fp32"),
    "onnx-int8": ("onnx", "int8"),
    "onnx-fp16": ("onnx", "fp16"),
    "openvino-int8": ("openvino", "int8"),  # the onnx-int8 file, run by OpenVINO
}


def default_variants() -> tuple[str, ...]:
    """All of :data:`VARIANTS`, less the OpenVINO rows when ``openvino`` is not installed."""
    have_ov = "openvino" in installed_engines()
    return tuple(v for v in VARIANTS if have_ov or VARIANTS[v][0] != "openvino")


@dataclass
class CompareConfig:
    """Options of :func:`compare_model`.

    Attributes:
        variants: which of :data:`VARIANTS` to build (default: all, see
            :func:`default_variants`; OpenVINO rows only when ``openvino`` is installed).
        accuracy_budget: largest accepted accuracy drop vs Keras in points (default 1.0);
            without labels, the largest accepted top-1 disagreement with Keras in percent.
        calibration_samples: samples for int8 calibration (default 200).
        eval_samples: cap on evaluation samples (default 2000; 0 = all).
        batch: batch size of the latency measurement (default 1).
        runs / duration / warmup / threads: latency settings (defaults 100 runs, 10 warmup,
            library thread defaults), see :class:`edgekit.measure.bench.BenchConfig`.
        workdir: where the variant files go (default: a temporary folder, deleted afterwards).
    """

    variants: tuple[str, ...] = field(default_factory=default_variants)
    accuracy_budget: float = 1.0
    calibration_samples: int = 200
    eval_samples: int = 2000
    batch: int = 1
    runs: int | None = None
    duration: float | None = None
    warmup: int = 10
    threads: int | None = None
    workdir: Path | None = None

    def __post_init__(self) -> None:
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise InputError(f"unknown variant(s) {unknown}", hint=f"use {', '.join(VARIANTS)}")
        if "keras" not in self.variants:
            self.variants = ("keras", *self.variants)
        if self.accuracy_budget < 0:
            raise InputError("the accuracy budget must be >= 0 points")


@dataclass
class VariantRow:
    """One variant: file, size, accuracy, agreement with Keras and latency (ms)."""

    name: str
    format: str
    precision: str
    path: str | None = None
    size_bytes: int | None = None
    accuracy: float | None = None
    agreement: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    throughput: float | None = None
    ratio: float | None = None
    within_budget: bool | None = None
    error: str | None = None
    runtime: str | None = None  # which API ran a TFLite row (CompiledModel or Interpreter, why)


@dataclass
class CompareResult:
    """The table, the recommendation and the raw latency results."""

    model: str
    rows: list[VariantRow]
    recommended: str | None
    smallest: str | None
    budget: float
    labelled: bool
    n_eval: int
    bench: BenchResult | None = None
    notes: list[str] = field(default_factory=list)

    def row(self, name: str) -> VariantRow:
        return next(r for r in self.rows if r.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "accuracy_budget_points": self.budget,
            "labelled": self.labelled,
            "eval_samples": self.n_eval,
            "recommended": self.recommended,
            "smallest_within_budget": self.smallest,
            "variants": [vars(r) for r in self.rows],
            "bench": self.bench.to_dict() if self.bench else None,
            "notes": self.notes,
        }

    def table(self) -> str:
        """The side-by-side table, then the recommendation."""
        keras = self.row("keras")
        ksize = keras.size_bytes or 0
        header = ["variant", "size", "vs Keras", "accuracy" if self.labelled else "-",
                  "top-1 = Keras", "p50", "p90", "speed-up", "samples/s", "budget"]
        rows = []
        for r in self.rows:
            if r.error:
                rows.append([r.name, "-", "-", "-", "-", "-", "-", "-", "-", "failed: " + r.error])
                continue
            rows.append([
                r.name + (" *" if r.name == self.recommended else ""),
                _size(r.size_bytes),
                f"{100 * (r.size_bytes or 0) / ksize:.0f} %" if ksize else "-",
                f"{r.accuracy:.2f} %" if r.accuracy is not None else "-",
                f"{r.agreement:.2f} %" if r.agreement is not None else "-",
                _ms(r.p50_ms), _ms(r.p90_ms),
                f"{1 / r.ratio:.2f}x" if r.ratio else "-",
                f"{r.throughput:,.0f}" if r.throughput else "-",
                "ok" if r.within_budget else ("-" if r.within_budget is None else "over"),
            ])
        what = "accuracy drop" if self.labelled else "disagreement with Keras"
        lines = [render_table(header, rows, [False] + [True] * (len(header) - 1)), ""]
        lines.append(f"{self.n_eval} evaluation samples; latency at batch "
                     f"{self.bench.config.batches[0] if self.bench else '?'}, interleaved "
                     "(speed-up = Keras p50 / variant p50); budget: "
                     f"{what} <= {self.budget:g} points.")
        if self.recommended:
            r = self.row(self.recommended)
            lines.append(f"recommended: {self.recommended} (fastest within budget: p50 "
                         f"{_ms(r.p50_ms)}, {_size(r.size_bytes)})"
                         + (f"; smallest within budget: {self.smallest}"
                            if self.smallest and self.smallest != self.recommended else ""))
        else:
            lines.append("recommended: none of the TFLite/ONNX variants is within the budget")
        lines += [f"{r.name}: {r.runtime}" for r in self.rows if r.runtime and not r.error]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Latency boxes (ms) and accuracy bars with the budget, the recommended variant
        marked (:func:`edgekit.measure.plots.plot_compare`)."""
        from edgekit.measure.plots import plot_compare

        return plot_compare(self, path)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MiB"


def _ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms * 1000:.0f} µs" if ms < 1 else f"{ms:.2f} ms"


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Top-1 agreement of two prediction arrays in percent (one column: threshold 0.5)."""
    def top1(p: np.ndarray) -> np.ndarray:
        p = np.asarray(p)
        return (p.reshape(-1) >= 0.5) if p.ndim == 1 or p.shape[-1] == 1 else p.argmax(-1)

    return 100.0 * float(np.mean(top1(a) == top1(b)))


# ---------------------------------------------------------------------------------------------
# building the variants
# ---------------------------------------------------------------------------------------------
def tflite_bytes(keras_model: Any, calibration: Sequence[np.ndarray] | None = None) -> bytes:
    """TFLite flatbuffer of ``keras_model``: fp32, or full-integer int8 weights/activations
    (float32 inputs/outputs kept) when ``calibration`` arrays (model input order) are given."""
    tf: Any = require("tensorflow", "export", "tensorflow-cpu")
    try:
        return _tflite_convert(tf, keras_model, calibration)
    except Exception:
        if is_recurrent(keras_model):
            # a dynamic batch keeps LSTMs as TensorList loops the converter rejects; with a
            # fixed batch of 1 they become fused TFLite LSTMs (resized at run time)
            keras: Any = require("keras", "export", "tensorflow-cpu")
            ins = [keras.Input(batch_shape=(1, *t.shape[1:]), dtype=t.dtype)
                   for t in keras_model.inputs]
            fixed = keras.Model(ins, keras_model(ins if len(ins) > 1 else ins[0]))
            return _tflite_convert(tf, fixed, calibration)
        raise


def is_recurrent(keras_model: Any) -> bool:
    """True when the model has an RNN layer (LSTM, GRU, SimpleRNN, Bidirectional)."""
    def walk(layer: Any) -> bool:
        if any(k in type(layer).__name__ for k in ("LSTM", "GRU", "RNN", "Bidirectional")):
            return True
        return any(walk(sub) for sub in getattr(layer, "layers", []) or [])

    return walk(keras_model)


def _tflite_convert(tf: Any, keras_model: Any, calibration: Sequence[np.ndarray] | None) -> bytes:
    conv = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    if calibration is not None:
        n = len(calibration[0])

        def representative() -> Any:
            for i in range(n):
                yield [np.asarray(a[i : i + 1]) for a in calibration]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with warnings.catch_warnings(), quiet_fds():
        warnings.simplefilter("ignore")
        return bytes(conv.convert())


def onnx_variant(fp32_path: str | os.PathLike[str], outdir: str | os.PathLike[str],
                 precision: str, calibration: dict[str, np.ndarray] | None = None,
                 stem: str | None = None) -> tuple[Path, str]:
    """Write a variant of an fp32 ONNX model with :func:`edgekit.quantize.core.quantize_model`.

    ``precision``: ``"int8"`` (static QDQ; needs ``calibration``, feeds by input name),
    ``"dynamic"``, ``"fp16"`` or ``"auto"`` (static int8 for convolutional models, dynamic for
    recurrent / Dense-only ones). Returns the file and the mode actually used.
    """
    from edgekit.quantize import QuantizationConfig, QuantMode, quantize_model

    if precision not in ("int8", "fp16", "dynamic", "auto"):
        raise InputError(f"unknown precision {precision!r}", hint="use int8, dynamic or fp16")
    if precision == "int8" and calibration is None:
        raise InputError("int8 quantization needs calibration data")
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    cal = Dataset(dict(calibration)) if calibration else None
    with quiet_fds():
        res = quantize_model(fp32_path, out, stem=stem,
                             config=QuantizationConfig(mode=QuantMode(precision)),
                             calibration=cal)
        if not res.written:  # auto found no variant worth shipping; compare still shows one
            res = quantize_model(fp32_path, out, stem=stem,
                                 config=QuantizationConfig(mode=QuantMode.DYNAMIC), calibration=cal)
    return res.path, str(res.mode)


class _Builder:
    """Builds variant files one step at a time; a failed step records its error only."""

    def __init__(self, src: Path, work: Path, variants: Sequence[str],
                 on_step: Callable[[str], None] | None) -> None:
        self.src, self.work, self.variants, self.on_step = src, work, variants, on_step
        self.stem = src.stem if not src.is_dir() else src.name
        self.paths: dict[str, Path] = {"keras": src}
        self.errors: dict[str, str] = {}
        self.modes: dict[str, str] = {}

    def step(self, name: str, fn: Callable[[], Path], wanted: bool | None = None) -> None:
        if not (name in self.variants if wanted is None else wanted):
            return
        if self.on_step is not None:
            self.on_step(name)
        try:
            self.paths[name] = fn()
        except Exception as exc:  # one failed variant must not stop the rest
            text = str(exc).strip()
            self.errors[name] = text.splitlines()[0][:200] if text else type(exc).__name__

    def tflite(self, calibration: dict[str, np.ndarray]) -> None:
        """tflite-fp32 and tflite-int8 (TensorFlow's converter)."""
        keras: Any = require("keras", "export", "tensorflow-cpu")
        km = keras.models.load_model(self.src, compile=False)
        cal = list(calibration.values())

        def tfl(int8: bool) -> Callable[[], Path]:
            def make() -> Path:
                p = self.work / f"{self.stem}.{'int8' if int8 else 'fp32'}.tflite"
                p.write_bytes(tflite_bytes(km, cal if int8 else None))
                return p
            return make

        self.step("tflite-fp32", tfl(False))
        if is_recurrent(km) and "tflite-int8" in self.variants:
            # TensorFlow 2.21's converter crashes the process (SIGSEGV) on full-int8 LSTMs
            self.errors["tflite-int8"] = (
                "not built: TensorFlow's full-integer converter crashes on recurrent layers "
                "(use onnx-int8, dynamic)")
        else:
            self.step("tflite-int8", tfl(True))

    def onnx(self, calibration: dict[str, np.ndarray]) -> None:
        """onnx-fp32 (validated export), onnx-int8 / onnx-fp16 from it; the OpenVINO rows
        reuse the ONNX files."""
        from edgekit.convert import ExportConfig, export_model

        def export() -> Path:
            return Path(export_model(self.src, self.work,
                                     ExportConfig(force=True, validation_samples=64),
                                     validation_data=Dataset(dict(calibration))).onnx_path)

        self.step("onnx-fp32", export, wanted=True)
        fp32 = self.paths.get("onnx-fp32")
        for prec in ("int8", "fp16"):
            users = [v for v in self.variants
                     if VARIANTS[v][0] in ("onnx", "openvino") and VARIANTS[v][1] == prec]
            if fp32 is None:
                self.errors.update({v: "no fp32 ONNX model to start from" for v in users})
                continue
            self.step(f"onnx-{prec}", functools.partial(self._quantized, fp32, prec, calibration),
                      wanted=bool(users))
        for v in self.variants:
            onnx_name = f"onnx-{VARIANTS[v][1]}"
            if VARIANTS[v][0] == "openvino" and v not in self.errors:
                if onnx_name in self.paths:
                    self.paths[v] = self.paths[onnx_name]
                else:
                    self.errors[v] = self.errors.get(onnx_name, f"no {onnx_name} file")
        if "onnx-fp32" not in self.variants:
            self.paths.pop("onnx-fp32", None)

    def _quantized(self, fp32: Path, prec: str, calibration: dict[str, np.ndarray]) -> Path:
        # "int8" means the best int8 for the model: static QDQ for convnets, dynamic for LSTM
        path, mode = onnx_variant(fp32, self.work, "auto" if prec == "int8" else prec,
                                  calibration, stem=self.stem)
        self.modes[f"onnx-{prec}"] = mode
        return path


def build_variants(
    model_path: str | os.PathLike[str],
    workdir: str | os.PathLike[str],
    calibration: dict[str, np.ndarray],
    variants: Sequence[str] = tuple(VARIANTS),
    on_step: Callable[[str], None] | None = None,
) -> tuple[dict[str, Path], dict[str, str], dict[str, str]]:
    """Build the file of each variant of a Keras model in ``workdir``.

    ``calibration`` holds model-ready float inputs by Keras input name. Returns
    ``(paths, errors, modes)``: variant -> file (OpenVINO rows name the ONNX file they run);
    variant -> error message of those that failed; ONNX variant -> quantization mode used
    (``int8`` is ``"dynamic"`` for LSTMs).
    """
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    builder = _Builder(Path(model_path), work, variants, on_step)
    if any(VARIANTS[v][0] == "tflite" for v in variants):
        builder.tflite(calibration)
    if any(VARIANTS[v][0] in ("onnx", "openvino") for v in variants):
        builder.onnx(calibration)
    return builder.paths, builder.errors, builder.modes


# ---------------------------------------------------------------------------------------------
# the comparison
# ---------------------------------------------------------------------------------------------
def _calibration(keras_b: Backend, path: str | os.PathLike[str] | None,
                 eval_ds: Dataset | None, n: int, notes: list[str]) -> dict[str, np.ndarray]:
    from edgekit.convert import synthetic_inputs

    source = keras_b.source  # type: ignore[attr-defined]
    if path is not None:
        ds = keras_b.load_data(path, "calibration data", "train", n)
    elif eval_ds is not None:
        ds = eval_ds.take(n)
        notes.append(f"no --calibration: calibrated on the first {len(ds)} evaluation samples")
    else:
        notes.append(f"no --calibration: calibrated on {n} synthetic inputs (int8 accuracy "
                     "may suffer; give real samples)")
        return synthetic_inputs(source, n)
    return dict(zip([s.name for s in source.inputs], keras_b.prepare(ds), strict=True))


def compare_model(
    model_path: str | os.PathLike[str],
    calibration: str | os.PathLike[str] | None = None,
    eval_data: str | os.PathLike[str] | None = None,
    config: CompareConfig | None = None,
    on_step: Callable[[str], None] | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> CompareResult:
    """Build, evaluate and time every variant of a Keras model (see module doc).

    Args:
        model_path: ``.keras`` / ``.h5`` file or SavedModel folder.
        calibration: ``.npz``/``.npy`` calibration samples (default: the evaluation samples,
            else synthetic inputs).
        eval_data: ``.npz``/``.npy`` evaluation samples, optionally with labels ``y`` (default:
            256 synthetic inputs, agreement with Keras only).
        config: options (default :class:`CompareConfig()`).
        on_step: called with a short description of each stage (for progress output).
        on_progress: latency measurement progress in [0, 1].
    """
    config = config or CompareConfig()
    src = _check_source(model_path)
    say = on_step or (lambda _s: None)
    notes: list[str] = []
    say("loading the Keras model")
    keras_b = load_backend(src, "keras", threads=config.threads)
    assert isinstance(keras_b, KerasBackend)
    cal, eval_ds = _compare_data(keras_b, calibration, eval_data, config, notes)
    backends: list[Backend] = []
    with _workdir(config, notes) as work:
        try:
            paths, errors, modes = build_variants(src, work, cal, config.variants,
                                                  on_step=lambda v: say(f"building {v}"))
            backends = [keras_b, *_load_variants(paths, config, keras_b.metadata, errors)]
            say("evaluating")
            preds = _evaluate_all(backends, eval_ds, errors)
            say("timing")
            bench = bench_models(backends, BenchConfig(
                batches=(config.batch,), runs=config.runs, duration=config.duration,
                warmup=config.warmup, threads=config.threads), on_progress=on_progress)
        finally:
            for b in backends[1:]:
                b.close()
    notes += [f"{v}: dynamic int8 (activations quantized at run time; static int8 would leave "
              "the LSTM in float)" for v, mode in modes.items() if mode == "dynamic"]
    return _result(src, config, paths, errors, preds, eval_ds, bench, notes)


def _check_source(model_path: str | os.PathLike[str]) -> Path:
    src = Path(model_path)
    if not src.exists():
        raise InputError(f"model {src} does not exist", hint="check the path")
    if src.suffix.lower() not in (".keras", ".h5") and not src.is_dir():
        raise InputError(f"compare needs a Keras model (.keras, .h5 or SavedModel), got {src}",
                         hint="use `edgekit bench` to compare existing .onnx/.tflite files")
    return src


def _compare_data(keras_b: KerasBackend, calibration: str | os.PathLike[str] | None,
                  eval_data: str | os.PathLike[str] | None, config: CompareConfig,
                  notes: list[str]) -> tuple[dict[str, np.ndarray], Dataset]:
    """Model-ready calibration arrays and the evaluation data (synthetic without any)."""
    source = keras_b.source
    eval_ds: Dataset | None = None
    if eval_data is not None:
        eval_ds = keras_b.load_data(eval_data, "evaluation data", "test", config.eval_samples)
    cal = _calibration(keras_b, calibration, eval_ds, config.calibration_samples, notes)
    if eval_ds is None:
        from edgekit.convert import synthetic_inputs

        eval_ds = Dataset(synthetic_inputs(source, 256, seed=1), None, "synthetic")
        notes.append("no --eval-data: 256 synthetic inputs, agreement with Keras only")
    return cal, eval_ds


@contextlib.contextmanager
def _workdir(config: CompareConfig, notes: list[str]) -> Iterator[Path]:
    """``config.workdir`` (kept, noted), else a temporary folder deleted afterwards."""
    if config.workdir is not None:
        yield Path(config.workdir)
        notes.append(f"variant files are in {config.workdir}")
        return
    with tempfile.TemporaryDirectory(prefix="edgekit-compare-") as tmp:
        yield Path(tmp)


def _load_variants(paths: dict[str, Path], config: CompareConfig, metadata: Any,
                   errors: dict[str, str]) -> list[Backend]:
    """A backend per built variant (OpenVINO rows on their engine); failures go to errors."""
    out: list[Backend] = []
    for v in config.variants:
        if v == "keras" or v not in paths:
            continue
        engine = "openvino" if VARIANTS[v][0] == "openvino" else "onnxruntime"
        try:
            b = load_backend(paths[v], v, threads=config.threads, provider="cpu", engine=engine)
            if b.metadata is None:  # TFLite files carry no edgekit metadata
                b.metadata = metadata
            out.append(b)
        except Exception as exc:
            errors[v] = str(exc).splitlines()[0][:200]
    return out


def _evaluate_all(backends: list[Backend], eval_ds: Dataset,
                  errors: dict[str, str]) -> dict[str, np.ndarray]:
    """Predictions per backend name; a backend that fails is removed from ``backends``."""
    preds: dict[str, np.ndarray] = {}
    for b in list(backends):
        try:
            preds[b.name] = evaluate(b, eval_ds)
        except Exception as exc:
            errors[b.name] = f"evaluation failed: {str(exc).splitlines()[0][:200]}"
            backends.remove(b)
            if b.name != "keras":
                b.close()
    return preds


def _result(src: Path, config: CompareConfig, paths: dict[str, Path], errors: dict[str, str],
            preds: dict[str, np.ndarray], eval_ds: Dataset, bench: BenchResult,
            notes: list[str]) -> CompareResult:
    from edgekit.validate import accuracy

    labelled = eval_ds.labels is not None
    lat = {m.name: m for m in bench.models}
    ref = preds.get("keras")
    rows: list[VariantRow] = []
    for v in config.variants:
        fmt, prec = VARIANTS[v]
        row = VariantRow(v, fmt, prec, error=errors.get(v))
        if v in paths:
            row.path = str(paths[v])
            row.size_bytes = lat[v].size_bytes if v in lat else None
            row.runtime = lat[v].runtime if v in lat else None
        if v in preds:
            if labelled:
                row.accuracy = accuracy(preds[v], eval_ds.labels)  # type: ignore[arg-type]
            if ref is not None:
                row.agreement = agreement(preds[v], ref)
        if v in lat and not row.error:
            s = lat[v].latency[config.batch]
            row.p50_ms, row.p90_ms, row.throughput, row.ratio = (
                s.p50_ms, s.p90_ms, s.throughput, s.ratio)
        rows.append(row)
    keras_row = rows[0]
    for row in rows:
        if row.error or row.p50_ms is None:
            continue
        if labelled and keras_row.accuracy is not None and row.accuracy is not None:
            row.within_budget = keras_row.accuracy - row.accuracy <= config.accuracy_budget + 1e-9
        elif row.agreement is not None:
            row.within_budget = 100.0 - row.agreement <= config.accuracy_budget + 1e-9
    ok = [r for r in rows if r.within_budget and r.format != "keras"]
    best = min(ok, key=lambda r: (r.p50_ms or 0.0, r.size_bytes or 0)) if ok else None
    small = min(ok, key=lambda r: (r.size_bytes or 0, r.p50_ms or 0.0)) if ok else None
    return CompareResult(
        model=src.name, rows=rows, recommended=best.name if best else None,
        smallest=small.name if small else None, budget=config.accuracy_budget,
        labelled=labelled, n_eval=len(eval_ds), bench=bench, notes=notes,
    )
