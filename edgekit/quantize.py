"""Quantization of an fp32 ONNX model: static int8 (QDQ), dynamic int8, fp16, with an accuracy gate.

- ``int8``: static post-training quantization in QDQ format (``quant_pre_process`` first, then
  ``quantize_static`` with a calibration reader over the user's data).
- ``dynamic``: dynamic int8 (weights int8, activations quantized at run time): the right choice
  for LSTM/GRU and Dense-heavy models (static QDQ leaves LSTM in float).
- ``fp16``: float16 weights and compute, float32 inputs/outputs kept
  (``onnxconverter_common.float16.convert_float_to_float16(keep_io_types=True)``).
- ``auto``: ``int8`` for convolutional models, ``dynamic`` for recurrent and Dense-only ones.

Every variant then gets onnxruntime's offline graph optimization at the chosen level
(see :mod:`edgekit.optimize`). With labelled evaluation data the fp32 and quantized accuracy
are compared; when the drop exceeds ``max_accuracy_drop`` the nodes that lose the most
(``onnxruntime.quantization.qdq_loss_debug`` on calibration data) are kept in float, one group
at a time, until the gate holds, or :class:`AccuracyGateError` is raised and nothing is written.

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from .data import Dataset, TensorSpecInfo, load_dataset
from .errors import AccuracyGateError, ConversionError, DataError, InputError, require
from .metadata import PREFIX, ModelMetadata
from .optimize import OptimizeLevel, convert_to_ort, mobile_usability, optimize_model
from .validate import accuracy, compare_outputs, run_onnx

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
    "variant_names",
    "quantize_model",
    "quantize_file",
    "export_hook",
    "METADATA_KEY",
]

METADATA_KEY = PREFIX + "quantization"
RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN"})
CONV_OPS = frozenset({"Conv", "ConvTranspose"})


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
        reduce_range: 7-bit weights for non-VNNI x86 (default False).
        calibration_method: ``minmax`` (default), ``entropy`` or ``percentile``.
        calibration_samples: samples used for calibration (default 256; all when fewer).
        calibration_batch_size: batch size of the calibration reader (default 16).
        op_types_to_quantize: op types to quantize (default: all that onnxruntime can).
        nodes_to_exclude: node names kept in float (default none).
        extra_options: passed through to onnxruntime's ``extra_options`` (default none).
        optimize: onnxruntime offline graph optimization level saved into the file:
            ``extended`` (default, portable), ``basic``, ``all`` (machine-specific), ``disable``.
        output_format: ``onnx`` (default) or ``ort`` (also the ORT-format model).
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
    reduce_range: bool = False
    calibration_method: CalibrationMethod = CalibrationMethod.MINMAX
    calibration_samples: int = 256
    calibration_batch_size: int = 16
    op_types_to_quantize: list[str] | None = None
    nodes_to_exclude: list[str] = field(default_factory=list)
    extra_options: dict[str, Any] = field(default_factory=dict)
    optimize: OptimizeLevel = OptimizeLevel.EXTENDED
    output_format: OutputFormat = OutputFormat.ONNX
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
        self.optimize = OptimizeLevel.parse(self.optimize)
        self.output_format = _enum(OutputFormat, self.output_format, "format")
        if self.preset is not None and self.preset not in PRESETS:
            raise InputError(f"unknown preset {self.preset!r}",
                             hint=f"use one of {', '.join(PRESETS)}")
        if self.calibration_samples < 1:
            raise InputError(f"calibration_samples must be >= 1, got {self.calibration_samples}")
        if self.calibration_batch_size < 1:
            raise InputError("calibration_batch_size must be >= 1")
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
    """What :func:`quantize_model` wrote and measured (``to_dict`` is the report section)."""

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

    @property
    def size_ratio(self) -> float:
        """Variant file size / fp32 file size."""
        return self.size_bytes / max(self.fp32_size_bytes, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "requested_mode": self.requested_mode,
            "path": self.path.name,
            "size_bytes": self.size_bytes,
            "fp32_size_bytes": self.fp32_size_bytes,
            "size_ratio": round(self.size_ratio, 4),
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


def variant_lines(variant: Mapping[str, Any], outdir: Path) -> list[str]:
    """A report's variant section (:meth:`VariantResult.to_dict`) as lines for people."""
    lines = [f"wrote {outdir / variant['path']} ({variant['size_bytes'] / 1024:.1f} KiB, "
             f"{100 * variant['size_ratio']:.1f}% of fp32)"]
    ev = variant.get("evaluation")
    if ev and ev.get("accuracy") is not None:
        lines.append(f"{variant['mode']} accuracy {ev['accuracy']:.2f}% vs fp32 "
                     f"{ev['fp32_accuracy']:.2f}% (drop {ev['accuracy_drop']:+.2f} pt, top-1 "
                     f"agreement {100 * (ev['top1_agreement'] or 0):.2f}%, "
                     f"{ev['samples']} samples)")
    elif ev:
        lines.append(f"{variant['mode']} vs fp32: max abs error {ev['max_abs_error']:.3g} on "
                     f"{ev['samples']} samples")
    gate = variant.get("gate")
    if gate:
        kept = gate.get("kept_in_float") or []
        lines.append(f"accuracy gate ({gate['max_accuracy_drop']:g} pt): met"
                     + (f", kept in float: {', '.join(kept)}" if kept else ""))
    for m in variant.get("mobile") or []:
        lines.append(f"{m['ep']}: {m['supported_nodes']}/{m['nodes']} nodes "
                     f"({m['percent']:.0f}%) in {m['partitions']} partition(s)")
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
    from .recipes.text_lstm import load_data
    from .text import TextTokenizer

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
    from .export import prepare_inputs

    names = [s.name for s in specs]
    if isinstance(data, Dataset):
        ds = data
    else:
        p = Path(data)
        if not p.exists():
            raise InputError(f"{what} file {p} does not exist", hint="check the path")
        if p.is_dir():
            from .datasets import load_image_data

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
    feeds, more = prepare_inputs(list(specs), ds, meta)
    notes.extend(f"{what}: {n}" for n in more)
    return feeds, ds.labels, notes, ds.source or "in-memory dataset"


