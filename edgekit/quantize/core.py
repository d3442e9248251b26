"""Quantization of an fp32 ONNX model: static int8 (QDQ), dynamic int8, fp16, with an accuracy gate.

- ``int8``: static post-training quantization in QDQ format (``quant_pre_process`` first, then
  ``quantize_static`` with a calibration reader over the user's data).
- ``dynamic``: dynamic int8 (weights int8, activations quantized at run time): the right choice
  for LSTM/GRU and Dense-heavy models (static QDQ leaves LSTM in float).
- ``fp16``: float16 weights and compute, float32 inputs/outputs kept
  (``onnxconverter_common.float16.convert_float_to_float16(keep_io_types=True)``).
- ``auto``: ``int8`` for convolutional models, ``dynamic`` for recurrent and Dense-only ones.

- ``auto``: dynamic for recurrent models, static int8 for convolutional ones, dynamic for
  Dense-only models with enough weights to matter, and no variant for small ones (the reason
  is reported).

The artifact is standard ONNX: QDQ int8 and fp16 files use ai.onnx ops only (onnxruntime, every
execution provider, OpenVINO and other QDQ consumers load them); onnxruntime applies its
host-specific optimizations at load on the device, never into the file. Float regions of
mixed-precision files stay float under onnxruntime's default optimizations (see
:mod:`edgekit.quantize.qdq`). Each variant is compared with fp32 on held-out samples, labelled or
not (:mod:`edgekit.agreement`). With labelled evaluation data and ``max_accuracy_drop`` the nodes
that lose the most (``onnxruntime.quantization.qdq_loss_debug`` on calibration data) are kept in
float, one group at a time, until the gate holds, or :class:`AccuracyGateError` is raised and
nothing is written.

:func:`quantize_model` is the reusable entry point (``edgekit quantize``, the export hook,
``edgekit tune``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.agreement import Agreement, compare_predictions, gate
from edgekit.errors import AccuracyGateError, ConversionError, DataError, InputError, require
from edgekit.inputs.data import Dataset, TensorSpecInfo, load_dataset
from edgekit.io.artifacts import to_json
from edgekit.metadata import PREFIX, ModelMetadata, set_props
from edgekit.quantize.ort_format import OptimizeLevel, convert_to_ort, mobile_line, optimize_model
from edgekit.quantize.qdq import commute_relu_maxpool, nonstandard_ops, output_activation_nodes
from edgekit.validate import accuracy, run_onnx

__all__ = [
    "QuantMode",
    "QuantType",
    "CalibrationMethod",
    "OutputFormat",
    "PRESETS",
    "QuantizationConfig",
    "VariantResult",
    "variant_lines",
    "ArrayCalibrationReader",
    "onnx_input_specs",
    "load_model_data",
    "resolve_mode",
    "calibration_split",
    "activation_bytes",
    "synthetic_feeds",
    "variant_names",
    "quantize_model",
    "quantize_file",
    "export_hook",
    "METADATA_KEY",
]

METADATA_KEY = PREFIX + "quantization"
RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN"})
CONV_OPS = frozenset({"Conv", "ConvTranspose"})
DENSE_OPS = frozenset({"MatMul", "Gemm"})


class QuantMode(StrEnum):
    """Which variant to build."""

    NONE = "none"
    INT8 = "int8"
    DYNAMIC = "dynamic"
    FP16 = "fp16"
    AUTO = "auto"


class QuantType(StrEnum):
    """8-bit integer types of onnxruntime's quantizer."""

    QINT8 = "QInt8"
    QUINT8 = "QUInt8"

    def ort(self) -> Any:
        from onnxruntime.quantization import QuantType as T

        return T.QInt8 if self is QuantType.QINT8 else T.QUInt8


class CalibrationMethod(StrEnum):
    """How activation ranges are estimated from calibration data."""

    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"

    def ort(self) -> Any:
        from onnxruntime.quantization import CalibrationMethod as C

        return {"minmax": C.MinMax, "entropy": C.Entropy, "percentile": C.Percentile}[self.value]


class OutputFormat(StrEnum):
    """``onnx`` only, or ``ort``: also the ORT-format model for mobile builds."""

    ONNX = "onnx"
    ORT = "ort"


#: Named presets: field overrides of :class:`QuantizationConfig` (all QDQ, per-channel).
PRESETS: dict[str, dict[str, Any]] = {
    # x86 with VNNI (AVX-512 or AVX-VNNI): u8 activations x s8 weights, full range.
    "avx512_vnni": {"per_channel": True, "activation_type": "QUInt8", "weight_type": "QInt8",
                    "activation_symmetric": False, "weight_symmetric": True,
                    "reduce_range": False},
    # x86 without VNNI: 7-bit weights avoid the saturation of vpmaddubsw.
    "avx2": {"per_channel": True, "activation_type": "QUInt8", "weight_type": "QInt8",
             "activation_symmetric": False, "weight_symmetric": True, "reduce_range": True},
    # ARM64 (NEON dot product; also what NNAPI/XNNPACK expect): symmetric s8 weights.
    "arm64": {"per_channel": True, "activation_type": "QUInt8", "weight_type": "QInt8",
              "activation_symmetric": False, "weight_symmetric": True, "reduce_range": False},
}


def _enum(cls: type[Enum], value: Any, what: str) -> Any:
    if isinstance(value, cls):
        return value
    for member in cls:  # accept values case-insensitively
        if str(value).lower() == str(member.value).lower():
            return member
    raise InputError(
        f"unknown {what} {value!r}", hint=f"use one of {', '.join(str(m.value) for m in cls)}"
    )


