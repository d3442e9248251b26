"""Tables of the conversion matrix (``benchmarks/conversion_matrix.py``): which side handles
a case, the counts, the Markdown file and the printed summary."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import matrix_litert
from matrix_cases import NOT_PORTED, SUITES, TF2ONNX_TESTS

ATOL, RTOL = 1e-4, 1e-3  # edgekit's default validation tolerance, applied to Keras' file too
#: terminal colour codes some errors carry
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _line(r: dict[str, Any]) -> str:
    ek = "ok" if r.get("edgekit_ok") else (r.get("edgekit_error") or r.get("build_error")
                                           or r.get("error") or {}).get("class", r["status"])
    return (f"{r['case']}: {r['status']}, edgekit {ek}, Keras "
            f"{'ok' if keras_handles(r) else 'no'}, LiteRT {matrix_litert.cell(r)}, "
            f"{r.get('wall_s', '-')} s")


def keras_handles(r: dict[str, Any]) -> bool:
    """Keras' export wrote a file that runs in onnxruntime and matches Keras."""
    return bool(r.get("keras_ok") and r.get("keras_runs") and r.get("keras_matches"))


def edgekit_handles(r: dict[str, Any]) -> bool:
    return bool(r.get("edgekit_ok"))


def counts(records: list[dict[str, Any]]) -> dict[str, int]:
    """How many cases each route handles: edgekit, Keras' export, both, neither, ..."""
    ek = [edgekit_handles(r) for r in records]
    ke = [keras_handles(r) for r in records]
    return {"cases": len(records),
            "keras_builds": sum(1 for r in records if "build_error" not in r
                                and r["status"] == "done"),
            "edgekit_ok": sum(ek), "keras_export_ok": sum(ke),
            "keras_export_wrote_file": sum(1 for r in records if r.get("keras_ok")),
            "both": sum(a and b for a, b in zip(ek, ke, strict=True)),
            "neither": sum(not a and not b and r["status"] == "done"
                           for a, b, r in zip(ek, ke, records, strict=True)),
            "edgekit_only": sum(a and not b for a, b in zip(ek, ke, strict=True)),
            "keras_only": sum(b and not a for a, b in zip(ek, ke, strict=True)),
            "timeouts": sum(1 for r in records if r["status"] == "timeout"),
            "skipped": sum(1 for r in records if r["status"] == "skipped"),
            "crashed": sum(1 for r in records if r["status"] == "crashed"),
            "int8_written": sum(1 for r in records if r.get("int8_written")),
            "openvino_fp32_passed": sum(1 for r in records
                                        if (r.get("engines") or {}).get("openvino", {})
                                        .get("passed")),
            **matrix_litert.counts(records, edgekit_handles, keras_handles)}


def _err(r: dict[str, Any], key: str, limit: int = 400) -> str:
    e = r.get(key) or {}
    return ANSI.sub("", f"{e['class']}: {e['message']}")[:limit] if e else ""


def _num(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.0f}%" if pct else f"{v:.1e}"


def _engine_cell(engines: dict[str, Any] | None) -> str:
    if not engines:
        return "-"
    return " ".join(f"{n[:3]}:{'ok' if e['passed'] else 'load-fail' if not e['loads'] else 'FAIL'}"
                    for n, e in engines.items())


def row(r: dict[str, Any]) -> list[str]:
    if "build_error" in r:
        status = "Keras cannot build/run it"
    elif r["status"] == "skipped":
        status = "skipped (slow)"
    elif r["status"] != "done":
        status = f"{r['status']} ({r.get('stage', '-')})"
    else:
        status = "ok" if edgekit_handles(r) else "FAIL"
    keras = ("ok" if keras_handles(r) else "runs, differs" if r.get("keras_runs") else
             "file fails in ORT" if r.get("keras_ok") else "FAIL" if "keras_error" in r else "-")
    int8 = "-"
    if r.get("int8_mode"):  # top-1 agreement, else (no class axis) the max abs error
        agree = r.get("int8_top1_agreement")
        int8 = f"{r['int8_mode']} " + (_num(agree, True) if agree is not None
                                       else f"err {_num(r.get('int8_max_abs_error'))}")
    elif r.get("int8_error"):
        int8 = "FAIL"
    error = next((e for e in (_err(r, k) for k in ("edgekit_error", "build_error", "error",
                                                   "keras_error", "keras_run_error",
                                                   "litert_error")) if e), "")
    return [r["case"], status, _num(r.get("max_abs_error")), keras,
            _num(r.get("keras_max_abs_error")), matrix_litert.cell(r),
            _num(r.get("litert_max_abs_error")), int8, _engine_cell(r.get("engines")),
            _engine_cell(r.get("int8_engines")), " ".join(error.replace("|", "/").split())[:160]]


