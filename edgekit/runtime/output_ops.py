"""The op that ends each output of an ONNX graph, read without the onnx package.

The output contract (:mod:`edgekit.contract`) is decided at export; for files exported before
the ``independent`` kind existed, :func:`edgekit.contract.graph_kind` corrects ``probabilities``
from the graph: a ``Sigmoid`` end means independent probabilities, a ``Softmax`` over another
axis than the last is no distribution over rows. This module finds that op: it walks back from
each graph output through ops that keep values as they are (``Identity``, ``Cast``, Q/DQ,
``Transpose``, and for a Sigmoid also reshapes) and reports the op and, for a ``Softmax``, its
axis in the output's dimensions (the opset default when the attribute is absent; ``None``
where a reshape hides it). Like :func:`~edgekit.runtime.specs.read_onnx_props` it parses the
protobuf by hand (skipping initializers by their length), so the runtime needs no onnx;
``.ort`` files or anything it cannot parse give None (the contract is then used as written).
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.runtime.specs import _varint

__all__ = ["OutputOp", "output_ops"]

_KEEP = frozenset({"Identity", "Cast", "QuantizeLinear", "DequantizeLinear"})
_RESHAPE = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze"})
_MAX_WALK = 64


@dataclass(frozen=True)
class OutputOp:
    """The op that ends one graph output; ``axis``: a Softmax's axis in the output's dims."""

    op: str | None
    axis: int | None = None


@dataclass
class _Node:
    op: str = ""
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    axis: int | None = None
    perm: list[int] = field(default_factory=list)


def _fields(buf: mmap.mmap, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value or start, end) of a protobuf message in ``buf``."""
    while pos < end:
        tag, pos = _varint(buf, pos)
        wire = tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield tag >> 3, 0, value, pos
        elif wire == 2:
            n, pos = _varint(buf, pos)
            yield tag >> 3, 2, pos, pos + n
            pos += n
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError("unsupported wire type")


def _int64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _text(buf: mmap.mmap, a: int, b: int) -> str:
    return bytes(buf[a:b]).decode()


def _attribute(buf: mmap.mmap, a: int, b: int, node: _Node) -> None:
    name, ints, i = "", [], None
    for f, wire, x, y in _fields(buf, a, b):
        if f == 1 and wire == 2:
            name = _text(buf, x, y)
        elif f == 3 and wire == 0:
            i = _int64(x)
        elif f == 8 and wire == 0:
            ints.append(_int64(x))
        elif f == 8 and wire == 2:  # packed
            pos = x
            while pos < y:
                v, pos = _varint(buf, pos)
                ints.append(_int64(v))
    if name == "axis":
        node.axis = i
    elif name == "perm":
        node.perm = ints


def _node(buf: mmap.mmap, a: int, b: int) -> _Node:
    node = _Node()
    for f, wire, x, y in _fields(buf, a, b):
        if wire != 2:
            continue
        if f == 1:
            node.inputs.append(_text(buf, x, y))
        elif f == 2:
            node.outputs.append(_text(buf, x, y))
        elif f == 4:
            node.op = _text(buf, x, y)
        elif f == 5:
            _attribute(buf, x, y, node)
    return node


def _graph(buf: mmap.mmap, a: int, b: int) -> tuple[dict[str, _Node], list[str]]:
    """The node producing each value name, and the graph's output names."""
    producers: dict[str, _Node] = {}
    outputs = []
    for f, wire, x, y in _fields(buf, a, b):
        if f == 1 and wire == 2:
            node = _node(buf, x, y)
            for o in node.outputs:
                producers[o] = node
        elif f == 12 and wire == 2:
            outputs += [_text(buf, x2, y2) for f2, w2, x2, y2 in _fields(buf, x, y)
                        if f2 == 1 and w2 == 2]
    return producers, outputs


def _opset(buf: mmap.mmap, a: int, b: int) -> int | None:
    """The version of the default ONNX domain in one ``opset_import`` entry (else None)."""
    domain, version = "", None
    for f, wire, x, y in _fields(buf, a, b):
        if f == 1 and wire == 2:
            domain = _text(buf, x, y)
        elif f == 2 and wire == 0:
            version = x
    return version if domain in ("", "ai.onnx") else None


def _end(producers: dict[str, _Node], name: str, opset: int) -> OutputOp:
    """Walk back from ``name`` through the ops that keep values (see the module docstring)."""
    perms: list[list[int]] = []
    reshaped = False
    for _ in range(_MAX_WALK):
        node = producers.get(name)
        if node is None or not node.inputs:
            return OutputOp(None)
        if node.op in _KEEP or node.op == "Transpose" or node.op in _RESHAPE:
            if node.op == "Transpose":
                perms.append(node.perm)
            reshaped = reshaped or node.op in _RESHAPE
            name = node.inputs[0]
            continue
        if node.op != "Softmax":
            return OutputOp(node.op)
        if reshaped or (perms and (opset < 13 or not all(perms))):
            return OutputOp("Softmax", None)  # its axis in the output is not known
        axis = node.axis if node.axis is not None else (-1 if opset >= 13 else 1)
        for perm in reversed(perms):  # the Transpose nearest the Softmax first
            axis = perm.index(axis % len(perm))
        return OutputOp("Softmax", axis)
    return OutputOp(None)


def output_ops(path: Path) -> list[OutputOp] | None:
    """The op ending each graph output of the ONNX file ``path`` (None when it is no ONNX
    protobuf, e.g. ``.ort``, or cannot be parsed)."""
    if path.suffix.lower() == ".ort":  # a flatbuffer: its bytes are no protobuf fields
        return None
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            graph, opset = None, 0
            for f, wire, x, y in _fields(buf, 0, len(buf)):
                if f == 7 and wire == 2:
                    graph = (x, y)
                elif f == 8 and wire == 2:
                    opset = _opset(buf, x, y) or opset
            if graph is None:
                return None
            producers, outputs = _graph(buf, *graph)
            return [_end(producers, o, opset) for o in outputs]
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return None