@dataclass
class QuantizationConfig:
    """Every option of :func:`quantize_model` (validated; saved as JSON with the model).

    Attributes:
        mode: ``int8`` (default), ``dynamic``, ``fp16``, ``auto`` or ``none``.
        preset: the named preset the options came from (see :data:`PRESETS`), or None.
        per_channel: per-channel weight scales (default True).
        activation_type / weight_type: ``QUInt8`` / ``QInt8`` (defaults).
        activation_symmetric: symmetric activation ranges (default False).
        weight_symmetric: symmetric weight ranges (default True).
        reduce_range: 7-bit weights (default True: portable. onnxruntime's u8s8 int8 kernels
            on AVX2-only CPUs saturate 16-bit sums with full-range weights; measured on the
            shipped CNN, 10k test images: -0.51 pt and 97.7 % top-1 agreement with full range,
            -0.02 pt and 99.3 % with 7-bit weights, in onnxruntime and OpenVINO alike. The
            ``avx512_vnni`` and ``arm64`` presets use the full range).
        calibration_method: ``percentile`` (default: clips the rare outliers minmax keeps;
            measured: MobileNetV2 on Fashion-MNIST -0.01 pt vs minmax 0.14 pt and TFLite
            int8 0.13 pt; higher fp32 agreement on MobileNetV2/ResNet50/EfficientNetB0 at
            224), ``minmax`` or ``entropy``.
        calibration_samples: samples used for calibration (default 256; all when fewer).
        calibration_batch_size: batch size of the calibration reader (default 16).
        op_types_to_quantize: op types to quantize (default: all that onnxruntime can).
        nodes_to_exclude: node names kept in float (default none).
        extra_options: passed through to onnxruntime's ``extra_options`` (default none).
        output_format: ``onnx`` (default) or ``ort`` (also the ORT-format model for mobile
            builds, converted the way onnxruntime recommends for NNAPI/CoreML).
        mobile_batch: fixed batch size of the ORT-format model (default 1: NNAPI and CoreML
            need static shapes); 0 keeps the batch dimension dynamic.
        max_accuracy_drop: accuracy budget in percentage points (default None: no gate).
        eval_samples: cap on evaluation samples (default 0: all).
        gate_group_size: node groups kept in float per gate step (default 1).
        gate_max_steps: gate steps before giving up (default 12).
        seed: seed of the calibration subset (default 0).
    """

    mode: QuantMode = QuantMode.INT8
    preset: str | None = None
    per_channel: bool = True
    activation_type: QuantType = QuantType.QUINT8
    weight_type: QuantType = QuantType.QINT8
    activation_symmetric: bool = False
    weight_symmetric: bool = True
    reduce_range: bool = True
    calibration_method: CalibrationMethod = CalibrationMethod.PERCENTILE
    calibration_samples: int = 256
    calibration_batch_size: int = 16
    op_types_to_quantize: list[str] | None = None
    nodes_to_exclude: list[str] = field(default_factory=list)
    extra_options: dict[str, Any] = field(default_factory=dict)
    output_format: OutputFormat = OutputFormat.ONNX
    mobile_batch: int = 1
    max_accuracy_drop: float | None = None
    eval_samples: int = 0
    gate_group_size: int = 1
    gate_max_steps: int = 12
    seed: int = 0

    def __post_init__(self) -> None:
        self.mode = _enum(QuantMode, self.mode, "quantization mode")
        self.activation_type = _enum(QuantType, self.activation_type, "activation type")
        self.weight_type = _enum(QuantType, self.weight_type, "weight type")
        self.calibration_method = _enum(CalibrationMethod, self.calibration_method,
                                        "calibration method")
        self.output_format = _enum(OutputFormat, self.output_format, "format")
        if self.preset is not None and self.preset not in PRESETS:
            raise InputError(f"unknown preset {self.preset!r}",
                             hint=f"use one of {', '.join(PRESETS)}")
        if self.calibration_samples < 1:
            raise InputError(f"calibration_samples must be >= 1, got {self.calibration_samples}")
        if self.calibration_batch_size < 1:
            raise InputError("calibration_batch_size must be >= 1")
        if self.mobile_batch < 0:
            raise InputError(f"mobile_batch must be >= 0, got {self.mobile_batch}")
        if self.max_accuracy_drop is not None and not self.max_accuracy_drop >= 0:
            raise InputError(f"max_accuracy_drop must be >= 0 points, got {self.max_accuracy_drop}")
        if self.eval_samples < 0 or self.gate_group_size < 1 or self.gate_max_steps < 0:
            raise InputError("eval_samples >= 0, gate_group_size >= 1, gate_max_steps >= 0")
        if not isinstance(self.extra_options, dict):
            raise InputError("extra_options must be a dict")
        self.nodes_to_exclude = list(self.nodes_to_exclude)
        if self.op_types_to_quantize is not None:
            self.op_types_to_quantize = list(self.op_types_to_quantize)

    @classmethod
    def from_preset(cls, preset: str | None, **overrides: Any) -> QuantizationConfig:
        """A config from ``PRESETS[preset]`` (None: the defaults) with ``overrides`` applied
        (None values are ignored, so CLI options left unset keep the preset's value)."""
        base: dict[str, Any] = {}
        if preset is not None:
            if preset not in PRESETS:
                raise InputError(f"unknown preset {preset!r}",
                                 hint=f"use one of {', '.join(PRESETS)}")
            base = {**PRESETS[preset], "preset": preset}
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (enums as their values)."""
        out = dataclasses.asdict(self)
        return {k: (v.value if isinstance(v, Enum) else v) for k, v in out.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantizationConfig:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def replace(self, **changes: Any) -> QuantizationConfig:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    def ort_extra_options(self) -> dict[str, Any]:
        """``extra_options`` for onnxruntime (symmetry flags + the passthrough dict)."""
        return {"ActivationSymmetric": self.activation_symmetric,
                "WeightSymmetric": self.weight_symmetric, **self.extra_options}


@dataclass
class VariantResult:
    """What :func:`quantize_model` wrote and measured (``to_dict`` is the report section).

    ``written`` is False when ``auto`` decided no variant is worth writing (``notes`` say why);
    ``portable`` is False when the file uses ops outside ai.onnx (dynamic int8 of LSTMs).
    """

    mode: str
    requested_mode: str
    path: Path
    size_bytes: int
    fp32_size_bytes: int
    config: QuantizationConfig
    files: dict[str, str] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None
    mobile: list[dict[str, Any]] | None = None
    notes: list[str] = field(default_factory=list)
    op_histogram: dict[str, int] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    written: bool = True
    portable: bool = True
    nonstandard_ops: list[str] = field(default_factory=list)

    @classmethod
    def skipped(cls, config: QuantizationConfig, fp32_path: Path,
                notes: list[str]) -> VariantResult:
        """The result of an ``auto`` run that wrote nothing (``notes`` say why)."""
        return cls(mode=QuantMode.NONE.value, requested_mode=QuantMode.AUTO.value,
                   path=fp32_path, size_bytes=0, fp32_size_bytes=0, config=config,
                   notes=notes, written=False)

    @property
    def size_ratio(self) -> float:
        """Variant file size / fp32 file size."""
        return self.size_bytes / max(self.fp32_size_bytes, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "requested_mode": self.requested_mode,
            "written": self.written,
            "path": self.path.name if self.written else None,
            "size_bytes": self.size_bytes,
            "fp32_size_bytes": self.fp32_size_bytes,
            "size_ratio": round(self.size_ratio, 4),
            "portable": self.portable,
            "nonstandard_ops": self.nonstandard_ops,
            "files": self.files,
            "config": self.config.to_dict(),
            "calibration": self.calibration,
            "evaluation": self.evaluation,
            "gate": self.gate,
            "mobile": self.mobile,
            "notes": self.notes,
            "op_histogram": self.op_histogram,
            "timings_s": self.timings_s,
        }

    def summary(self) -> str:
        """A few lines for people (what ``edgekit export/quantize`` print)."""
        return "\n".join(variant_lines(self.to_dict(), self.path.parent))


def _evaluation_line(mode: str, ev: Mapping[str, Any]) -> str:
    agree = ev.get("top1_agreement")
    where = f"{ev['samples']} {'held-out ' if ev.get('held_out') else ''}samples"
    head = (f"{mode} accuracy {ev['accuracy']:.2f}% vs fp32 {ev['fp32_accuracy']:.2f}% (drop "
            f"{ev['accuracy_drop']:+.2f} pt), " if ev.get("accuracy") is not None
            else f"{mode} vs fp32: ")
    agreement = (f"top-1 agreement {100 * agree:.2f}%, " if agree is not None else "")
    return (f"{head}{agreement}mean abs diff {ev['mean_abs_error']:.2g}, max "
            f"{ev['max_abs_error']:.2g} on {where} ({ev['data']})")


def variant_lines(variant: Mapping[str, Any], outdir: Path) -> list[str]:
    """A report's variant section (:meth:`VariantResult.to_dict`) as lines for people."""
    if not variant.get("written", True):
        return [f"note: {n}" for n in variant.get("notes") or []]
    lines = [f"wrote {outdir / variant['path']} ({variant['size_bytes'] / 1024:.1f} KiB, "
             f"{100 * variant['size_ratio']:.1f}% of fp32)"]
    ev = variant.get("evaluation")
    if ev:
        lines.append(_evaluation_line(variant["mode"], ev))
    gate_info = variant.get("gate")
    if gate_info:
        kept = gate_info.get("kept_in_float") or []
        lines.append(f"accuracy gate ({gate_info['max_accuracy_drop']:g} pt): met"
                     + (f", kept in float: {', '.join(kept)}" if kept else ""))
    for m in variant.get("mobile") or []:
        lines.append(mobile_line(m))
    for f in ("ort", "ort_config"):
        if f in variant.get("files", {}):
            lines.append(f"wrote {outdir / variant['files'][f]}")
    lines.extend(f"note: {n}" for n in variant.get("notes") or [])
    return lines

# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
class ArrayCalibrationReader:
    """An onnxruntime ``CalibrationDataReader`` over prepared arrays, in batches (default 16).

    All batches have the same size (the largest divisor of the sample count not above
    ``batch_size``): onnxruntime's histogram calibrators (entropy, percentile) stack the
    batches' outputs and fail on a shorter last batch.
    """

    def __init__(self, feeds: dict[str, np.ndarray], batch_size: int = 16) -> None:
        self.feeds = feeds
        self.n = len(next(iter(feeds.values())))
        self.batch_size = next(b for b in range(max(1, min(batch_size, self.n)), 0, -1)
                               if self.n % b == 0)
        self._it: Iterator[dict[str, np.ndarray]] = iter(())
        self.rewind()

    def _gen(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(0, self.n, self.batch_size):
            yield {k: v[i:i + self.batch_size] for k, v in self.feeds.items()}

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch, or None at the end."""
        return next(self._it, None)

    def rewind(self) -> None:
        """Start again from the first batch."""
        self._it = self._gen()

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        self.rewind()
        return self._gen()


def onnx_input_specs(model_proto: Any) -> list[TensorSpecInfo]:
    """Inputs of an ONNX graph (initializers excluded) as :class:`TensorSpecInfo`."""
    from onnx import helper

    inits = {i.name for i in model_proto.graph.initializer}
    specs = []
    for vi in model_proto.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
        dt = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
        specs.append(TensorSpecInfo(vi.name, (None, *dims[1:]) if dims else dims, dt))
    return specs


def _text_split(path: Path, meta: ModelMetadata, split: str) -> Dataset:
    if meta.tokenizer is None:
        raise InputError(f"{path} is a text table but the model has no tokenizer metadata",
                         hint="pass an .npz of token ids instead")
    from edgekit.inputs.text import TextTokenizer
    from edgekit.recipes.text_lstm import load_data

    d = load_data(path, test_split=0.2, seed=0)
    x, y = (d.x_train, d.y_train) if split == "train" else (d.x_test, d.y_test)
    return Dataset({"": TextTokenizer.from_dict(meta.tokenizer).encode(list(x))}, y,
                   f"{path} ({split} split, 20% test, seed 0)")


def load_model_data(
    data: str | os.PathLike[str] | Dataset,
    specs: Sequence[TensorSpecInfo],
    meta: ModelMetadata,
    what: str,
    split: str = "train",
    limit: int = 0,
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], np.ndarray | None, list[str], str]:
    """Load and check data for a model: ``(feeds, labels, notes, description)``.

    ``data`` is an ``.npz``/``.npy`` file, a folder of IDX gz files (its ``split``: ``train``
    for calibration, ``test`` for evaluation), a label/text table for models with tokenizer
    metadata (the text recipe's 80/20 split), or a :class:`Dataset`. ``limit`` (0 = all) keeps a
    seeded random subset; integer images for float inputs are scaled by the model's
    preprocessing metadata, with a note.
    """
    from edgekit.convert.export import prepare_inputs

    names = [s.name for s in specs]
    if isinstance(data, Dataset):
        ds = data
    else:
        p = Path(data)
        if not p.exists():
            raise InputError(f"{what} file {p} does not exist", hint="check the path")
        if p.is_dir():
            from edgekit.inputs.datasets import load_image_data

            img = load_image_data(p)
            x, y = (img.x_train, img.y_train) if split == "train" else (img.x_test, img.y_test)
            ds = Dataset({names[0]: x}, y, f"{p} ({split} split)")
        elif p.suffix.lower() in (".tsv", ".csv", ".txt"):
            ds = _text_split(p, meta, split)
        else:
            ds = load_dataset(p, names, what)
    if len(names) == 1 and names[0] not in ds.inputs and len(ds.inputs) == 1:
        ds = Dataset({names[0]: next(iter(ds.inputs.values()))}, ds.labels, ds.source)
    missing = [n for n in names if n not in ds.inputs]
    if missing:
        raise DataError(f"{what} has no array for input(s) {missing}")
    if len(ds) == 0:
        raise DataError(f"{what} {ds.source} is empty (no samples)", hint="add samples")
    notes: list[str] = []
    if limit and len(ds) > limit:
        idx = np.sort(np.random.default_rng(seed).permutation(len(ds))[:limit])
        ds = Dataset({k: v[idx] for k, v in ds.inputs.items()},
                     None if ds.labels is None else ds.labels[idx], ds.source)
    pre = meta.preprocessing
    for s in specs:
        a = ds.inputs[s.name]
        if np.issubdtype(np.dtype(s.dtype), np.floating) and np.issubdtype(a.dtype, np.integer):
            if pre is None or pre.is_identity:
                notes.append(f"{what}: {s.name} is {a.dtype} and the model has no preprocessing "
                             "metadata; values were used unscaled")
        elif (np.issubdtype(a.dtype, np.floating) and pre is not None and pre.kind == "image"
              and pre.scale < 1 and a.size and float(np.abs(a).max()) > 1.5):
            notes.append(f"{what}: {s.name} holds floats up to {float(np.abs(a).max()):.4g} but "
                         f"the model expects preprocessed inputs (scale {pre.scale:g}); "
                         "check that the data is scaled")
    ds = _standardise_floats(ds, specs, meta, what, notes)
    feeds, more = prepare_inputs(list(specs), ds, meta)
    notes.extend(f"{what}: {n}" for n in more)
    return feeds, ds.labels, notes, ds.source or "in-memory dataset"


def _standardise_floats(ds: Dataset, specs: Sequence[TensorSpecInfo], meta: ModelMetadata,
                        what: str, notes: list[str]) -> Dataset:
    """Apply the model's preprocessing to float data when it names no raw dtype (tabular
    standardisation): the rule :meth:`edgekit.runtime.model.EdgeModel.predict` follows."""
    pre = meta.preprocessing
    if pre is None or pre.is_identity or pre.raw_dtype is not None:
        return ds
    inputs = dict(ds.inputs)
    for s in specs:
        a = inputs[s.name]
        if np.dtype(s.dtype).kind == "f" and a.dtype.kind == "f":
            inputs[s.name] = pre.apply(a, np.dtype(s.dtype))
            notes.append(f"{what}: {s.name} standardised with the model's preprocessing metadata")
    return Dataset(inputs, ds.labels, ds.source)


# ---------------------------------------------------------------------------------------------
# Modes and names
# ---------------------------------------------------------------------------------------------
def _weight_bytes(model_proto: Any) -> int:
    """Bytes of float initializers read by MatMul/Gemm/Conv nodes (what int8 would shrink)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model_proto.graph.initializer}
    names = {x for n in model_proto.graph.node if n.op_type in DENSE_OPS | CONV_OPS
             for x in n.input if x in inits}
    return sum(numpy_helper.to_array(inits[x]).nbytes for x in names
               if inits[x].data_type == 1)  # float32


