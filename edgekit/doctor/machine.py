"""What this machine offers for inference: CPU and instruction set, engines and versions,
onnxruntime's execution providers and EP devices, plugin EPs, OpenVINO devices and GPUs.

Every probe reports what it finds, or plainly why it found nothing (not installed, no driver,
a library that does not load); none of them fails the report. OpenVINO is imported lazily.
"""

from __future__ import annotations

import csv
import io
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import InputError, exception_reason
from edgekit.speed.machine import cpu_features, cpu_model, instruction_set

__all__ = ["EpDevice", "PluginEp", "OnnxruntimeInfo", "OpenVinoDevice", "OpenVinoInfo", "Gpu",
           "MachineReport", "machine_report", "machine_notes", "register_plugin_eps",
           "parse_plugin_ep", "onnxruntime_info", "openvino_info", "find_gpus", "pci_gpus",
           "engine_versions"]

#: PCI vendor ids of GPU makers (display controllers of other vendors are server BMC consoles)
_GPU_VENDORS = {"0x10de": "NVIDIA", "0x1002": "AMD", "0x8086": "Intel"}
#: onnxruntime providers that need a GPU of that vendor
_GPU_PROVIDERS = {"NVIDIA": ("CUDAExecutionProvider", "TensorrtExecutionProvider"),
                  "AMD": ("MIGraphXExecutionProvider",),
                  "Intel": ("OpenVINOExecutionProvider",)}


@dataclass
class EpDevice:
    """One (execution provider, device) pair of ``onnxruntime.get_ep_devices()``."""

    ep: str
    ep_vendor: str
    device_type: str
    device_vendor: str
    vendor_id: int
    device_id: int
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class PluginEp:
    """A plugin EP library registered for this report (``--plugin-ep NAME=LIBRARY``)."""

    name: str
    library: str
    registered: bool
    error: str | None = None


@dataclass
class OnnxruntimeInfo:
    """onnxruntime's build: package, version, providers it offers and its EP devices."""

    version: str
    package: str
    device: str
    available_providers: list[str]
    ep_devices: list[EpDevice]
    plugin_eps: list[PluginEp]
    ep_devices_error: str | None = None


@dataclass
class OpenVinoDevice:
    """One OpenVINO device: its name (``CPU``, ``GPU.0``, ``NPU``), full name, capabilities."""

    name: str
    full_name: str
    capabilities: list[str]


@dataclass
class OpenVinoInfo:
    """OpenVINO: installed or not, its version and devices (or why they are unknown)."""

    installed: bool
    version: str | None = None
    devices: list[OpenVinoDevice] = field(default_factory=list)
    error: str | None = None


@dataclass
class Gpu:
    """A GPU this machine has, and where it was seen (``nvidia-smi``, ``pci``, ``openvino``)."""

    vendor: str
    name: str
    source: str
    memory_mb: int | None = None
    driver: str | None = None


@dataclass
class MachineReport:
    """What this machine offers (see the module doc); ``notes`` are plain-language findings."""

    cpu: str
    arch: str
    logical_cores: int | None
    instruction_set: str
    cpu_features: dict[str, bool]
    engines: dict[str, str | None]
    onnxruntime: OnnxruntimeInfo
    openvino: OpenVinoInfo
    gpus: list[Gpu]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)



def parse_plugin_ep(spec: str) -> tuple[str, str]:
    """``NAME=LIBRARY`` -> (name, library path); :class:`InputError` otherwise."""
    name, sep, lib = spec.partition("=")
    if not sep or not name.strip() or not lib.strip():
        raise InputError(f"--plugin-ep {spec!r} is not NAME=LIBRARY",
                         hint="e.g. --plugin-ep MyEp=/opt/myep/libmyep.so")
    return name.strip(), lib.strip()


def register_plugin_eps(specs: list[tuple[str, str]]) -> list[PluginEp]:
    """Register plugin EP libraries with onnxruntime for this process; each result says
    whether it worked and why not."""
    import onnxruntime as ort

    done = []
    for name, lib in specs:
        try:
            ort.register_execution_provider_library(name, str(Path(lib).expanduser()))
            done.append(PluginEp(name, lib, True))
        except Exception as exc:  # onnxruntime raises its own Fail/RuntimeError types
            done.append(PluginEp(name, lib, False, exception_reason(exc, 300)))
    return done


def _ep_devices() -> tuple[list[EpDevice], str | None]:
    import onnxruntime as ort

    get = getattr(ort, "get_ep_devices", None)
    if get is None:
        return [], f"onnxruntime {ort.__version__} has no get_ep_devices (1.22 and later)"
    devices = []
    for d in get():
        hw = d.device
        devices.append(EpDevice(
            ep=d.ep_name, ep_vendor=d.ep_vendor, device_type=str(hw.type).rsplit(".", 1)[-1],
            device_vendor=hw.vendor, vendor_id=int(hw.vendor_id), device_id=int(hw.device_id),
            metadata={str(k): str(v) for k, v in dict(hw.metadata).items()}))
    return devices, None


def onnxruntime_info(plugin_eps: list[PluginEp] | None = None) -> OnnxruntimeInfo:
    """The onnxruntime build's providers and EP devices (after registering ``plugin_eps``)."""
    import onnxruntime as ort

    devices, error = _ep_devices()
    return OnnxruntimeInfo(
        version=ort.__version__, package=str(getattr(ort, "package_name", "onnxruntime")),
        device=ort.get_device(), available_providers=list(ort.get_available_providers()),
        ep_devices=devices, plugin_eps=list(plugin_eps or []), ep_devices_error=error)


