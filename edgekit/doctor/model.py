"""Where a model's nodes run on this machine.

- Per onnxruntime execution provider (each one this build offers, or those asked for): a real
  session with that provider first and CPU as the fallback, run a few times on seeded
  synthetic inputs with onnxruntime's profiler on. The session's own partitioning
  (``get_provider_graph_assignment_info``, onnxruntime 1.23+; else the profile) gives the nodes
  each provider took; the profile records the provider every node actually ran on and its
  time, which gives each provider's share of the compute (share of node time).
- Per OpenVINO device: the operations it supports (``Core.query_model``).
- What :class:`~edgekit.runtime.model.EdgeModel` picks with ``engine="auto"`` and
  ``provider="auto"``: engine, providers and the session settings stored in the model.

An unavailable provider or one that fails to initialise or run is reported with the reason,
never raised.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import exception_reason
from edgekit.inputs.data import TensorSpecInfo
from edgekit.io.tempdirs import temp_dir
from edgekit.runtime.session import SessionOptionsConfig

__all__ = ["NodeRun", "ProviderCheck", "OpenVinoSupport", "AutoChoice", "ModelReport",
           "check_provider", "openvino_support", "auto_choice", "model_report", "SKIPPED"]

CPU = "CPUExecutionProvider"
#: providers not checked unless asked for by name, and why
SKIPPED = {"TensorrtExecutionProvider": "its engine build can take minutes; ask for it with "
           "--provider tensorrt",
           "AzureExecutionProvider": "it sends requests to remote Azure endpoints; it runs no "
           "node here"}
#: profiled runs per provider (the first one includes warm-up)
RUNS = 3


@dataclass
class NodeRun:
    """One node of the optimized graph as the profiler saw it: the provider it ran on and its
    time summed over the profiled runs."""

    name: str
    op_type: str
    provider: str
    time_us: float


@dataclass
class ProviderCheck:
    """One provider's session on the model.

    Attributes:
        provider: the onnxruntime provider asked for first (CPU is the fallback).
        status: ``ok``; ``fallback`` (the session could not initialise it and runs on the
            others); ``unavailable`` (not in this onnxruntime build); ``failed`` (no session or
            no run: ``message`` says why); ``skipped`` (``message`` says why).
        session_providers: the providers the session ended up with.
        nodes: nodes of the optimized graph.
        nodes_by_provider: nodes each provider took.
        time_share: each provider's share (0..1) of the profiled node time.
        source: where ``nodes_by_provider`` comes from: ``partitioning`` or ``profile``.
        node_runs: every node, the provider it ran on and its time.
    """

    provider: str
    status: str
    message: str | None = None
    session_providers: list[str] = field(default_factory=list)
    nodes: int = 0
    nodes_by_provider: dict[str, int] = field(default_factory=dict)
    time_share: dict[str, float] = field(default_factory=dict)
    source: str = ""
    node_runs: list[NodeRun] = field(default_factory=list)

    def summary(self) -> str:
        """One line for people."""
        if self.status in ("unavailable", "failed", "skipped"):
            return f"{self.provider}: {self.status} ({self.message})"
        took = self.nodes_by_provider.get(self.provider, 0)
        share = self.time_share.get(self.provider)
        line = (f"{self.provider}: {took}/{self.nodes} nodes"
                + (f", {100 * share:.0f}% of node time" if share is not None else ""))
        rest = {p: n for p, n in self.nodes_by_provider.items() if p != self.provider}
        if rest:
            line += "; rest on " + ", ".join(f"{p} ({n})" for p, n in rest.items())
        if self.status == "fallback":
            line += f" [fallback: {self.message}]"
        return line


@dataclass
class OpenVinoSupport:
    """The operations of the model's OpenVINO graph that one device supports."""

    device: str
    supported_ops: int = 0
    total_ops: int = 0
    unsupported_op_types: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class AutoChoice:
    """What ``EdgeModel(model)`` (``engine="auto"``, ``provider="auto"``) runs with."""

    engine: str
    providers: list[str]
    session: dict[str, Any]


