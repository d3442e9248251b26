"""The variants ``edgekit compare`` builds from one Keras model: TFLite fp32/int8 (TensorFlow's
converter), ONNX fp32 (the validated export), int8 and fp16 (:mod:`edgekit.quantize`), and the
ONNX int8 file on every other registered engine (``openvino-int8`` ...).

:func:`variant_table` reads the engine registry (:mod:`edgekit.runtime.engine_registry`) when
called, so an engine registered later gets its row; :func:`default_variants` keeps the engines
installed here. LiteRT is not an engine: the TFLite rows always run through it.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import InputError, require
from edgekit.inputs.data import Dataset
from edgekit.logs import quiet_fds
from edgekit.progress import StatusFn, status

__all__ = ["BASE_VARIANTS", "variant_table", "default_variants", "runs_onnx", "engine_of",
           "BuiltVariants", "build_variants", "tflite_bytes", "onnx_variant", "is_recurrent"]

#: the Keras, TFLite and ONNX rows: variant name -> (format, precision), in table order
BASE_VARIANTS: dict[str, tuple[str, str]] = {
    "keras": ("keras", "fp32"),
    "tflite-fp32": ("tflite", "fp32"),
    "tflite-int8": ("tflite", "int8"),
    "onnx-fp32": ("onnx", "fp32"),
    "onnx-int8": ("onnx", "int8"),
    "onnx-fp16": ("onnx", "fp16"),
}


def _other_engines() -> list[str]:
    from edgekit.runtime.engine_registry import engine_names

    return [e for e in engine_names() if e != "onnxruntime"]


def variant_table() -> dict[str, tuple[str, str]]:
    """Every variant compare knows: :data:`BASE_VARIANTS`, then ``<engine>-int8`` (format: the
    engine's name; the onnx-int8 file run by that engine) for every registered engine other
    than onnxruntime (``openvino-int8`` ...)."""
    return {**BASE_VARIANTS, **{f"{e}-int8": (e, "int8") for e in _other_engines()}}


def default_variants() -> tuple[str, ...]:
    """All of :func:`variant_table`, less the engine rows of engines not installed here."""
    from edgekit.runtime.engine_registry import installed_engines

    have = set(installed_engines())
    return tuple(v for v, (fmt, _) in variant_table().items()
                 if v in BASE_VARIANTS or fmt in have)


def runs_onnx(fmt: str) -> bool:
    """True for the formats whose rows run an ONNX file (``onnx`` and the engines' rows)."""
    return fmt == "onnx" or fmt in _other_engines()


def engine_of(fmt: str) -> str:
    """The engine a row of format ``fmt`` runs on (``onnx``: onnxruntime)."""
    return "onnxruntime" if fmt == "onnx" else fmt


@dataclass
class BuiltVariants:
    """What :func:`build_variants` made: the variants asked for (table order), variant -> file
    (engine rows name the ONNX file they run), variant -> error of those that failed, and ONNX
    variant -> quantization mode used (``int8`` is ``"dynamic"`` for LSTMs)."""

    variants: tuple[str, ...]
    paths: dict[str, Path] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    modes: dict[str, str] = field(default_factory=dict)


def tflite_bytes(keras_model: object, calibration: Sequence[np.ndarray] | None = None) -> bytes:
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
            km: Any = keras_model
            ins = [keras.Input(batch_shape=(1, *t.shape[1:]), dtype=t.dtype) for t in km.inputs]
            fixed = keras.Model(ins, km(ins if len(ins) > 1 else ins[0]))
            return _tflite_convert(tf, fixed, calibration)
        raise


def is_recurrent(keras_model: object) -> bool:
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
    from edgekit.quantize import QuantizationConfig, QuantMode, SpeedCheckConfig, quantize_model

    if precision not in ("int8", "fp16", "dynamic", "auto"):
        raise InputError(f"unknown precision {precision!r}", hint="use int8, dynamic or fp16")
    if precision == "int8" and calibration is None:
        raise InputError("int8 quantization needs calibration data")
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    cal = Dataset(dict(calibration)) if calibration else None
    unchecked = SpeedCheckConfig(enabled=False)  # compare times every variant itself
    with quiet_fds():
        res = quantize_model(fp32_path, out, stem=stem, config=QuantizationConfig(
            mode=QuantMode(precision), speed=unchecked), calibration=cal)
        if not res.written:  # auto found no variant worth shipping; compare still shows one
            res = quantize_model(fp32_path, out, stem=stem, config=QuantizationConfig(
                mode=QuantMode.DYNAMIC, speed=unchecked), calibration=cal)
    return res.path, str(res.mode)


class _Builder:
    """Builds variant files one step at a time; a failed step records its error only."""

    def __init__(self, src: Path, work: Path, variants: Sequence[str],
                 progress: StatusFn | None) -> None:
        self.src, self.work, self.variants, self.progress = src, work, variants, progress
        self.table = variant_table()
        self.stem = src.stem if not src.is_dir() else src.name
        self.paths: dict[str, Path] = {"keras": src}
        self.errors: dict[str, str] = {}
        self.modes: dict[str, str] = {}

    def step(self, name: str, fn: Callable[[], Path], wanted: bool | None = None) -> None:
        if not (name in self.variants if wanted is None else wanted):
            return
        status(self.progress, f"building {name}")
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
        """onnx-fp32 (validated export), onnx-int8 / onnx-fp16 from it; the other engines' rows
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
                     if runs_onnx(self.table[v][0]) and self.table[v][1] == prec]
            if fp32 is None:
                self.errors.update({v: "no fp32 ONNX model to start from" for v in users})
                continue
            self.step(f"onnx-{prec}", functools.partial(self._quantized, fp32, prec, calibration),
                      wanted=bool(users))
        for v in self.variants:
            fmt, prec = self.table[v]
            onnx_name = f"onnx-{prec}"
            if fmt != "onnx" and runs_onnx(fmt) and v not in self.errors:
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
    variants: Sequence[str] | None = None,
    progress: StatusFn | None = None,
) -> BuiltVariants:
    """Build the file of each variant of a Keras model in ``workdir``.

    ``calibration`` holds model-ready float inputs by Keras input name; ``variants`` default
    to every row of :func:`variant_table`; ``progress`` gets ``"building <variant>"`` per
    variant (:mod:`edgekit.progress`). A variant that fails is recorded in ``errors``.
    """
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    table = variant_table()
    wanted = tuple(variants) if variants is not None else tuple(table)
    builder = _Builder(Path(model_path), work, wanted, progress)
    if any(table[v][0] == "tflite" for v in wanted):
        builder.tflite(calibration)
    if any(runs_onnx(table[v][0]) for v in wanted):
        builder.onnx(calibration)
    return BuiltVariants(wanted, builder.paths, builder.errors, builder.modes)