def openvino_info() -> OpenVinoInfo:
    """OpenVINO's version and devices, or why they are not known (not installed ...)."""
    try:
        import openvino as ov
    except ImportError:
        return OpenVinoInfo(False, error='not installed (pip install "edgekit[openvino]")')
    version = str(ov.get_version()).split("-")[0]
    try:
        core = ov.Core()
        devices = []
        for name in core.available_devices:
            caps = core.get_property(name, "OPTIMIZATION_CAPABILITIES")
            devices.append(OpenVinoDevice(name, str(core.get_property(name, "FULL_DEVICE_NAME")),
                                          [str(c) for c in caps]))
    except Exception as exc:  # a device plugin that fails to load raises RuntimeError & co.
        why = exception_reason(exc, 300)
        return OpenVinoInfo(True, version, error=f"cannot list devices: {why}")
    return OpenVinoInfo(True, version, devices)


def _nvidia_smi() -> list[Gpu]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for row in csv.reader(io.StringIO(out)):
        if len(row) == 3:
            mem = row[1].strip()
            gpus.append(Gpu("NVIDIA", row[0].strip(), "nvidia-smi",
                            int(mem) if mem.isdigit() else None, row[2].strip()))
    return gpus


def pci_gpus(root: Path = Path("/sys/bus/pci/devices")) -> list[Gpu]:
    """Display controllers (PCI class 0x03) of GPU vendors, as the kernel lists them."""
    gpus = []
    for dev in sorted(root.glob("*")) if root.is_dir() else []:
        try:
            cls = (dev / "class").read_text().strip()
            vendor = (dev / "vendor").read_text().strip()
            device = (dev / "device").read_text().strip()
        except OSError:
            continue
        if cls.startswith("0x03") and vendor in _GPU_VENDORS:
            gpus.append(Gpu(_GPU_VENDORS[vendor], f"PCI {vendor[2:]}:{device[2:]} ({dev.name})",
                            "pci"))
    return gpus


def find_gpus(ov: OpenVinoInfo | None = None) -> list[Gpu]:
    """GPUs from nvidia-smi (names, memory, driver), OpenVINO's GPU devices, and the kernel's
    PCI list for GPUs that no driver reports."""
    gpus = _nvidia_smi()
    gpus += [Gpu("Intel", d.full_name, "openvino") for d in (ov.devices if ov else [])
             if d.name.startswith("GPU")]
    named = {g.vendor for g in gpus}
    return gpus + [g for g in pci_gpus() if g.vendor not in named]


def machine_notes(r: MachineReport) -> list[str]:
    """Plain-language findings: GPUs without a provider, missing engines, ISA hints."""
    notes = _engine_notes()
    avail = set(r.onnxruntime.available_providers)
    if not r.gpus:
        notes.append("no GPU found (nvidia-smi, OpenVINO and the PCI list show none)")
    for vendor in sorted({g.vendor for g in r.gpus}):
        if not avail & set(_GPU_PROVIDERS[vendor]):
            notes.append(f"{vendor} GPU found, but this onnxruntime build "
                         f"({r.onnxruntime.package}) has none of "
                         f"{', '.join(_GPU_PROVIDERS[vendor])}")
    if "CUDAExecutionProvider" in avail and not any(g.vendor == "NVIDIA" for g in r.gpus):
        notes.append("onnxruntime offers CUDAExecutionProvider but no NVIDIA GPU was found: "
                     "sessions fall back to CPU")
    f = r.cpu_features
    if f.get("AVX-512 VNNI") or f.get("AMX-INT8"):
        notes.append("int8: the CPU has VNNI; `edgekit quantize --preset avx512_vnni` uses "
                     "full-range int8 weights")
    elif f and not f.get("AVX-VNNI") and f.get("AVX2"):
        notes.append("int8: AVX2 without VNNI; keep the default 7-bit int8 weights")
    if f.get("AVX-512 BF16") or f.get("AMX-BF16"):
        notes.append("bf16: the CPU computes bf16; OpenVINO precision bf16 may be faster "
                     "(edgekit tune tries it)")
    return notes


def engine_versions() -> dict[str, str | None]:
    """Every registered engine (:mod:`edgekit.runtime.engine_registry`) and the version of its
    library here (None: not installed)."""
    from edgekit.runtime.engine_registry import engine_class, engine_names

    out = {}
    for name in engine_names():
        cls = engine_class(name)
        out[name] = cls.version() if cls.available() else None
    return out


def _engine_notes() -> list[str]:
    """Why each registered engine that cannot run here cannot (e.g. ``OpenVINO is not
    installed (pip install ...)``)."""
    from edgekit.runtime.engine_registry import engine_class, engine_names

    notes = []
    for name in engine_names():
        cls = engine_class(name)
        why = cls.unavailable_reason()
        if why is not None:
            notes.append(f"{cls.display_name()} {why}")
    return notes


def machine_report(plugin_eps: list[tuple[str, str]] | None = None) -> MachineReport:
    """What this machine offers (see the module doc); ``plugin_eps`` (name, library) are
    registered with onnxruntime first."""
    registered = register_plugin_eps(plugin_eps or [])
    ort_info = onnxruntime_info(registered)
    ov = openvino_info()
    report = MachineReport(
        cpu=cpu_model(), arch=platform.machine(), logical_cores=os.cpu_count(),
        instruction_set=instruction_set(), cpu_features=cpu_features(),
        engines=engine_versions(),
        onnxruntime=ort_info, openvino=ov, gpus=find_gpus(ov), notes=[])
    report.notes = machine_notes(report)
    return report
