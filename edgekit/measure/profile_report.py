"""``bench --profile``'s report: the profiles of a benchmark's ONNX rows
(:mod:`edgekit.measure.profile`), their op-kind tables and the why lines (a variant
``x.int8.onnx`` next to its fp32 model ``x.onnx`` on the same engine, per op kind)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.measure.profile import (
    KINDS,
    PROFILED_ENGINES,
    ROUNDS,
    RUNS,
    OpProfile,
    ProfileRow,
    profile_models,
)
from edgekit.measure.tables import render_table
from edgekit.speed.machine import instruction_set
from edgekit.speed.timing import make_inputs

__all__ = ["ProfileReport", "profile_backends", "why_line", "why_lines", "format_profile"]


@dataclass
class ProfileReport:
    """Profiles of ``bench --profile`` (rows in bench order) and the why lines."""

    batch: int
    runs: int
    rounds: int
    instruction_set: str
    profiles: list[OpProfile]
    why: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # rows that are not ONNX

    def to_dict(self) -> dict[str, Any]:
        return {"batch": self.batch, "runs": self.runs, "rounds": self.rounds,
                "instruction_set": self.instruction_set,
                "profiles": [p.to_dict() for p in self.profiles], "why": self.why,
                "skipped": self.skipped}

    def table(self) -> str:
        return format_profile(self)


def profile_backends(backends: Sequence[Any], batch: int, seed: int = 0,
                     p50_ms: Sequence[float | None] | None = None, runs: int = RUNS,
                     rounds: int = ROUNDS) -> ProfileReport:
    """``bench --profile``: profile every ONNX row of a benchmark (its file, engine and session
    settings) at ``batch`` on the inputs ``bench`` timed; other rows are listed as skipped.
    ``p50_ms``: the rows' measured latencies (the why lines' verdicts), in backend order."""
    rows, skipped, p50 = [], [], []
    for b, t in zip(backends, p50_ms or [None] * len(backends), strict=True):
        model = getattr(b, "model", None)
        engine = getattr(b, "engine", None)
        if model is None or engine not in PROFILED_ENGINES:
            skipped.append(b.name)
            continue
        rows.append(ProfileRow(b.name, Path(b.path), engine, model.session_config))
        p50.append(t)
    arrays = make_inputs(backends[0].inputs, batch, seed)
    profiles = profile_models(rows, arrays, runs, rounds) if rows else []
    for prof, t in zip(profiles, p50, strict=True):
        prof.p50_ms = t
    isa = instruction_set()
    return ProfileReport(batch, runs, rounds, isa, profiles, why_lines(profiles, isa), skipped)


def _onnx_stem(path: str) -> str:
    name = Path(path).name
    return name[: -len(".onnx")] if name.lower().endswith(".onnx") else Path(path).stem


def _fp32_of(p: OpProfile, profiles: Sequence[OpProfile]) -> OpProfile | None:
    """The profile of ``p``'s fp32 model: same engine, the longest stem ``s`` with ``p``'s stem
    ``s.<variant>`` (``x.onnx`` for ``x.int8.onnx``)."""
    stem = _onnx_stem(p.path)
    cands = [f for f in profiles if f.engine == p.engine and f is not p
             and stem.startswith(_onnx_stem(f.path) + ".")]
    return max(cands, key=lambda f: len(_onnx_stem(f.path)), default=None)


def _fmt_ms(ms: float) -> str:
    return f"{ms * 1000:.1f} µs" if ms < 1.0 else f"{ms:.3f} ms"


def _label(p: OpProfile) -> str:
    """``name @ engine`` (the name alone when it names the engine: ``bench --engine all``)."""
    return p.name if p.name.endswith(f"@{p.engine}") else f"{p.name} @ {p.engine}"


def why_line(variant: OpProfile, fp32: OpProfile, isa: str) -> str:
    """One line on why ``variant`` is or is not faster than ``fp32`` on this engine and CPU
    (faster: by its p50 where ``bench`` measured it, else by its kernel time)."""
    label = _onnx_stem(variant.path)[len(_onnx_stem(fp32.path)) + 1:]
    kernels = variant.total_ms / fp32.total_ms if fp32.total_ms > 0 else float("nan")
    basis = f"{kernels:.2f}x its kernel time"
    ratio = kernels
    if variant.p50_ms is not None and fp32.p50_ms:  # measured by bench: the verdict's basis
        ratio = variant.p50_ms / fp32.p50_ms
        basis = f"{ratio:.2f}x its p50, {basis}"
    verdict = ("faster than" if ratio < 0.95 else "slower than" if ratio > 1.05
               else "no faster than")
    top = max(KINDS, key=lambda k: fp32.ms.get(k, 0.0))
    f, v = fp32.ms.get(top, 0.0), variant.ms.get(top, 0.0)
    share = 100.0 * f / fp32.total_ms if fp32.total_ms > 0 else 0.0
    how = (f"takes {v / f:.2f}x its fp32 time in {label}" if f > 0 and v > 0
           else f"does not run in {label}")
    line = (f"why: {_label(variant)} is {verdict} {fp32.name} ({basis}; {isa}): {top} is "
            f"{share:.0f} % of the fp32 time and {how}")
    added = {k: variant.ms.get(k, 0.0) - fp32.ms.get(k, 0.0) for k in KINDS if k != top}
    worst = max(added, key=lambda k: added[k])
    if added[worst] > 0:
        qdq = (f" ({variant.unfused_qdq} unfused Q/DQ)"
               if worst == "quantize" and variant.unfused_qdq is not None else "")
        line += f"; {worst} adds {_fmt_ms(added[worst])}{qdq}"
    return line


def why_lines(profiles: Sequence[OpProfile], isa: str | None = None) -> list[str]:
    """A :func:`why_line` for every profile whose fp32 model was profiled too."""
    isa = isa or instruction_set()
    pairs = [(p, _fp32_of(p, profiles)) for p in profiles]
    return [why_line(p, f, isa) for p, f in pairs if f is not None]


def format_profile(report: ProfileReport) -> str:
    """Per profiled row: the op kinds' ms per call and share, the total and the unfused Q/DQ;
    then the why lines."""
    out = [f"op profile: kernel time per call at batch {report.batch}, {report.rounds} "
           f"interleaved rounds of {report.runs} calls (onnxruntime's profiler: medians; "
           f"OpenVINO's performance counters: means); CPU: {report.instruction_set}"]
    for p in report.profiles:
        shares = p.shares()
        rows = [[k, str(p.nodes[k]), _fmt_ms(p.ms[k]), f"{shares[k]:.1f} %"]
                for k in KINDS if p.nodes[k]]
        rows.append(["total", str(sum(p.nodes.values())), _fmt_ms(p.total_ms),
                     "100.0 %" if p.total_ms > 0 else "0.0 %"])
        qdq = "n/a" if p.unfused_qdq is None else str(p.unfused_qdq)
        out += ["", f"{_label(p)}: unfused Q/DQ {qdq}",
                render_table(["op kind", "nodes", "per call", "share"], rows)]
    if report.skipped:
        out += ["", f"not profiled (no profiler for it): {', '.join(report.skipped)}"]
    if report.why:
        out += ["", *report.why]
    return "\n".join(out)
