"""onnxruntime offline graph optimization, ORT-format conversion and the mobile usability report.

- :func:`optimize_model` saves onnxruntime's graph optimizations into an ONNX file. ``basic``
  and ``extended`` (the default) give files that run on any onnxruntime CPU build; ``all`` adds
  layout transformations (NCHWc blocking) tuned to the instruction set of the machine that
  ran it, so such a file may be slower or refused elsewhere.
- :func:`convert_to_ort` writes the ORT-format model and its ``required_operators.config``
  for a reduced-size ONNX Runtime mobile build with onnxruntime's own converter
  (``onnxruntime.tools.convert_onnx_models_to_ort``, ``Runtime`` optimization style).
- :func:`mobile_usability` reports how much of the graph (nodes and compute) the NNAPI and
  CoreML execution providers could take, from onnxruntime's usability checker.

edgekit's artifacts are never saved at ``extended``/``all``: those levels write
onnxruntime-only fused ops (QLinearConv, com.microsoft.QGemm ...) that OpenVINO and the mobile
EPs refuse. :func:`optimize_model` serves internal steps (fp16 preparation, the checker).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import ConversionError, InputError, require
from edgekit.io.tempdirs import temp_dir

__all__ = [
    "OptimizeLevel",
    "MobileReport",
    "optimize_model",
    "convert_to_ort",
    "mobile_usability",
    "mobile_line",
    "node_macs",
]


class OptimizeLevel(StrEnum):
    """onnxruntime graph optimization levels (``extended`` is edgekit's default)."""

    DISABLE = "disable"
    BASIC = "basic"
    EXTENDED = "extended"
    ALL = "all"

    @classmethod
    def parse(cls, value: str | OptimizeLevel) -> OptimizeLevel:
        """The level named ``value`` or :class:`InputError`."""
        try:
            return cls(value)
        except ValueError:
            raise InputError(
                f"unknown optimization level {value!r}",
                hint=f"use one of {', '.join(v.value for v in cls)}",
            ) from None

    def ort_level(self) -> Any:
        """The matching ``onnxruntime.GraphOptimizationLevel``."""
        import onnxruntime as ort

        return {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.value]


def _session(src: str, so: Any, disabled: list[str] | None = None) -> Any:
    import onnxruntime as ort

    try:
        return ort.InferenceSession(
            src, sess_options=so, providers=["CPUExecutionProvider"], disabled_optimizers=disabled
        )
    except Exception as exc:
        raise ConversionError(
            f"onnxruntime cannot load {Path(src).name}: {str(exc).strip().splitlines()[0][:300]}",
            hint="the model may use ops this onnxruntime build lacks",
        ) from exc


def optimize_model(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    level: str | OptimizeLevel = "extended",
) -> Path:
    """Save onnxruntime's offline graph optimizations of ``src`` at ``level`` into ``dst``.

    Metadata (``metadata_props``) of ``src`` is copied over. ``disable`` copies the file.
    Default level: ``extended`` (portable across machines; ``all`` is machine-specific).
    """
    import onnx
    require("onnxruntime", "runtime")
    import onnxruntime as ort

    lvl = OptimizeLevel.parse(level)
    src, dst = Path(src), Path(dst)
    if lvl is OptimizeLevel.DISABLE:
        dst.write_bytes(src.read_bytes())
        return dst
    so = ort.SessionOptions()
    so.graph_optimization_level = lvl.ort_level()
    so.optimized_model_filepath = str(dst)
    _session(str(src), so)
    original = onnx.load(str(src))
    optimized = onnx.load(str(dst))
    del optimized.metadata_props[:]
    optimized.metadata_props.extend(original.metadata_props)
    optimized.doc_string = original.doc_string
    onnx.save(optimized, str(dst))
    return dst


def _fixed_batch_copy(src: Path, dst: Path, batch: int) -> Path:
    """``src`` with the first (batch) dimension of every input fixed to ``batch``."""
    import onnx
    from onnxruntime.tools.onnx_model_utils import make_input_shape_fixed

    model = onnx.load(str(src))
    inits = {i.name for i in model.graph.initializer}
    for vi in model.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if vi.name in inits or not dims or dims[0].HasField("dim_value"):
            continue
        shape = [batch] + [d.dim_value if d.HasField("dim_value") else -1 for d in dims[1:]]
        if all(d > 0 for d in shape):
            make_input_shape_fixed(model.graph, vi.name, shape)
        else:
            dims[0].Clear()
            dims[0].dim_value = batch
    onnx.save(model, str(dst))
    return dst


def convert_to_ort(
    src: str | os.PathLike[str],
    ort_path: str | os.PathLike[str],
    config_path: str | os.PathLike[str],
    batch: int = 1,
) -> tuple[Path, Path, list[MobileReport]]:
    """ORT-format model of ``src`` for mobile builds, its operator config and EP reports.

    Uses onnxruntime's own converter (``convert_onnx_models_to_ort``) with the ``Runtime``
    optimization style that its documentation recommends for NNAPI and CoreML: basic
    optimizations are applied, the rest are saved and replayed only for nodes the EP does not
    take. ``batch`` fixes the batch dimension (default 1; NNAPI and CoreML need static shapes;
    0 keeps it dynamic). ``config_path`` gets the ``required_operators.config`` for a reduced
    build (``--include_ops_by_config``). Returns the two paths and :func:`mobile_usability`.
    """
    require("onnxruntime", "runtime")
    import contextlib
    import io
    import shutil

    from onnxruntime.tools.convert_onnx_models_to_ort import (
        OptimizationStyle,
        convert_onnx_models_to_ort,
    )

    ort_path, config_path, src = Path(ort_path), Path(config_path), Path(src)
    with temp_dir("edgekit-ort-") as tmp_s:
        tmp = Path(tmp_s)
        model = tmp / "in" / "model.onnx"
        model.parent.mkdir()
        if batch:
            _fixed_batch_copy(src, model, batch)
        else:
            shutil.copyfile(src, model)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                convert_onnx_models_to_ort(model, tmp / "out", [OptimizationStyle.Runtime])
        except Exception as exc:
            raise ConversionError(f"onnxruntime's ORT converter failed: {_first_line(exc)}",
                                  hint="the model may use ops the ORT format cannot store") from exc
        shutil.move(str(next((tmp / "out").glob("*.ort"))), ort_path)
        shutil.move(str(next((tmp / "out").glob("*.config"))), config_path)
        reports = mobile_usability(model)
    return ort_path, config_path, reports


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


#: why an EP cannot take a node, for the op types that block the ones we produce
_BLOCKER_REASONS = {
    "ai.onnx:QuantizeLinear": "this EP's op list has no QuantizeLinear/DequantizeLinear: it "
    "cannot run QDQ int8 models; use the fp16 or fp32 variant for it",
    "ai.onnx:DequantizeLinear": "this EP's op list has no QuantizeLinear/DequantizeLinear: it "
    "cannot run QDQ int8 models; use the fp16 or fp32 variant for it",
}


@dataclass
class MobileReport:
    """How much of a graph an execution provider could take (per the usability checker).

    Attributes:
        ep: ``NNAPI``, ``CoreML NeuralNetwork``, ``CoreML MLProgram``, ``XNNPACK`` or ``QNN``.
        nodes / supported_nodes: node counts (subgraphs included); None where unknown.
        partitions: graph partitions the EP would get (fewer is better).
        suitability: the checker's verdict, ``YES``, ``MAYBE``, ``NO`` or ``UNKNOWN``.
        unsupported_ops: op types the EP cannot take.
        compute_share: share (0..1) of the model's multiply-accumulates in supported nodes.
        note: why ops are blocked, or why the checker cannot tell.
    """

    ep: str
    nodes: int | None
    supported_nodes: int | None
    partitions: int | None
    suitability: str
    unsupported_ops: list[str]
    compute_share: float | None = None
    note: str | None = None

    @property
    def percent(self) -> float | None:
        """Share of nodes the EP takes, in percent."""
        if self.nodes is None or self.supported_nodes is None:
            return None
        return 100.0 * self.supported_nodes / max(self.nodes, 1)

    def summary(self) -> str:
        """One line for people."""
        return mobile_line(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        pct = self.percent
        return {**asdict(self), "percent": None if pct is None else round(pct, 1)}


def mobile_line(report: dict[str, Any]) -> str:
    """One line of a :class:`MobileReport` dict for people."""
    if report.get("nodes") is None:
        return f"{report['ep']}: not checked ({report.get('note')})"
    share = report.get("compute_share")
    line = (f"{report['ep']}: {report['supported_nodes']}/{report['nodes']} nodes "
            f"({report['percent']:.0f}%) in {report['partitions']} partition(s)"
            + (f", {100 * share:.0f}% of the compute" if share is not None else "")
            + f", suitable: {report['suitability']}")
    if report.get("unsupported_ops"):
        line += f"; unsupported: {', '.join(report['unsupported_ops'])}"
    if report.get("note"):
        line += f" ({report['note']})"
    return line


def node_macs(model: Any) -> dict[str, int]:
    """Multiply-accumulates per Conv/ConvTranspose/MatMul/Gemm node (inferred shapes; a
    dynamic dimension counts as 1)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    shapes = {v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]
              for v in [*g.input, *g.output, *g.value_info]}
    shapes.update({i.name: list(i.dims) for i in g.initializer})
    macs: dict[str, int] = {}
    for n in g.node:
        out = shapes.get(n.output[0]) if n.output else None
        w = shapes.get(n.input[1]) if len(n.input) > 1 else None
        if not out or not w:
            continue
        if n.op_type in ("Conv", "ConvTranspose"):
            macs[n.name] = int(np.prod(out)) * int(np.prod(w[1:]))
        elif n.op_type in ("MatMul", "Gemm"):
            macs[n.name] = int(np.prod(out)) * int(w[0] if n.op_type == "Gemm" else w[-2])
    return macs


def _report(ep: str, info: Any, macs: dict[str, int]) -> MobileReport:
    supported = {n.name for group in info.supported_groups for n in group}
    total = sum(macs.values())
    unsupported = sorted(info.unsupported_ops)
    reasons = sorted({_BLOCKER_REASONS[o] for o in unsupported if o in _BLOCKER_REASONS})
    return MobileReport(
        ep=ep, nodes=int(info.num_nodes), supported_nodes=int(info.num_supported_nodes),
        partitions=int(info.num_partitions), suitability=info.suitability().name,
        unsupported_ops=unsupported,
        compute_share=(sum(v for k, v in macs.items() if k in supported) / total) if total
        else None,
        note="; ".join(reasons) or None)


def mobile_usability(model_path: str | os.PathLike[str]) -> list[MobileReport]:
    """NNAPI and CoreML partitioning figures for ``model_path`` from onnxruntime's usability
    checker (on the graph optimized at ``basic``, as the ORT converter does), with the share of
    compute each EP takes; XNNPACK and QNN are listed as not known to the checker."""
    require("onnxruntime", "runtime")
    from onnxruntime.tools.mobile_helpers import usability_checker as uc
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo

    checks = [
        ("NNAPI", uc.check_nnapi_partitions),
        ("CoreML NeuralNetwork",
         lambda m, f: uc.check_coreml_partitions(m, f, "coreml_supported_neuralnetwork_ops.md")),
        ("CoreML MLProgram",
         lambda m, f: uc.check_coreml_partitions(m, f, "coreml_supported_mlprogram_ops.md")),
    ]
    with temp_dir("edgekit-mobile-") as tmp:
        basic = optimize_model(model_path, Path(tmp) / "basic.onnx", "basic")
        model = ModelProtoWithShapeInfo(basic).model_with_shape_info
        macs = node_macs(model)
        reports = [_report(ep, fn(model, True), macs) for ep, fn in checks]
    unknown = "onnxruntime's usability checker has no op list for this EP; test it on the device"
    reports += [MobileReport(ep, None, None, None, "UNKNOWN", [], None, unknown)
                for ep in ("XNNPACK", "QNN")]
    return reports
