"""The ``edgekit doctor`` report: the machine, and with a model where its nodes run here."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.doctor.machine import MachineReport, machine_report
from edgekit.doctor.model import ModelReport, model_report
from edgekit.progress import StatusFn, status
from edgekit.runtime.session import PROVIDER_NAMES, short_provider_name

__all__ = ["DoctorReport", "doctor", "format_doctor", "provider_names"]


@dataclass
class DoctorReport:
    """What :func:`doctor` found: the machine, and the model when one was given."""

    machine: MachineReport
    model: ModelReport | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"machine": self.machine.to_dict(),
                "model": None if self.model is None else self.model.to_dict()}


def provider_names(names: list[str] | tuple[str, ...]) -> list[str] | None:
    """onnxruntime provider names for short or full ``names`` (``cuda``, ``openvino``,
    ``CUDAExecutionProvider``); None for none (check every provider). Unknown short names raise
    :class:`~edgekit.errors.ProviderError`; full names edgekit does not know (plugin or newer
    EPs) are kept as they are."""
    if not names:
        return None
    out = []
    for n in names:
        out.append(n if n.endswith("ExecutionProvider") and n not in PROVIDER_NAMES.values()
                   else PROVIDER_NAMES[short_provider_name(n)])
    return list(dict.fromkeys(out))


def doctor(model: str | os.PathLike[str] | None = None, *, providers: list[str] | None = None,
           plugin_eps: list[tuple[str, str]] | None = None,
           progress: StatusFn | None = None) -> DoctorReport:
    """What this machine offers, and with ``model`` where its nodes run.

    Args:
        model: an ``.onnx``/``.ort`` file; default none (the machine only).
        providers: onnxruntime provider names to check the model on (see
            :func:`provider_names`); default every provider of this build but TensorRT.
        plugin_eps: (name, library) plugin EPs to register with onnxruntime first.
        progress: status lines (:mod:`edgekit.progress`).
    """
    status(progress, "looking at the machine")
    machine = machine_report(plugin_eps)
    if model is None:
        return DoctorReport(machine)
    status(progress, f"running {Path(model).name} on each provider")
    return DoctorReport(machine, model_report(model, providers))


def _machine_lines(m: MachineReport) -> list[str]:
    have = [k for k, v in m.cpu_features.items() if v]
    lack = [k for k, v in m.cpu_features.items() if not v]
    ort = m.onnxruntime
    lines = [
        f"cpu: {m.cpu} ({m.arch}, {m.logical_cores} logical cores)",
        f"  int8 level: {m.instruction_set}",
        f"  has: {', '.join(have) or 'unknown'}" + (f"; lacks: {', '.join(lack)}" if lack else ""),
        "engines: " + ", ".join(f"{k} {v or 'not installed'}" for k, v in m.engines.items()),
        f"onnxruntime ({ort.package}, {ort.device}): providers "
        + ", ".join(ort.available_providers),
    ]
    lines += [f"  EP device: {d.ep} on {d.device_type} ({d.device_vendor})"
              for d in ort.ep_devices]
    if ort.ep_devices_error:
        lines.append(f"  EP devices: {ort.ep_devices_error}")
    lines += [f"  plugin EP {p.name} ({p.library}): "
              + ("registered" if p.registered else f"not registered: {p.error}")
              for p in ort.plugin_eps]
    ov = m.openvino
    if ov.installed:
        lines.append(f"openvino {ov.version}: " + (ov.error or ", ".join(
            f"{d.name} ({d.full_name}; {', '.join(d.capabilities)})" for d in ov.devices)))
    lines.append("gpus: " + ("; ".join(
        f"{g.vendor} {g.name}" + (f", {g.memory_mb} MiB" if g.memory_mb else "")
        + (f", driver {g.driver}" if g.driver else "") + f" [{g.source}]" for g in m.gpus)
        or "none found"))
    return lines + [f"note: {n}" for n in m.notes]


def _model_lines(r: ModelReport) -> list[str]:
    a = r.auto
    lines = [f"model: {r.model}",
             f"  auto picks: {a.engine} on {', '.join(a.providers)}"
             + (" with " + ", ".join(f"{k}={v}" for k, v in a.session.items())
                if a.session else " (no stored settings)")]
    for c in r.providers:
        lines.append(f"  {c.summary()}")
        top = [n for n in c.node_runs if n.provider != c.provider][:5]
        if c.provider != "CPUExecutionProvider" and c.status in ("ok", "fallback") and top:
            lines.append("    not on it: " + ", ".join(f"{n.name} ({n.op_type})" for n in top)
                         + (" ..." if len(top) == 5 else ""))
    for o in r.openvino:
        lines.append(f"  openvino {o.device}: " + (o.error or (
            f"{o.supported_ops}/{o.total_ops} ops supported"
            + (f"; unsupported: {', '.join(o.unsupported_op_types)}"
               if o.unsupported_op_types else ""))))
    return lines


def format_doctor(report: DoctorReport) -> str:
    """The report for people (``edgekit doctor`` without ``--json``)."""
    lines = _machine_lines(report.machine)
    if report.model is not None:
        lines += [""] + _model_lines(report.model)
    return "\n".join(lines)
