"""Per-op-kind profiles of ONNX models: where each engine's time goes (``bench --profile``).

onnxruntime: its profiler (CPU provider), each node's kernel time, its op type from the event
(``op_name``); OpenVINO: ``PERF_COUNT``, each executed layer's time and type. Convs are
classified (:data:`KINDS`) from the ONNX node a kernel is named after (onnxruntime:
``<node>_token_N``, ``<output>_nchwc``; OpenVINO: ``<node>/WithoutBiases``). Models are loaded
once and profiled interleaved (rounds of ``runs`` calls in balanced orders, as ``bench``
times); kernel times per call (the engine's time between kernels is not in them),
medians over the calls on onnxruntime, means on OpenVINO (its counters are means).

Unfused Q/DQ: the quantization work that still runs as its own kernels, not fused into an
integer kernel (QLinearConv, QGemm ...) or an element-wise chain; a QDQ file keeps at least its
float boundaries. onnxruntime: QuantizeLinear/DequantizeLinear nodes; OpenVINO: layers made of
the file's Q/DQ nodes alone (:func:`ov_qdq_layer`: a ``FakeQuantize``, or a ``Subgraph`` of a
DequantizeLinear's Convert/Subtract/Multiply), which count as ``quantize`` time.
``bench --profile``'s report and why lines: :mod:`edgekit.measure.profile_report`.
"""

from __future__ import annotations

import bisect
import collections
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import InputError
from edgekit.io.onnxgraph import attributes, producers
from edgekit.io.tempdirs import drop_temp_dir, new_temp_dir
from edgekit.speed.timing import balanced_orders

__all__ = ["KINDS", "NodeTime", "OpProfile", "ProfileRow", "node_profile",
           "node_times", "attribute_fp32", "attribute_int8", "ort_kind", "ov_kind", "ov_qdq_layer",
           "profile_models", "PROFILED_ENGINES"]

KINDS = ("conv 1x1", "conv depthwise", "conv kxk", "matmul/gemm", "quantize", "elementwise",
         "layout", "other")
#: the Q/DQ kernels that count as unfused in an onnxruntime profile
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
_CONV = {"Conv", "QLinearConv", "ConvInteger", "FusedConv", "NhwcFusedConv", "NhwcConv"}
_MATMUL = {"MatMul", "Gemm", "QGemm", "QLinearMatMul", "MatMulInteger", "FusedMatMul",
           "FusedGemm", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "MatMulNBits"}
_QUANT = {*QDQ_OPS, "DynamicQuantizeLinear", "FakeQuantize", "Convert"}
_LAYOUT = {"Transpose", "Reorder", "ReorderInput", "ReorderOutput", "Reshape", "Squeeze",
           "Unsqueeze", "Flatten"}
#: element-wise kernels (activations and arithmetic, float or integer; onnxruntime's fused Swish
#: is QuickGelu; OpenVINO's fused element-wise chains are a ``Subgraph``, its unfused ones an
#: ``Eltwise``): EfficientNet's Swish and squeeze-excite products are most of its int8 time
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Sigmoid", "Tanh", "Relu", "Clip", "LeakyRelu",
                "HardSigmoid", "HardSwish", "Gelu", "QuickGelu", "FastGelu", "BiasGelu", "Erf",
                "Pow", "Sqrt", "Exp", "Neg", "Max", "Min", "Where", "Elu", "Selu", "PRelu",
                "Softplus", "Mish", "QLinearAdd", "QLinearMul", "QLinearSigmoid",
                "QLinearLeakyRelu", "Eltwise", "Subgraph", "Multiply", "Subtract", "Divide",
                "Power", "Swish", "Math"}
_ACTIVATIONS = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Tanh", "Add"}
_COMPUTE = {"Conv", "MatMul", "Gemm", "ConvTranspose"}
#: profiled calls per round and rounds of ``bench --profile``
RUNS, ROUNDS, WARMUP = 20, 5, 3


@dataclass(frozen=True)
class NodeTime:
    """One profiled node: name, op (kernel op type / OpenVINO layer type), kernel (OpenVINO's
    implementation, e.g. ``brgconv_avx512_1x1_I8``; "" on onnxruntime), microseconds per call."""

    name: str
    op: str
    kernel: str
    us: float