HEADER = ["case", "edgekit", "max err", "Keras export", "Keras err", "LiteRT", "LiteRT err",
          "int8 (agree)", "fp32 engines", "int8 engines",
          "first error (edgekit, build, case, Keras' export, LiteRT)"]


def _md_table(rows: list[list[str]], header: list[str]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(r) + " |" for r in rows]]


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    recs = result["records"]
    out = ["# Conversion matrix (issue #23)", "",
           f"{m['cpu']} ({m['instruction_set']}), {m['logical_cores']} logical cores; "
           f"{', '.join(f'{k} {v}' for k, v in m['versions'].items())}. "
           f"Wall time {result['wall_s'] / 60:.1f} min ({result['options']}"
           + (f"; {result['merged']['cases']} records kept from an earlier run of "
              f"{result['merged']['wall_s'] / 60:.1f} min: {result['merged']['options']}"
              if result.get("merged") else "") + ").", "",
           "A case counts for Keras' export when `model.export(format=\"onnx\")` wrote a file "
           f"that runs in onnxruntime and matches Keras within {ATOL:g} + {RTOL:g} x |keras| "
           "on the case's inputs; for edgekit when `export_model` (default options) wrote a "
           "validated file; for LiteRT when `model.export(format=\"litert\")` with the "
           "converter held to builtin ops (`TFLITE_BUILTINS`) wrote a float32 file that runs "
           "in `ai_edge_litert`'s Interpreter and matches Keras within the same tolerance "
           "(`needs TF ops`: only Keras' default `SELECT_TF_OPS` converts it; the Flex ops "
           "named). Engines: `onn`=onnxruntime, `ope`=OpenVINO as edgekit's report records "
           "them.", "", "## Counts", ""]
    keys = ["cases", "edgekit_ok", "keras_export_ok", "litert_ok", "both", "neither",
            "edgekit_only", "keras_only", "litert_or_keras_only", "litert_needs_tf_ops",
            "timeouts", "skipped", "crashed", "int8_written", "openvino_fp32_passed"]
    rows = [[s, *[str(result["counts"][s].get(k, "-")) for k in keys]]
            for s in result["counts"]]
    out += _md_table(rows, ["suite", *keys]) + [
        "", "## edgekit fails, Keras' export or LiteRT works", "",
        "`both`, `neither`, `edgekit_only` and `keras_only` compare edgekit with Keras' "
        "export; `litert_or_keras_only` counts the cases below.", ""]
    for r in recs:
        works = [n for n, ok in (("Keras' export", keras_handles(r)),
                                 ("LiteRT", matrix_litert.handles(r))) if ok]
        if works and not edgekit_handles(r):
            why = _err(r, "edgekit_error") or _err(r, "error") or r["status"]
            out.append(f"- `{r['case']}` ({' and '.join(works)}): {why}")
    if out[-1] == "":
        out.append("none")
    for suite in SUITES:
        rows = [row(r) for r in recs if r["suite"] == suite]
        if rows:
            out += ["", f"## {suite}", "", *_md_table(rows, HEADER)]
    out += ["", f"## tf2onnx tests not ported ({len(NOT_PORTED)} of {TF2ONNX_TESTS})", ""]
    out += [f"- `{k}`: {v}" for k, v in NOT_PORTED.items()]
    return "\n".join(out) + "\n"


def print_summary(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(f"{m['cpu']} ({m['instruction_set']}), {m['logical_cores']} cores, "
          f"{result['wall_s'] / 60:.1f} min")
    widths = [44, 10, 8, 16, 8, 16, 8, 12]
    print("  ".join(h.ljust(w) for h, w in zip(HEADER, widths, strict=False)))
    for r in result["records"]:
        print("  ".join(c[:w].ljust(w) for c, w in zip(row(r), widths, strict=False)))
    for suite, c in result["counts"].items():
        print(f"{suite}: " + ", ".join(f"{k} {v}" for k, v in c.items()))


def write(result: dict[str, Any], out: Path) -> None:
    """``out/conversion_matrix.{json,md}`` and the summary on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "conversion_matrix.json").write_text(json.dumps(result, indent=1, default=str))
    (out / "conversion_matrix.md").write_text(markdown(result))
    print_summary(result)
    print(f"results: {out / 'conversion_matrix.md'}")