# ---------------------------------------------------------------------------------------------
# Modes and names
# ---------------------------------------------------------------------------------------------
def resolve_mode(model_proto: Any, mode: QuantMode | str) -> tuple[QuantMode, str | None]:
    """The concrete mode for ``mode`` (``auto``: int8 for conv nets, dynamic for recurrent or
    Dense-only ones) and the reason when it was chosen automatically."""
    mode = _enum(QuantMode, mode, "quantization mode")
    if mode is not QuantMode.AUTO:
        return mode, None
    ops = {n.op_type for n in model_proto.graph.node}
    if ops & RECURRENT_OPS:
        rec = sorted(ops & RECURRENT_OPS)
        return QuantMode.DYNAMIC, f"auto: dynamic int8 (recurrent ops {', '.join(rec)})"
    if ops & CONV_OPS:
        return QuantMode.INT8, "auto: static int8 (convolutional model)"
    return QuantMode.DYNAMIC, "auto: dynamic int8 (no convolutions: Dense-heavy model)"


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
            from onnxconverter_common.float16 import convert_float_to_float16

            m = onnx.load(str(pre))  # type: ignore[attr-defined]
            m16 = convert_float_to_float16(m, keep_io_types=True, node_block_list=exclude or None)
            onnx.save(m16, str(out))  # type: ignore[attr-defined]
    except (InputError, DataError):
        raise
    except Exception as exc:
        raise ConversionError(f"{mode.value} quantization failed: {_first(exc)}",
                              hint="try another --quantize mode or --preset") from exc


def _evaluate(fp32: list[np.ndarray], got: list[np.ndarray], labels: np.ndarray | None,
              fp32_acc: float | None) -> dict[str, Any]:
    cmp = compare_outputs(fp32, got)
    ev: dict[str, Any] = {"samples": cmp.n_samples, "max_abs_error": cmp.max_abs_error,
                          "mean_abs_error": cmp.mean_abs_error,
                          "top1_agreement": cmp.top1_agreement,
                          "fp32_accuracy": fp32_acc, "accuracy": None, "accuracy_drop": None}
    if labels is not None and fp32_acc is not None:
        acc = accuracy(got[0], labels)
        ev.update(accuracy=acc, accuracy_drop=fp32_acc - acc)
    return ev


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
    model = onnx.load(str(pre))  # type: ignore[attr-defined]
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


_Built = tuple[Path, dict[str, Any] | None]
_GateResult = tuple[Path, dict[str, Any], dict[str, Any]]


