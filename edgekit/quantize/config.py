"""Quantization settings (:class:`QuantizationConfig`, enums, presets), variant names and the
result record of one variant."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

from edgekit.errors import InputError
from edgekit.metadata import PREFIX
from edgekit.quantize.ort_format import mobile_line
from edgekit.runtime.engine_record import engines_line

__all__ = [
    "QuantMode",
    "QuantType",
    "CalibrationMethod",
    "OutputFormat",
    "PRESETS",
    "QuantizationConfig",
    "VariantResult",
    "variant_lines",
    "resolve_mode",
    "variant_names",
    "METADATA_KEY",
    "AUTO_MIN_DENSE_WEIGHT_BYTES",
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
        stem_in_float: static int8 keeps the stem conv (the first Conv) and its
            activation/pooling in float: None (default) when it reads at most
            :data:`~edgekit.quantize.regions.STEM_FLOAT_MAX_CHANNELS` channels (int8 is slower
            there on every CPU measured), True always, False never.
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
        explain: static int8 only: add the per-node accuracy evidence (``explain`` section of
            the report, :mod:`edgekit.quantize.explain`; default False).
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
    stem_in_float: bool | None = None
    extra_options: dict[str, Any] = field(default_factory=dict)
    output_format: OutputFormat = OutputFormat.ONNX
    mobile_batch: int = 1
    max_accuracy_drop: float | None = None
    eval_samples: int = 0
    gate_group_size: int = 1
    gate_max_steps: int = 12
    seed: int = 0
    explain: bool = False

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
    ``portable`` is False when the file uses ops outside ai.onnx (dynamic int8 of LSTMs);
    ``engines`` is the per-engine proof of the file (:mod:`edgekit.runtime.proof`).
    """

    mode: str
    requested_mode: str
    path: Path
    size_bytes: int
    fp32_size_bytes: int
    config: QuantizationConfig
    files: dict[str, str] = field(default_factory=dict)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    calibration: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None
    explain: list[dict[str, Any]] | None = None
    mobile: list[dict[str, Any]] | None = None
    notes: list[str] = field(default_factory=list)
    op_histogram: dict[str, int] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    written: bool = True
    portable: bool = True
    nonstandard_ops: list[str] = field(default_factory=list)
    engines: dict[str, dict[str, object]] = field(default_factory=dict)

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
            "engines": self.engines,
            "files": self.files,
            "artifacts": self.artifacts,
            "config": self.config.to_dict(),
            "calibration": self.calibration,
            "evaluation": self.evaluation,
            "gate": self.gate,
            "explain": self.explain,
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
    if variant.get("engines"):
        lines.append(engines_line(variant["engines"]))
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
    if variant.get("explain") is not None:
        from edgekit.quantize.explain import explain_lines

        lines.extend(explain_lines(variant["explain"]))
    return lines

# ---------------------------------------------------------------------------------------------
# Modes and names
# ---------------------------------------------------------------------------------------------
def _weight_bytes(model_proto: Any) -> int:
    """Bytes of float initializers read by MatMul/Gemm/Conv nodes and of the tables Gather
    nodes look up (Keras Embeddings): what int8 would shrink."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model_proto.graph.initializer}
    names = {x for n in model_proto.graph.node if n.op_type in DENSE_OPS | CONV_OPS
             for x in n.input if x in inits}
    names |= {n.input[0] for n in model_proto.graph.node
              if n.op_type == "Gather" and n.input and n.input[0] in inits}
    return sum(numpy_helper.to_array(inits[x]).nbytes for x in names
               if inits[x].data_type == 1)  # float32


#: Dense-only models with fewer weight bytes than this get no variant from ``auto``: dynamic
#: int8 would add per-call quantization work and Q/DQ metadata for a saving of a few KiB.
AUTO_MIN_DENSE_WEIGHT_BYTES = 256 * 1024


def resolve_mode(model_proto: Any, mode: QuantMode | str) -> tuple[QuantMode, str | None]:
    """The concrete mode for ``mode`` and, for ``auto``, the reason for the choice.

    ``auto``: dynamic int8 for recurrent models (static QDQ leaves LSTM/GRU in float), static
    int8 for convolutional ones, dynamic int8 for other models with at least
    :data:`AUTO_MIN_DENSE_WEIGHT_BYTES` of Dense and Embedding weights (an Embedding table is a
    weight like a Dense kernel: int8 shrinks it 4x), and ``none`` (no variant) for smaller ones.
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
            f"auto: no quantized variant: the model has only {kib:.1f} KiB of Dense and "
            "Embedding weights, so "
            "int8 would save a few KiB at most while adding per-call quantization work and "
            "Q/DQ overhead (fp32 is the better artifact; ask --quantize dynamic to build one)")
    return QuantMode.DYNAMIC, (f"auto: dynamic int8 (no conv or recurrent layers, {kib:.0f} KiB "
                               "of Dense and Embedding weights)")


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