@dataclass
class OpProfile:
    """One model on one engine: milliseconds per call and profiled nodes (kernels, layers) of
    each op kind, unfused Q/DQ nodes (onnxruntime) or layers (OpenVINO), the profiled calls and,
    from ``bench``, the measured p50 latency."""

    name: str
    path: str
    engine: str
    ms: dict[str, float]
    nodes: dict[str, int]
    unfused_qdq: int | None
    calls: int
    p50_ms: float | None = None

    @property
    def total_ms(self) -> float:
        return sum(self.ms.values())

    def shares(self) -> dict[str, float]:
        """Each kind's percentage of the kernel time (they sum to 100 unless nothing ran)."""
        total = self.total_ms
        return {k: 100.0 * v / total if total > 0 else 0.0 for k, v in self.ms.items()}

    def to_dict(self) -> dict[str, Any]:
        shares = self.shares()
        return {"name": self.name, "path": self.path, "engine": self.engine,
                "calls": self.calls, "total_ms": self.total_ms, "unfused_qdq": self.unfused_qdq,
                "p50_ms": self.p50_ms,
                "kinds": {k: {"ms": v, "share": shares[k], "nodes": self.nodes[k]}
                          for k, v in self.ms.items()}}


@dataclass
class ProfileRow:
    """What to profile: display name, ONNX file, engine, ``SessionOptionsConfig``."""

    name: str
    path: Path
    engine: str
    session: Any


# ---------------------------------------------------------------------------------------------
# onnxruntime
# ---------------------------------------------------------------------------------------------
class _OrtProfiler:
    """An onnxruntime CPU session with profiling on; :meth:`finish` parses the profile."""

    def __init__(self, path: Path, session: Any) -> None:
        import onnxruntime as ort

        so = session.to_ort()
        so.enable_profiling = True
        self._tmp = new_temp_dir("edgekit-prof-")  # registered: a SIGTERM removes it too
        so.profile_file_prefix = os.path.join(self._tmp, "prof")
        try:
            self.sess = ort.InferenceSession(
                os.fspath(path), so, providers=["CPUExecutionProvider"],
                disabled_optimizers=session.disabled_optimizers or None)
        except BaseException:  # the temp folder goes, the error (or interrupt) propagates
            drop_temp_dir(self._tmp)
            raise
        self.input_names = [i.name for i in self.sess.get_inputs()]
        self.skip = 0  # leading calls left out of the profile (warm-up)
        self.origins: dict[str, list[str]] = {}  # profile names are the graph's (ort_kind)

    def run(self, arrays: Sequence[np.ndarray], n: int) -> None:
        feeds = dict(zip(self.input_names, arrays, strict=True))
        for _ in range(n):
            self.sess.run(None, feeds)

    def finish(self) -> tuple[list[NodeTime], int]:
        try:
            events = json.loads(Path(self.sess.end_profiling()).read_text())
        finally:
            drop_temp_dir(self._tmp)
        return parse_ort_events(events, self.skip)


