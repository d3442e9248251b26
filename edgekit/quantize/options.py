"""The concerns of a :class:`~edgekit.quantize.QuantizationConfig`, one validated dataclass
each: what to quantize and into what (:class:`QuantScheme`), how activation ranges are
calibrated (:class:`CalibrationConfig`), the accuracy gate (:class:`GateConfig`), the speed
check against fp32 on this machine (:class:`SpeedCheckConfig`) and the output files
(:class:`OutputConfig`); with their enums and the named presets of a scheme.

A field renamed when it moved into its group names its old flat key in ``metadata["flat"]``
(read back by :func:`edgekit.configs.flat_keys`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, TypeVar

from edgekit.errors import InputError

__all__ = [
    "QuantMode",
    "QuantType",
    "CalibrationMethod",
    "OutputFormat",
    "PRESETS",
    "QuantScheme",
    "CalibrationConfig",
    "GateConfig",
    "SpeedCheckConfig",
    "OutputConfig",
]


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

    def ort(self) -> Enum:
        """onnxruntime's ``QuantType`` member."""
        from onnxruntime.quantization import QuantType as T

        return T.QInt8 if self is QuantType.QINT8 else T.QUInt8


class CalibrationMethod(StrEnum):
    """How activation ranges are estimated from calibration data."""

    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"

    def ort(self) -> Enum:
        """onnxruntime's ``CalibrationMethod`` member."""
        from onnxruntime.quantization import CalibrationMethod as C

        return {"minmax": C.MinMax, "entropy": C.Entropy, "percentile": C.Percentile}[self.value]


class OutputFormat(StrEnum):
    """``onnx`` only, or ``ort``: also the ORT-format model for mobile builds."""

    ONNX = "onnx"
    ORT = "ort"


E = TypeVar("E", bound=Enum)


def as_enum(cls: type[E], value: object, what: str) -> E:
    """``value`` as a member of ``cls`` (its value, case-insensitively); an unknown one is an
    :class:`InputError` listing the choices."""
    if isinstance(value, cls):
        return value
    for member in cls:
        if str(value).lower() == str(member.value).lower():
            return member
    raise InputError(
        f"unknown {what} {value!r}", hint=f"use one of {', '.join(str(m.value) for m in cls)}"
    )


#: the compute ops whose outputs :attr:`QuantScheme.float_outputs` leaves in float
FLOAT_OUTPUT_OPS = ("Conv", "MatMul", "Gemm")

#: Named presets: :class:`QuantScheme` field values (all QDQ, per-channel).
PRESETS: dict[str, dict[str, bool | str]] = {
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


def _set(obj: object, name: str, value: object) -> None:
    """Normalize a field of a frozen dataclass in its ``__post_init__``."""
    object.__setattr__(obj, name, value)


def _check_preset(preset: str | None) -> None:
    if preset is not None and preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}", hint=f"use one of {', '.join(PRESETS)}")


