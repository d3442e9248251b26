"""Graph clean-ups for converted models (onnx only; exact rewrites, validated by export).

tf2onnx keeps Keras' dynamic ``Flatten``: a ``Shape -> Gather/Slice -> Concat -> Reshape``
chain that costs several kernel launches per call, and a ``Transpose`` back to NHWC order
before it (Keras flattens channels-last, ONNX convolutions are channels-first). When every
non-batch dimension is static, :func:`simplify`

1. gives such a ``Reshape`` a constant shape ``[-1, d1, ...]`` and drops the shape chain;
2. folds ``Transpose -> Reshape(flatten) -> MatMul(W)`` into ``Reshape -> MatMul(W')`` by
   permuting the rows of the constant ``W`` (the same products, in another order);
3. removes nodes and initializers nothing uses any more. A tensor read inside a ``Loop``,
   ``If`` or ``Scan`` body (an outer-scope reference) counts as used by the node that holds
   the body; tf2onnx converts RNNs (GRU, LSTM, TimeDistributed) to such loops.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx

__all__ = ["drop_unused_opsets", "simplify", "walk_nodes", "subgraph_inputs"]


def _subgraphs(node: Any) -> Iterator[Any]:
    for a in node.attribute:
        if a.HasField("g"):
            yield a.g
        yield from a.graphs


def walk_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph``, then of its subgraphs (Loop/If/Scan bodies), recursively."""
    for n in graph.node:
        yield n
        for sub in _subgraphs(n):
            yield from walk_nodes(sub)


def drop_unused_opsets(model: onnx.ModelProto) -> list[str]:
    """Remove the opset imports of domains that no node (nor local function) uses, in place;
    the default domain stays. tf2onnx always imports ``ai.onnx.ml``, which tools that check a
    file's domains read as a dependency. Returns the domains removed."""
    def canonical(domain: str) -> str:
        return "" if domain == "ai.onnx" else domain

    used = {""} | {canonical(n.domain) for n in walk_nodes(model.graph)}
    for f in model.functions:
        used |= {canonical(f.domain)} | {canonical(n.domain) for n in f.node}
    unused = [o for o in model.opset_import if canonical(o.domain) not in used]
    for o in unused:
        model.opset_import.remove(o)
    return [o.domain for o in unused]


def subgraph_inputs(node: onnx.NodeProto) -> set[str]:
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


def _node_inputs(node: Any) -> set[str]:
    """What a node reads: its inputs and its subgraphs' outer-scope references."""
    return set(node.input) | subgraph_inputs(node)


def _static_tail(vi: Any) -> list[int] | None:
    """Non-batch dimensions of a value_info when all are known, else None."""
    dims = vi.type.tensor_type.shape.dim
    if len(dims) < 1:
        return None
    tail = []
    for d in dims[1:]:
        if not d.HasField("dim_value") or d.dim_value <= 0:
            return None
        tail.append(int(d.dim_value))
    return tail


def _shapes(model: Any) -> dict[str, Any]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    return {vi.name: vi for vi in [*g.value_info, *g.input, *g.output]}


