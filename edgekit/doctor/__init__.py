"""``edgekit doctor``: what this machine offers for inference, and where a model's nodes run."""

from __future__ import annotations

from edgekit.doctor.machine import (
    Gpu,
    MachineReport,
    machine_notes,
    machine_report,
    parse_plugin_ep,
    pci_gpus,
)
from edgekit.doctor.model import ModelReport, check_provider, model_report
from edgekit.doctor.report import DoctorReport, doctor, format_doctor, provider_names

__all__ = [
    "doctor",
    "format_doctor",
    "provider_names",
    "parse_plugin_ep",
    "DoctorReport",
    "machine_report",
    "machine_notes",
    "MachineReport",
    "Gpu",
    "pci_gpus",
    "model_report",
    "ModelReport",
    "check_provider",
]
