"""``edgekit inspect``: what an ONNX model holds (inputs, outputs, opset, ops, size, metadata)."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import InputError, ModelLoadError
from edgekit.inputs.data import format_shape

__all__ = ["ModelInfo", "inspect_model", "format_info", "load_onnx"]

_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
           10: "float16", 11: "float64", 16: "bfloat16"}


@dataclass
class ModelInfo:
    """Summary of an ONNX model file."""

    path: str
    size_bytes: int
    opset: dict[str, int]
    producer: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    op_histogram: dict[str, int]
    nodes: int
    parameters: int
    initializer_bytes: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_onnx(path: str | os.PathLike[str]) -> Any:
    """Load an ``onnx.ModelProto`` with clear errors for missing, truncated or non-ONNX files."""
    import onnx
    p = Path(path)
    if not p.exists():
        raise InputError(f"model file {p} does not exist", hint="check the path")
    if p.is_dir() or p.stat().st_size == 0:
        what = "a folder" if p.is_dir() else "empty"
        raise ModelLoadError(f"{p} is not an ONNX model file ({what})")
    try:
        model = onnx.load(str(p))
    except Exception as exc:
        raise ModelLoadError(
            f"{p} is not a valid ONNX model (truncated or corrupt): "
            f"{str(exc).splitlines()[0][:200]}",
            hint="export the model again",
        ) from exc
    if not model.graph.node and not model.graph.output:
        raise ModelLoadError(f"{p} is not a valid ONNX model (no graph)", hint="export it again")
    bad = next((t for t in _tensors(model.graph) if _tensor_problem(t)), None)
    if bad is not None:
        raise ModelLoadError(
            f"{p} is corrupt: tensor {bad.name!r} {_tensor_problem(bad)}",
            hint="the file was damaged or written by a faulty tool: export the model again",
        )
    return model


def _tensors(graph: Any) -> Any:
    """Every initializer and Constant value of ``graph`` and its subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for g in attr.graphs:
                yield from _tensors(g)


#: bytes per element of the fixed-size ONNX tensor types (TensorProto.DataType)
_ITEMSIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2,
             17: 1, 18: 1, 19: 1, 20: 1}


def _tensor_problem(t: Any) -> str | None:
    """Why tensor ``t``'s embedded data cannot match its shape and type, else None."""
    if t.data_location == 1 or t.data_type not in _ITEMSIZE:  # external data, odd types
        return None
    n = 1
    for d in t.dims:
        if d < 0:
            return f"has a negative dimension {list(t.dims)}"
        n *= d
    if t.raw_data:
        need = n * _ITEMSIZE[t.data_type]
        if len(t.raw_data) != need:
            return (f"holds {len(t.raw_data)} bytes but its shape {list(t.dims)} and type "
                    f"need {need}")
        return None
    import onnx

    field = onnx.helper.tensor_dtype_to_field(t.data_type)
    have = len(getattr(t, field))
    if have not in (n, 0) or (have == 0 and n > 0 and not t.HasField("segment")):
        return f"holds {have} values but its shape {list(t.dims)} needs {n}"
    return None


def _value_info(v: Any) -> dict[str, Any]:
    t = v.type.tensor_type
    dims = [d.dim_param or (d.dim_value if d.HasField("dim_value") else None) for d in t.shape.dim]
    return {"name": v.name, "shape": dims, "dtype": _DTYPES.get(t.elem_type, str(t.elem_type))}


def _decode(v: str) -> Any:
    try:
        return json.loads(v)
    except (ValueError, RecursionError):  # not JSON, or absurdly nested: shown as it is
        return v


def inspect_model(path: str | os.PathLike[str]) -> ModelInfo:
    """Read an ONNX file and summarise it (no onnxruntime session is created)."""
    import numpy as np

    model = load_onnx(path)
    graph = model.graph
    init_names = {i.name for i in graph.initializer}
    params, nbytes = 0, 0
    for init in graph.initializer:
        if init.data_type in (6, 7):  # int32/int64: shapes and indices, not parameters
            continue
        n = int(np.prod(init.dims)) if len(init.dims) else 1
        params += n
        nbytes += len(init.raw_data) if init.raw_data else n * 4  # approx. for typed fields
    return ModelInfo(
        path=str(path),
        size_bytes=Path(path).stat().st_size,
        opset={(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        inputs=[_value_info(v) for v in graph.input if v.name not in init_names],
        outputs=[_value_info(v) for v in graph.output],
        op_histogram=dict(Counter(n.op_type for n in graph.node).most_common()),
        nodes=len(graph.node),
        parameters=params,
        initializer_bytes=nbytes,
        metadata={p.key: _decode(p.value) for p in model.metadata_props},
    )


def format_info(info: ModelInfo) -> str:
    """Human-readable multi-line summary."""
    lines = [
        f"model:      {info.path}",
        f"size:       {info.size_bytes / 1024:.1f} KiB  ({info.parameters:,} parameters)",
        f"opset:      {', '.join(f'{k} {v}' for k, v in info.opset.items())}",
        f"producer:   {info.producer}",
        "inputs:",
        *[f"  {i['name']:<24} {i['dtype']:<8} {format_shape(i['shape'])}" for i in info.inputs],
        "outputs:",
        *[f"  {o['name']:<24} {o['dtype']:<8} {format_shape(o['shape'])}" for o in info.outputs],
        f"ops ({info.nodes} nodes):",
        *[f"  {op:<24} {n}" for op, n in info.op_histogram.items()],
    ]
    if info.metadata:
        lines.append("metadata:")
        for k, v in info.metadata.items():
            text = v if isinstance(v, str) else json.dumps(v)
            lines.append(f"  {k:<24} {text if len(text) <= 70 else text[:67] + '...'}")
    return "\n".join(lines)
