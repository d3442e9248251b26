"""Per-op profile of each engine: where a model's time goes, fp32 vs int8 vs tuned.

For every file and engine (onnxruntime's profiler; OpenVINO's ``PERF_COUNT``), 1 thread, batch
1, profiled in interleaved rounds (each round profiles every row, in the balanced orders of
``edgekit.measure.bench.balanced_orders``, so machine noise hits all rows alike), the mean time
per call of each kind of op: 1x1 convs, depthwise convs, other (k x k) convs, MatMul/Gemm,
quantize/dequantize, layout (transpose/reorder) and the rest. Convs are classified from the
ONNX graph (``group``, ``kernel_shape``) for onnxruntime and from the kernel OpenVINO picked.
This is the "why" behind ``run_all.py --engines``' ratios.

    python benchmarks/op_profile.py                      # run_all.py's MobileNetV2-224 files
    python benchmarks/op_profile.py a.onnx b.int8.onnx --rounds 10

Prints a table (ms per call, and each kind's speed-up over the first file on onnxruntime) and
writes ``benchmarks/results/op_profile.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.inputs.prepare import onnx_input_specs
from edgekit.measure.bench import balanced_orders, make_inputs
from edgekit.measure.machine import cpu_model, instruction_set
from edgekit.runtime import SessionOptionsConfig
from edgekit.tune.search import node_profile

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "op_profile.json"
MANIFEST = ROOT / "benchmarks" / ".cache" / "manifest.json"
KINDS = ("conv 1x1", "conv depthwise", "conv kxk", "matmul/gemm", "quantize", "layout", "other")
_LAYOUT = {"Transpose", "Reorder", "ReorderInput", "ReorderOutput", "Reshape", "Squeeze"}
_QUANT = {"QuantizeLinear", "DequantizeLinear", "FakeQuantize", "Convert"}


def _conv_kind(node: Any) -> str:
    attrs = {a.name: a for a in node.attribute}
    group = attrs["group"].i if "group" in attrs else 1
    kernel = list(attrs["kernel_shape"].ints) if "kernel_shape" in attrs else []
    if group > 1:
        return "conv depthwise"
    return "conv 1x1" if kernel and all(k == 1 for k in kernel) else "conv kxk"


def _conv_behind(node: Any, producer: dict[str, Any]) -> Any:
    """The Conv a fused NCHWc kernel ends with (through up to 3 activations or adds)."""
    for _ in range(3):
        if node is None or node.op_type == "Conv":
            break
        convs = [producer.get(i) for i in node.input]
        node = next((n for n in convs if n is not None and n.op_type == "Conv"),
                    producer.get(node.input[0]) if node.input else None)
    return node


def _ort_kind(name: str, by_name: dict[str, Any], producer: dict[str, Any]) -> str:
    """The kind of an onnxruntime profile entry: fused nodes keep the original node name
    (``<node>_token_N``) or the output tensor name (``<tensor>_nchwc``)."""
    base = re.sub(r"(_nchwc|_token_\d+)$", "", name)
    node = by_name.get(base) or producer.get(base)
    if name.endswith("_nchwc"):  # a fused conv, named by the output of its activation/add
        node = _conv_behind(node, producer)
    op = node.op_type if node is not None else re.sub(r"(_token)?_\d+$", "", base)
    if op in ("Conv", "QLinearConv", "ConvInteger"):
        return _conv_kind(node)
    if op in ("MatMul", "Gemm", "QLinearMatMul", "MatMulInteger", "FusedMatMul"):
        return "matmul/gemm"
    if op in _QUANT:
        return "quantize"
    return "layout" if op in _LAYOUT else "other"


@functools.cache
def _graph_index(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ONNX graph's nodes by name and by output (read once per file, not per round)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return {n.name: n for n in graph.node}, {o: n for n in graph.node for o in n.output}


def profile_onnxruntime(path: Path, x: dict[str, np.ndarray], runs: int) -> dict[str, float]:
    """Milliseconds per call of each kind on onnxruntime (1 thread)."""
    by_name, producer = _graph_index(path)
    out: dict[str, float] = collections.defaultdict(float)
    for name, us in node_profile(path, x, SessionOptionsConfig(threads=1), runs).items():
        out[_ort_kind(name, by_name, producer)] += us / 1000.0
    return dict(out)


def _ov_kind(node_type: str, exec_type: str) -> str:
    if node_type == "GroupConvolution":
        return "conv depthwise"
    if node_type == "Convolution":
        return "conv 1x1" if "1x1" in exec_type else "conv kxk"
    if node_type in ("FullyConnected", "MatMul"):
        return "matmul/gemm"
    if node_type in _QUANT:
        return "quantize"
    return "layout" if node_type in _LAYOUT else "other"


def profile_openvino(path: Path, x: dict[str, np.ndarray], runs: int) -> dict[str, float]:
    """Milliseconds per call of each kind on OpenVINO (1 thread, f32 pinned, latency)."""
    import openvino as ov

    core = ov.Core()
    props = {**SessionOptionsConfig(threads=1).to_openvino(), "PERF_COUNT": "YES"}
    req = core.compile_model(core.read_model(str(path)), "CPU", props).create_infer_request()
    arrays = list(x.values())
    for _ in range(5):
        req.infer(arrays)
    out: dict[str, float] = collections.defaultdict(float)
    for _ in range(runs):
        req.infer(arrays)
        for p in req.profiling_info:
            if p.status.name == "EXECUTED":
                kind = _ov_kind(p.node_type, p.exec_type)
                out[kind] += p.real_time.total_seconds() * 1000.0 / runs
    return dict(out)


PROFILERS = {"onnxruntime": profile_onnxruntime, "openvino": profile_openvino}


def _inputs(path: Path) -> dict[str, np.ndarray]:
    """Batch-1 inputs as ``edgekit bench`` and ``run_all.py`` draw them."""
    import onnx

    specs = onnx_input_specs(onnx.load(str(path), load_external_data=False))
    return dict(zip([s.name for s in specs], make_inputs(specs, 1), strict=True))  # type: ignore[arg-type]


def _default_files() -> list[Path]:
    if not MANIFEST.exists():
        raise SystemExit(f"error: no files given and no {MANIFEST}; run "
                         "`python benchmarks/run_all.py --engines` first, or pass .onnx files")
    paths = json.loads(MANIFEST.read_text())["mobilenetv2_224_100"]["paths"]
    return [Path(paths[k]) for k in ("onnx-fp32", "onnx-int8", "onnx-tuned@1") if k in paths]


def _print(result: dict[str, Any]) -> None:
    print(f"CPU: {result['cpu']} ({result['instruction_set']}), 1 thread, batch 1, "
          f"ms per call (speed-up over the first row)")  # fmt: skip
    rows = result["profiles"]
    ref = rows[0]["ms"]
    print(f"{'file @ engine':44}" + "".join(f"{k:>17}" for k in (*KINDS, "total")))
    for r in rows:
        cells = []
        for k in (*KINDS, "total"):
            v, base = r["ms"].get(k, 0.0), ref.get(k, 0.0)
            cells.append(f"{v:7.3f} ({base / v:4.2f}x)" if v and base else f"{v:7.3f}        ")
        print(f"{r['file'] + ' @ ' + r['engine']:44}" + "".join(f"{c:>17}" for c in cells))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", help=".onnx files (default: run_all.py's MobileNetV2-224)")
    ap.add_argument("--runs", type=int, default=10, help="profiled calls per round (default 10)")
    ap.add_argument("--rounds", type=int, default=5,
                    help="rounds; each profiles every file on every engine (default 5)")
    ap.add_argument("--engines", default="onnxruntime,openvino",
                    help="comma-separated engines (default onnxruntime,openvino)")
    ap.add_argument("--out", default=str(RESULTS), help=f"JSON file (default {RESULTS})")
    args = ap.parse_args(argv)
    files = [Path(f) for f in args.files] or _default_files()
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        ap.error(f"no such file: {', '.join(missing)}")
    x = _inputs(files[0])
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    rows = [{"file": f.name, "engine": e, "path": f, "ms": collections.Counter()}
            for e in engines for f in files]
    orders = balanced_orders(len(rows))
    for r in range(args.rounds):  # interleaved: every row profiled in every round
        for row in (rows[i] for i in orders[r % len(orders)]):
            ms = PROFILERS[row["engine"]](row["path"], x, args.runs)
            row["ms"].update({k: v / args.rounds for k, v in ms.items()})
    for row in rows:
        row["ms"] = dict(row["ms"], total=sum(row["ms"].values()))
        del row["path"]
    result = {"cpu": cpu_model(), "instruction_set": instruction_set(), "runs": args.runs,
              "rounds": args.rounds, "profiles": rows}
    _print(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
