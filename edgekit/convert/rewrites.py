"""Local rewrites of tf2onnx patterns that cost time at every call (onnx only; run before
:func:`edgekit.convert.graph.simplify`, which removes what they leave unused; validated by
export like every clean-up).

1. **The Embedding's index wrap.** Keras' ``take`` turns a negative id ``i`` into ``i + N``
   before ``tf.gather``; tf2onnx lowers that ``where`` to up to nine element-wise nodes
   (Cast, Less, Not, Mul, Add ...) in front of the Gather. ONNX's Gather wraps negative
   indices itself (it accepts ``[-N, N-1]``), so the Gather reads the ids directly: the same
   rows for every id Keras accepts. An id below ``-N``, which TensorFlow rejects, is now
   refused by the runtime too (before, it was wrapped twice).
2. **Conv1D epilogues.** tf2onnx writes a Conv1D as ``Unsqueeze -> Conv -> Squeeze``, then
   the bias Add, the activation, and an Unsqueeze of the same axis before the next Conv1D.
   Element-wise ops after a Conv's Squeeze move before it (a constant operand gets the
   squeezed axes back, which broadcasts the same way), a Squeeze followed by the Unsqueeze
   of the same axes is dropped, and a per-channel Add or Mul by a constant right after a
   Conv is folded into its bias (and weights). The Conv then carries its bias and its
   activation follows it directly, which onnxruntime fuses, and the int8 file quantizes one
   Conv instead of Conv, Add and Relu (conv1d_text of the zoo, this AMX Xeon, 1 thread:
   int8 117 -> 100 us at batch 1, fp32 300 -> 272 us). Folding a Mul rounds ``w * s`` once
   where the runtime rounded ``(x . w) * s``: float rounding, as onnxruntime's own Conv+Mul
   fusion does at load.
3. **Input normalisation before the layout Transpose.** Keras' ``Rescaling`` and
   ``Normalization`` layers (keras.applications' EfficientNet, EfficientNetV2, ConvNeXt ...)
   become element-wise Mul / Add / Sub / Div by per-channel constants on the NHWC input, ahead
   of tf2onnx's Transpose to NCHW. Broadcast along an innermost axis of 3 they are slow
   (onnxruntime, EfficientNetB0 at batch 1, this AMX Xeon: 1.3 of fp32's 22 ms; 3.1 of
   int8's 17 ms as QLinearAdd / QLinearMul). A chain that reads a graph input is merged into
   one ``x * s + t`` (an unadapted Normalization's mean 0 / variance 1 vanish) and folded
   into the stem Conv after the Transpose: ``s`` into its weights (exact with zero padding
   too), ``t`` into its bias when it has no padding (ConvNeXt's 4x4/4 stem); a padded Conv
   keeps ``t / s`` as one Add before it (its zero padding is in normalised values). Without
   such a Conv the chain runs after the Transpose, per channel of NCHW. Merging rounds once
   where the chain rounded at each op: float rounding (EfficientNetB0 int8, onnxruntime:
   1.25x faster; fp32 1.09x).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.io.onnxgraph import attributes, consumers, producers

if TYPE_CHECKING:
    import onnx

__all__ = ["rewrite"]

#: element-wise ops of one tensor input (extra inputs must be constants) that commute with
#: a Squeeze
_UNARY = frozenset({"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Elu", "Selu", "HardSigmoid",
                    "HardSwish", "Softplus", "Softsign", "Abs", "Neg", "Clip", "Erf"})
#: element-wise ops of two inputs, one of them a constant, that commute with a Squeeze once
#: the constant gets the squeezed axes back
_BINARY = frozenset({"Add", "Mul", "Sub", "Div", "Max", "Min"})


class _Graph:
    """Producers, consumers (subgraph references included), constants and outputs of a
    graph; rebuilt after each rewrite (the graphs are small)."""

    def __init__(self, graph: Any) -> None:
        from onnx import numpy_helper

        self.graph = graph
        self.producer = producers(graph)
        self.users: dict[str, list[Any]] = dict(consumers(graph))
        self.inits = {i.name: i for i in graph.initializer}
        self.outputs = {o.name for o in graph.output}
        self._array = numpy_helper.to_array

    def const(self, name: str) -> np.ndarray | None:
        init = self.inits.get(name)
        return None if init is None else np.asarray(self._array(init))

    def sole_user(self, name: str) -> Any | None:
        """The one node reading ``name`` when nothing else (no graph output) does."""
        users = self.users.get(name, [])
        return users[0] if len(users) == 1 and name not in self.outputs else None

    def made_by(self, name: str, *ops: str) -> Any | None:
        n = self.producer.get(name)
        return n if n is not None and n.op_type in ops else None

    def add_const(self, array: np.ndarray, name: str) -> str:
        from onnx import numpy_helper

        while name in self.inits or name in self.producer:
            name += "_"
        init = numpy_helper.from_array(array, name)
        self.graph.initializer.append(init)
        self.inits[name] = init
        return name


def _scalar(g: _Graph, name: str) -> float | None:
    a = g.const(name)
    return float(a.reshape(-1)[0]) if a is not None and a.size == 1 else None


# ---------------------------------------------------------------------------------------------
# 1. the Embedding's index wrap
# ---------------------------------------------------------------------------------------------


def _less_zero(g: _Graph, name: str) -> str | None:
    """``x`` when ``name`` is ``Less(x, 0)`` (``x`` possibly behind a Cast)."""
    less = g.made_by(name, "Less")
    if less is None or _scalar(g, less.input[1]) != 0:
        return None
    x = less.input[0]
    cast = g.made_by(x, "Cast")
    return cast.input[0] if cast is not None else x


def _plus(g: _Graph, name: str, n: int) -> str | None:
    """``x`` when ``name`` is ``x + n``."""
    add = g.made_by(name, "Add")
    if add is None:
        return None
    for i in (0, 1):
        if _scalar(g, add.input[1 - i]) == n:
            return str(add.input[i])
    return None


def _select(g: _Graph, name: str) -> tuple[str, str, str] | None:
    """(cond, if-true, if-false) of ``Where`` or of tf2onnx's integer select
    ``Mul(Cast(cond), t) + Mul(Cast(Not(cond)), f)``."""
    where = g.made_by(name, "Where")
    if where is not None:
        return where.input[0], where.input[1], where.input[2]
    add = g.made_by(name, "Add")
    if add is None:
        return None
    arms: dict[bool, tuple[str, str]] = {}
    for term in add.input:
        mul = g.made_by(term, "Mul")
        if mul is None:
            return None
        for i in (0, 1):
            cast = g.made_by(mul.input[i], "Cast")
            if cast is None:
                continue
            neg = g.made_by(cast.input[0], "Not")
            cond = neg.input[0] if neg is not None else cast.input[0]
            arms[neg is None] = (cond, mul.input[1 - i])
            break
    if set(arms) != {True, False} or arms[True][0] != arms[False][0]:
        return None
    return arms[True][0], arms[True][1], arms[False][1]


def _drop_index_wraps(g: _Graph) -> int:
    """Gathers of a constant table read their ids directly (see the module doc)."""
    count = 0
    for gather in [n for n in g.graph.node if n.op_type == "Gather"]:
        table = g.inits.get(gather.input[0])
        sel = _select(g, gather.input[1])
        if table is None or sel is None:
            continue
        axis = next((a.i for a in gather.attribute if a.name == "axis"), 0)
        cond, if_neg, otherwise = sel
        x = _less_zero(g, cond)
        if x is None or x != otherwise or _plus(g, if_neg, int(table.dims[axis])) != x:
            continue
        gather.input[1] = x
        count += 1
    return count


# ---------------------------------------------------------------------------------------------
# 2. Conv1D epilogues
# ---------------------------------------------------------------------------------------------


def _conv_rank(g: _Graph, name: str) -> int | None:
    """The rank of ``name`` when it is a Conv's output, or of element-wise ops on one."""
    node = g.producer.get(name)
    while node is not None and (node.op_type in _UNARY or node.op_type in _BINARY):
        tensors = [i for i in node.input[: 1 if node.op_type in _UNARY else 2]
                   if i not in g.inits]
        if len(tensors) != 1:
            return None
        node = g.producer.get(tensors[0])
    if node is None or node.op_type != "Conv":
        return None
    w = g.inits.get(node.input[1])
    return None if w is None else len(w.dims)