@dataclass(frozen=True)
class QuantScheme:
    """What to quantize, and into what: the 8-bit types and ranges, and the nodes kept in float.

    Attributes:
        preset: the named preset the type/range fields came from (see :data:`PRESETS`), or None.
        per_channel: per-channel weight scales (default True).
        activation_type / weight_type: ``QUInt8`` / ``QInt8`` (defaults).
        activation_symmetric: symmetric activation ranges (default False).
        weight_symmetric: symmetric weight ranges (default True).
        reduce_range: 7-bit weights (default True: portable. onnxruntime's u8s8 int8 kernels
            on AVX2-only CPUs saturate 16-bit sums with full-range weights; measured on the
            shipped CNN, 10k test images: -0.51 pt and 97.7 % top-1 agreement with full range,
            -0.02 pt and 99.3 % with 7-bit weights, in onnxruntime and OpenVINO alike. The
            ``avx512_vnni`` and ``arm64`` presets use the full range).
        op_types_to_quantize: op types to quantize (default None: all that onnxruntime can).
        nodes_to_exclude: node names kept in float (default none).
        stem_in_float: static int8 keeps the stem conv (the first Conv) and its
            activation/pooling in float: None (default) when it reads at most
            :data:`~edgekit.quantize.regions.STEM_FLOAT_MAX_CHANNELS` channels (int8 is slower
            there on every CPU measured), True always, False never.
        slice_strided_pointwise: static int8 first rewrites each 1x1 Conv with strides > 1 as
            a strided Slice and a stride-1 Conv (same values; default False). OpenVINO runs
            strided 1x1 convs of a QDQ file in f32 and the sliced ones in int8 (ResNet50,
            batch 1, AMX Xeon: 15.3 -> 9.2 ms); onnxruntime gains nothing (19.0 -> 20.1 ms),
            so only an engine's layout (``Engine.qdq_scheme``) asks for it.
        channels_last_flatten: static int8 first rewrites each flatten of an int8 conv's
            feature map that feeds a Dense layer (MatMul/Gemm with constant weights) as a
            Transpose to channels-last and the flatten, with the weight rows permuted (same
            values; default True). onnxruntime runs int8 convs and their pooling channels-last
            and otherwise transposes the map back before the flatten: the Fashion CNN, AMX
            Xeon, 2 threads, 0.83x -> 0.74x fp32's latency at batch 32, 1.00-1.05x ->
            0.96-1.00x at batch 1 in two runs (1 thread: unchanged). OpenVINO's layout turns
            it off (its plugin picks its own layouts).
        float_outputs: static int8 leaves the outputs of the quantized Conv/MatMul/Gemm in
            float (onnxruntime's ``OpTypesToExcludeOutputQuantization``): Q/DQ sit on their
            inputs only, as NNCF places them, so OpenVINO fuses each layer's activation and the
            next layer's quantization into the int8 kernel (EfficientNetB0, batch 1, AMX Xeon:
            9.9 -> 7.5 ms in f32, 7.1 ms with the float parts in bf16); onnxruntime needs the
            output Q/DQ for its integer kernels. Default False; an engine's bf16 layout
            (``Engine.qdq_bf16_scheme``) asks for it.
        offset_weight_convs: names of Convs whose int8 weights are shifted by one, with a
            zero point of that one, after static quantization (the same values;
            :mod:`edgekit.quantize.kernels`): onnxruntime then runs them through its im2col +
            GEMM kernels (AMX where the CPU has it) instead of its symmetric-conv kernels.
            Faster for some convs on some CPUs, slower for others (AMX Xeon, 1 thread: a
            Conv1D text model's 128 -> 128 conv 99 -> 66 us, a 16 -> 96 1x1 conv at 112x112
            474 -> 1146 us), so ``edgekit tune`` names them from per-conv profiles. A named
            conv kept in float (``nodes_to_exclude``, the stem rule, the accuracy gate) stays
            float. Default none.
        extra_options: passed through to onnxruntime's ``extra_options`` (default none).
    """

    preset: str | None = None
    per_channel: bool = True
    activation_type: QuantType = QuantType.QUINT8
    weight_type: QuantType = QuantType.QINT8
    activation_symmetric: bool = False
    weight_symmetric: bool = True
    reduce_range: bool = True
    op_types_to_quantize: Sequence[str] | None = None
    nodes_to_exclude: Sequence[str] = ()
    stem_in_float: bool | None = None
    slice_strided_pointwise: bool = False
    channels_last_flatten: bool = True
    float_outputs: bool = False
    offset_weight_convs: Sequence[str] = ()
    extra_options: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_preset(self.preset)
        _set(self, "activation_type", as_enum(QuantType, self.activation_type,
                                              "activation type"))
        _set(self, "weight_type", as_enum(QuantType, self.weight_type, "weight type"))
        if not isinstance(self.extra_options, Mapping):
            raise InputError("extra_options must be a dict")
        if any(isinstance(v, str) for v in (self.nodes_to_exclude, self.op_types_to_quantize,
                                            self.offset_weight_convs)):
            raise InputError("nodes_to_exclude, op_types_to_quantize and offset_weight_convs "
                             "must be lists of names")
        _set(self, "extra_options", dict(self.extra_options))
        _set(self, "nodes_to_exclude", tuple(self.nodes_to_exclude))
        _set(self, "offset_weight_convs", tuple(self.offset_weight_convs))
        if self.op_types_to_quantize is not None:
            _set(self, "op_types_to_quantize", tuple(self.op_types_to_quantize))

    @classmethod
    def from_preset(cls, preset: str | None, **overrides: object) -> QuantScheme:
        """A scheme from ``PRESETS[preset]`` (None: the defaults) with ``overrides`` applied
        (None values are ignored, so CLI options left unset keep the preset's value)."""
        _check_preset(preset)
        base: dict[str, Any] = {**PRESETS[preset], "preset": preset} if preset else {}
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def ort_extra_options(self) -> dict[str, object]:
        """``extra_options`` for onnxruntime (symmetry flags, the compute ops whose outputs
        stay float under :attr:`float_outputs`, + the passthrough dict)."""
        out: dict[str, object] = {"ActivationSymmetric": self.activation_symmetric,
                                  "WeightSymmetric": self.weight_symmetric}
        if self.float_outputs:
            ops = [o for o in FLOAT_OUTPUT_OPS
                   if self.op_types_to_quantize is None or o in self.op_types_to_quantize]
            out["OpTypesToExcludeOutputQuantization"] = ops
        return {**out, **self.extra_options}