#: Dense-only models with fewer weight bytes than this get no variant from ``auto``: dynamic
#: int8 would add per-call quantization work and Q/DQ metadata for a saving of a few KiB.
AUTO_MIN_DENSE_WEIGHT_BYTES = 256 * 1024


def resolve_mode(model_proto: Any, mode: QuantMode | str) -> tuple[QuantMode, str | None]:
    """The concrete mode for ``mode`` and, for ``auto``, the reason for the choice.

    ``auto``: dynamic int8 for recurrent models (static QDQ leaves LSTM/GRU in float), static
    int8 for convolutional ones, dynamic int8 for Dense-only models with at least
    :data:`AUTO_MIN_DENSE_WEIGHT_BYTES` of weights, and ``none`` (no variant) for smaller ones.
    """
    mode = _enum(QuantMode, mode, "quantization mode")
    if mode is not QuantMode.AUTO:
        return QuantMode(mode), None
    ops = {n.op_type for n in model_proto.graph.node}
    if ops & RECURRENT_OPS:
        rec = ", ".join(sorted(ops & RECURRENT_OPS))
        return QuantMode.DYNAMIC, (f"auto: dynamic int8 (recurrent ops {rec}: static QDQ leaves "
                                   "them in float; onnxruntime's DynamicQuantizeLSTM is used)")
    if ops & CONV_OPS:
        return QuantMode.INT8, ("auto: static QDQ int8 (convolutional model; whether int8 is "
                                "faster depends on the CPU: edgekit tune measures it)")
    kib = _weight_bytes(model_proto) / 1024
    if kib * 1024 < AUTO_MIN_DENSE_WEIGHT_BYTES:
        return QuantMode.NONE, (
            f"auto: no quantized variant: the model has only {kib:.1f} KiB of Dense weights, so "
            "int8 would save a few KiB at most while adding per-call quantization work and "
            "Q/DQ overhead (fp32 is the better artifact; ask --quantize dynamic to build one)")
    return QuantMode.DYNAMIC, f"auto: dynamic int8 (Dense-only model, {kib:.0f} KiB of weights)"


def variant_names(
    stem: str, mode: QuantMode | str, fmt: OutputFormat | str = "onnx"
) -> dict[str, str]:
    """File names of one variant: ``model``, ``config`` and, for ``ort``, ``ort``/``ort_config``."""
    tag = _enum(QuantMode, mode, "quantization mode").value
    names = {"model": f"{stem}.{tag}.onnx", "config": f"{stem}.{tag}.quant.json"}
    if _enum(OutputFormat, fmt, "format") is OutputFormat.ORT:
        names["ort"] = f"{stem}.{tag}.ort"
        names["ort_config"] = f"{stem}.{tag}.required_operators.config"
    return names


