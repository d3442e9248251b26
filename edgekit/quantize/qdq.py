"""Graph passes on quantized ONNX models that keep them standard and fast everywhere.

- :func:`nonstandard_ops`: ops outside the ``ai.onnx`` domain (an artifact with any is not
  portable: OpenVINO, the mobile execution providers, TensorRT and QNN refuse them).
- :func:`output_activation_nodes`: the Softmax/Sigmoid nodes that end the model (and the
  Transpose/Reshape-like nodes between them and the output); the quantizer keeps them in float
  so probabilities stay exact (rows sum to 1).
- :func:`commute_relu_maxpool`: in float regions ``Relu -> MaxPool`` becomes ``MaxPool -> Relu``
  (equal, since Relu is monotonic). onnxruntime's QDQ propagation at load moves a boundary
  QuantizeLinear backwards across MaxPool/Reshape but not across Relu, so after the swap a float
  region stays float in a plain ``InferenceSession`` instead of becoming a slow uint8 MaxPool.
- :func:`float_means`: mean reductions (``ReduceMean``; ``GlobalAveragePool`` on tensors that
  are not 4-D images) read and write float instead of Q/DQ pairs. OpenVINO 2026.4 computes
  ``DequantizeLinear -> ReduceMean`` over a middle axis wrongly (and, inside a Transformer
  block, ``DequantizeLinear -> GlobalAveragePool`` on a sequence), which took a Fashion-MNIST
  ViT from 74 % to 26 % in OpenVINO while onnxruntime kept 74 %; and the Q/DQ after the mean of
  an Embedding lookup gives wrong rows at some batch sizes (an SMS classifier: 31 % top-1
  agreement at batch 8). onnxruntime has no int8 kernel for either (it dequantizes first).
- :func:`drop_unread_initializers`: initializers a rewrite replaced, once nothing reads them.
- :func:`float_qdq_pairs`: Q->DQ pairs whose producer and consumer are both float nodes (a
  mixed-precision file should have none).

Works on ``onnx.ModelProto`` objects (the ``onnx`` package is a base dependency).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from edgekit.io.onnxgraph import consumers, graph_reads
from edgekit.io.onnxgraph import producers as producer_index

__all__ = [
    "nonstandard_ops",
    "output_activation_nodes",
    "commute_relu_maxpool",
    "float_qdq_pairs",
    "float_means",
    "topological_sort",
    "drop_unread_initializers",
]

_STANDARD_DOMAINS = frozenset({"", "ai.onnx"})


def nonstandard_ops(model: Any) -> list[str]:
    """``domain.op`` of every op type outside ``ai.onnx`` (sorted, unique)."""
    return sorted({f"{n.domain}.{n.op_type}" for n in model.graph.node
                   if n.domain not in _STANDARD_DOMAINS})


#: ops that only move or relabel values: an output activation seen through them still ends the
#: model (a softmax over a non-last axis is exported as Transpose -> Softmax -> Transpose)
_PASS_THROUGH = frozenset({"Transpose", "Reshape", "Identity", "Squeeze", "Unsqueeze",
                           "Flatten", "Cast"})


def output_activation_nodes(model: Any) -> list[str]:
    """Names of the Softmax/Sigmoid nodes that end the model (their output is a graph output,
    or reaches one through :data:`_PASS_THROUGH` ops only) and of those pass-through nodes:
    quantized, probabilities would come in 1/255 steps."""
    graph = model.graph
    producers = producer_index(graph)
    found: list[str] = []
    for out in (o.name for o in graph.output):
        chain, node = [], producers.get(out)
        while node is not None and node.op_type in _PASS_THROUGH and node.input:
            chain.append(node)
            node = producers.get(node.input[0])
        if node is not None and node.op_type in ("Softmax", "Sigmoid") and node.name:
            found += [node.name, *(n.name for n in chain if n.name)]
    return list(dict.fromkeys(found))


def commute_relu_maxpool(model: Any) -> list[str]:
    """Swap float ``Relu -> MaxPool`` pairs in place; returns the MaxPool names swapped.

    A pair qualifies when the Relu feeds only the MaxPool and the MaxPool has one output and
    is not a graph output. The shapes of the two rewired tensors are dropped from
    ``value_info`` (they changed).
    """
    graph = model.graph
    producers, users = producer_index(graph), consumers(graph)
    outputs = {o.name for o in graph.output}
    swapped: list[str] = []
    for pool in list(graph.node):
        if pool.op_type != "MaxPool" or len(pool.output) != 1 or pool.output[0] in outputs:
            continue
        relu = producers.get(pool.input[0])
        if relu is None or relu.op_type != "Relu" or len(users[relu.output[0]]) != 1:
            continue
        relu_in, mid, out = relu.input[0], relu.output[0], pool.output[0]
        pool.input[0], pool.output[0] = relu_in, mid
        relu.input[0], relu.output[0] = mid, out
        swapped.append(pool.name)
        _drop_value_info(graph, [mid])
    if swapped:
        topological_sort(graph)
    return swapped


_MEAN_OPS = ("ReduceMean", "GlobalAveragePool")


def _image_rank(model: Any) -> dict[str, int]:
    """Rank of every tensor onnx's shape inference can tell (empty when it fails)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a graph the reference inference cannot read: rewire every mean op
        return {}
    infos = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    return {v.name: len(v.type.tensor_type.shape.dim) for v in infos
            if v.type.tensor_type.HasField("shape")}


