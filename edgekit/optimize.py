"""onnxruntime offline graph optimization, ORT-format conversion and the mobile usability report.

- :func:`optimize_model` saves onnxruntime's graph optimizations into an ONNX file. ``basic``
  and ``extended`` (the default) give files that run on any onnxruntime CPU build; ``all`` adds
  layout transformations (NCHWc blocking) tuned to the instruction set of the machine that
  ran it, so such a file may be slower or refused elsewhere.
- :func:`convert_to_ort` writes the ORT-format model and its ``required_operators.config``
  for a reduced-size ONNX Runtime mobile build (``onnxruntime.tools.convert_onnx_models_to_ort``
  does the same through a command line; its building blocks are used here).
- :func:`mobile_usability` reports how much of the graph the NNAPI and CoreML execution
  providers could take, from ``onnxruntime.tools.mobile_helpers.usability_checker``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from .errors import ConversionError, InputError, require

__all__ = [
    "OptimizeLevel",
    "MobileReport",
    "optimize_model",
    "convert_to_ort",
    "mobile_usability",
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
    onnx = require("onnx", "export")
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
    original = onnx.load(str(src))  # type: ignore[attr-defined]
    optimized = onnx.load(str(dst))  # type: ignore[attr-defined]
    del optimized.metadata_props[:]
    optimized.metadata_props.extend(original.metadata_props)
    optimized.doc_string = original.doc_string
    onnx.save(optimized, str(dst))  # type: ignore[attr-defined]
    return dst


def convert_to_ort(
    src: str | os.PathLike[str],
    ort_path: str | os.PathLike[str],
    config_path: str | os.PathLike[str],
    level: str | OptimizeLevel = "extended",
) -> tuple[Path, Path]:
    """Write the ORT-format model of ``src`` to ``ort_path`` and its operator config.

    ``config_path`` gets the ``required_operators.config`` for a reduced ONNX Runtime build
    (``--include_ops_by_config``). Optimizations at ``level`` (default ``extended``) are saved
    into the ORT file; the NCHWc transformer is excluded as the ORT converter does for ARM.
    """
    require("onnxruntime", "runtime")
    import logging

    import onnxruntime as ort
    from onnxruntime.tools.ort_format_model import create_config_from_models

    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)

    lvl = OptimizeLevel.parse(level)
    ort_path, config_path = Path(ort_path), Path(config_path)
    so = ort.SessionOptions()
    so.graph_optimization_level = lvl.ort_level()
    so.optimized_model_filepath = str(ort_path)
    so.add_session_config_entry("session.save_model_format", "ORT")
    so.add_session_config_entry("session.qdqisint8allowed", "0")
    _session(str(src), so, ["NchwcTransformer"] if lvl is OptimizeLevel.ALL else None)
    create_config_from_models([ort_path], config_path, False)
    return ort_path, config_path


@dataclass
class MobileReport:
    """How much of a graph an execution provider could take (per the usability checker).

    Attributes:
        ep: ``NNAPI``, ``CoreML NeuralNetwork`` or ``CoreML MLProgram``.
        nodes / supported_nodes: node counts (subgraphs included).
        partitions: graph partitions the EP would get (fewer is better).
        suitability: the checker's verdict, ``YES``, ``MAYBE`` or ``NO``.
        unsupported_ops: op types the EP cannot take.
        fixed_shapes_supported_nodes: supported nodes if dynamic input shapes were made fixed.
    """

    ep: str
    nodes: int
    supported_nodes: int
    partitions: int
    suitability: str
    unsupported_ops: list[str]
    fixed_shapes_supported_nodes: int | None = None

    @property
    def percent(self) -> float:
        """Share of nodes the EP takes, in percent."""
        return 100.0 * self.supported_nodes / max(self.nodes, 1)

    def summary(self) -> str:
        """One line for people."""
        s = (f"{self.ep}: {self.supported_nodes}/{self.nodes} nodes ({self.percent:.0f}%) in "
             f"{self.partitions} partition(s), suitable: {self.suitability}")
        if self.fixed_shapes_supported_nodes is not None:
            s += f"; {self.fixed_shapes_supported_nodes} with fixed input shapes"
        return s

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "percent": round(self.percent, 1)}


def mobile_usability(model_path: str | os.PathLike[str]) -> list[MobileReport]:
    """NNAPI and CoreML partitioning figures for ``model_path`` (optimized at ``basic`` first,
    as the ORT converter does)."""
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
    reports: list[MobileReport] = []
    with tempfile.TemporaryDirectory(prefix="edgekit-mobile-") as tmp:
        basic = optimize_model(model_path, Path(tmp) / "basic.onnx", "basic")
        model = ModelProtoWithShapeInfo(basic).model_with_shape_info
        dynamic = any(
            not d.HasField("dim_value")
            for i in model.graph.input
            for d in i.type.tensor_type.shape.dim
        )
        for ep, fn in checks:
            info = fn(model, True)
            fixed = fn(model, False).num_supported_nodes if dynamic else None
            reports.append(MobileReport(
                ep=ep,
                nodes=int(info.num_nodes),
                supported_nodes=int(info.num_supported_nodes),
                partitions=int(info.num_partitions),
                suitability=info.suitability().name,
                unsupported_ops=sorted(info.unsupported_ops),
                fixed_shapes_supported_nodes=fixed,
            ))
    return reports