# ---------------------------------------------------------------------------------------------
# The quantizers
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _working_dir(path: Path) -> Iterator[None]:
    """Run inside ``path``: onnxruntime's shape inference and onnx's external-data writer
    drop files (``sym_shape_infer_temp.onnx``, ``<uuid>.data``) into the current folder."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _preprocess(src: Path, dst: Path, notes: list[str]) -> Path:
    require("sympy", "quantize")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
        return dst
    except Exception as exc:  # symbolic shape inference fails on some graphs
        try:
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
            notes.append(f"pre-processing without symbolic shape inference ({_first(exc)})")
            return dst
        except Exception as exc2:
            notes.append(f"pre-processing skipped ({_first(exc2)})")
            return src


def _first(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]


def _quantize_raw(pre: Path, out: Path, mode: QuantMode, cfg: QuantizationConfig,
                  reader: ArrayCalibrationReader | None, exclude: list[str]) -> None:
    from onnxruntime import quantization as q

    try:
        if mode is QuantMode.INT8:
            assert reader is not None
            reader.rewind()
            # onnxruntime's histogram calibrators print progress to stdout; keep stdout clean
            # (``--json`` output, progress bars)
            with contextlib.redirect_stdout(io.StringIO()):
                q.quantize_static(
                    str(pre), str(out), reader, quant_format=q.QuantFormat.QDQ,
                    op_types_to_quantize=cfg.op_types_to_quantize, per_channel=cfg.per_channel,
                    reduce_range=cfg.reduce_range, activation_type=cfg.activation_type.ort(),
                    weight_type=cfg.weight_type.ort(), nodes_to_exclude=exclude or None,
                    calibrate_method=cfg.calibration_method.ort(),
                    extra_options=cfg.ort_extra_options(),
                )
        elif mode is QuantMode.DYNAMIC:
            q.quantize_dynamic(
                str(pre), str(out), op_types_to_quantize=cfg.op_types_to_quantize,
                per_channel=cfg.per_channel, reduce_range=cfg.reduce_range,
                weight_type=cfg.weight_type.ort(), nodes_to_exclude=exclude or None,
                extra_options=cfg.ort_extra_options(),
            )
        else:
            import onnx

            f16: Any = require("onnxconverter_common.float16", "quantize",
                               "onnxconverter-common")
            convert_float_to_float16 = f16.convert_float_to_float16
            m = onnx.load(str(pre))
            m16 = convert_float_to_float16(m, keep_io_types=True, node_block_list=exclude or None)
            onnx.save(m16, str(out))
    except (InputError, DataError):
        raise
    except Exception as exc:
        raise ConversionError(f"{mode.value} quantization failed: {_first(exc)}",
                              hint="try another --quantize mode or --preset") from exc


def _finish_graph(raw: Path, out: Path, mode: QuantMode) -> list[str]:
    """Post-process a quantized file into the artifact: float regions stay float under
    onnxruntime's default optimizations; QDQ and fp16 files must use ai.onnx ops only.
    Returns the non-standard ops (allowed for dynamic int8 only)."""
    import onnx

    model = onnx.load(str(raw))
    if mode is QuantMode.INT8:
        commute_relu_maxpool(model)
    odd = nonstandard_ops(model)
    used = {n.domain for n in model.graph.node} | {""}
    keep = [o for o in model.opset_import if o.domain in used]  # the quantizer adds all domains
    del model.opset_import[:]
    model.opset_import.extend(keep)
    if odd and mode is not QuantMode.DYNAMIC:
        raise ConversionError(
            f"the {mode.value} model uses ops outside the ai.onnx domain ({', '.join(odd)}), "
            "so it would not load in OpenVINO or the mobile execution providers",
            hint="report this with the model attached; --quantize dynamic may still work")
    onnx.save(model, str(out))
    return odd


def _node_groups(pre: Path, qdq: Path, reader: ArrayCalibrationReader,
                 tmp: Path, quantizable: set[str]) -> list[tuple[float, list[str]]]:
    """Groups of float-model node names, worst first, from per-tensor errors between the fp32
    and QDQ graphs (``qdq_loss_debug``): a group is the node that produces a tensor plus the
    quantized nodes that consume it, scored by the SQNR (dB) the tensor loses locally."""
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as dbg

    fa, qa = tmp / "float_aug.onnx", tmp / "qdq_aug.onnx"
    dbg.modify_model_output_intermediate_tensors(str(pre), str(fa))
    dbg.modify_model_output_intermediate_tensors(str(qdq), str(qa))
    reader.rewind()
    float_acts = dbg.collect_activations(str(fa), reader)
    reader.rewind()
    qdq_acts = dbg.collect_activations(str(qa), reader)
    errors = dbg.compute_activation_error(dbg.create_activation_matching(qdq_acts, float_acts))
    model = onnx.load(str(pre))
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def sqnr(t: str) -> float:
        e = errors.get(t, {})
        return float(e.get("xmodel_err", e.get("qdq_err", np.inf)))

    groups: list[tuple[float, list[str]]] = []
    for tensor in errors:
        node = producer.get(tensor)
        members = [node.name] if node is not None and node.name else []
        members += [c.name for c in consumers.get(tensor, []) if c.name]
        members = [m for m in dict.fromkeys(members) if m in quantizable]
        if not members:
            continue
        ins = [sqnr(i) for i in (node.input if node is not None else []) if i in errors]
        upstream = min(ins) if ins else float(errors[tensor].get("qdq_err", np.inf))
        loss = (upstream - sqnr(tensor)) if np.isfinite(upstream) else -sqnr(tensor)
        groups.append((float(loss), members))
    groups.sort(key=lambda g: -g[0])
    return groups


def _progress(fn: Callable[[str], None] | None, msg: str) -> None:
    if fn is not None:
        fn(msg)


# ---------------------------------------------------------------------------------------------
# Data the variant is built and checked on
# ---------------------------------------------------------------------------------------------
#: held-out samples the agreement check uses at most
CHECK_SAMPLES = 1000


@dataclass
class _Data:
    """Calibration batches and the held-out samples every variant is compared on."""

    reader: ArrayCalibrationReader | None
    calibration: dict[str, Any] | None
    check_feeds: dict[str, np.ndarray]
    check_labels: np.ndarray | None
    check_desc: str
    held_out: bool
    notes: list[str]


def _subset(feeds: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in feeds.items()}


def calibration_split(calibration: Any, specs: Sequence[TensorSpecInfo], meta: ModelMetadata,
                       cfg: QuantizationConfig) -> tuple[dict[str, np.ndarray], dict[str, Any],
                                                         tuple[Any, ...] | None, list[str]]:
    """Calibration feeds, their report section, the held-out part (feeds, labels, desc) when
    the data has one, and notes. Folders and text tables hold out their test split; arrays
    hold out the samples not drawn for calibration."""
    split_data = isinstance(calibration, str | os.PathLike) and (
        Path(calibration).is_dir() or Path(calibration).suffix.lower() in (".tsv", ".csv", ".txt"))
    if split_data:
        feeds, _, notes, desc = load_model_data(calibration, specs, meta, "calibration data",
                                                "train", cfg.calibration_samples, cfg.seed)
        test = load_model_data(calibration, specs, meta, "calibration data", "test",
                               CHECK_SAMPLES, cfg.seed)
        held: tuple[Any, ...] | None = (test[0], test[1], test[3])
    else:
        all_feeds, labels, notes, desc = load_model_data(calibration, specs, meta,
                                                         "calibration data", "train", 0, cfg.seed)
        n_all = len(next(iter(all_feeds.values())))
        order = np.random.default_rng(cfg.seed).permutation(n_all)
        cal_idx = np.sort(order[:cfg.calibration_samples])
        rest = np.sort(order[cfg.calibration_samples:cfg.calibration_samples + CHECK_SAMPLES])
        feeds = _subset(all_feeds, cal_idx)
        held = None
        if len(rest):
            held = (_subset(all_feeds, rest), None if labels is None else labels[rest],
                    f"{desc} ({len(rest)} samples not used for calibration)")
    n = len(next(iter(feeds.values())))
    if n < cfg.calibration_samples:
        notes.append(f"calibration: {cfg.calibration_samples} samples asked, {desc} has only "
                     f"{n}; calibrated on all {n}")
    info = {"data": desc, "samples": n, "requested_samples": cfg.calibration_samples,
            "method": cfg.calibration_method.value}
    return feeds, info, held, notes


def synthetic_feeds(specs: Sequence[TensorSpecInfo], meta: ModelMetadata, n: int,
                    seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for an ONNX model (:func:`edgekit.inputs.synthetic.draw_inputs`, the generator
    export uses): image-like for image models, N(0, 1) for other float inputs, token ids below
    the vocabulary size (else 0/1) for integer inputs; dynamic dimensions get length 8."""
    from edgekit.inputs.synthetic import draw_inputs

    pre = meta.preprocessing
    vocab = len((meta.tokenizer or {}).get("vocabulary") or []) or 2
    ints = {s.name: vocab for s in specs if np.dtype(s.dtype).kind in "iu"}
    image = pre is not None and pre.kind == "image"
    return draw_inputs(specs, n, np.random.default_rng(seed), 8, {}, ints, image)


