"""Float-graph changes that a static int8 layout asks for before quantization
(:attr:`~edgekit.quantize.options.QuantScheme.slice_strided_pointwise`): each one computes
the same values as the graph it replaces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.io.onnxgraph import attributes

__all__ = ["slice_strided_pointwise", "slice_strided_pointwise_file"]

_INT64_MAX = np.iinfo(np.int64).max


def _strided_pointwise(node: Any) -> list[int] | None:
    """The strides of a 1x1 (or 1) Conv with a stride above 1 and no padding, else None."""
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx"):
        return None
    a = attributes(node)
    kernel, strides = list(a.get("kernel_shape", [])), list(a.get("strides", []))
    pad = a.get("auto_pad", b"NOTSET")
    pad = pad.decode() if isinstance(pad, bytes) else pad
    if (not kernel or any(k != 1 for k in kernel) or len(strides) != len(kernel)
            or all(s == 1 for s in strides) or any(a.get("pads", []))
            or pad not in ("NOTSET", "VALID")):
        return None
    return strides


def slice_strided_pointwise(model: Any) -> int:
    """Rewrite, in place, every 1x1 Conv with strides > 1 and no padding as a Slice with those
    steps on its spatial axes followed by the same Conv with stride 1 (the Conv keeps its name
    and weights; the values are identical). OpenVINO runs such a strided 1x1 Conv of a QDQ file
    in f32 (ResNet50's six downsampling convs: 5 of its 14 ms at batch 1, AMX Xeon); after the
    Slice it runs in int8. Returns the number of convs rewritten."""
    from onnx import helper, numpy_helper

    graph = model.graph
    taken = {n.name for n in graph.node} | {t.name for t in graph.initializer}
    nodes: list[Any] = []
    count = 0
    for node in graph.node:
        strides = _strided_pointwise(node)
        if strides is not None:
            base = f"{node.name or 'conv'}_strided"
            while base in taken:
                base += "_"
            taken.add(base)
            axes = list(range(2, 2 + len(strides)))
            consts = {"starts": [0] * len(axes), "ends": [_INT64_MAX] * len(axes),
                      "axes": axes, "steps": strides}
            for key, value in consts.items():
                graph.initializer.append(
                    numpy_helper.from_array(np.array(value, np.int64), f"{base}_{key}"))
            sliced = f"{base}_input"
            nodes.append(helper.make_node(
                "Slice", [node.input[0], *(f"{base}_{k}" for k in consts)], [sliced],
                name=f"{base}_slice"))
            node.input[0] = sliced
            for attr in node.attribute:
                if attr.name == "strides":
                    attr.ints[:] = [1] * len(strides)
            count += 1
        nodes.append(node)
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
    return count


def slice_strided_pointwise_file(pre: Path, tmp: Path, notes: list[str]) -> Path:
    """:func:`slice_strided_pointwise` on the file ``pre``: the rewritten file (under ``tmp``)
    and a note, or ``pre`` itself when it has no such conv."""
    import onnx

    model = onnx.load(str(pre))
    count = slice_strided_pointwise(model)
    if not count:
        return pre
    out = tmp / "pre_sliced.onnx"
    onnx.save(model, str(out))
    notes.append(f"{count} strided 1x1 conv(s) read a strided Slice and run with stride 1 "
                 "(slice_strided_pointwise: the engine's int8 kernels take them then)")
    return out