def _progress(fn: Callable[[str], None] | None, msg: str) -> None:
    if fn is not None:
        fn(msg)


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

    Args:
        model: fp32 ``.onnx`` path or ``onnx.ModelProto``.
        outdir: where the variant files go (must exist; nothing is written on failure).
        stem: file stem (default: the model file's stem, or ``"model"``).
        config: options (default ``QuantizationConfig()``: static int8, avx512_vnni values).
        calibration: calibration data (needed by ``int8``); see :func:`load_model_data`.
        eval_data: labelled data for the accuracy figures and the gate (test split of folders).
        progress: called with short status lines for the slow steps.

    Raises:
        InputError / DataError for bad options or data, AccuracyGateError when the gate
        cannot be met (with the best figures reached), ConversionError when onnxruntime fails.
    """
    onnx = require("onnx", "export")
    require("onnxruntime", "runtime")
    cfg = config or QuantizationConfig()
    outdir = Path(outdir)
    if isinstance(model, str | os.PathLike):
        from .info import load_onnx

        stem = stem or Path(model).name.removesuffix(".onnx")
        proto = load_onnx(model)
    else:
        stem, proto = stem or "model", model
    mode, auto_note = resolve_mode(proto, cfg.mode)
    if mode is QuantMode.NONE:
        raise InputError("quantization mode 'none' builds no variant")
    if cfg.max_accuracy_drop is not None and eval_data is None:
        raise InputError("--max-accuracy-drop needs labelled --eval-data",
                         hint="pass --eval-data FILE (npz with x and y, or an IDX folder)")
    if mode is QuantMode.INT8 and calibration is None:
        raise InputError("static int8 quantization needs calibration data",
                         hint="pass --calibration FILE (npz/npy or an IDX folder), or use "
                         "--quantize dynamic")
    meta = ModelMetadata.from_props({p.key: p.value for p in proto.metadata_props})
    specs = onnx_input_specs(proto)
    names = variant_names(stem, mode, cfg.output_format)
    notes: list[str] = [auto_note] if auto_note else []
    timings: dict[str, float] = {}
    result_cal: dict[str, Any] | None = None
    reader: ArrayCalibrationReader | None = None

    t0 = time.perf_counter()
    if calibration is not None and mode is QuantMode.INT8:
        feeds, _, cal_notes, desc = load_model_data(
            calibration, specs, meta, "calibration data", "train", cfg.calibration_samples,
            cfg.seed)
        n = len(next(iter(feeds.values())))
        if n < cfg.calibration_samples:
            cal_notes.append(f"calibration: {cfg.calibration_samples} samples asked, {desc} has "
                             f"only {n}; calibrated on all {n}")
        notes.extend(cal_notes)
        reader = ArrayCalibrationReader(feeds, cfg.calibration_batch_size)
        result_cal = {"data": desc, "samples": n, "requested_samples": cfg.calibration_samples,
                      "method": cfg.calibration_method.value}
    ev_feeds: dict[str, np.ndarray] | None = None
    labels: np.ndarray | None = None
    ev_desc = ""
    if eval_data is not None:
        ev_feeds, labels, ev_notes, ev_desc = load_model_data(
            eval_data, specs, meta, "evaluation data", "test", cfg.eval_samples, cfg.seed)
        notes.extend(ev_notes)
        if cfg.max_accuracy_drop is not None and labels is None:
            raise DataError(f"evaluation data {ev_desc} has no labels (array 'y')",
                            hint="the accuracy gate needs labelled --eval-data")
    timings["data"] = round(time.perf_counter() - t0, 3)

    with tempfile.TemporaryDirectory(prefix="edgekit-quant-") as tmp_s:
        tmp = Path(tmp_s)
        fp32_path = tmp / "fp32.onnx"
        onnx.save(proto, str(fp32_path))  # type: ignore[attr-defined]
        fp32_size = fp32_path.stat().st_size
        fp32_out: list[np.ndarray] | None = None
        fp32_acc: float | None = None
        if ev_feeds is not None:
            fp32_out = run_onnx(fp32_path, ev_feeds, batch_size=256)
            fp32_acc = accuracy(fp32_out[0], labels) if labels is not None else None

        t0 = time.perf_counter()
        if mode is QuantMode.FP16:
            # onnxruntime's CPU optimizer would wrap fp16 ops in Casts and fold the weights back
            # to fp32, so fp16 models are optimized (at most at basic level) before conversion.
            level = (OptimizeLevel.BASIC if cfg.optimize is not OptimizeLevel.DISABLE
                     else cfg.optimize)
            pre = optimize_model(fp32_path, tmp / "pre.onnx", level)
            notes.append(f"fp16: graph optimized at level {level.value} before conversion "
                         "(later levels would fold fp16 weights back to fp32 on CPU)")
        else:
            pre = _preprocess(fp32_path, tmp / "pre.onnx", notes)
        timings["preprocess"] = round(time.perf_counter() - t0, 3)

        def build(exclude: list[str], tag: str) -> tuple[Path, dict[str, Any] | None]:
            raw, final = tmp / f"raw_{tag}.onnx", tmp / f"opt_{tag}.onnx"
            _progress(progress, f"{mode.value}: quantizing"
                      + (f" ({len(exclude)} node(s) kept in float)" if exclude else "")
                      + (f", calibrating on {reader.n} samples" if reader is not None else ""))
            _quantize_raw(pre, raw, mode, cfg, reader, exclude)
            optimize_model(raw, final, "disable" if mode is QuantMode.FP16 else cfg.optimize)
            ev = None
            if ev_feeds is not None and fp32_out is not None:
                got = run_onnx(final, ev_feeds, batch_size=256)
                ev = _evaluate(fp32_out, got, labels, fp32_acc)
            return final, ev

        t0 = time.perf_counter()
        exclude = list(cfg.nodes_to_exclude)
        final, ev = build(exclude, "0")
        gate: dict[str, Any] | None = None
        if cfg.max_accuracy_drop is not None and ev is not None:
            gate = {"max_accuracy_drop": cfg.max_accuracy_drop, "met": False,
                    "kept_in_float": [], "steps": []}
            best = ev
            gate["steps"].append({"kept_in_float": 0, "accuracy": ev["accuracy"],
                                  "accuracy_drop": ev["accuracy_drop"]})
            if ev["accuracy_drop"] > cfg.max_accuracy_drop:
                final, ev, best = _run_gate(
                    cfg, mode, pre, tmp, reader, ev, exclude, gate, build, progress)
            gate["met"] = ev["accuracy_drop"] <= cfg.max_accuracy_drop
            if not gate["met"]:
                raise AccuracyGateError(
                    f"{mode.value} model cannot meet --max-accuracy-drop "
                    f"{cfg.max_accuracy_drop:g} pt: best accuracy {best['accuracy']:.2f}% vs fp32 "
                    f"{best['fp32_accuracy']:.2f}% (drop {best['accuracy_drop']:.2f} pt) after "
                    f"keeping {len(gate['kept_in_float'])} node(s) in float; no {mode.value} "
                    "model was written",
                    hint="raise --max-accuracy-drop, try --calibration-method entropy or "
                    "percentile, more --calibration-samples, or --quantize fp16",
                )
        timings["quantize"] = round(time.perf_counter() - t0, 3)
        used = cfg.replace(nodes_to_exclude=exclude, mode=mode)

        qmodel = onnx.load(str(final))  # type: ignore[attr-defined]
        from .export import set_metadata_props

        set_metadata_props(qmodel, {METADATA_KEY: json.dumps(used.to_dict()),
                                    PREFIX + "variant": mode.value})
        data = qmodel.SerializeToString()
        out_model = outdir / names["model"]
        files = {"model": names["model"], "config": names["config"]}
        mobile = None
        staged: list[tuple[Path, bytes]] = [(out_model, data)]
        if cfg.output_format is OutputFormat.ORT:
            t0 = time.perf_counter()
            _progress(progress, f"{mode.value}: converting to ORT format")
            src = tmp / names["model"]
            src.write_bytes(data)
            ort_p, conf_p = convert_to_ort(src, tmp / names["ort"], tmp / names["ort_config"],
                                           cfg.optimize)
            staged += [(outdir / names["ort"], ort_p.read_bytes()),
                       (outdir / names["ort_config"], conf_p.read_bytes())]
            files.update(ort=names["ort"], ort_config=names["ort_config"])
            mobile = [r.to_dict() for r in mobile_usability(src)]
            timings["ort"] = round(time.perf_counter() - t0, 3)
        from collections import Counter

        result = VariantResult(
            mode=mode.value, requested_mode=cfg.mode.value, path=out_model, size_bytes=len(data),
            fp32_size_bytes=fp32_size, config=used, files=files, calibration=result_cal,
            evaluation=None if ev is None else {"data": ev_desc, **ev}, gate=gate, mobile=mobile,
            notes=notes, timings_s=timings,
            op_histogram=dict(Counter(n.op_type for n in qmodel.graph.node).most_common()),
        )
        from .artifacts import to_json

        staged.append((outdir / names["config"], (to_json(used.to_dict()) + "\n").encode()))
        for path, blob in staged:  # all checks passed: write
            path.write_bytes(blob)
    return result


def _run_gate(cfg: QuantizationConfig, mode: QuantMode, pre: Path, tmp: Path,
              reader: ArrayCalibrationReader | None, ev: dict[str, Any], exclude: list[str],
              gate: dict[str, Any], build: Callable[[list[str], str], _Built],
              progress: Callable[[str], None] | None) -> _GateResult:
    """Keep node groups in float, worst first, until the gate holds (or steps run out)."""
    import onnx

    best, final = ev, tmp / "opt_0.onnx"
    if mode is not QuantMode.INT8 or reader is None:
        gate["note"] = f"no per-node search for {mode.value} (needs static int8 QDQ)"
        return final, ev, best
    _progress(progress, "gate: ranking nodes by quantization loss (qdq_loss_debug)")
    float_model = onnx.load(str(pre))  # type: ignore[attr-defined]
    quantizable = {n.name for n in float_model.graph.node
                   if cfg.op_types_to_quantize is None or n.op_type in cfg.op_types_to_quantize}
    groups = _node_groups(pre, tmp / "raw_0.onnx", reader, tmp, quantizable)
    gate["ranking"] = [{"nodes": g, "sqnr_loss_db": round(s, 2)} for s, g in groups[:20]]
    step = 0
    for i in range(0, len(groups), cfg.gate_group_size):
        if step >= cfg.gate_max_steps:
            break
        new = [m for _, g in groups[i:i + cfg.gate_group_size] for m in g if m not in exclude]
        if not new:
            continue
        step += 1
        exclude.extend(new)
        _progress(progress, f"gate step {step}: keeping {', '.join(new)} in float")
        final, ev2 = build(exclude, str(step))
        assert ev2 is not None
        ev = ev2
        gate["kept_in_float"] = list(exclude)
        gate["steps"].append({"kept_in_float": len(exclude), "nodes": new,
                              "accuracy": ev["accuracy"], "accuracy_drop": ev["accuracy_drop"]})
        if ev["accuracy_drop"] < best["accuracy_drop"]:
            best = ev
        if ev["accuracy_drop"] <= cfg.max_accuracy_drop:  # type: ignore[operator]
            break
    return final, ev, best


# ---------------------------------------------------------------------------------------------
# The export hook
# ---------------------------------------------------------------------------------------------
def export_hook(
    config: QuantizationConfig,
    calibration: str | os.PathLike[str] | Dataset | None = None,
    eval_data: str | os.PathLike[str] | Dataset | None = None,
    progress: Callable[[str], None] | None = None,
) -> Callable[[Any, Any, Any, dict[str, Any]], None]:
    """An ``extra_outputs`` hook for :func:`edgekit.export.export_model` that stages the variant
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
        names = variant_names(stem, mode, config.output_format)
        stage = [artifacts.add(n) for n in names.values()][0].parent
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
    from .artifacts import ArtifactSet, atomic_write_json
    from .info import load_onnx

    cfg = config or QuantizationConfig(mode=QuantMode.AUTO)
    _check_paths(calibration, eval_data)
    proto = load_onnx(model)
    path = Path(model)
    stem = path.name.removesuffix(".onnx")
    out = Path(outdir) if outdir is not None else path.parent
    mode, _ = resolve_mode(proto, cfg.mode)
    names = variant_names(stem, mode, cfg.output_format)
    artifacts = ArtifactSet(out, names.values(), force=force)
    artifacts.check()
    with artifacts.open():
        stage = artifacts.path(names["model"]).parent
        result = quantize_model(proto, stage, stem, cfg, calibration, eval_data, progress)
    result.path = artifacts.final(names["model"])
    result.fp32_size_bytes = path.stat().st_size
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
