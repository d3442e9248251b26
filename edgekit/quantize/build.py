"""Building one quantized file (onnxruntime's quantizers on the pre-processed float graph) and
the accuracy gate that keeps the worst node groups in float until it holds."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.agreement import Agreement, compare_predictions, gate
from edgekit.errors import AccuracyGateError, ConversionError, DataError, InputError, require
from edgekit.io.onnxgraph import consumers
from edgekit.progress import StatusFn
from edgekit.progress import status as report_progress
from edgekit.quantize.calibration import (
    ArrayCalibrationReader,
    CheckData,
)
from edgekit.quantize.config import QuantizationConfig
from edgekit.quantize.explain import activation_errors, tensor_losses
from edgekit.quantize.kernels import offset_conv_weights, offset_note
from edgekit.quantize.options import CalibrationMethod, QuantMode, QuantScheme
from edgekit.quantize.ort_format import OptimizeLevel, optimize_model
from edgekit.quantize.qdq import commute_relu_maxpool, float_means, nonstandard_ops
from edgekit.validate import accuracy, run_onnx

__all__ = [
    "Builder",
    "Build",
    "CHECK_RUN_BATCH",
    "prepare_float",
    "check_gate",
    "working_dir",
]

#: the check samples run through fp32 and each build in batches of this many (fewer where a
#: batch of the fp32 file's activations would pass
#: :data:`~edgekit.io.memory.BATCH_MEMORY_BYTES`; every build uses fp32's batch, so that a
#: model whose outputs mix the batch is compared on the same whole batches)
CHECK_RUN_BATCH = 256

# ---------------------------------------------------------------------------------------------
# The quantizers
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def working_dir(path: Path) -> Iterator[None]:
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


def _passes(reader: ArrayCalibrationReader) -> dict[str, int]:
    """onnxruntime's option to calibrate ``reader.stride`` batches per pass (its name says
    MinMax; the histogram calibrators merge their passes too)."""
    return {"CalibStridedMinMax": reader.stride} if reader.stride else {}


def _first(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]


def _quantize_raw(pre: Path, out: Path, mode: QuantMode, cfg: QuantizationConfig,
                  reader: ArrayCalibrationReader | None, exclude: list[str]) -> None:
    from onnxruntime import quantization as q

    scheme = cfg.scheme
    try:
        if mode is QuantMode.INT8:
            assert reader is not None
            reader.rewind()
            # onnxruntime's histogram calibrators print progress to stdout; keep stdout clean
            # (``--json`` output, progress bars)
            with contextlib.redirect_stdout(io.StringIO()):
                q.quantize_static(
                    str(pre), str(out), reader, quant_format=q.QuantFormat.QDQ,
                    op_types_to_quantize=scheme.op_types_to_quantize,
                    per_channel=scheme.per_channel, reduce_range=scheme.reduce_range,
                    activation_type=scheme.activation_type.ort(),
                    weight_type=scheme.weight_type.ort(), nodes_to_exclude=exclude or None,
                    calibrate_method=cfg.calibration.method.ort(),
                    extra_options={**scheme.ort_extra_options(), **_passes(reader)},
                )
        elif mode is QuantMode.DYNAMIC:
            q.quantize_dynamic(
                str(pre), str(out), op_types_to_quantize=scheme.op_types_to_quantize,
                per_channel=scheme.per_channel, reduce_range=scheme.reduce_range,
                weight_type=scheme.weight_type.ort(), nodes_to_exclude=exclude or None,
                extra_options=scheme.ort_extra_options(),
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


def _finish_graph(raw: Path, out: Path, mode: QuantMode, scheme: QuantScheme,
                  exclude: list[str], notes: list[str]) -> list[str]:
    """Post-process a quantized file into the artifact: float regions stay float under
    onnxruntime's default optimizations; the convs of ``scheme.offset_weight_convs`` get
    offset weights, except those ``exclude`` keeps in float (the accuracy gate's, the stem);
    QDQ and fp16 files must use ai.onnx ops only. Returns the non-standard ops (allowed for
    dynamic int8 only)."""
    import onnx

    model = onnx.load(str(raw))
    if mode is QuantMode.INT8:
        commute_relu_maxpool(model)
        float_means(model)
        offset = [n for n in scheme.offset_weight_convs if n not in exclude]
        if offset:
            note = offset_note(offset_conv_weights(model, offset))
            if note not in notes:
                notes.append(note)
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


def _node_groups(pre: Path, model: Any, qdq: Path, reader: ArrayCalibrationReader,
                 tmp: Path, quantizable: set[str]) -> list[tuple[float, list[str]]]:
    """Groups of float-model node names, worst first, from per-tensor errors between the fp32
    and QDQ graphs (:func:`~edgekit.quantize.explain.tensor_losses`, the statistic of
    ``--explain``): a group is the region that computes a tensor (its producer and the nodes back
    to the nearest measured tensors: a MatMul and the Relu fused after it) plus the quantized
    nodes that consume it, scored by the SQNR (dB) the tensor loses in that region. ``model``
    is the float model at ``pre``, already loaded."""
    errors = activation_errors(pre, qdq, reader, tmp)
    readers = consumers(model.graph)
    groups: list[tuple[float, list[str]]] = []
    for t in tensor_losses(model, errors):
        members = [n for n in reversed(t.region) if n]
        members += [c.name for c in readers.get(t.tensor, []) if c.name]
        members = [m for m in dict.fromkeys(members) if m in quantizable]
        if members:
            groups.append((t.loss_db, members))
    return groups


# ---------------------------------------------------------------------------------------------
# Building and checking one variant
# ---------------------------------------------------------------------------------------------
@dataclass
class Build:
    """One quantized file and how it compares with fp32 on the check samples."""

    path: Path
    agreement: Agreement
    accuracy: float | None
    nonstandard: list[str]

    def evaluation(self, data: CheckData, fp32_accuracy: float | None) -> dict[str, Any]:
        """The report's ``evaluation`` section."""
        drop = None if self.accuracy is None or fp32_accuracy is None else (
            fp32_accuracy - self.accuracy)
        return {"data": data.check_desc, "held_out": data.held_out, **self.agreement.to_dict(),
                "fp32_accuracy": fp32_accuracy, "accuracy": self.accuracy,
                "accuracy_drop": drop}


@dataclass
class Builder:
    """Quantizes the pre-processed model with a list of nodes kept in float and checks the
    result against the fp32 outputs on the check samples."""

    mode: QuantMode
    cfg: QuantizationConfig
    pre: Path
    tmp: Path
    data: CheckData
    fp32_out: np.ndarray
    progress: StatusFn | None
    count: int = 0
    notes: list[str] = field(default_factory=list)
    whole: bool = False  # outputs not per-sample: run on the same whole batches as fp32
    check_batch: int = CHECK_RUN_BATCH  # fp32's batch for the check samples (the same batches)
    classes: bool = True  # the first output scores classes (False: compared by its values)

    def build(self, exclude: list[str]) -> Build:
        self.count += 1
        raw, final = self.tmp / f"raw_{self.count}.onnx", self.tmp / f"final_{self.count}.onnx"
        reader = self.data.reader
        report_progress(self.progress, f"{self.mode.value}: quantizing"
                  + (f" ({len(exclude)} node(s) kept in float)" if exclude else "")
                  + (f", calibrating on {reader.n} samples" if reader is not None else ""))
        try:
            _quantize_raw(self.pre, raw, self.mode, self.cfg, reader, exclude)
        except ConversionError as exc:
            if not self._histogram_failed(exc):
                raise
            _quantize_raw(self.pre, raw, self.mode, self.cfg, reader, exclude)
        odd = _finish_graph(raw, final, self.mode, self.cfg.scheme, exclude, self.notes)
        got = run_onnx(final, self.data.check_feeds, batch_size=self.check_batch,
                       whole=self.whole)[0]
        labels = self.data.check_labels
        acc = accuracy(got, labels) if labels is not None else None
        return Build(final, compare_predictions(self.fp32_out, got, labels, self.classes), acc,
                     odd)

    def _histogram_failed(self, exc: ConversionError) -> bool:
        """Whether ``exc`` is numpy refusing a histogram calibrator's bins for a tensor whose
        range is degenerate (ConvNeXt's layer scales); then this builder calibrates with
        min/max from now on and says so."""
        if "Too many bins" not in exc.message or \
                self.cfg.calibration.method is CalibrationMethod.MINMAX:
            return False
        self.notes.append(
            f"{self.cfg.calibration.method.value} calibration failed on a tensor with a "
            f"degenerate value range ({exc.message.split(': ', 1)[-1]}): calibrated with "
            "minmax instead")
        self.cfg = dataclasses.replace(self.cfg, calibration=dataclasses.replace(
            self.cfg.calibration, method=CalibrationMethod.MINMAX))
        return True


def _gate_ok(build: Build, budget: float | None) -> bool:
    return budget is None or gate(build.agreement, budget)[0]


def _run_gate(builder: Builder, first: Build, exclude: list[str],
              gate_info: dict[str, Any]) -> Build:
    """Keep node groups in float, worst first, until the gate holds (or steps run out)."""
    import onnx

    cfg, budget = builder.cfg, builder.cfg.gate.max_accuracy_drop
    current = first
    if builder.mode is not QuantMode.INT8 or builder.data.reader is None:
        gate_info["note"] = f"no per-node search for {builder.mode.value} (needs static int8 QDQ)"
        return current
    report_progress(builder.progress, "gate: ranking nodes by quantization loss (qdq_loss_debug)")
    float_model = onnx.load(str(builder.pre))
    ops = cfg.scheme.op_types_to_quantize
    quantizable = {n.name for n in float_model.graph.node if ops is None or n.op_type in ops}
    groups = _node_groups(builder.pre, float_model, first.path, builder.data.reader, builder.tmp,
                          quantizable)
    gate_info["ranking"] = [{"nodes": g, "sqnr_loss_db": round(s, 2)} for s, g in groups[:20]]
    for step in range(cfg.gate.max_steps):
        start = step * cfg.gate.group_size
        new = [m for _, g in groups[start:start + cfg.gate.group_size] for m in g
               if m not in exclude]
        if start >= len(groups):
            break
        if not new:
            continue
        exclude.extend(new)
        report_progress(builder.progress,
                        f"gate step {step + 1}: keeping {', '.join(new)} in float")
        current = builder.build(exclude)
        gate_info["kept_in_float"] = list(exclude)
        gate_info["steps"].append(_gate_step(current, budget, new))
        if _gate_ok(current, budget):
            break
    return current


def _gate_step(build: Build, budget: float | None, nodes: list[str] | None = None
               ) -> dict[str, Any]:
    ok, lower, reason = gate(build.agreement, budget or 0.0)
    step: dict[str, Any] = {"accuracy": build.accuracy, "met": ok,
                            "lower_bound_pt": round(lower, 3), "reason": reason}
    if nodes is not None:
        step["nodes"] = nodes
    return step


def check_gate(builder: Builder, first: Build, exclude: list[str]
                ) -> tuple[Build, dict[str, Any] | None]:
    """Apply ``max_accuracy_drop`` (needs labels): the build that meets it, and the gate report;
    :class:`AccuracyGateError` when none does."""
    budget = builder.cfg.gate.max_accuracy_drop
    if budget is None:
        return first, None
    classes = first.agreement.classes
    statistic = ("paired accuracy drop, one standard error" if classes else
                 "relative error against fp32, in percent (a regression output)")
    gate_info: dict[str, Any] = {"max_accuracy_drop": budget, "met": False, "kept_in_float": [],
                                 "statistic": statistic, "steps": [_gate_step(first, budget)]}
    final = first if _gate_ok(first, budget) else _run_gate(builder, first, exclude, gate_info)
    gate_info["met"] = _gate_ok(final, budget)
    if not gate_info["met"]:
        best = (max([first, final], key=lambda b: b.accuracy or 0.0) if classes else
                min([first, final], key=lambda b: gate(b.agreement, budget)[1]))
        accuracy = "" if best.accuracy is None else f" (accuracy {best.accuracy:.2f}%)"
        raise AccuracyGateError(
            f"{builder.mode.value} model cannot meet --max-accuracy-drop {budget:g} pt: "
            f"{gate(best.agreement, budget)[2]}{accuracy} after keeping "
            f"{len(gate_info['kept_in_float'])} node(s) in float; no {builder.mode.value} model "
            "was written",
            hint="raise --max-accuracy-drop, try --calibration-method entropy or "
            "percentile, more --calibration-samples, or --quantize fp16",
        )
    return final, gate_info


def prepare_float(fp32_path: Path, tmp: Path, mode: QuantMode, notes: list[str]) -> Path:
    """The float graph the quantizer starts from: ``quant_pre_process`` for int8 (shape
    inference, fusions) and dynamic; onnxruntime's basic level for fp16 (later levels would fold
    fp16 weights back to fp32 on the CPU)."""
    if mode is QuantMode.FP16:
        return optimize_model(fp32_path, tmp / "pre.onnx", OptimizeLevel.BASIC)
    return _preprocess(fp32_path, tmp / "pre.onnx", notes)