@dataclass
class ModelReport:
    """Where the model's nodes run here (see the module doc)."""

    model: str
    inputs: list[dict[str, Any]]
    auto: AutoChoice
    providers: list[ProviderCheck]
    openvino: list[OpenVinoSupport]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _profile_nodes(profile: Path) -> list[NodeRun]:
    """Kernel-time events of an onnxruntime profile (Chrome trace JSON), summed per node."""
    events = json.loads(profile.read_text())
    runs: dict[str, NodeRun] = {}
    for e in events:
        name = str(e.get("name", ""))
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        args = e.get("args", {})
        node = name.removesuffix("_kernel_time")
        run = runs.setdefault(node, NodeRun(node, str(args.get("op_name", "")),
                                            str(args.get("provider", "")), 0.0))
        run.time_us += float(e.get("dur", 0))
    return list(runs.values())


def _assigned(session: Any) -> dict[str, int] | None:
    """Nodes per provider from the session's partitioning (None where onnxruntime lacks it)."""
    get = getattr(session, "get_provider_graph_assignment_info", None)
    if get is None:
        return None
    counts: dict[str, int] = defaultdict(int)
    for sub in get():
        counts[sub.ep_name] += len(sub.get_nodes())
    return dict(counts) or None


def _session_options(config: SessionOptionsConfig, profile_prefix: Path) -> Any:
    so = config.to_ort()
    so.log_severity_level = 3
    so.enable_profiling = True
    so.profile_file_prefix = str(profile_prefix)
    so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    return so


def _open_session(path: Path, provider: str, so: Any, config: SessionOptionsConfig,
                  devices: list[Any]) -> Any:
    """A session with ``provider`` first and CPU last: by name, or for plugin EPs (which
    onnxruntime only takes by device) through ``devices``."""
    import onnxruntime as ort

    disabled = config.disabled_optimizers or None
    if devices:
        so.add_provider_for_devices(devices, {})
        return ort.InferenceSession(str(path), so, disabled_optimizers=disabled)
    return ort.InferenceSession(str(path), so, providers=list(dict.fromkeys([provider, CPU])),
                                disabled_optimizers=disabled)


def _plugin_devices(provider: str) -> list[Any]:
    import onnxruntime as ort

    get = getattr(ort, "get_ep_devices", None)
    return [d for d in get() if d.ep_name == provider] if get is not None else []


def _check(provider: str, nodes: list[NodeRun], active: list[str],
           assigned: dict[str, int] | None) -> ProviderCheck:
    """The check of a session that ran: node counts and time shares per provider."""
    by_profile: dict[str, int] = defaultdict(int)
    time: dict[str, float] = defaultdict(float)
    for n in nodes:
        by_profile[n.provider] += 1
        time[n.provider] += n.time_us
    total = sum(time.values())
    counts = assigned or dict(by_profile)
    status, msg = ("ok", None) if provider in active else (
        "fallback", f"could not initialise {provider}; the session runs on {', '.join(active)}")
    return ProviderCheck(
        provider, status, msg, active, sum(counts.values()), counts,
        {p: round(t / total, 4) for p, t in time.items()} if total else {},
        "partitioning" if assigned else "profile", sorted(nodes, key=lambda n: -n.time_us))


