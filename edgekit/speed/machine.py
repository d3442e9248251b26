"""Memory of this process and a description of the machine (CPU, instruction set, versions).

Memory comes from :mod:`psutil` (current RSS on every platform, the peak where the OS keeps
one: ``peak_wset`` on Windows); on Linux the peak is the kernel's resettable high-water mark
(``VmHWM``, which psutil does not expose), else ``ru_maxrss``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = [
    "rss_mb",
    "peak_rss_mb",
    "reset_peak_rss",
    "cpu_model",
    "cpu_flags",
    "cpu_features",
    "instruction_set",
    "machine_info",
    "affinity_cores",
    "usable_cores",
]

_MIB = 1024.0 * 1024.0


def _memory_info() -> Any:
    import psutil  # a base dependency, imported lazily

    return psutil.Process().memory_info()


def _vm_hwm_kb() -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb() -> float:
    """Current resident set size of this process in MiB (psutil)."""
    return float(_memory_info().rss) / _MIB


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (since the last :func:`reset_peak_rss`
    where the OS allows a reset)."""
    peak = getattr(_memory_info(), "peak_wset", None)  # Windows
    if peak is not None:
        return float(peak) / _MIB
    kb = _vm_hwm_kb()
    if kb is None:
        import resource

        ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kb = ru / 1024.0 if sys.platform == "darwin" else float(ru)
    return max(kb / 1024.0, rss_mb())


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux); True when it worked."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _cpuinfo_lines() -> list[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            return fh.readlines()
    except OSError:
        return []


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (else :func:`platform.processor`)."""
    for line in _cpuinfo_lines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or platform.machine()


#: instruction-set levels that matter for int8 inference, best first: (name, cpuinfo flags)
_ISA_LEVELS = [
    ("AMX + AVX-512 VNNI", {"amx_int8", "avx512_vnni"}),
    ("AVX-512 VNNI", {"avx512_vnni"}),
    ("AVX-VNNI (AVX2)", {"avx_vnni"}),
    ("AVX-512 (no VNNI)", {"avx512f"}),
    ("AVX2 (no VNNI)", {"avx2"}),
    ("ARM64 dot product", {"asimddp"}),
]


#: single instruction-set features that inference engines use: (name, cpuinfo flag), x86 then ARM
_ISA_FEATURES = {
    "x86": [("AVX2", "avx2"), ("FMA", "fma"), ("AVX-VNNI", "avx_vnni"), ("AVX-512", "avx512f"),
            ("AVX-512 VNNI", "avx512_vnni"), ("AVX-512 BF16", "avx512_bf16"),
            ("AVX-512 FP16", "avx512_fp16"), ("AMX", "amx_tile"), ("AMX-INT8", "amx_int8"),
            ("AMX-BF16", "amx_bf16"), ("AMX-FP16", "amx_fp16")],
    "arm": [("NEON", "asimd"), ("dot product", "asimddp"), ("FP16", "asimdhp"),
            ("I8MM", "i8mm"), ("BF16", "bf16"), ("SVE", "sve"), ("SVE2", "sve2"), ("SME", "sme")],
}


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (``flags`` on x86, ``Features`` on ARM);
    empty where there is no /proc/cpuinfo."""
    return {f for line in _cpuinfo_lines() if line.lower().startswith(("flags", "features"))
            for f in line.split(":", 1)[1].split()}


def cpu_features() -> dict[str, bool]:
    """Inference-relevant instruction-set features of this CPU's family (AVX2, AVX-512 VNNI,
    BF16, AMX ... on x86; NEON, dot product, I8MM ... on ARM): name -> present. Empty where
    the flags cannot be read."""
    flags = cpu_flags()
    if not flags:
        return {}
    import platform

    arm = platform.machine().lower().startswith(("aarch64", "arm"))
    return {name: flag in flags for name, flag in _ISA_FEATURES["arm" if arm else "x86"]}


def instruction_set() -> str:
    """The CPU's int8-relevant instruction-set level from /proc/cpuinfo flags, e.g.
    ``AVX-512 VNNI`` or ``AVX2 (no VNNI)`` (``unknown`` elsewhere)."""
    flags = cpu_flags()
    return next((name for name, need in _ISA_LEVELS if need <= flags), "unknown")


def affinity_cores() -> int | None:
    """The CPUs this process may run on (None where the platform cannot say)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def usable_cores() -> int:
    """The CPUs this process may run on, else the machine's logical CPUs, at least 1."""
    return affinity_cores() or os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    """CPU model, logical cores, memory, OS and the versions of the libraries in use."""
    import importlib.metadata as md
    import platform

    versions = {"python": platform.python_version()}
    for pkg in ("edgekit", "numpy", "onnxruntime", "onnx", "tensorflow", "tensorflow-cpu",
                "keras", "tf2onnx"):
        try:
            versions[pkg.removesuffix("-cpu")] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    import psutil

    return {
        "cpu": cpu_model(),
        "instruction_set": instruction_set(),
        "logical_cores": os.cpu_count(),
        "affinity_cores": affinity_cores(),
        "memory_mb": round(psutil.virtual_memory().total / _MIB),
        "platform": platform.platform(),
        "versions": versions,
    }
