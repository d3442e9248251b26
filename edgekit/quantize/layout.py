"""Float-graph changes that a static int8 layout asks for before quantization
(:attr:`~edgekit.quantize.options.QuantScheme.slice_strided_pointwise`,
:attr:`~edgekit.quantize.options.QuantScheme.channels_last_flatten`): each one computes the
same values as the graph it replaces (up to the order of a MatMul's sums)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.io.onnxgraph import attributes, consumers, producers
from edgekit.quantize.regions import FOLLOWERS

__all__ = ["slice_strided_pointwise", "slice_strided_pointwise_file", "channels_last_flatten",
           "channels_last_flatten_file"]

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
    out, count = _rewrite_file(pre, tmp, slice_strided_pointwise, "pre_sliced.onnx")
    if count:
        notes.append(f"{count} strided 1x1 conv(s) read a strided Slice and run with stride 1 "
                     "(slice_strided_pointwise: the engine's int8 kernels take them then)")
    return out


def _rewrite_file(pre: Path, tmp: Path, rewrite: Any, name: str) -> tuple[Path, int]:
    """``rewrite(model) -> count`` on the file ``pre``: the rewritten file ``tmp / name`` and
    the count, or ``pre`` itself when nothing was rewritten."""
    import onnx

    model = onnx.load(str(pre))
    count = rewrite(model)
    if not count:
        return pre, 0
    out = tmp / name
    onnx.save(model, str(out))
    return out, count


def _flatten_width(node: Any, inits: dict[str, Any]) -> int | None:
    """K of a flatten to ``[batch, K]``: a Flatten with axis 1, or a Reshape to a constant
    ``[-1 | 0 | n, K]``; else None."""
    from onnx import numpy_helper

    if node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type == "Flatten":
        return -1 if attributes(node).get("axis", 1) == 1 else None
    if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in inits:
        return None
    shape = numpy_helper.to_array(inits[node.input[1]]).reshape(-1)
    return int(shape[1]) if len(shape) == 2 and shape[1] > 0 else None


def _dense_weight(node: Any, inits: dict[str, Any], readers: dict[str, list[Any]]
                  ) -> tuple[Any, int] | None:
    """The constant 2-D weight of a MatMul or Gemm that ``node``'s output feeds as its first
    input, read by nothing else, and the weight's axis of the flattened features."""
    users = readers.get(node.output[0], [])
    if len(users) != 1 or users[0].input[0] != node.output[0]:
        return None
    dense = users[0]
    if dense.op_type not in ("MatMul", "Gemm") or len(dense.input) < 2:
        return None
    w = inits.get(dense.input[1])
    a = attributes(dense)
    if w is None or len(w.dims) != 2 or len(readers.get(w.name, [])) != 1 or a.get("transA"):
        return None
    return w, 1 if a.get("transB") else 0


def _feeding_conv(tensor: str, made_by: dict[str, Any]) -> Any | None:
    """The Conv whose output reaches ``tensor`` through activations and pooling only."""
    node = made_by.get(tensor)
    while node is not None and node.op_type in FOLLOWERS:
        node = made_by.get(node.input[0])
    return node if node is not None and node.op_type == "Conv" else None


def _flatten_into_dense(node: Any, inits: dict[str, Any], readers: dict[str, list[Any]],
                        made_by: dict[str, Any], float_convs: frozenset[str]
                        ) -> tuple[int, tuple[Any, int]] | None:
    """``(flatten width, (Dense weight, its feature axis))`` when ``node`` flattens the map of
    an int8 conv into a Dense layer (the width -1 for a Flatten); else None."""
    width = _flatten_width(node, inits)
    dense = _dense_weight(node, inits, readers) if width is not None else None
    conv = _feeding_conv(node.input[0], made_by) if dense else None
    if width is None or dense is None or conv is None or conv.name in float_convs:
        return None
    return width, dense


def _map_dims(width: int, shape: list[int | None] | None) -> list[int] | None:
    """The dims without the batch of a flattened map of ``shape`` (``width`` wide) that has
    channels and more than one pixel, all static; else None."""
    if not shape or len(shape) < 3:
        return None
    tail = [d for d in shape[1:] if d is not None]
    k = int(np.prod(tail))
    if len(tail) != len(shape) - 1 or width not in (-1, k) or k == tail[0]:
        return None
    return tail


def channels_last_flatten(model: Any, float_convs: frozenset[str] = frozenset()) -> int:
    """Rewrite, in place, each flatten (``Flatten`` axis 1, or ``Reshape`` to ``[batch, K]``)
    of a conv's feature map ``[batch, C, *spatial]`` (spatial size above 1, static) that feeds
    a MatMul or Gemm with a constant weight as a ``Transpose`` to channels-last followed by the
    same flatten, with the weight's rows permuted to match. onnxruntime runs an int8 conv, its
    pooling and its activation channels-last (NHWC QLinearConv) and inserts a Transpose back
    to channels-first before a flatten that reads them; the added Transpose cancels that one.
    Only a map whose conv runs in int8 gains: a conv named in ``float_convs`` (kept in float)
    is left alone. Returns the number of flattens rewritten."""
    from onnx import helper, numpy_helper, shape_inference

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    readers, made_by = consumers(graph), producers(graph)
    # by position: protobuf (upb) makes a node's Python wrapper anew on each read, and a freed
    # wrapper's id() is reused, so ids do not name nodes
    hits = {i: hit for i, n in enumerate(graph.node)
            if (hit := _flatten_into_dense(n, inits, readers, made_by, float_convs))}
    if not hits:  # most graphs: no shape inference (a copy of the whole model) needed
        return 0
    dims = {v.name: [d.dim_value if d.HasField("dim_value") else None
                     for d in v.type.tensor_type.shape.dim]
            for v in shape_inference.infer_shapes(model).graph.value_info}
    taken = {n.name for n in graph.node}
    nodes: list[Any] = []
    count = 0
    for i, node in enumerate(graph.node):
        hit = hits.get(i)
        tail = _map_dims(hit[0], dims.get(node.input[0])) if hit else None
        if hit is None or tail is None:
            nodes.append(node)
            continue
        w_init, axis = hit[1]
        k = int(np.prod(tail))
        w = numpy_helper.to_array(w_init)
        rank = len(tail)
        # row j of the channels-last flatten is row order[j] of the channels-first one
        order = np.arange(k).reshape(tail).transpose(*range(1, rank), 0).reshape(-1)
        w_init.CopyFrom(numpy_helper.from_array(np.take(w, order, axis=axis), w_init.name))
        name = f"{node.name or 'flatten'}_channels_last"
        while name in taken:
            name += "_"
        taken.add(name)
        nodes.append(helper.make_node("Transpose", [node.input[0]], [f"{name}_output"],
                                      name=name, perm=[0, *range(2, rank + 1), 1]))
        node.input[0] = f"{name}_output"
        nodes.append(node)
        count += 1
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
    return count


def channels_last_flatten_file(pre: Path, tmp: Path, notes: list[str],
                               float_convs: frozenset[str] = frozenset()) -> Path:
    """:func:`channels_last_flatten` on the file ``pre``: the rewritten file (under ``tmp``)
    and a note, or ``pre`` itself when it has no such flatten."""
    out, count = _rewrite_file(pre, tmp, lambda m: channels_last_flatten(m, float_convs),
                               "pre_channels_last.onnx")
    if count:
        notes.append(f"{count} flatten(s) of an int8 conv's feature map read it channels-last "
                     "(channels_last_flatten: onnxruntime's int8 convs run channels-last, and "
                     "the flatten then needs no transpose back)")
    return out
