"""Who produces and who reads each tensor of an ONNX graph: the one index every graph pass uses
(conversion clean-ups, quantization rewrites, the profiler, the benchmark inputs).

A tensor read inside a ``Loop``, ``If`` or ``Scan`` body (an outer-scope reference) counts as
read by the node that holds the body; tf2onnx converts RNNs (GRU, LSTM, TimeDistributed) to
such loops. Works on ``onnx`` protobufs (a base dependency; imported only to read attribute values).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

__all__ = ["walk_nodes", "subgraph_inputs", "node_reads", "graph_reads", "producers",
           "consumers", "attributes"]


def _subgraphs(node: Any) -> Iterator[Any]:
    for a in node.attribute:
        if a.HasField("g"):
            yield a.g
        yield from a.graphs


def walk_nodes(graph: Any) -> Iterator[Any]:
    """Every node of ``graph``, then of its subgraphs (Loop/If/Scan bodies), recursively."""
    for n in graph.node:
        yield n
        for sub in _subgraphs(n):
            yield from walk_nodes(sub)


def subgraph_inputs(node: Any) -> set[str]:
    """Names a node's subgraphs read (recursively), minus those they define themselves."""
    used: set[str] = set()
    defined: set[str] = set()
    for sub in _subgraphs(node):
        defined |= {i.name for i in sub.input} | {i.name for i in sub.initializer}
        for n in walk_nodes(sub):
            used.update(n.input)
            defined.update(n.output)
        used.update(o.name for o in sub.output)
    return used - defined - {""}


def node_reads(node: Any) -> set[str]:
    """What a node reads: its inputs and its subgraphs' outer-scope references."""
    return (set(node.input) | subgraph_inputs(node)) - {""}


def graph_reads(graph: Any) -> set[str]:
    """Every tensor a node of ``graph`` reads (subgraph references included)."""
    return {i for n in graph.node for i in node_reads(n)}


def producers(graph: Any) -> dict[str, Any]:
    """The node that writes each tensor, by name."""
    return {o: n for n in graph.node for o in n.output}


def consumers(graph: Any) -> defaultdict[str, list[Any]]:
    """The nodes that read each tensor, in graph order, by name (an empty list for a tensor
    nothing reads)."""
    users: defaultdict[str, list[Any]] = defaultdict(list)
    for n in graph.node:
        for i in node_reads(n):
            users[i].append(n)
    return users


def attributes(node: Any) -> dict[str, Any]:
    """A node's attributes as Python values (ints, floats, lists, bytes ...), by name."""
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}
