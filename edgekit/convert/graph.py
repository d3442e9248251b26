"""Graph clean-ups for converted models (onnx only; exact rewrites, validated by export).

tf2onnx keeps Keras' dynamic ``Flatten``: a ``Shape -> Gather/Slice -> Concat -> Reshape``
chain that costs several kernel launches per call, and a ``Transpose`` back to NHWC order
before it (Keras flattens channels-last, ONNX convolutions are channels-first). :func:`simplify`

1. gives such a ``Reshape`` a constant shape ``[-1, d1, ...]`` and drops the shape chain, when
   the shape depends on nothing but the batch dimension: it is measured twice, at batch 1 and
   2, with every dynamic dimension (a sequence length) at a different size in each run and
   at distinct sizes per dimension, and folded only when both measurements agree (a query
   and a value of different lengths never look equal);
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

from edgekit.inputs.data import TensorSpecInfo, is_string_dtype
from edgekit.inputs.prepare import onnx_input_specs
from edgekit.inputs.synthetic import dynamic_count
from edgekit.io.onnxgraph import consumers, graph_reads, walk_nodes

if TYPE_CHECKING:
    import onnx

__all__ = ["drop_unused_opsets", "simplify"]


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


#: Smallest dynamic size tried first when measuring shape values; a graph that refuses it (a
#: ``Conv1D`` longer than the sequence) is measured at the next base.
_SIZE_BASES = (2, 16, 64)


def _size_plans(count: int) -> Iterator[tuple[list[int], list[int]]]:
    """Pairs of sizes for ``count`` dynamic dimensions, each pair measured at batch 1 and 2.

    First distinct sizes per dimension that all change between the two runs, and in a
    different order (``[b, b+1, ...]`` then ``[.., b+3, b+2]``), so that neither a size nor a
    sum or difference of two sizes stays the same; then equal sizes (``[b, b, ...]`` then
    ``[b+1, ...]``) for graphs that need their inputs' lengths equal (a token mask).
    """
    for base in _SIZE_BASES:
        yield ([base + j for j in range(count)],
               [base + 2 * count - 1 - j for j in range(count)])
        if count > 1:
            yield [base] * count, [base + 1] * count


def _feeds(specs: list[TensorSpecInfo], batch: int, sizes: list[int]) -> dict[str, np.ndarray]:
    """Zero inputs (empty strings for text) of batch ``batch``, the dynamic dimensions taking
    ``sizes`` in order."""
    it = iter(sizes)
    return {s.name: np.full([batch] + [next(it) if d is None else d for d in s.shape[1:]],
                            "" if is_string_dtype(s.dtype) else 0, s.dtype) for s in specs}


def _shape_values(model: Any, names: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Tensors ``names`` evaluated with onnxruntime on zero inputs twice: at batch 1 and at
    batch 2, every dynamic dimension taking another size between the two runs (see
    :func:`_size_plans`). A value equal in both runs is taken to depend on no dynamic
    dimension (a sampled proof: a shape that clamps a length, e.g. min(T, 4), stays
    dynamic at the small sizes tried first)."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    for n in names:
        vi = onnx.helper.make_tensor_value_info(n, onnx.TensorProto.INT64, None)
        probe.graph.output.append(vi)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 4  # a refused size is expected: the next plan is tried
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    inputs = onnx_input_specs(model)
    count = dynamic_count(inputs)
    last: Exception | None = None
    for one, two in _size_plans(count):
        try:
            return ([np.asarray(v) for v in sess.run(names, _feeds(inputs, 1, one))],
                    [np.asarray(v) for v in sess.run(names, _feeds(inputs, 2, two))])
        except Exception as exc:  # the graph refuses these sizes: try the next plan
            last = exc
    raise RuntimeError(f"no sizes the graph accepts: {last}")


def _constant_shape(a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """``[-1, d1, ...]`` when two measurements of a Reshape's shape agree on a positive tail
    (any non-zero leading dimension: ``-1`` recomputes it), else None."""
    if a.ndim != 1 or a.shape != b.shape or len(a) < 1 or 0 in (a[0], b[0]):
        return None
    if not np.array_equal(a[1:], b[1:]) or np.any(a[1:] <= 0):
        return None
    return np.array([-1, *a[1:]], np.int64)


def _static_reshapes(model: Any, notes: list[str]) -> None:
    """Constant ``[-1, d1, ...]`` shapes for Reshapes whose computed shape depends on nothing
    but the batch dimension: measured at two batch sizes with every dynamic dimension at two
    different sizes (:func:`_shape_values`), so a shape read from a dynamic sequence length
    is never frozen."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name for i in graph.initializer}
    nodes = [n for n in graph.node
             if n.op_type == "Reshape" and len(n.input) > 1 and n.input[1] not in inits]
    if not nodes:
        return
    try:
        one, two = _shape_values(model, [n.input[1] for n in nodes])
    except Exception:  # best effort: a graph the probe cannot run stays as it is
        return
    count = 0
    for node, a, b in zip(nodes, one, two, strict=True):
        shape = _constant_shape(a, b)
        if shape is None:
            continue
        name = f"{node.name or node.output[0]}__edgekit_shape"
        graph.initializer.append(numpy_helper.from_array(shape, name))
        node.input[1] = name
        inits.add(name)
        count += 1
    if count:
        notes.append(f"{count} dynamic Reshape shape(s) made constant")


def _fold_transpose_matmul(model: Any, shapes: dict[str, Any], notes: list[str]) -> None:
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    readers = consumers(graph)
    outputs = {o.name for o in graph.output}
    folded = 0
    for t in list(graph.node):
        if t.op_type != "Transpose" or t.output[0] in outputs:
            continue
        perm = next((list(a.ints) for a in t.attribute if a.name == "perm"), None)
        src = shapes.get(t.input[0])
        tail = _static_tail(src) if src is not None else None
        users = readers.get(t.output[0], [])
        if perm is None or perm[0] != 0 or tail is None or len(users) != 1:
            continue
        r = users[0]
        if r.op_type != "Reshape" or r.input[1] not in inits:
            continue
        new_shape = numpy_helper.to_array(inits[r.input[1]])
        k = int(np.prod(tail))
        if list(new_shape) not in ([-1, k], [0, k]) or r.output[0] in outputs:
            continue
        r_users = readers.get(r.output[0], [])
        if len(r_users) != 1 or r_users[0].op_type != "MatMul":
            continue
        m = r_users[0]
        w_init = inits.get(m.input[1])
        if m.input[0] != r.output[0] or w_init is None:
            continue
        w = numpy_helper.to_array(w_init)
        if w.ndim != 2 or w.shape[0] != k or len(readers.get(w_init.name, [])) != 1:
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
        used = graph_reads(graph) | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
        removed += len(dead)
    used = graph_reads(graph) | {o.name for o in graph.output}
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
