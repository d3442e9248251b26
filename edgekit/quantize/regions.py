"""Regions of a graph that static int8 keeps in float: the stem conv of an image model with
few input channels (the structural default), and the float regions the tune tries.

A region is a compute node plus the chain of its single-consumer followers (activations,
pooling), so that the switch back to int8 quantizes the smallest tensor and the float part
keeps its fused kernels.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

__all__ = ["FOLLOWERS", "STEM_FLOAT_MAX_CHANNELS", "float_region", "stem_and_depthwise",
           "stem_float_region"]

#: Cheap ops that follow a compute node and join its float region.
FOLLOWERS = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Tanh", "MaxPool",
             "AveragePool"}

#: A stem conv reading at most this many channels (greyscale, RGB, RGBA) stays in float by
#: default. Measured, 1 thread: int8 is slower there on every CPU we reached, and the whole
#: file faster without it: the Fashion CNN (1 channel) at batch 1 is 1.25x slower than fp32
#: in plain int8 and 1.4x faster with its stem in float on AMD EPYC AVX-512 VNNI, and the
#: tune picks the stem-in-float file on the AVX2 EPYC and the Intel VNNI Xeon too; MobileNetV2
#: (3 channels)'s stem conv takes 0.73 ms in int8 vs 0.47 ms in fp32 on AVX2.
STEM_FLOAT_MAX_CHANNELS = 4


def float_region(graph: Any, names: Sequence[str]) -> list[str]:
    """``names`` plus the chain of single-consumer followers (activations, pooling) of each."""
    by_name = {n.name: n for n in graph.node}
    consumers: dict[str, list[Any]] = collections.defaultdict(list)
    for n in graph.node:
        for i in n.input:
            consumers[i].append(n)
    region = list(names)
    for name in names:
        node = by_name.get(name)
        while node is not None and node.output:
            users = consumers.get(node.output[0], [])
            if len(users) != 1 or users[0].op_type not in FOLLOWERS:
                break
            node = users[0]
            region.append(node.name)
    return list(dict.fromkeys(region))


def _convs(graph: Any) -> list[tuple[Any, int, list[int] | None]]:
    """Each Conv node with its ``group`` and its weight's dims (None when not an initializer)."""
    weights = {t.name: list(t.dims) for t in graph.initializer}
    return [(n, next((a.i for a in n.attribute if a.name == "group"), 1),
             weights.get(n.input[1]) if len(n.input) > 1 else None)
            for n in graph.node if n.op_type == "Conv"]


def stem_and_depthwise(graph: Any) -> tuple[list[str], list[str]]:
    """``([stem], depthwise)``: the first Conv of the graph and the depthwise Convs (``group``
    equal to the input channels, i.e. weights of shape ``(C, 1, kH, kW)`` with ``group > 1``)."""
    convs = _convs(graph)
    depthwise = [n.name for n, group, w in convs
                 if group > 1 and w is not None and len(w) > 1 and w[1] == 1]
    return [convs[0][0].name] if convs else [], depthwise


def stem_float_region(graph: Any, always: bool = False) -> tuple[list[str], str | None]:
    """The float region of the stem conv when it reads at most
    :data:`STEM_FLOAT_MAX_CHANNELS` channels (or ``always``), with a note saying so; else
    ``([], None)``."""
    convs = _convs(graph)
    if not convs:
        return [], None
    node, group, w = convs[0]
    stem = [node.name]
    channels = w[1] * group if w is not None and len(w) > 1 else None
    if not always and (channels is None or channels > STEM_FLOAT_MAX_CHANNELS):
        return [], None
    why = ("asked for" if always else
           f"{channels} input channel(s): int8 is slower than fp32 there on every CPU measured; "
           "--no-stem-in-float quantizes it")
    return float_region(graph, stem), (f"the stem conv {stem[0]} and its activation/pooling "
                                       f"kept in float ({why})")
