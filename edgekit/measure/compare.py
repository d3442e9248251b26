"""``edgekit compare``: one Keras model as Keras, TFLite fp32/int8, ONNX fp32/int8/fp16 and
the ONNX int8 file on every other installed engine (OpenVINO ...).

Every variant is built from the same model and the same calibration samples
(:mod:`edgekit.measure.compare_variants`), evaluated on the same inputs (accuracy when labels
are given, top-1 agreement with Keras always) and timed interleaved by
:mod:`edgekit.measure.bench`. The recommendation is the fastest deployable variant (TFLite or
ONNX) whose accuracy is within the budget of the Keras model's
(:mod:`edgekit.measure.compare_report`). Progress follows :mod:`edgekit.progress`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.errors import InputError
from edgekit.inputs.data import Dataset
from edgekit.measure.backend import Backend, evaluate
from edgekit.measure.backends import KerasBackend, load_backend
from edgekit.measure.bench import BenchConfig, bench_models
from edgekit.measure.compare_report import CompareResult, compare_result
from edgekit.measure.compare_variants import (
    BuiltVariants,
    build_variants,
    default_variants,
    engine_of,
    variant_table,
)
from edgekit.metadata import ModelMetadata
from edgekit.progress import FractionFn, StatusFn, status

__all__ = ["CompareConfig", "compare_model"]


@dataclass
class CompareConfig:
    """Options of :func:`compare_model`.

    Attributes:
        variants: which rows of :func:`~edgekit.measure.compare_variants.variant_table` to
            build (default: all, see :func:`~edgekit.measure.compare_variants.default_variants`;
            an engine's row only when the engine is installed).
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
        table = variant_table()
        unknown = [v for v in self.variants if v not in table]
        if unknown:
            raise InputError(f"unknown variant(s) {unknown}", hint=f"use {', '.join(table)}")
        if "keras" not in self.variants:
            self.variants = ("keras", *self.variants)
        if self.accuracy_budget < 0:
            raise InputError("the accuracy budget must be >= 0 points")


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
    progress: StatusFn | None = None,
    on_progress: FractionFn | None = None,
) -> CompareResult:
    """Build, evaluate and time every variant of a Keras model (see module doc).

    Args:
        model_path: ``.keras`` / ``.h5`` file or SavedModel folder.
        calibration: ``.npz``/``.npy`` calibration samples (default: the evaluation samples,
            else synthetic inputs).
        eval_data: ``.npz``/``.npy`` evaluation samples, optionally with labels ``y`` (default:
            256 synthetic inputs, agreement with Keras only).
        config: options (default :class:`CompareConfig()`).
        progress: called with a status line per step: loading the Keras model, building each
            variant, evaluating, timing (:mod:`edgekit.progress`).
        on_progress: the done fraction of the latency measurement, in [0, 1].
    """
    config = config or CompareConfig()
    src = _check_source(model_path)
    notes: list[str] = []
    status(progress, "loading the Keras model")
    keras_b = load_backend(src, "keras", threads=config.threads)
    assert isinstance(keras_b, KerasBackend)
    cal, eval_ds = _compare_data(keras_b, calibration, eval_data, config, notes)
    backends: list[Backend] = []
    with _workdir(config, notes) as work:
        try:
            built = build_variants(src, work, cal, config.variants, progress)
            backends = [keras_b, *_load_variants(built, config, keras_b.metadata)]
            status(progress, "evaluating")
            preds = _evaluate_all(backends, eval_ds, built.errors)
            status(progress, "timing")
            bench = bench_models(backends, BenchConfig(
                batches=(config.batch,), runs=config.runs, duration=config.duration,
                warmup=config.warmup, threads=config.threads), on_progress=on_progress)
        finally:
            for b in backends[1:]:
                b.close()
    notes += [f"{v}: dynamic int8 (activations quantized at run time; static int8 would leave "
              "the LSTM in float)" for v, mode in built.modes.items() if mode == "dynamic"]
    return compare_result(src.name, built, preds, eval_ds, bench, config.accuracy_budget, notes)


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


def _load_variants(built: BuiltVariants, config: CompareConfig,
                   metadata: ModelMetadata | None) -> list[Backend]:
    """A backend per built variant (engine rows on their engine); failures go to errors."""
    out: list[Backend] = []
    paths, errors, table = built.paths, built.errors, variant_table()
    for v in built.variants:
        if v == "keras" or v not in paths:
            continue
        engine = engine_of(table[v][0])
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
