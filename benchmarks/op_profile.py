"""Per-op profile of each engine: where a model's time goes, fp32 vs int8 vs tuned.

For every file and engine (onnxruntime's profiler; OpenVINO's ``PERF_COUNT``), 1 thread, batch
1, profiled in interleaved rounds (each round profiles every row, in the balanced orders of
``edgekit.speed.timing.balanced_orders``, so machine noise hits all rows alike), the kernel
time per call (onnxruntime: median; OpenVINO: mean) of each kind of op: 1x1 convs, depthwise
convs, other (k x k) convs, MatMul/Gemm, quantize/dequantize, layout (transpose/reorder) and the
rest, the unfused Q/DQ nodes (onnxruntime) or layers (OpenVINO), and a "why" line per variant
whose fp32 file is among the files. The profiling is :mod:`edgekit.measure.profile`'s (the
code of ``edgekit bench --profile``). This is the "why" behind ``run_all.py --engines``' ratios.

    python benchmarks/op_profile.py                      # run_all.py's MobileNetV2-224 files
    python benchmarks/op_profile.py a.onnx b.int8.onnx --rounds 10

Prints a table (ms per call, and each kind's speed-up over the first file on onnxruntime) and
writes ``benchmarks/results/op_profile.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.inputs.prepare import onnx_input_specs
from edgekit.measure.profile import KINDS, ProfileRow, profile_models
from edgekit.measure.profile_report import why_lines
from edgekit.runtime import SessionOptionsConfig
from edgekit.speed.machine import cpu_model, instruction_set
from edgekit.speed.timing import make_inputs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "op_profile.json"
MANIFEST = ROOT / "benchmarks" / ".cache" / "manifest.json"


def _inputs(path: Path) -> list[np.ndarray]:
    """Batch-1 inputs as ``edgekit bench`` and ``run_all.py`` draw them."""
    import onnx

    specs = onnx_input_specs(onnx.load(str(path), load_external_data=False))
    return make_inputs(specs, 1)  # type: ignore[arg-type]


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
    for line in result["why"]:
        print(line)


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
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    rows = [ProfileRow(f.name, f, e, SessionOptionsConfig(threads=1))
            for e in engines for f in files]
    profiles = profile_models(rows, _inputs(files[0]), args.runs, args.rounds)
    result = {"cpu": cpu_model(), "instruction_set": instruction_set(), "runs": args.runs,
              "rounds": args.rounds,
              "profiles": [{"file": p.name, "engine": p.engine, "unfused_qdq": p.unfused_qdq,
                            "ms": {**{k: v for k, v in p.ms.items() if v}, "total": p.total_ms}}
                           for p in profiles],
              "why": why_lines(profiles)}
    _print(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
