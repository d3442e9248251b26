"""The three dummy models of KServe's V2 server tests (kserve ``python/kserve/test/
test_server.py``) rebuilt as small ONNX graphs, so that `edgekit serve` can answer KServe's cases.

- ``TestModel``: ``input-0`` INT32 [N, M] -> ``output-0`` (Identity: an echo).
- ``FP16InputModel``: ``fp16_input`` FP16 [2, 4] and ``str_input`` BYTES [2, 4] ->
  ``str_output`` BYTES [8] (the strings, flattened) and ``fp32_output`` FP32 [8] (the FP16
  values cast to FP32, flattened).
- ``FP16OutputModel``: ``fp32_input`` FP32 [2, 4] -> ``fp16_output`` FP16 [8] (cast to FP16,
  flattened) and ``fp32_output`` FP32 [8] (flattened).

The file names are KServe's model names, so `edgekit serve` serves them under the same names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["KSERVE_MODELS", "make_kserve_models"]

F32, F16, I32, STR = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT32, TensorProto.STRING
_FLAT = numpy_helper.from_array(np.array([-1], np.int64), "flat")


def _io(name: str, elem: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _graphs() -> dict[str, onnx.GraphProto]:
    echo = helper.make_graph(
        [helper.make_node("Identity", ["input-0"], ["output-0"])], "TestModel",
        [_io("input-0", I32, ["N", "M"])], [_io("output-0", I32, ["N", "M"])],
    )  # fmt: skip
    fp16_in = helper.make_graph(
        [
            helper.make_node("Reshape", ["str_input", "flat"], ["str_output"]),
            helper.make_node("Cast", ["fp16_input"], ["as_fp32"], to=F32),
            helper.make_node("Reshape", ["as_fp32", "flat"], ["fp32_output"]),
        ],
        "FP16InputModel",
        [_io("fp16_input", F16, [2, 4]), _io("str_input", STR, [2, 4])],
        [_io("str_output", STR, [8]), _io("fp32_output", F32, [8])],
        initializer=[_FLAT],
    )
    fp16_out = helper.make_graph(
        [
            helper.make_node("Cast", ["fp32_input"], ["as_fp16"], to=F16),
            helper.make_node("Reshape", ["as_fp16", "flat"], ["fp16_output"]),
            helper.make_node("Reshape", ["fp32_input", "flat"], ["fp32_output"]),
        ],
        "FP16OutputModel",
        [_io("fp32_input", F32, [2, 4])],
        [_io("fp16_output", F16, [8]), _io("fp32_output", F32, [8])],
        initializer=[_FLAT],
    )
    return {"TestModel": echo, "FP16InputModel": fp16_in, "FP16OutputModel": fp16_out}


KSERVE_MODELS = ("TestModel", "FP16InputModel", "FP16OutputModel")


def make_kserve_models(folder: Path) -> dict[str, Path]:
    """``folder/<name>.onnx`` for each of KSERVE_MODELS; returns ``{name: path}``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, graph in _graphs().items():
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        paths[name] = folder / f"{name}.onnx"
        onnx.save(model, str(paths[name]))
    return paths