def float_means(model: Any) -> list[str]:
    """Make mean reductions read and write float, in place; returns the rewired nodes' names.

    A mean reading ``QuantizeLinear -> DequantizeLinear`` reads the float tensor the pair was
    made from, and the readers of a pair right after a mean read the mean itself: OpenVINO
    2026.4 computes either pattern wrongly (a mean over a middle axis after a DQ; the Q/DQ
    after the mean of an Embedding lookup gives wrong rows at batch 4, 8 and 64 but not 1).
    ``GlobalAveragePool`` on a 4-D tensor (a CNN's head, which onnxruntime and OpenVINO both
    run right in int8) is left alone. Pairs that other nodes still read stay.
    """
    graph = model.graph
    producers, users = producer_index(graph), consumers(graph)
    outputs = {o.name for o in graph.output}
    ranks: dict[str, int] | None = None
    rewired: list[str] = []
    touched: list[Any] = []  # the Q/DQ nodes some reader left
    for node in graph.node:
        if node.op_type not in _MEAN_OPS or not node.input:
            continue
        if node.op_type == "GlobalAveragePool":
            ranks = _image_rank(model) if ranks is None else ranks
            if ranks.get(node.input[0]) == 4:
                continue
        left = _read_float(node, producers) + _write_float(node, users, outputs)
        if left:
            rewired.append(node.name)
            touched += left
    _drop_unread(graph, touched)
    return rewired


def _read_float(node: Any, producers: dict[str, Any]) -> list[Any]:
    """``node`` reads the float tensor behind a Q -> DQ pair on its first input; returns the
    pair (empty when there is none)."""
    dq = producers.get(node.input[0])
    q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" \
        else None
    if q is None or q.op_type != "QuantizeLinear":
        return []
    node.input[0] = q.input[0]
    return [dq, q]


def _write_float(node: Any, users: dict[str, list[Any]], outputs: set[str]) -> list[Any]:
    """The readers of a Q -> DQ pair on ``node``'s output read the output itself; returns the
    pairs they left."""
    left: list[Any] = []
    for q in (u for u in users[node.output[0]] if u.op_type == "QuantizeLinear"):
        for dq in (u for u in users[q.output[0]] if u.op_type == "DequantizeLinear"):
            if dq.output[0] in outputs:
                continue
            for reader in users[dq.output[0]]:
                reader.input[:] = [node.output[0] if x == dq.output[0] else x
                                   for x in reader.input]
            left += [dq, q]
    return left


def _drop_unread(graph: Any, nodes: list[Any]) -> None:
    """Remove those of ``nodes`` (DQs first, then their Qs) whose outputs nothing reads any
    more, with the scale/zero-point initializers only they read."""
    candidates = {n.output[0] for n in nodes}  # by name: protobuf wrappers are not stable
    if not candidates:
        return
    outputs = {o.name for o in graph.output}
    dropped: set[str] = set()
    for op in ("DequantizeLinear", "QuantizeLinear"):
        used = graph_reads(graph) | outputs
        gone = {n.output[0] for n in graph.node if n.op_type == op and n.output
                and n.output[0] in candidates and n.output[0] not in used}
        dropped.update(i for n in graph.node if n.output and n.output[0] in gone
                       for i in n.input)
        keep = [n for n in graph.node if not n.output or n.output[0] not in gone]
        del graph.node[:]
        graph.node.extend(keep)
    drop_unread_initializers(graph, dropped)


def drop_unread_initializers(graph: Any, names: Iterable[str]) -> None:
    """Remove the initializers among ``names`` that no node (or subgraph) reads any more and
    that are no graph output."""
    still, drop = graph_reads(graph) | {o.name for o in graph.output}, set(names)
    inits = [t for t in graph.initializer if t.name not in drop or t.name in still]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def _drop_value_info(graph: Any, names: Iterable[str]) -> None:
    drop = set(names)
    keep = [v for v in graph.value_info if v.name not in drop]
    del graph.value_info[:]
    graph.value_info.extend(keep)


def topological_sort(graph: Any) -> None:
    """Reorder ``graph.node`` so every node follows the producers of its inputs (in place)."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    producers = producer_index(graph)
    pending = list(graph.node)
    ordered: list[Any] = []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready or i not in producers for i in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ValueError("graph has a cycle")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def float_qdq_pairs(model: Any, float_nodes: Iterable[str]) -> list[str]:
    """Tensors quantized (Q -> DQ) between two nodes of ``float_nodes`` (should be empty)."""
    graph = model.graph
    floats = set(float_nodes)
    producers, users = producer_index(graph), consumers(graph)
    found = []
    for q in graph.node:
        if q.op_type != "QuantizeLinear":
            continue
        src = producers.get(q.input[0])
        if src is None or src.name not in floats:
            continue
        for dq in users[q.output[0]]:
            if dq.op_type == "DequantizeLinear" and any(
                    u.name in floats for u in users[dq.output[0]]):
                found.append(q.input[0])
    return sorted(set(found))