def _squeeze_axes(g: _Graph, squeeze: Any, rank: int) -> list[int] | None:
    """The axes (non-negative, sorted) of a Squeeze of a rank-``rank`` tensor, when given as
    a constant and neither the batch nor the channel axis."""
    axes = g.const(squeeze.input[1]) if len(squeeze.input) > 1 else None
    if axes is None:
        attr = next((list(a.ints) for a in squeeze.attribute if a.name == "axes"), None)
        axes = None if attr is None else np.asarray(attr)
    if axes is None or axes.size == 0:
        return None
    out = sorted(int(a) % rank for a in axes.reshape(-1))
    return out if all(a >= 2 for a in out) else None


def _const_operand(g: _Graph, node: Any, name: str) -> tuple[int, np.ndarray] | None:
    """(index, value) of ``node``'s constant operand when its other operand is ``name``."""
    if node.op_type in _UNARY:
        if all(_scalar(g, i) is not None for i in node.input[1:] if i):
            return -1, np.zeros(())
        return None
    if node.op_type not in _BINARY or len(node.input) != 2 or name not in node.input:
        return None
    k = 1 - list(node.input).index(name)
    value = g.const(node.input[k])
    return None if value is None else (k, value)


def _sink_squeeze(g: _Graph) -> bool:
    """Move one element-wise op after a Conv's Squeeze before it; True when one moved."""
    for squeeze in [n for n in g.graph.node if n.op_type == "Squeeze"]:
        rank = _conv_rank(g, squeeze.input[0])
        axes = None if rank is None else _squeeze_axes(g, squeeze, rank)
        op = g.sole_user(squeeze.output[0])
        if axes is None or rank is None or op is None:
            continue
        operand = _const_operand(g, op, squeeze.output[0])
        if operand is None:
            continue
        k, value = operand
        if k >= 0:
            if value.ndim > rank - len(axes):
                continue
            value = value.reshape((1,) * (rank - len(axes) - value.ndim) + value.shape)
            for a in axes:
                value = np.expand_dims(value, a)
            op.input[k] = g.add_const(value, f"{op.input[k]}__edgekit_unsqueezed")
        # squeeze(x) -> op -> y   becomes   x -> op -> squeeze -> y
        result = op.output[0]
        moved = f"{result}__edgekit_before_squeeze"
        op.input[list(op.input).index(squeeze.output[0])] = squeeze.input[0]
        op.output[0] = moved
        squeeze.input[0] = moved
        squeeze.output[0] = result
        nodes = list(g.graph.node)
        nodes.remove(op)
        nodes.insert(nodes.index(squeeze), op)
        del g.graph.node[:]
        g.graph.node.extend(nodes)
        return True
    return False