def parse_ort_events(events: Sequence[dict[str, Any]], skip: int = 0,
                     ) -> tuple[list[NodeTime], int]:
    """Kernel time per call of each node of an onnxruntime profile (the median over the calls,
    robust to the calls a busy machine slows; a node's kernels within one call summed, 0 in
    calls without it) and the calls counted; the first ``skip`` calls (``model_run``) left out."""
    runs = sorted(e["ts"] for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    counted = max(0, len(runs) - skip)
    per_call: dict[str, dict[int, float]] = collections.defaultdict(dict)
    ops: dict[str, str] = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        call = bisect.bisect_right(runs, e.get("ts", 0)) - 1  # the model_run it falls in
        if call < skip:
            continue
        node = name[: -len("_kernel_time")]
        per_call[node][call] = per_call[node].get(call, 0.0) + e.get("dur", 0)
        ops[node] = str(e.get("args", {}).get("op_name", ""))
    us = {n: float(np.median([*t.values(), *[0.0] * (counted - len(t))]))
          for n, t in per_call.items()} if counted else {}
    return [NodeTime(n, ops[n], "", v) for n, v in us.items()], counted


def node_times(path: str | os.PathLike[str], feeds: dict[str, np.ndarray], session: Any,
               runs: int = 30, warmup: int = 0) -> list[NodeTime]:
    """Kernel time per call of each profiled node on onnxruntime (its profiler; the median
    over ``runs`` calls after ``warmup`` calls)."""
    prof = _OrtProfiler(Path(path), session)
    prof.skip = warmup
    try:
        prof.run([feeds[n] for n in prof.input_names], warmup + runs)
    finally:
        nodes, _ = prof.finish()
    return nodes


def node_profile(path: str | os.PathLike[str], feeds: dict[str, np.ndarray], session: Any,
                 runs: int = 30) -> dict[str, float]:
    """Median kernel time per call of each profiled node in microseconds (onnxruntime's
    profiler), by the profile's node name (``edgekit tune``'s latency-aware stage)."""
    return {n.name: n.us for n in node_times(path, feeds, session, runs)}


def attribute_fp32(profile: dict[str, float], graph: Any) -> dict[str, float]:
    """Map fp32 profile names (node names, or fused outputs ``<tensor>_nchwc``) to the
    original compute nodes (Conv/MatMul/Gemm)."""
    producer = producers(graph)
    by_name = {n.name: n for n in graph.node}
    out: dict[str, float] = collections.defaultdict(float)
    for name, us in profile.items():
        base = re.sub(r"(_nchwc|_token_\d+)$", "", name)
        node = _compute_behind(by_name.get(base) or producer.get(base), producer)
        if node is not None:
            out[node.name] += us
    return dict(out)


def attribute_int8(profile: dict[str, float], names: set[str]) -> dict[str, float]:
    """Map int8 profile names (fused QDQ nodes ``<node>_token_N``) to original node names."""
    out: dict[str, float] = collections.defaultdict(float)
    for name, us in profile.items():
        base = re.sub(r"_token_\d+$", "", name)
        if base in names:
            out[base] += us
    return dict(out)


def _graph_index(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ONNX graph's nodes by name and by output."""
    import onnx

    graph = onnx.load(os.fspath(path), load_external_data=False).graph
    return {n.name: n for n in graph.node}, producers(graph)


def _conv_kind(node: Any) -> str:
    attrs = attributes(node)
    group, kernel = attrs.get("group", 1), list(attrs.get("kernel_shape", []))
    if group > 1:
        return "conv depthwise"
    return "conv 1x1" if kernel and all(k == 1 for k in kernel) else "conv kxk"


def _compute_behind(node: Any, producer: dict[str, Any]) -> Any:
    """The compute node (Conv/MatMul/Gemm) a fused kernel ends with, through up to 3
    activations or adds (a compute input first: the conv of a residual add), or None."""
    for _ in range(3):
        if node is None or node.op_type in _COMPUTE or node.op_type not in _ACTIVATIONS:
            break
        ins = [producer.get(i) for i in node.input] or [None]
        node = next((n for n in ins if n is not None and n.op_type in _COMPUTE), ins[0])
    return node if node is not None and node.op_type in _COMPUTE else None


def ort_kind(node: NodeTime, by_name: dict[str, Any], producer: dict[str, Any]) -> str:
    """The kind of an onnxruntime profile entry: its kernel's op type; a conv's shape from the
    graph node it is named after (a conv not found there counts as ``conv kxk``)."""
    base = re.sub(r"(_nchwc|_token_\d+)$", "", node.name)
    graph_node = by_name.get(base) or producer.get(base)
    op = node.op or (graph_node.op_type if graph_node is not None else "")
    if op in _CONV:
        conv = _compute_behind(graph_node, producer)
        return _conv_kind(conv) if conv is not None and conv.op_type == "Conv" else "conv kxk"
    if op in _MATMUL:
        return "matmul/gemm"
    return _other_kind(op)


def _other_kind(op: str) -> str:
    """The kind of a kernel that is no conv and no matmul, by its op type."""
    if op in _QUANT:
        return "quantize"
    if op in _ELEMENTWISE:
        return "elementwise"
    return "layout" if op in _LAYOUT else "other"


# ---------------------------------------------------------------------------------------------
# OpenVINO
# ---------------------------------------------------------------------------------------------
class _OvProfiler:
    """An OpenVINO CPU infer request with ``PERF_COUNT``, compiled static for the input
    ``shapes`` as edgekit's OpenVINO engine does (dynamic where the model cannot be).

    OpenVINO's counters are each layer's mean over every call since compilation (the first
    call's weight packing included), in whole microseconds; the profile is the mean over the
    calls after the warm-up (a ``run`` while ``skip`` is set), from the counters' totals at the
    warm-up's end and at :meth:`finish` (error under 1 us per layer with 3 warm-up calls)."""

    def __init__(self, path: Path, session: Any, shapes: Sequence[tuple[int, ...]]) -> None:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(os.fspath(path))
        try:
            model.reshape({i: list(s) for i, s in enumerate(shapes)})
        except Exception:  # noqa: BLE001 - not static at these shapes: profile it dynamic
            model = core.read_model(os.fspath(path))
        props = {**session.to_openvino(), "PERF_COUNT": "YES"}
        compiled = core.compile_model(model, "CPU", props)
        self.req = compiled.create_infer_request()
        self.origins = _origins(compiled)
        self.skip = 0
        self._infers = self._base_n = 0
        self._base: dict[tuple[str, str, str], float] = {}

    def _totals(self) -> dict[tuple[str, str, str], float]:
        """Each executed layer's total microseconds over every call so far."""
        return {(p.node_name, p.node_type, p.exec_type):
                p.real_time.total_seconds() * 1e6 * self._infers
                for p in self.req.profiling_info if p.status.name == "EXECUTED"}

    def run(self, arrays: Sequence[np.ndarray], n: int) -> None:
        for _ in range(n):
            self.req.infer(list(arrays))
        self._infers += n
        if self.skip > 0:  # the warm-up: the profile starts here
            self.skip = 0
            self._base, self._base_n = self._totals(), self._infers

    def finish(self) -> tuple[list[NodeTime], int]:
        """Each executed layer's mean time per call after the warm-up. A layer whose mean fell
        under 1 us since is no longer ``EXECUTED`` in the counters (they then read 0 us): it
        is kept from the warm-up's, at its share of the time since (0 us at this precision)."""
        calls = self._infers - self._base_n
        if calls < 1:
            return [], 0
        totals = self._totals()
        totals.update((k, 0.0) for k in self._base if k not in totals)
        return [NodeTime(*k, max(0.0, (us - self._base.get(k, 0.0)) / calls))
                for k, us in totals.items()], calls


def _origins(compiled: Any) -> dict[str, list[str]]:
    """Each layer of OpenVINO's runtime graph: the names of the model's layers fused into it
    (its ``originalLayersNames``), by the layer's name in the performance counters."""
    out: dict[str, list[str]] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        names = info["originalLayersNames"].astype(str) if "originalLayersNames" in info else ""
        out[op.get_friendly_name()] = [n for n in names.split(",") if n]
    return out


def ov_kind(node: NodeTime, by_name: dict[str, Any] | None = None,
            origins: Sequence[str] = ()) -> str:
    """The kind of an OpenVINO layer: by layer type; a conv's shape from the ONNX Conv fused
    into it (``origins``: OpenVINO's ``originalLayersNames``) or its name starts with
    (``<node>/WithoutBiases``), else from its kernel (``..._1x1_...``)."""
    if node.op == "GroupConvolution":
        return "conv depthwise"
    if node.op == "Convolution":
        parts = node.name.split("/")
        names = [*origins, *("/".join(parts[:i]) for i in range(len(parts), 0, -1))]
        conv = next((by_name[n] for n in names
                     if by_name and n in by_name and by_name[n].op_type == "Conv"), None)
        if conv is not None:
            return _conv_kind(conv)
        return "conv 1x1" if "1x1" in node.kernel else "conv kxk"
    if node.op.startswith(("FullyConnected", "MatMul")):
        return "matmul/gemm"
    return _other_kind(node.op)


#: what OpenVINO names the Convert/Subtract/Multiply it splits a DequantizeLinear into
_OV_SPLIT = re.compile(r"(Convert|Subtract|Multiply)_\d+")


def ov_qdq_layer(node: NodeTime, by_name: dict[str, Any], origins: Sequence[str] = ()) -> bool:
    """Whether an OpenVINO layer does quantization work alone (an unfused Q/DQ): a
    ``FakeQuantize``, or a layer whose ``origins`` hold the file's QuantizeLinear/
    DequantizeLinear nodes (or OpenVINO's layers named after them) and, besides them, only the
    Convert/Subtract/Multiply that OpenVINO splits a DequantizeLinear into. A Q/DQ fused into a
    conv or into an element-wise chain (an Erf's ``Subgraph``) has other origins: not counted."""
    if node.op == "FakeQuantize":
        return True
    qdq = False
    for name in origins:
        onnx_node = by_name.get(name)
        if onnx_node is not None:
            if onnx_node.op_type not in QDQ_OPS:
                return False
            qdq = True
        elif "QuantizeLinear" in name:  # a layer OpenVINO made from one (Dequantize too)
            qdq = True
        elif not _OV_SPLIT.fullmatch(name):
            return False
    return qdq


#: the engines with a profiler (others' rows are listed as not profiled)
PROFILED_ENGINES = ("onnxruntime", "openvino")


def _open(row: ProfileRow, arrays: Sequence[np.ndarray]) -> _OrtProfiler | _OvProfiler:
    if row.engine == "onnxruntime":
        return _OrtProfiler(row.path, row.session)
    if row.engine == "openvino":
        return _OvProfiler(row.path, row.session, [a.shape for a in arrays])
    raise InputError(f"cannot profile engine {row.engine!r}", hint="use onnxruntime or openvino")


def _summarize(row: ProfileRow, nodes: list[NodeTime], calls: int,
               origins: dict[str, list[str]]) -> OpProfile:
    ms, count = dict.fromkeys(KINDS, 0.0), dict.fromkeys(KINDS, 0)
    unfused: int | None = None
    by_name, producer = _graph_index(row.path)
    if row.engine == "onnxruntime":
        kinds = [ort_kind(n, by_name, producer) for n in nodes]
        unfused = sum(1 for n in nodes if n.op in QDQ_OPS)
    else:
        qdq = [ov_qdq_layer(n, by_name, origins.get(n.name, ())) for n in nodes]
        kinds = ["quantize" if q else ov_kind(n, by_name, origins.get(n.name, ()))
                 for n, q in zip(nodes, qdq, strict=True)]
        unfused = sum(qdq)
    for n, kind in zip(nodes, kinds, strict=True):
        ms[kind] += n.us / 1000.0
        count[kind] += 1
    return OpProfile(row.name, os.fspath(row.path), row.engine, ms, count, unfused, calls)


def profile_models(rows: Sequence[ProfileRow], arrays: Sequence[np.ndarray], runs: int = RUNS,
                   rounds: int = ROUNDS, warmup: int = WARMUP) -> list[OpProfile]:
    """Profile ``rows`` interleaved on the inputs ``arrays`` (model input order): ``warmup``
    unprofiled calls each, then ``rounds`` rounds of ``runs`` calls of every row."""
    if runs < 1 or rounds < 1:
        raise InputError(f"runs and rounds must be >= 1, got {runs} and {rounds}")
    profilers: list[_OrtProfiler | _OvProfiler] = []
    results: list[tuple[list[NodeTime], int, dict[str, list[str]]]] = []
    try:
        for row in rows:
            profilers.append(_open(row, arrays))
            profilers[-1].skip = warmup
            profilers[-1].run(arrays, warmup)
        orders = balanced_orders(len(rows))
        for r in range(rounds):
            for i in orders[r % len(orders)]:
                profilers[i].run(arrays, runs)
    finally:
        for p in profilers:  # every onnxruntime profile is ended (its temporary file removed)
            results.append((*p.finish(), p.origins))
    return [_summarize(row, *res) for row, res in zip(rows, results, strict=True)]