def _consumers(graph: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in _node_inputs(n):
            out.setdefault(i, []).append(n)
    return out


def _shape_values(model: Any, names: list[str], batch: int) -> list[np.ndarray]:
    """Evaluate tensors ``names`` with onnxruntime on zero inputs of batch size ``batch``."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    for n in names:
        vi = onnx.helper.make_tensor_value_info(n, onnx.TensorProto.INT64, None)
        probe.graph.output.append(vi)
    inits = {i.name for i in probe.graph.initializer}
    feeds = {}
    for vi in probe.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims = [batch] + [d.dim_value if d.HasField("dim_value") else 1 for d in tt.shape.dim[1:]]
        dt = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        feeds[vi.name] = np.zeros(dims, dt)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return [np.asarray(v) for v in sess.run(names, feeds)]


def _static_reshapes(model: Any, notes: list[str]) -> None:
    """Constant ``[-1, d1, ...]`` shapes for Reshapes whose computed shape varies only in
    the batch dimension (checked by evaluating it at batch 1 and 2)."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name for i in graph.initializer}
    nodes = [n for n in graph.node
             if n.op_type == "Reshape" and len(n.input) > 1 and n.input[1] not in inits]
    if not nodes:
        return
    try:
        one = _shape_values(model, [n.input[1] for n in nodes], 1)
        two = _shape_values(model, [n.input[1] for n in nodes], 2)
    except Exception:  # best effort: a graph the probe cannot run stays as it is
        return
    count = 0
    for node, a, b in zip(nodes, one, two, strict=True):
        if a.ndim != 1 or a.shape != b.shape or len(a) < 1:
            continue
        batch_ok = (a[0], b[0]) in ((1, 2), (-1, -1))
        if not batch_ok or not np.array_equal(a[1:], b[1:]) or np.any(a[1:] <= 0):
            continue
        name = f"{node.name or node.output[0]}__edgekit_shape"
        graph.initializer.append(numpy_helper.from_array(np.array([-1, *a[1:]], np.int64), name))
        node.input[1] = name
        inits.add(name)
        count += 1
    if count:
        notes.append(f"{count} dynamic Reshape shape(s) made constant")


def _fold_transpose_matmul(model: Any, shapes: dict[str, Any], notes: list[str]) -> None:
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consumers = _consumers(graph)
    outputs = {o.name for o in graph.output}
    folded = 0
    for t in list(graph.node):
        if t.op_type != "Transpose" or t.output[0] in outputs:
            continue
        perm = next((list(a.ints) for a in t.attribute if a.name == "perm"), None)
        src = shapes.get(t.input[0])
        tail = _static_tail(src) if src is not None else None
        users = consumers.get(t.output[0], [])
        if perm is None or perm[0] != 0 or tail is None or len(users) != 1:
            continue
        r = users[0]
        if r.op_type != "Reshape" or r.input[1] not in inits:
            continue
        new_shape = numpy_helper.to_array(inits[r.input[1]])
        k = int(np.prod(tail))
        if list(new_shape) not in ([-1, k], [0, k]) or r.output[0] in outputs:
            continue
        r_users = consumers.get(r.output[0], [])
        if len(r_users) != 1 or r_users[0].op_type != "MatMul":
            continue
        m = r_users[0]
        w_init = inits.get(m.input[1])
        if m.input[0] != r.output[0] or w_init is None:
            continue
        w = numpy_helper.to_array(w_init)
        if w.ndim != 2 or w.shape[0] != k or len(consumers.get(w_init.name, [])) != 1:
            continue
        # Row j of the flattened source is row order[j] of the flattened transposed tensor.
        src_index = np.arange(k).reshape(tail)
        transposed = np.transpose(src_index, [p - 1 for p in perm[1:]]).reshape(-1)
        new_w = np.empty_like(w)
        new_w[transposed] = w
        w_init.CopyFrom(numpy_helper.from_array(new_w, w_init.name))
        r.input[0] = t.input[0]
        folded += 1
    if folded:
        notes.append(f"{folded} Transpose(s) before Flatten folded into MatMul weights")


def _prune(model: Any) -> int:
    graph = model.graph
    removed = 0
    while True:
        used = {i for n in graph.node for i in _node_inputs(n)} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
        removed += len(dead)
    used = {i for n in graph.node for i in _node_inputs(n)} | {o.name for o in graph.output}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return removed


def simplify(model: onnx.ModelProto) -> list[str]:
    """Simplify an ``onnx.ModelProto`` in place; returns notes on what changed."""
    notes: list[str] = []
    try:
        shapes = _shapes(model)
    except Exception:  # shape inference is best effort: leave the graph as it is
        return notes
    _static_reshapes(model, notes)
    _fold_transpose_matmul(model, shapes, notes)
    removed = _prune(model)
    if removed:
        notes.append(f"{removed} node(s) no longer used removed")
    return notes
