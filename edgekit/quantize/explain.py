"""Per-node accuracy evidence of a static int8 (QDQ) model: which node costs int8 accuracy.

One statistic serves both the report (``edgekit quantize --explain``) and the accuracy gate's
ranking (:mod:`edgekit.quantize.build`): onnxruntime's ``qdq_loss_debug`` runs the float and the
QDQ graphs with every activation as an output, matches each quantized tensor with its float
counterpart and gives the SQNR (dB) of the int8 activation against the fp32 one. That SQNR is
cumulative (a tensor inherits the error of everything upstream), so nodes are ranked by the dB
they *lose*: the SQNR of their nearest measured inputs minus that of their output. A damaged
node loses tens of dB; the nodes after it inherit its error but lose little themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.io.onnxgraph import producers

__all__ = [
    "EXPLAIN_SAMPLES",
    "EXPLAIN_LINES",
    "EXPLAIN_MEMORY_BYTES",
    "explain_samples",
    "activation_errors",
    "sqnr_db",
    "TensorLoss",
    "tensor_losses",
    "explain_nodes",
    "explain_lines",
]

#: held-out samples the per-node statistic is computed on (every activation of every sample is
#: kept in memory by ``collect_activations``, twice)
EXPLAIN_SAMPLES = 64
#: memory the activations kept by ``collect_activations`` may take (the fp32 graph's, and the
#: QDQ graph's at about twice that: each quantized tensor also before its Q/DQ pair)
EXPLAIN_MEMORY_BYTES = 1 << 30
#: rows of the table ``edgekit quantize --explain`` prints
EXPLAIN_LINES = 10


def explain_samples(activation_bytes: int) -> int:
    """How many samples to measure on when one sample's float activations take
    ``activation_bytes``: :data:`EXPLAIN_SAMPLES`, fewer (at least 4) to stay within
    :data:`EXPLAIN_MEMORY_BYTES`."""
    return int(min(EXPLAIN_SAMPLES, max(4, EXPLAIN_MEMORY_BYTES // (3 * max(activation_bytes, 1)))))


def activation_errors(float_model: Path, qdq_model: Path, reader: Any, tmp: Path
                      ) -> dict[str, dict[str, float]]:
    """``qdq_loss_debug``'s per-tensor SQNR (dB) of the QDQ model's quantized activations on
    the batches of ``reader`` (an onnxruntime ``CalibrationDataReader`` with ``rewind``):
    ``{tensor: {"qdq_err": ..., "xmodel_err": ...}}``; ``xmodel_err`` compares with the float
    model's activation. The augmented models are written into ``tmp``."""
    from onnxruntime.quantization import qdq_loss_debug as dbg

    fa, qa = tmp / f"{float_model.stem}_aug.onnx", tmp / f"{qdq_model.stem}_aug.onnx"
    dbg.modify_model_output_intermediate_tensors(str(float_model), str(fa))
    dbg.modify_model_output_intermediate_tensors(str(qdq_model), str(qa))
    reader.rewind()
    float_acts = dbg.collect_activations(str(fa), reader)
    reader.rewind()
    qdq_acts = dbg.collect_activations(str(qa), reader)
    matching = dbg.create_activation_matching(qdq_acts, float_acts)
    for match in matching.values():  # compute_activation_error reads "float" unguarded
        match.setdefault("float", [])
    errors = dbg.compute_activation_error(matching)
    fa.unlink(missing_ok=True)
    qa.unlink(missing_ok=True)
    return errors


def sqnr_db(errors: Mapping[str, Mapping[str, float]], tensor: str) -> float:
    """The SQNR (dB) of ``tensor``'s int8 activation against fp32 (inf when not measured)."""
    e = errors.get(tensor, {})
    return float(e.get("xmodel_err", e.get("qdq_err", np.inf)))


@dataclass
class TensorLoss:
    """One measured tensor: its producer, the nodes since the nearest measured tensors (the
    region whose quantization the loss belongs to), its SQNR and the dB lost in that region."""

    tensor: str
    producer: Any  # onnx NodeProto or None (a graph input)
    region: list[str]
    sqnr_db: float
    loss_db: float


def tensor_losses(model: Any, errors: Mapping[str, Mapping[str, float]]) -> list[TensorLoss]:
    """Every measured tensor of the float ``model`` (an ``onnx.ModelProto``), worst loss
    first. A tensor's loss is the lowest SQNR of the nearest measured tensors upstream (the
    graph inputs count as exact) minus its own; without a measured tensor upstream it is the
    error of its own quantization."""
    producer = producers(model.graph)
    losses = []
    for tensor in errors:
        own = sqnr_db(errors, tensor)
        region, upstream = _upstream(tensor, producer, errors)
        ref = min(upstream) if upstream else float(errors[tensor].get("qdq_err", np.inf))
        loss = (ref - own) if np.isfinite(ref) else -own
        losses.append(TensorLoss(tensor, producer.get(tensor), region, own, float(loss)))
    losses.sort(key=lambda t: -t.loss_db)
    return losses


