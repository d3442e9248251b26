"""QDQ changes that choose an engine's integer kernel without changing a value.

onnxruntime (1.32, x86-64) runs a QDQ ``Conv`` whose int8 weights have zero point 0 through its
symmetric-convolution kernels (MLAS ``ConvSym``: AVX2, AVX-512, VNNI), and one with any other
weight zero point through im2col and its integer GEMM (MLAS ``QGEMM``, which uses AMX on Xeons
that have it). Shifting a conv's int8 weights by one and giving them a zero point of the same
one keeps every dequantized weight (``(q + 1 - 1) * scale``), so the file computes the same
convolution and only the kernel changes. Measured, one thread, single ``QLinearConv`` nodes
timed with zero point 0 and 1 (Intel Xeon with AMX + AVX-512 VNNI):

==============================================  ============  ===========
conv (input channels -> output, kernel, size)   zero point 0  zero point 1
==============================================  ============  ===========
Conv1D 128 -> 128, kernel 7, stride 3, 500 steps    99 us        66 us
1x1, 1152 -> 192, 7x7                               69 us        44 us
1x1, 256 -> 64, 56x56                              342 us       354 us
3x3, 64 -> 64, 56x56                               460 us       563 us
1x1, 16 -> 96, 112x112                             474 us      1146 us
==============================================  ============  ===========

Which kernel is faster depends on the conv and the CPU, so nothing here decides it:
``edgekit tune`` profiles the file both ways per conv on the machine it runs on and offsets the
convs that gain (:attr:`~edgekit.quantize.options.QuantScheme.offset_weight_convs`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from edgekit.errors import InputError
from edgekit.io.onnxgraph import attributes, consumers, producers
from edgekit.quantize.qdq import drop_unread_initializers

__all__ = ["offset_candidates", "offset_conv_weights", "offset_note"]


def _weight_dq(node: Any, producers: dict[str, Any], inits: dict[str, Any],
               readers: dict[str, int]) -> Any | None:
    """The DequantizeLinear giving ``node`` (a Conv, one group) its int8 weights with zero
    points 0 and room for a shift of one, read by that Conv only; else None."""
    from onnx import numpy_helper

    if node.op_type != "Conv" or len(node.input) < 2 or attributes(node).get("group", 1) != 1:
        return None
    dq = producers.get(node.input[1])
    if (dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 3
            or readers.get(dq.output[0], 0) != 1
            or dq.input[0] not in inits or dq.input[2] not in inits):
        return None
    q, zp = numpy_helper.to_array(inits[dq.input[0]]), numpy_helper.to_array(inits[dq.input[2]])
    if q.dtype != np.int8 or zp.any() or q.size == 0 or (q.max() == 127 and q.min() == -128):
        return None
    return dq


def _index(graph: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, int]]:
    """Producers, initializers and the number of readers (nodes and graph outputs) by name."""
    readers = {name: len(users) for name, users in consumers(graph).items()}
    for o in graph.output:
        readers[o.name] = readers.get(o.name, 0) + 1
    return producers(graph), {t.name: t for t in graph.initializer}, readers


def offset_candidates(model: Any) -> list[str]:
    """Names of the Convs of the QDQ ``model`` whose weights :func:`offset_conv_weights` can
    shift: one group (depthwise and grouped convs keep their symmetric kernels), int8 weights
    with zero points 0 from a DequantizeLinear that only this Conv reads."""
    producers, inits, readers = _index(model.graph)
    return [n.name for n in model.graph.node
            if n.name and _weight_dq(n, producers, inits, readers) is not None]


def offset_conv_weights(model: Any, names: Iterable[str]) -> list[str]:
    """Shift, in place, the int8 weights of the Convs ``names`` of the QDQ ``model`` by one and
    set their zero points to that one (up where the weights leave room, else down): the same
    dequantized weights, read by onnxruntime's im2col + GEMM kernels instead of its symmetric
    ones. The shifted weights and zero points are new initializers (another node reading the
    old ones keeps them). Returns the names done, in graph order.

    Raises:
        InputError: a name that is not such a Conv in ``model``.
    """
    from onnx import numpy_helper

    graph = model.graph
    producers, inits, readers = _index(graph)
    wanted = list(dict.fromkeys(names))
    by_name = {n.name: n for n in graph.node if n.name}
    bad = [w for w in wanted if w not in by_name
           or _weight_dq(by_name[w], producers, inits, readers) is None]
    if bad:
        raise InputError(
            f"offset_weight_convs names {len(bad)} node(s) that are not Convs with symmetric "
            f"int8 weights in this model: {', '.join(bad[:5])}",
            hint="name Convs of one group whose weights are quantized (edgekit tune finds them)")
    done: list[str] = []
    replaced: set[str] = set()
    for node in graph.node:
        if node.name not in wanted:
            continue
        dq = _weight_dq(node, producers, inits, readers)
        assert dq is not None  # checked above
        q = numpy_helper.to_array(inits[dq.input[0]]).astype(np.int16)
        zp = numpy_helper.to_array(inits[dq.input[2]])
        step = 1 if q.max() < 127 else -1
        for slot, value in ((0, q + step), (2, np.full_like(zp, step))):
            replaced.add(dq.input[slot])
            name = _fresh(f"{dq.input[slot]}_offset", inits)
            tensor = numpy_helper.from_array(np.asarray(value).astype(np.int8), name)
            graph.initializer.append(tensor)
            inits[name] = tensor
            dq.input[slot] = name
        done.append(node.name)
    drop_unread_initializers(graph, replaced)
    return done


def _fresh(base: str, taken: dict[str, Any]) -> str:
    name = base
    while name in taken:
        name += "_"
    return name



def offset_note(done: Sequence[str]) -> str:
    """The variant's note on the convs whose weights were offset."""
    return (f"{len(done)} conv(s) with their int8 weights shifted by one and a matching zero "
            "point (offset_weight_convs: the same values, run by onnxruntime's GEMM kernels "
            "instead of its symmetric-conv ones)")