@dataclass(frozen=True)
class CalibrationConfig:
    """How activation ranges are calibrated (static int8), and which samples.

    Attributes:
        method: ``percentile`` (default: clips the rare outliers minmax keeps; measured:
            MobileNetV2 on Fashion-MNIST -0.01 pt vs minmax 0.14 pt and TFLite int8 0.13 pt;
            higher fp32 agreement on MobileNetV2/ResNet50/EfficientNetB0 at 224), ``minmax``
            or ``entropy``.
        samples: samples used for calibration (default 256; all when fewer).
        batch_size: batch size of the calibration reader (default 16).
        seed: seed of the calibration subset and of the held-out samples (default 0).
    """

    method: CalibrationMethod = field(default=CalibrationMethod.PERCENTILE,
                                      metadata={"flat": "calibration_method"})
    samples: int = field(default=256, metadata={"flat": "calibration_samples"})
    batch_size: int = field(default=16, metadata={"flat": "calibration_batch_size"})
    seed: int = 0

    def __post_init__(self) -> None:
        _set(self, "method", as_enum(CalibrationMethod, self.method, "calibration method"))
        if self.samples < 1:
            raise InputError(f"calibration samples must be >= 1, got {self.samples}")
        if self.batch_size < 1:
            raise InputError(f"calibration batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class GateConfig:
    """The accuracy gate, and the evidence reported with it.

    Attributes:
        max_accuracy_drop: accuracy budget in percentage points (default None: no gate).
        eval_samples: cap on evaluation samples (default 0: all).
        group_size: node groups kept in float per gate step (default 1).
        max_steps: gate steps before giving up (default 12).
        explain: static int8 only: add the per-node accuracy evidence (``explain`` section of
            the report, :mod:`edgekit.quantize.explain`; default False).
    """

    max_accuracy_drop: float | None = None
    eval_samples: int = 0
    group_size: int = field(default=1, metadata={"flat": "gate_group_size"})
    max_steps: int = field(default=12, metadata={"flat": "gate_max_steps"})
    explain: bool = False

    def __post_init__(self) -> None:
        if self.max_accuracy_drop is not None and not self.max_accuracy_drop >= 0:
            raise InputError(f"max_accuracy_drop must be >= 0 points, got {self.max_accuracy_drop}")
        if self.eval_samples < 0 or self.group_size < 1 or self.max_steps < 0:
            raise InputError("need eval_samples >= 0, gate group_size >= 1, gate max_steps >= 0, "
                             f"got {self.eval_samples}, {self.group_size}, {self.max_steps}")


@dataclass(frozen=True)
class SpeedCheckConfig:
    """The speed check: a built int8 or dynamic variant is timed against the fp32 file on this
    machine (onnxruntime on the CPU, as :class:`~edgekit.runtime.EdgeModel` runs it), after it
    passed the accuracy gate. Slower than fp32 means a latency ratio (median of per-round
    paired ratios, :func:`edgekit.speed.paired_ratio`) over ``1 + tolerance`` whose 95 %
    interval (:func:`edgekit.speed.ratio_interval`) lies above 1: by default, any slowdown
    beyond the run's noise. An explicit mode writes the
    variant anyway, with a warning; ``auto`` writes no variant then, nor one whose ratio is
    over ``1 + tolerance`` while its interval still holds 1 (the report says why).

    Attributes:
        enabled: run it (default True); False (``--no-speed-check``) keeps what is written
            independent of timing, for reproducible builds.
        budget_s: seconds at most for timing the two files interleaved (default 2.0, about 1 s
            each; it stops sooner once the ratio is stable); a first timing that leaves the
            verdict to its noise (as fast, 95 % interval wider than 0.1) goes on, its rounds
            kept, to 4x the budget and the rounds in all; the report keeps the whole timing.
        batch: batch size of the timed calls (default 1).
        threads: intra-op threads (default None: EdgeModel's default, onnxruntime's one per
            physical core; with more than one CPU, a variant that passes is timed on one
            thread too, and must pass there as well to be written by ``auto``).
        tolerance: how much slower than fp32 still counts as as fast (default 0: a variant
            surely slower, even by 2 %, is slower; a dynamic int8 text encoder measured
            1.03x [1.01, 1.04] here and 1.13x in a later run, so a default never worse than
            fp32 cannot let it through).
    """

    enabled: bool = True
    budget_s: float = 2.0
    batch: int = 1
    threads: int | None = None
    tolerance: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise InputError(f"speed check enabled must be true or false, got {self.enabled!r}")
        if not self.budget_s > 0 or self.batch < 1 or (self.threads is not None
                                                       and self.threads < 1):
            raise InputError("need speed check budget_s > 0, batch >= 1 and threads >= 1 (or "
                             f"None), got {self.budget_s}, {self.batch}, {self.threads}")
        if not 0 <= self.tolerance < 1:
            raise InputError(f"speed check tolerance must be in [0, 1), got {self.tolerance}")


@dataclass(frozen=True)
class OutputConfig:
    """The files written beside the variant.

    Attributes:
        format: ``onnx`` (default) or ``ort`` (also the ORT-format model for mobile builds,
            converted the way onnxruntime recommends for NNAPI/CoreML).
        mobile_batch: fixed batch size of the ORT-format model (default 1: NNAPI and CoreML
            need static shapes); 0 keeps the batch dimension dynamic.
    """

    format: OutputFormat = field(default=OutputFormat.ONNX, metadata={"flat": "output_format"})
    mobile_batch: int = 1

    def __post_init__(self) -> None:
        _set(self, "format", as_enum(OutputFormat, self.format, "format"))
        if self.mobile_batch < 0:
            raise InputError(f"mobile_batch must be >= 0, got {self.mobile_batch}")