def _load_data(mode: QuantMode, cfg: QuantizationConfig, specs: Sequence[TensorSpecInfo],
               meta: ModelMetadata, calibration: Any, eval_data: Any) -> _Data:
    """Calibration (static int8) and the samples the variant is checked on: ``eval_data``
    when given, else data held out from calibration, else seeded synthetic inputs."""
    reader: ArrayCalibrationReader | None = None
    cal_info: dict[str, Any] | None = None
    held: tuple[Any, ...] | None = None
    notes: list[str] = []
    if calibration is not None:
        feeds, cal_info, held, notes = calibration_split(calibration, specs, meta, cfg)
        if mode is QuantMode.INT8:
            reader = ArrayCalibrationReader(feeds, cfg.calibration_batch_size)
        else:
            cal_info = None
        if held is None and mode is QuantMode.INT8:
            held = (feeds, None, f"{cal_info['data'] if cal_info else 'calibration data'} "
                    "(the calibration samples: none were left to hold out)")
    if eval_data is not None:
        ev_feeds, labels, ev_notes, desc = load_model_data(
            eval_data, specs, meta, "evaluation data", "test", cfg.eval_samples, cfg.seed)
        notes.extend(ev_notes)
        if cfg.max_accuracy_drop is not None and labels is None:
            raise DataError(f"evaluation data {desc} has no labels (array 'y')",
                            hint="the accuracy gate needs labelled --eval-data")
        return _Data(reader, cal_info, ev_feeds, labels, desc, True, notes)
    if held is not None:
        return _Data(reader, cal_info, held[0], held[1], held[2],
                     "none were left" not in held[2], notes)
    feeds = synthetic_feeds(specs, meta, 256, cfg.seed)
    return _Data(reader, cal_info, feeds, None, f"synthetic inputs (seed {cfg.seed}, 256 samples)",
                 False, notes)


# ---------------------------------------------------------------------------------------------
# Building and checking one variant
# ---------------------------------------------------------------------------------------------
@dataclass
class _Build:
    """One quantized file and how it compares with fp32 on the check samples."""

    path: Path
    agreement: Agreement
    accuracy: float | None
    nonstandard: list[str]

    def evaluation(self, data: _Data, fp32_accuracy: float | None) -> dict[str, Any]:
        """The report's ``evaluation`` section."""
        drop = None if self.accuracy is None or fp32_accuracy is None else (
            fp32_accuracy - self.accuracy)
        return {"data": data.check_desc, "held_out": data.held_out, **self.agreement.to_dict(),
                "fp32_accuracy": fp32_accuracy, "accuracy": self.accuracy,
                "accuracy_drop": drop}


@dataclass
class _Builder:
    """Quantizes the pre-processed model with a list of nodes kept in float and checks the
    result against the fp32 outputs on the check samples."""

    mode: QuantMode
    cfg: QuantizationConfig
    pre: Path
    tmp: Path
    data: _Data
    fp32_out: np.ndarray
    progress: Callable[[str], None] | None
    count: int = 0

    def build(self, exclude: list[str]) -> _Build:
        self.count += 1
        raw, final = self.tmp / f"raw_{self.count}.onnx", self.tmp / f"final_{self.count}.onnx"
        reader = self.data.reader
        _progress(self.progress, f"{self.mode.value}: quantizing"
                  + (f" ({len(exclude)} node(s) kept in float)" if exclude else "")
                  + (f", calibrating on {reader.n} samples" if reader is not None else ""))
        _quantize_raw(self.pre, raw, self.mode, self.cfg, reader, exclude)
        odd = _finish_graph(raw, final, self.mode)
        got = run_onnx(final, self.data.check_feeds, batch_size=256)[0]
        labels = self.data.check_labels
        acc = accuracy(got, labels) if labels is not None else None
        return _Build(final, compare_predictions(self.fp32_out, got, labels), acc, odd)


def _gate_ok(build: _Build, budget: float | None) -> bool:
    return budget is None or gate(build.agreement, budget)[0]


def _run_gate(builder: _Builder, first: _Build, exclude: list[str],
              gate_info: dict[str, Any]) -> _Build:
    """Keep node groups in float, worst first, until the gate holds (or steps run out)."""
    import onnx

    cfg, budget = builder.cfg, builder.cfg.max_accuracy_drop
    current = first
    if builder.mode is not QuantMode.INT8 or builder.data.reader is None:
        gate_info["note"] = f"no per-node search for {builder.mode.value} (needs static int8 QDQ)"
        return current
    _progress(builder.progress, "gate: ranking nodes by quantization loss (qdq_loss_debug)")
    float_model = onnx.load(str(builder.pre))
    quantizable = {n.name for n in float_model.graph.node
                   if cfg.op_types_to_quantize is None or n.op_type in cfg.op_types_to_quantize}
    groups = _node_groups(builder.pre, first.path, builder.data.reader, builder.tmp, quantizable)
    gate_info["ranking"] = [{"nodes": g, "sqnr_loss_db": round(s, 2)} for s, g in groups[:20]]
    for step in range(cfg.gate_max_steps):
        start = step * cfg.gate_group_size
        new = [m for _, g in groups[start:start + cfg.gate_group_size] for m in g
               if m not in exclude]
        if start >= len(groups):
            break
        if not new:
            continue
        exclude.extend(new)
        _progress(builder.progress, f"gate step {step + 1}: keeping {', '.join(new)} in float")
        current = builder.build(exclude)
        gate_info["kept_in_float"] = list(exclude)
        gate_info["steps"].append(_gate_step(current, budget, new))
        if _gate_ok(current, budget):
            break
    return current


def _gate_step(build: _Build, budget: float | None, nodes: list[str] | None = None
               ) -> dict[str, Any]:
    ok, lower, reason = gate(build.agreement, budget or 0.0)
    step: dict[str, Any] = {"accuracy": build.accuracy, "met": ok,
                            "lower_bound_pt": round(lower, 3), "reason": reason}
    if nodes is not None:
        step["nodes"] = nodes
    return step


def _check_gate(builder: _Builder, first: _Build, exclude: list[str]
                ) -> tuple[_Build, dict[str, Any] | None]:
    """Apply ``max_accuracy_drop`` (needs labels): the build that meets it, and the gate report;
    :class:`AccuracyGateError` when none does."""
    budget = builder.cfg.max_accuracy_drop
    if budget is None:
        return first, None
    gate_info: dict[str, Any] = {"max_accuracy_drop": budget, "met": False, "kept_in_float": [],
                                 "statistic": "paired accuracy drop, one standard error",
                                 "steps": [_gate_step(first, budget)]}
    final = first if _gate_ok(first, budget) else _run_gate(builder, first, exclude, gate_info)
    gate_info["met"] = _gate_ok(final, budget)
    if not gate_info["met"]:
        best = max([first, final], key=lambda b: b.accuracy or 0.0)
        raise AccuracyGateError(
            f"{builder.mode.value} model cannot meet --max-accuracy-drop {budget:g} pt: "
            f"{gate(best.agreement, budget)[2]} (accuracy {best.accuracy:.2f}%) after keeping "
            f"{len(gate_info['kept_in_float'])} node(s) in float; no {builder.mode.value} model "
            "was written",
            hint="raise --max-accuracy-drop, try --calibration-method entropy or "
            "percentile, more --calibration-samples, or --quantize fp16",
        )
    return final, gate_info


def _check_options(mode: QuantMode, cfg: QuantizationConfig, calibration: Any,
                   eval_data: Any) -> None:
    if mode is QuantMode.NONE and cfg.mode is not QuantMode.AUTO:
        raise InputError("quantization mode 'none' builds no variant")
    if cfg.max_accuracy_drop is not None and eval_data is None:
        raise InputError("--max-accuracy-drop needs labelled --eval-data",
                         hint="pass --eval-data FILE (npz with x and y, or an IDX folder)")
    if mode is QuantMode.INT8 and calibration is None:
        raise InputError("static int8 quantization needs calibration data",
                         hint="pass --calibration FILE (npz/npy or an IDX folder), or use "
                         "--quantize dynamic")


