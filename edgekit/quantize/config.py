"""Quantization settings (:class:`QuantizationConfig`, composed of the groups of
:mod:`edgekit.quantize.options`), variant names and the result record of one variant."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.configs import check_groups, config_from_dict, config_to_dict, flat_keys
from edgekit.metadata import PREFIX
from edgekit.quantize.options import (
    CalibrationConfig,
    GateConfig,
    OutputConfig,
    OutputFormat,
    QuantMode,
    QuantScheme,
    SpeedCheckConfig,
    as_enum,
)
from edgekit.quantize.ort_format import mobile_line
from edgekit.quantize.speed import speed_lines
from edgekit.runtime.engine_record import engines_line

if TYPE_CHECKING:
    import onnx

__all__ = [
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


@dataclass(frozen=True)
class QuantizationConfig:
    """Every option of :func:`quantize_model` (validated; saved as JSON with the model): the
    variant to build and its four concerns, each a dataclass of its own.

    Attributes:
        mode: ``int8`` (default), ``dynamic``, ``fp16``, ``auto`` or ``none``.
        scheme: what to quantize and into what (:class:`QuantScheme`: types, ranges,
            per-channel, nodes kept in float).
        calibration: how activation ranges are calibrated (:class:`CalibrationConfig`).
        gate: the accuracy gate and its evidence (:class:`GateConfig`; default: no gate).
        speed: the speed check against fp32 on this machine (:class:`SpeedCheckConfig`;
            default: on, batch 1).
        output: the files written (:class:`OutputConfig`: ONNX, or also the ORT format).

    Change a field with :func:`dataclasses.replace` on the config and its group, e.g.
    ``replace(cfg, scheme=replace(cfg.scheme, per_channel=False))``.
    """

    mode: QuantMode = QuantMode.INT8
    scheme: QuantScheme = field(default_factory=QuantScheme)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    speed: SpeedCheckConfig = field(default_factory=SpeedCheckConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", as_enum(QuantMode, self.mode, "quantization mode"))
        check_groups(self)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready nested dict (enums as their values; one object per group)."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> QuantizationConfig:
        """Inverse of :meth:`to_dict`; also reads the flat dicts written before the groups
        existed (``{"mode": "int8", "calibration_method": "minmax", ...}``, the
        ``edgekit.quantization`` metadata and ``.quant.json`` files of older variants) and
        those written before the speed check (its defaults). Unknown keys are ignored."""
        return config_from_dict(cls, d, _FLAT_KEYS)


#: old flat key -> "group.field", for reading files written before the groups existed
_FLAT_KEYS = flat_keys(QuantizationConfig)


@dataclass
class VariantResult:
    """What :func:`quantize_model` wrote and measured (``to_dict`` is the report section).

    ``written`` is False when ``auto`` decided no variant is worth writing (``notes`` say why);
    ``portable`` is False when the file uses ops outside ai.onnx (dynamic int8 of LSTMs);
    ``engines`` is the per-engine proof of the file (:mod:`edgekit.runtime.proof`);
    ``speed`` is its speed check against fp32 on this machine (:mod:`edgekit.quantize.speed`).
    """

    mode: str
    requested_mode: str
    path: Path
    size_bytes: int
    fp32_size_bytes: int
    config: QuantizationConfig
    files: dict[str, str] = field(default_factory=dict)
    artifacts: list[dict[str, object]] = field(default_factory=list)
    calibration: dict[str, object] | None = None
    evaluation: dict[str, object] | None = None
    gate: dict[str, object] | None = None
    explain: list[dict[str, object]] | None = None
    mobile: list[dict[str, object]] | None = None
    notes: list[str] = field(default_factory=list)
    op_histogram: dict[str, int] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    written: bool = True
    portable: bool = True
    nonstandard_ops: list[str] = field(default_factory=list)
    engines: dict[str, dict[str, object]] = field(default_factory=dict)
    speed: dict[str, object] | None = None

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

    def to_dict(self) -> dict[str, object]:
        """The report's variant section (JSON-ready)."""
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
            "speed": self.speed,
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
    rel = ev.get("relative_error") if ev.get("classes") is False else None
    agreement = (f"top-1 agreement {100 * agree:.2f}%, " if agree is not None else
                 f"relative error {100 * rel:.2f}%, " if rel is not None else "")
    return (f"{head}{agreement}mean abs diff {ev['mean_abs_error']:.2g}, max "
            f"{ev['max_abs_error']:.2g} on {where} ({ev['data']})")


def variant_lines(variant: Mapping[str, object], outdir: Path) -> list[str]:
    """A report's variant section (:meth:`VariantResult.to_dict`) as lines for people."""
    return _variant_lines(variant, outdir)


def _variant_lines(variant: Mapping[str, Any], outdir: Path) -> list[str]:
    speed = variant.get("speed")
    if not variant.get("written", True):
        return [*speed_lines(speed, False), *(f"note: {n}" for n in variant.get("notes") or [])]
    lines = [f"wrote {outdir / variant['path']} ({variant['size_bytes'] / 1024:.1f} KiB, "
             f"{100 * variant['size_ratio']:.1f}% of fp32)"]
    ev = variant.get("evaluation")
    if ev:
        lines.append(_evaluation_line(variant["mode"], ev))
    if variant.get("engines"):
        lines.append(engines_line(variant["engines"]))
    lines.extend(speed_lines(speed, True))
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
def _weight_bytes(model_proto: onnx.ModelProto) -> int:
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


def resolve_mode(model_proto: onnx.ModelProto,
                 mode: QuantMode | str) -> tuple[QuantMode, str | None]:
    """The concrete mode for ``mode`` and, for ``auto``, the reason for the choice.

    ``auto``: dynamic int8 for recurrent models (static QDQ leaves LSTM/GRU in float), static
    int8 for convolutional ones, dynamic int8 for other models with at least
    :data:`AUTO_MIN_DENSE_WEIGHT_BYTES` of Dense and Embedding weights (an Embedding table is a
    weight like a Dense kernel: int8 shrinks it 4x), and ``none`` (no variant) for smaller ones.
    """
    mode = as_enum(QuantMode, mode, "quantization mode")
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
    tag = as_enum(QuantMode, mode, "quantization mode").value
    names = {"model": f"{stem}.{tag}.onnx", "config": f"{stem}.{tag}.quant.json"}
    if as_enum(OutputFormat, fmt, "format") is OutputFormat.ORT:
        names["ort"] = f"{stem}.{tag}.ort"
        names["ort_config"] = f"{stem}.{tag}.required_operators.config"
    return names