def _upstream(tensor: str, producer: Mapping[str, Any],
              errors: Mapping[str, Mapping[str, float]]) -> tuple[list[str], list[float]]:
    """The nodes between ``tensor`` and the nearest measured tensors upstream (its producer
    first), and those tensors' SQNRs."""
    region: list[str] = []
    sqnrs: list[float] = []
    seen = {tensor}
    stack = [tensor]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in region:
            continue
        region.append(node.name)
        for i in node.input:
            if i in seen:
                continue
            seen.add(i)
            if i in errors:
                sqnrs.append(sqnr_db(errors, i))
            elif i in producer:
                stack.append(i)
    return region, sqnrs


def explain_nodes(float_model: Path, qdq_model: Path, reader: Any, tmp: Path,
                  kept_in_float: Sequence[str], gate: Mapping[str, Any] | None
                  ) -> list[dict[str, Any]]:
    """The report's ``explain`` section: one entry per measured tensor of the QDQ model,
    worst loss first (see the module doc), with whether the gate (or the options) kept its
    producer in float and, when a gate step did so, the accuracy before and after it."""
    import onnx

    errors = activation_errors(float_model, qdq_model, reader, tmp)
    model = onnx.load(str(float_model), load_external_data=False)
    kept = set(kept_in_float)
    effects = _gate_effects(gate)
    out = []
    op_of = {n.name: n.op_type for n in model.graph.node}
    for t in tensor_losses(model, errors):
        node = t.producer
        name = node.name if node is not None else None
        in_float = [n for n in t.region if n in kept]
        entry: dict[str, Any] = {
            "node": name, "op_type": node.op_type if node is not None else None,
            "tensor": t.tensor, "region": t.region,
            "region_ops": [op_of.get(n, "") for n in t.region], "sqnr_db": _db(t.sqnr_db),
            "loss_db": _db(t.loss_db), "kept_in_float": bool(in_float),
            "gate": next((effects[n] for n in in_float if n in effects), None)}
        out.append(entry)
    return out


def _db(x: float) -> float | None:
    return round(float(x), 2) if np.isfinite(x) else None


def _gate_effects(gate: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Per node the gate kept in float: its step and the accuracy before and after it."""
    if not gate:
        return {}
    steps = list(gate.get("steps") or [])
    effects: dict[str, dict[str, Any]] = {}
    for i in range(1, len(steps)):
        before, after = steps[i - 1].get("accuracy"), steps[i].get("accuracy")
        gain = None if before is None or after is None else round(after - before, 3)
        for n in steps[i].get("nodes") or []:
            effects.setdefault(n, {"step": i, "accuracy_before": before,
                                   "accuracy_after": after, "accuracy_gain_pt": gain})
    return effects


def explain_lines(entries: Sequence[Mapping[str, Any]], limit: int = EXPLAIN_LINES
                  ) -> list[str]:
    """The top ``limit`` entries of an ``explain`` section as a small table for people."""
    if not entries:
        return ["explain: no quantized activation was measured"]
    rows = [("node", "ops", "SQNR dB", "lost dB", "float", "gate")]
    for e in entries[:limit]:
        g = e.get("gate") or {}
        gain = g.get("accuracy_gain_pt")
        rows.append((_node_cell(e), "+".join(reversed(e.get("region_ops") or [])) or "input",
                     _fmt(e.get("sqnr_db")), _fmt(e.get("loss_db")),
                     "yes" if e.get("kept_in_float") else "no",
                     f"step {g['step']}: {gain:+.2f} pt" if g and gain is not None else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    shown = min(limit, len(entries))
    head = (f"explain: int8 vs fp32 activations per node, worst first (top {shown} of "
            f"{len(entries)})")
    return [head] + ["  " + "  ".join(c.rjust(w) if 2 <= i <= 3 else c.ljust(w)
                                       for i, (c, w) in enumerate(zip(r, widths, strict=True))
                                       ).rstrip() for r in rows]


def _node_cell(entry: Mapping[str, Any], width: int = 56) -> str:
    """The first node of an entry's region (where its loss starts), ``(+N)`` more, or the
    tensor for a graph input; long names keep their tail."""
    region = list(entry.get("region") or [])
    name = str(region[-1]) if region else str(entry["tensor"])
    name = name if len(name) <= width else "..." + name[-(width - 3):]
    return name + (f" (+{len(region) - 1})" if len(region) > 1 else "")


def _fmt(x: Any) -> str:
    return "inf" if x is None else f"{x:.1f}"