def check_provider(path: Path, provider: str, feeds: dict[str, np.ndarray],
                   config: SessionOptionsConfig | None = None, runs: int = RUNS,
                   devices: list[Any] | None = None) -> ProviderCheck:
    """A session of ``path`` with ``provider`` first (then CPU) and the session settings
    ``config`` (default none), run ``runs`` times on ``feeds`` with the profiler on (see
    :class:`ProviderCheck`). A provider this build does not list by name is looked up among
    the EP devices (plugin EPs); ``devices`` forces that path."""
    import onnxruntime as ort

    config = config or SessionOptionsConfig()
    avail = ort.get_available_providers()
    if devices is None and provider not in avail:
        devices = _plugin_devices(provider)
        if not devices:
            return ProviderCheck(provider, "unavailable", "not in this onnxruntime build "
                                 f"(available: {', '.join(avail)})")
    with temp_dir("edgekit-doctor-") as tmp:
        so = _session_options(config, Path(tmp) / "profile")
        try:
            sess = _open_session(path, provider, so, config, devices or [])
            for _ in range(runs):
                sess.run(None, feeds)
        except Exception as exc:  # onnxruntime raises its own Fail/RuntimeError types
            return ProviderCheck(provider, "failed", f"onnxruntime: {exception_reason(exc, 300)}")
        nodes = _profile_nodes(Path(sess.end_profiling()))
        return _check(provider, nodes, sess.get_providers(), _assigned(sess))


def openvino_support(path: Path) -> list[OpenVinoSupport]:
    """Per OpenVINO device, the model operations it supports (empty without OpenVINO)."""
    from edgekit.runtime.engine_openvino import openvino_available

    if not openvino_available() or path.suffix.lower() == ".ort":
        return []
    import openvino as ov

    core = ov.Core()
    try:
        model = core.read_model(str(path))
    except Exception as exc:  # OpenVINO's frontends raise RuntimeError & co.
        why = exception_reason(exc, 300)
        return [OpenVinoSupport("all", error=f"cannot read the model: {why}")]
    ops = [op for op in model.get_ordered_ops()
           if op.get_type_name() not in ("Parameter", "Result", "Constant")]
    found = []
    for device in core.available_devices:
        try:
            supported = core.query_model(model, device)
        except Exception as exc:  # a device plugin that cannot compile raises RuntimeError
            found.append(OpenVinoSupport(device, error=exception_reason(exc, 300)))
            continue
        missing = sorted({op.get_type_name() for op in ops
                          if op.get_friendly_name() not in supported})
        found.append(OpenVinoSupport(device, sum(op.get_friendly_name() in supported
                                                 for op in ops), len(ops), missing))
    return found


def auto_choice(model: Any) -> AutoChoice:
    """The engine, providers and settings of an :class:`EdgeModel` opened with the defaults."""
    settings = {k: v for k, v in model.session_config.to_dict().items() if k != "engine"}
    return AutoChoice(model.engine_name, list(model.providers), settings)


def _default_providers() -> list[str]:
    """Every provider of this build, then the plugin EPs registered in this process."""
    import onnxruntime as ort

    avail = list(ort.get_available_providers())
    get = getattr(ort, "get_ep_devices", None)
    plugins = [d.ep_name for d in (get() if get is not None else []) if d.ep_name not in avail]
    return list(dict.fromkeys(avail + plugins))


def model_report(path: str | os.PathLike[str], providers: list[str] | None = None,
                 runs: int = RUNS) -> ModelReport:
    """Where ``path``'s nodes run here (see the module doc), with the model's stored session
    settings. ``providers``: onnxruntime provider names to check (default: every provider of
    this build and the registered plugin EPs, less :data:`SKIPPED`)."""
    from edgekit.inputs.synthetic import synthetic_feeds
    from edgekit.runtime.model import EdgeModel

    p = Path(path)
    with EdgeModel(p) as em:  # the model's own errors (missing, corrupt) are raised here
        auto = auto_choice(em)
        config = dataclasses.replace(em.session_config, engine=None)
        specs = [TensorSpecInfo(s.name, s.shape, s.dtype.name if s.dtype else "float32")
                 for s in em.inputs]
        feeds = synthetic_feeds(specs, em.metadata, 1)
        inputs = [s.to_dict() for s in em.inputs]
    checks = []
    for name in providers or _default_providers():
        if providers is None and name in SKIPPED:
            checks.append(ProviderCheck(name, "skipped", SKIPPED[name]))
        else:
            checks.append(check_provider(p, name, feeds, config, runs))
    return ModelReport(str(p), inputs, auto, checks, openvino_support(p))