def _drop_squeeze_unsqueeze(g: _Graph) -> bool:
    """Readers of ``Unsqueeze(Squeeze(x, axes), axes)`` read ``x``; True when one changed."""
    for unsq in [n for n in g.graph.node if n.op_type == "Unsqueeze"]:
        squeeze = g.made_by(unsq.input[0], "Squeeze")
        if squeeze is None or unsq.output[0] in g.outputs or len(unsq.input) < 2:
            continue
        a = g.const(squeeze.input[1]) if len(squeeze.input) > 1 else None
        b = g.const(unsq.input[1])
        if a is None or b is None or a.tolist() != b.tolist() or (a < 0).any():
            continue
        readers = g.users.get(unsq.output[0], [])
        if any(unsq.output[0] not in n.input for n in readers):
            continue  # read inside a Loop/If body: keep the name
        for n in readers:
            for i, name in enumerate(n.input):
                if name == unsq.output[0]:
                    n.input[i] = squeeze.input[0]
        g.graph.node.remove(unsq)
        return True
    return False


def _channel_vector(value: np.ndarray, rank: int, channels: int) -> np.ndarray | None:
    """``value`` as one number per output channel when it broadcasts against a rank-``rank``
    NC... tensor along the channel axis only, else None."""
    if value.ndim > rank or value.dtype != np.float32:
        return None
    full = value.reshape((1,) * (rank - value.ndim) + value.shape)
    if full.shape[1] not in (1, channels) or any(
            d != 1 for i, d in enumerate(full.shape) if i != 1):
        return None
    return np.broadcast_to(full.reshape(-1), (channels,)).astype(np.float32)


def _set_bias(g: _Graph, conv: Any, bias: np.ndarray) -> None:
    """``conv`` reads ``bias`` (a new constant) as its bias input."""
    name = g.add_const(bias, f"{conv.name or conv.output[0]}__edgekit_bias")
    if len(conv.input) > 2:
        conv.input[2] = name
    else:
        conv.input.append(name)