def _load_proto(model: Any, stem: str | None) -> tuple[Any, str]:
    if isinstance(model, str | os.PathLike):
        from edgekit.io.onnxfile import load_onnx

        return load_onnx(model), stem or Path(model).name.removesuffix(".onnx")
    return model, stem or "model"


#: memory the histogram calibrators (entropy, percentile) may use for activations: they keep
#: every calibration sample's activations before building histograms
HISTOGRAM_MEMORY_BYTES = 2 << 30


def activation_bytes(model_path: Path) -> int:
    """Bytes of the float activations one sample produces (inferred shapes, batch 1)."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(model_path)))
    total = 0
    for v in model.graph.value_info:
        t = v.type.tensor_type
        if t.elem_type in (1, 10):  # float32, float16
            dims = [d.dim_value if d.HasField("dim_value") else 1 for d in t.shape.dim]
            total += int(np.prod(dims[1:] if len(dims) > 1 else dims)) * 4
    return total


def _bound_histogram_memory(data: _Data, pre: Path, cfg: QuantizationConfig,
                            notes: list[str]) -> None:
    """Fewer calibration samples for entropy/percentile when all of them would not fit in
    :data:`HISTOGRAM_MEMORY_BYTES` (minmax keeps only ranges and needs no cap)."""
    reader = data.reader
    if reader is None or cfg.calibration_method is CalibrationMethod.MINMAX:
        return
    per_sample = max(activation_bytes(pre), 1)
    cap = max(8, HISTOGRAM_MEMORY_BYTES // per_sample)
    if reader.n <= cap:
        return
    data.reader = ArrayCalibrationReader({k: v[:cap] for k, v in reader.feeds.items()},
                                         reader.batch_size)
    notes.append(f"calibration: {cfg.calibration_method.value} calibration keeps every "
                 f"sample's activations ({per_sample / 2**20:.1f} MiB each), so it used {cap} of "
                 f"the {reader.n} samples to stay within {HISTOGRAM_MEMORY_BYTES / 2**30:.0f} GiB")
    if data.calibration is not None:
        data.calibration["samples"] = cap


def _prepare_float(fp32_path: Path, tmp: Path, mode: QuantMode, notes: list[str]) -> Path:
    """The float graph the quantizer starts from: ``quant_pre_process`` for int8 (shape
    inference, fusions) and dynamic; onnxruntime's basic level for fp16 (later levels would fold
    fp16 weights back to fp32 on the CPU)."""
    if mode is QuantMode.FP16:
        return optimize_model(fp32_path, tmp / "pre.onnx", OptimizeLevel.BASIC)
    return _preprocess(fp32_path, tmp / "pre.onnx", notes)


def quantize_model(
    model: str | os.PathLike[str] | Any,
    outdir: str | os.PathLike[str],
    stem: str | None = None,
    config: QuantizationConfig | None = None,
    calibration: str | os.PathLike[str] | Dataset | None = None,
    eval_data: str | os.PathLike[str] | Dataset | None = None,
    progress: Callable[[str], None] | None = None,
) -> VariantResult:
    """Build one variant of an fp32 ONNX model into ``outdir`` (files of :func:`variant_names`).

    The artifact is standard ONNX (QDQ int8 and fp16 use ai.onnx ops only; onnxruntime
    optimizes it at load on the device). The output activation (softmax/sigmoid) stays float,
    so probabilities stay exact. Every variant is compared with fp32 on held-out samples
    (``eval_data``, else calibration samples not used for calibration, else synthetic inputs).

    Args:
        model: fp32 ``.onnx`` path or ``onnx.ModelProto``.
        outdir: where the variant files go (must exist; nothing is written on failure).
        stem: file stem (default: the model file's stem, or ``"model"``).
        config: options (default ``QuantizationConfig()``: static int8, per-channel 7-bit
            weights, u8 activations).
        calibration: calibration data (needed by ``int8``); see :func:`load_model_data`.
        eval_data: labelled data for the accuracy figures and the gate (test split of folders).
        progress: called with short status lines for the slow steps.

    Returns:
        The result; ``result.written`` is False when ``auto`` found no variant worth writing
        (``result.notes`` says why).

    Raises:
        InputError / DataError for bad options or data, AccuracyGateError when the gate
        cannot be met (with the best figures reached), ConversionError when onnxruntime fails.
    """
    require("onnxruntime", "runtime")
    cfg = config or QuantizationConfig()
    proto, stem = _load_proto(model, stem)
    mode, auto_note = resolve_mode(proto, cfg.mode)
    _check_options(mode, cfg, calibration, eval_data)
    if mode is QuantMode.NONE:
        return VariantResult.skipped(cfg, Path(outdir) / f"{stem}.onnx", [auto_note or ""])
    meta = ModelMetadata.from_props({p.key: p.value for p in proto.metadata_props})
    specs = onnx_input_specs(proto)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    data = _load_data(mode, cfg, specs, meta, calibration, eval_data)
    timings["data"] = round(time.perf_counter() - t0, 3)
    notes = ([auto_note] if auto_note else []) + data.notes
    out = Path(outdir).absolute()  # the work below runs inside the temp folder
    with tempfile.TemporaryDirectory(prefix="edgekit-quant-") as tmp_s, _working_dir(Path(tmp_s)):
        return _build_variant(proto, Path(tmp_s), out, stem, mode, cfg, data, notes, timings,
                              progress)


def _build_variant(proto: Any, tmp: Path, outdir: Path, stem: str, mode: QuantMode,
                   cfg: QuantizationConfig, data: _Data, notes: list[str],
                   timings: dict[str, float], progress: Callable[[str], None] | None
                   ) -> VariantResult:
    """The steps of :func:`quantize_model` inside its temp folder."""
    import onnx

    fp32_path = tmp / "fp32.onnx"
    onnx.save(proto, str(fp32_path))
    fp32_size = fp32_path.stat().st_size
    fp32_out = run_onnx(fp32_path, data.check_feeds, batch_size=256)[0]
    labels = data.check_labels
    fp32_acc = accuracy(fp32_out, labels) if labels is not None else None
    t0 = time.perf_counter()
    pre = _prepare_float(fp32_path, tmp, mode, notes)
    _bound_histogram_memory(data, pre, cfg, notes)
    timings["preprocess"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    # int8: the output softmax/sigmoid stays float, so probabilities stay exact (fp16 keeps
    # them in fp16: blocking the output node breaks the converter's float32 outputs)
    keep = output_activation_nodes(proto) if mode is QuantMode.INT8 else []
    exclude = list(dict.fromkeys([*cfg.nodes_to_exclude, *keep]))
    builder = _Builder(mode, cfg, pre, tmp, data, fp32_out, progress)
    final, gate_info = _check_gate(builder, builder.build(exclude), exclude)
    timings["quantize"] = round(time.perf_counter() - t0, 3)
    size = final.path.stat().st_size
    notes.extend(_size_notes(size, fp32_size, final.nonstandard, mode))
    used = cfg.replace(nodes_to_exclude=exclude, mode=mode)
    if cfg.mode is QuantMode.AUTO and size >= fp32_size:
        notes.append(f"auto: the {mode.value} model ({size / 1024:.1f} KiB) is not smaller than "
                     f"fp32 ({fp32_size / 1024:.1f} KiB), so no variant was written")
        return VariantResult.skipped(used, outdir / f"{stem}.onnx", notes)
    result = VariantResult(
        mode=mode.value, requested_mode=cfg.mode.value,
        path=outdir / variant_names(stem, mode, cfg.output_format)["model"], size_bytes=size,
        fp32_size_bytes=fp32_size, config=used, calibration=data.calibration,
        evaluation=final.evaluation(data, fp32_acc), gate=gate_info, notes=notes,
        timings_s=timings, portable=not final.nonstandard, nonstandard_ops=final.nonstandard)
    _write_variant(result, final.path, tmp, stem, progress)
    return result


def _size_notes(size: int, fp32_size: int, odd: list[str], mode: QuantMode) -> list[str]:
    notes = []
    if size >= fp32_size:
        notes.append(f"warning: the {mode.value} model is {100 * size / fp32_size:.0f}% of the "
                     "fp32 file (Q/DQ nodes and scales outweigh the weights it shrinks)")
    if odd:
        notes.append(f"uses {', '.join(odd)} (onnxruntime only: OpenVINO and the mobile "
                     "execution providers cannot load it)")
    return notes


def _write_variant(result: VariantResult, built: Path, tmp: Path, stem: str,
                   progress: Callable[[str], None] | None) -> None:
    """Metadata, the ORT-format files when asked, the config JSON; then write them all."""
    import onnx

    cfg, mode = result.config, result.config.mode
    names = variant_names(stem, mode, cfg.output_format)
    qmodel = onnx.load(str(built))
    set_props(qmodel, {METADATA_KEY: json.dumps(cfg.to_dict()), PREFIX + "variant": mode.value})
    data = qmodel.SerializeToString()
    outdir = result.path.parent
    staged: list[tuple[Path, bytes]] = [(result.path, data)]
    result.files = {"model": names["model"], "config": names["config"]}
    result.op_histogram = dict(Counter(n.op_type for n in qmodel.graph.node).most_common())
    if cfg.output_format is OutputFormat.ORT:
        t0 = time.perf_counter()
        _progress(progress, f"{mode.value}: converting to ORT format")
        src = tmp / names["model"]
        src.write_bytes(data)
        ort_p, conf_p, reports = convert_to_ort(src, tmp / names["ort"], tmp / names["ort_config"])
        staged += [(outdir / names["ort"], ort_p.read_bytes()),
                   (outdir / names["ort_config"], conf_p.read_bytes())]
        result.files.update(ort=names["ort"], ort_config=names["ort_config"])
        result.mobile = [r.to_dict() for r in reports]
        result.timings_s["ort"] = round(time.perf_counter() - t0, 3)
    staged.append((outdir / names["config"], (to_json(cfg.to_dict()) + "\n").encode()))
    for path, blob in staged:  # all checks passed: write
        path.write_bytes(blob)


# ---------------------------------------------------------------------------------------------
# The export hook
# ---------------------------------------------------------------------------------------------
def export_hook(
    config: QuantizationConfig,
    calibration: str | os.PathLike[str] | Dataset | None = None,
    eval_data: str | os.PathLike[str] | Dataset | None = None,
    progress: Callable[[str], None] | None = None,
) -> Callable[[Any, Any, Any, dict[str, Any]], None]:
    """An ``extra_outputs`` hook for :func:`edgekit.convert.export_model` that stages the variant
    of ``config.mode`` next to the fp32 model and adds ``report["variants"][mode]``."""
    _check_paths(calibration, eval_data)  # before the slow export starts
    if config.mode is QuantMode.INT8 and calibration is None:
        raise InputError("static int8 quantization needs calibration data",
                         hint="pass --calibration FILE (npz/npy or an IDX folder), or use "
                         "--quantize dynamic")
    if config.max_accuracy_drop is not None and eval_data is None:
        raise InputError("--max-accuracy-drop needs labelled --eval-data",
                         hint="pass --eval-data FILE (npz with x and y, or an IDX folder)")

    def hook(artifacts: Any, source: Any, model_proto: Any, report: dict[str, Any]) -> None:
        stem = report["files"]["onnx"]["path"].removesuffix(".onnx")
        mode, _ = resolve_mode(model_proto, config.mode)
        stage = artifacts.path(report["files"]["onnx"]["path"]).parent
        if mode is not QuantMode.NONE:
            stage = [artifacts.add(n) for n in variant_names(stem, mode,
                                                             config.output_format).values()][0].parent
        result = quantize_model(model_proto, stage, stem, config, calibration, eval_data, progress)
        report.setdefault("variants", {})[result.mode] = result.to_dict()

    return hook


def quantize_file(
    model: str | os.PathLike[str],
    outdir: str | os.PathLike[str] | None = None,
    config: QuantizationConfig | None = None,
    calibration: str | os.PathLike[str] | Dataset | None = None,
    eval_data: str | os.PathLike[str] | Dataset | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> tuple[VariantResult, Path]:
    """``edgekit quantize``: one variant of an fp32 ``.onnx`` file into ``outdir`` (default: the
    model's folder), atomically, and its section in ``<stem>.report.json`` (created or updated).
    Returns the result and the report path."""
    from edgekit.io.artifacts import ArtifactSet, atomic_write_json
    from edgekit.io.onnxfile import load_onnx

    cfg = config or QuantizationConfig(mode=QuantMode.AUTO)
    _check_paths(calibration, eval_data)
    proto = load_onnx(model)
    path = Path(model)
    stem = path.name.removesuffix(".onnx")
    out = Path(outdir) if outdir is not None else path.parent
    mode, _ = resolve_mode(proto, cfg.mode)
    names = variant_names(stem, mode, cfg.output_format) if mode is not QuantMode.NONE else {}
    artifacts = ArtifactSet(out, names.values(), force=force)
    artifacts.check()
    with artifacts.open():
        result = quantize_model(proto, artifacts.stage_dir, stem, cfg, calibration, eval_data,
                                progress)
    if result.written:
        result.path = artifacts.final(names["model"])
    report_path = out / f"{stem}.report.json"
    report: dict[str, Any] = {}
    if report_path.is_file():
        try:
            report = json.loads(report_path.read_text())
        except ValueError:
            report = {}
    report.setdefault("source", {"path": str(path)})
    report.setdefault("variants", {})[result.mode] = result.to_dict()
    atomic_write_json(report_path, report, force=True)
    return result, report_path


def _check_paths(*paths: Any) -> None:
    for what, p in zip(("calibration data", "evaluation data"), paths, strict=False):
        if isinstance(p, str | os.PathLike) and not Path(p).exists():
            raise InputError(f"{what} file {p} does not exist", hint="check the path")