def _fold_into_conv(g: _Graph) -> bool:
    """Fold one per-channel constant Add or Mul after a Conv into its bias / weights."""
    for conv in [n for n in g.graph.node if n.op_type == "Conv"]:
        w = g.const(conv.input[1])
        b = g.const(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
        op = g.sole_user(conv.output[0])
        if w is None or w.dtype != np.float32 or op is None or op.op_type not in ("Add", "Mul"):
            continue
        operand = _const_operand(g, op, conv.output[0])
        vec = None if operand is None else _channel_vector(operand[1], w.ndim, w.shape[0])
        if vec is None or len(g.users.get(conv.input[1], [])) > 1:
            continue
        bias = np.zeros(w.shape[0], np.float32) if b is None else b.astype(np.float32)
        if op.op_type == "Add":
            bias = bias + vec
        else:
            w = w * vec.reshape((-1,) + (1,) * (w.ndim - 1))
            bias = bias * vec
            conv.input[1] = g.add_const(w.astype(np.float32), f"{conv.input[1]}__edgekit_scaled")
        _set_bias(g, conv, bias)
        conv.output[0], op.output[0] = op.output[0], f"{op.output[0]}__edgekit_folded"
        g.graph.node.remove(op)
        return True
    return False


# ---------------------------------------------------------------------------------------------
# 3. input normalisation before the layout Transpose
# ---------------------------------------------------------------------------------------------
_NHWC_TO_NCHW = [0, 3, 1, 2]


def _affine_step(g: _Graph, node: Any, x: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(scale, shift), vectors along the innermost axis (length 1 or C, float64), with
    ``node(x) == x * scale + shift``, when ``node`` is Mul / Add / Sub / Div of ``x`` by a
    float32 constant that broadcasts along that axis only; else None."""
    operand = _const_operand(g, node, x) if node.op_type in ("Add", "Sub", "Mul", "Div") else None
    if operand is None:
        return None
    k, value = operand
    if value.dtype != np.float32 or value.ndim > 4 or any(d != 1 for d in value.shape[:-1]):
        return None
    v = value.reshape(-1).astype(np.float64)
    one, zero = np.ones_like(v), np.zeros_like(v)
    if node.op_type == "Mul":
        return v, zero
    if node.op_type == "Add":
        return one, v
    if node.op_type == "Sub":
        return (one, -v) if k == 1 else (-one, v)
    return (1.0 / v, zero) if k == 1 and np.all(v != 0) else None


def _affine_chain(g: _Graph, transpose: Any) -> tuple[str, list[Any], np.ndarray,
                                                       np.ndarray] | None:
    """(input, nodes, scale, shift) of the longest chain of :func:`_affine_step` ops, each
    read only by the next, that ends in ``transpose``; None when there is none."""
    nodes: list[Any] = []
    scale, shift = np.ones(1), np.zeros(1)
    name = transpose.input[0]
    while (node := g.producer.get(name)) is not None and g.sole_user(name) is not None:
        x = next((i for i in node.input if i not in g.inits), None)
        step = None if x is None else _affine_step(g, node, x)
        width = max(len(scale), len(shift))  # 1, or the channels a constant so far gave
        if step is None or x is None or (len(step[0]) > 1 and width > 1
                                         and len(step[0]) != width):
            break
        scale, shift = step[0] * scale, step[1] * scale + shift  # step first, then the rest
        nodes.append(node)
        name = x
    return (name, nodes, scale, shift) if nodes else None


def _last_dim(g: _Graph, name: str) -> int | None:
    """The static innermost dimension of ``name`` when the graph records it."""
    for vi in [*g.graph.input, *g.graph.value_info]:
        if vi.name == name:
            dims = vi.type.tensor_type.shape.dim
            return int(dims[-1].dim_value) if dims and dims[-1].HasField("dim_value") else None
    return None


def _stem_conv(g: _Graph, x: str, name: str, channels: int) -> tuple[Any, bool] | None:
    """(Conv, padded) for the Conv that alone reads ``name`` (the NCHW transpose of ``x``,
    whose per-channel constants have ``channels`` values) when it has one group and float32
    weights of its own, and ``x`` has as many channels as the constants (or they are
    scalars); else None."""
    conv = g.sole_user(name)
    if (conv is None or conv.op_type != "Conv" or conv.input[0] != name
            or channels > 1 and _last_dim(g, x) != channels):
        return None
    attrs = attributes(conv)
    w = g.const(conv.input[1])
    if (w is None or w.dtype != np.float32 or w.ndim != 4 or len(g.users[conv.input[1]]) > 1
            or (channels > 1 and w.shape[1] != channels) or attrs.get("group", 1) != 1):
        return None
    padded = any(attrs.get("pads", ())) or attrs.get("auto_pad", b"NOTSET") not in (
        b"NOTSET", b"VALID")
    return conv, bool(padded)


def _fold_into_stem(g: _Graph, conv: Any, scale: np.ndarray, shift: np.ndarray | None) -> None:
    """``conv(x * scale + shift)`` as one Conv: the scale into its weights (exact with zero
    padding too), the shift into its bias (only without padding: pass None then)."""
    w = g.const(conv.input[1])
    assert w is not None
    w64 = w.astype(np.float64)
    conv.input[1] = g.add_const((w64 * scale.reshape(1, -1, 1, 1)).astype(np.float32),
                                f"{conv.input[1]}__edgekit_normalised")
    if shift is None or np.all(shift == 0):
        return
    b = g.const(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
    bias = (w64 * shift.reshape(1, -1, 1, 1)).sum(axis=(1, 2, 3))
    if b is not None:
        bias = bias + b.astype(np.float64)
    _set_bias(g, conv, bias.astype(np.float32))


def _after_transpose(g: _Graph, transpose: Any, scale: np.ndarray, shift: np.ndarray) -> int:
    """Apply ``x * scale + shift`` per NCHW channel after ``transpose`` (the ops that are not
    identities); the number of ops added."""
    from onnx import helper

    ops = [(op, v) for op, v, skip in (("Mul", scale, 1.0), ("Add", shift, 0.0))
           if not np.all(v == skip)]
    result = name = transpose.output[0]
    nodes = list(g.graph.node)
    at = nodes.index(transpose) + 1
    if ops:
        name = transpose.output[0] = f"{result}__edgekit_nchw"
    for i, (op, v) in enumerate(ops):
        prefix = f"{transpose.name or result}__edgekit_{op.lower()}"
        const = g.add_const(v.astype(np.float32).reshape(1, -1, 1, 1), prefix)
        out = result if i == len(ops) - 1 else f"{prefix}_out"
        nodes.insert(at + i, helper.make_node(op, [name, const], [out], name=prefix))
        name = out
    del g.graph.node[:]
    g.graph.node.extend(nodes)
    return len(ops)


def _move_input_affine(g: _Graph) -> tuple[int, int, bool] | None:
    """Merge one chain of :func:`_affine_chain` that reads a graph input and fold it into the
    Conv after its layout Transpose (a shift before a padded Conv stays as one Add, divided by
    the scale), else move it after the Transpose: (ops removed, ops added, folded into a
    Conv), or None when no chain changed."""
    inputs = {i.name for i in g.graph.input}
    for tr in [n for n in g.graph.node if n.op_type == "Transpose"]:
        perm = next((list(a.ints) for a in tr.attribute if a.name == "perm"), None)
        chain = None if perm != _NHWC_TO_NCHW else _affine_chain(g, tr)
        if chain is None or chain[0] not in inputs:
            continue  # inside the network (a LayerNorm's scale ...): the engines fuse those
        x, nodes, scale, shift = chain
        channels = max(len(scale), len(shift))
        stem = _stem_conv(g, x, tr.output[0], channels)
        if stem is not None and stem[1] and not np.all(scale != 0):
            stem = None
        identity = bool(np.all(scale == 1) and np.all(shift == 0))
        if stem is None and channels == 1 and len(nodes) <= 2 and not identity:
            continue  # scalars only, no Conv to fold them into: nothing to gain
        tr.input[0] = x  # the chain's nodes are left unread, for simplify to remove
        if stem is None or identity:
            return len(nodes), _after_transpose(g, tr, scale, shift), False
        conv, padded = stem
        _fold_into_stem(g, conv, scale, None if padded else shift)
        added = _after_transpose(g, tr, np.ones(1), shift / scale) if padded else 0
        return len(nodes), added, True
    return None


def rewrite(model: onnx.ModelProto) -> list[str]:
    """Apply the rewrites of the module doc to ``model`` in place; returns notes on what
    changed (dead nodes stay for :func:`~edgekit.convert.graph.simplify` to remove)."""
    notes: list[str] = []
    wraps = _drop_index_wraps(_Graph(model.graph))
    if wraps:
        notes.append(f"{wraps} Embedding index wrap(s) left to Gather")
    steps = {"moved": 0, "dropped": 0, "folded": 0}
    for _ in range(10 * len(model.graph.node)):  # each step removes a node or moves one on
        g = _Graph(model.graph)
        if _fold_into_conv(g):
            steps["folded"] += 1
        elif _sink_squeeze(g):
            steps["moved"] += 1
        elif _drop_squeeze_unsqueeze(g):  # the two above changed nothing: g still holds
            steps["dropped"] += 1
        else:
            break
    if any(steps.values()):
        notes.append(f"Conv1D epilogues: {steps['folded']} bias/scale op(s) folded into Conv, "
                     f"{steps['moved']} op(s) moved before a Squeeze, {steps['dropped']} "
                     "Squeeze/Unsqueeze pair(s) dropped")
    while (moved := _move_input_affine(_Graph(model.graph))) is not None:
        removed, added, folded = moved
        where = ("folded into the Conv after it" if folded else "after it") + (
            f", {added} op(s) per channel left" if added else "")
        notes.append(f"input normalisation: {removed} element-wise op(s) before the layout "
                     f"Transpose merged, {where}")
    return notes
