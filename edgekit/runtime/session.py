"""Session settings and execution providers: what a model runs with, whichever engine runs it.

:class:`SessionOptionsConfig` holds every setting (``None`` means the engine's default) and
translates it for onnxruntime (:meth:`~SessionOptionsConfig.to_ort`) and OpenVINO
(:meth:`~SessionOptionsConfig.to_openvino`). ``edgekit tune`` stores one as JSON under the ONNX
metadata key ``edgekit.session``. Providers are onnxruntime's execution providers, chosen by
short, case-insensitive names (:data:`PROVIDER_NAMES`); ``"auto"`` tries :data:`AUTO_ORDER`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import InitVar, dataclass, field
from typing import Any

import onnxruntime as ort

from edgekit.errors import InputError, ProviderError
from edgekit.runtime.engine_registry import normalize_engine
from edgekit.schema import MAX_THREADS, boolean, integer, list_of, scalar_map, string

__all__ = [
    "SessionOptionsConfig",
    "PROVIDER_NAMES",
    "AUTO_ORDER",
    "PRECISIONS",
    "PERFORMANCE_HINTS",
    "available_providers",
    "resolve_providers",
    "short_provider_name",
]

logger = logging.getLogger(__name__)

#: Short provider names -> onnxruntime execution provider names.
PROVIDER_NAMES: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
}
_ALIASES = {"trt": "tensorrt", "directml": "dml", "gpu": "cuda"}

#: Priority of ``provider="auto"``, filtered by ``onnxruntime.get_available_providers()``.
#: TensorRT is left out on purpose: onnxruntime-gpu lists it even when the TensorRT libraries
#: are missing, and its engine build takes minutes; ask for ``"tensorrt"`` explicitly.
AUTO_ORDER: tuple[str, ...] = (
    "cuda",
    "dml",
    "coreml",
    "qnn",
    "nnapi",
    "openvino",
    "xnnpack",
    "cpu",
)

#: Float precisions (OpenVINO's ``INFERENCE_PRECISION_HINT``); None means ``"f32"``.
PRECISIONS: tuple[str, ...] = ("f32", "bf16")
_PRECISION_ALIASES = {"fp32": "f32", "float32": "f32", "bfloat16": "bf16"}
#: OpenVINO ``PERFORMANCE_HINT`` values; None means ``"latency"``.
PERFORMANCE_HINTS: tuple[str, ...] = ("latency", "throughput")

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "layout": getattr(
        ort.GraphOptimizationLevel, "ORT_ENABLE_LAYOUT", ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    ),
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_EXEC_MODES = {
    "sequential": ort.ExecutionMode.ORT_SEQUENTIAL,
    "parallel": ort.ExecutionMode.ORT_PARALLEL,
}


def _choice(value: Any, what: str, allowed: Sequence[str], aliases: Mapping[str, str]) -> str:
    key = str(value).strip().lower()
    key = aliases.get(key, key)
    if key not in allowed:
        raise InputError(f"unknown {what} {value!r}", hint=f"use one of {', '.join(allowed)}")
    return key


@dataclass
class SessionOptionsConfig:
    """Session settings of either engine; ``None`` means "the engine's default".

    ``edgekit tune`` stores one of these as JSON under the ONNX metadata key
    ``edgekit.session``; :class:`~edgekit.runtime.model.EdgeModel` applies it on load (explicit
    arguments win). ``threads=N`` is accepted as a short spelling of ``intra_op_num_threads``.

    Attributes:
        intra_op_num_threads: threads inside one op (OpenVINO: ``INFERENCE_NUM_THREADS``);
            default None (all cores).
        inter_op_num_threads: threads across ops (onnxruntime parallel mode only); default None.
        execution_mode: ``"sequential"`` or ``"parallel"`` (onnxruntime); default None
            (sequential).
        graph_optimization_level: ``"disable"``, ``"basic"``, ``"extended"``, ``"layout"`` or
            ``"all"`` (onnxruntime); default None (all).
        allow_spinning: let idle intra-op threads spin (onnxruntime); default None (yes).
        enable_mem_pattern: onnxruntime; default None (yes).
        enable_cpu_mem_arena: onnxruntime; default None (yes).
        session_config: extra onnxruntime ``add_session_config_entry`` key/values; default
            empty.
        disabled_optimizers: onnxruntime graph transformers to skip at load (e.g.
            ``"QDQPropagationTransformer"``, which ``edgekit tune`` disables for
            mixed-precision models); default none.
        engine: a registered engine (:func:`~edgekit.runtime.engine_registry.engine_names`:
            ``"onnxruntime"``, ``"openvino"`` ...; aliases such as ``"ort"``/``"ov"`` are
            accepted); default None (auto: onnxruntime unless the model's stored settings name
            another engine that is installed).
        precision: float precision, ``"f32"`` or ``"bf16"``; default None (f32). OpenVINO's
            ``INFERENCE_PRECISION_HINT`` is pinned to it (OpenVINO would otherwise compute in
            bf16 on CPUs that have it); onnxruntime refuses ``"bf16"``.
        performance_hint: OpenVINO ``PERFORMANCE_HINT``, ``"latency"`` or ``"throughput"``;
            default None (latency). onnxruntime has no such hint and ignores it.
        openvino_config: extra OpenVINO ``compile_model`` properties; default empty.
        batch_streams: split each call's batch into this many parts that run at once, each
            on ``intra_op_num_threads // batch_streams`` threads (OpenVINO: ``NUM_STREAMS``),
            for models whose rows are independent (:mod:`edgekit.runtime.streams`); a call
            of one row runs on one part's threads. Default None (one part: every op shares
            the threads).
    """

    intra_op_num_threads: int | None = None
    inter_op_num_threads: int | None = None
    execution_mode: str | None = None
    graph_optimization_level: str | None = None
    allow_spinning: bool | None = None
    enable_mem_pattern: bool | None = None
    enable_cpu_mem_arena: bool | None = None
    session_config: dict[str, str] = field(default_factory=dict)
    disabled_optimizers: list[str] = field(default_factory=list)
    engine: str | None = None
    precision: str | None = None
    performance_hint: str | None = None
    openvino_config: dict[str, str] = field(default_factory=dict)
    batch_streams: int | None = None
    threads: InitVar[int | None] = None

    def __post_init__(self, threads: int | None) -> None:
        if threads is not None:
            if self.intra_op_num_threads not in (None, threads):
                raise InputError(
                    f"threads={threads!r} contradicts intra_op_num_threads="
                    f"{self.intra_op_num_threads!r}; give one of them"
                )
            self.intra_op_num_threads = threads
        self._check_types()
        if self.execution_mode is not None:
            self.execution_mode = _choice(
                self.execution_mode, "execution mode", list(_EXEC_MODES), {}
            )
        if self.graph_optimization_level is not None:
            level = str(self.graph_optimization_level).lower()
            self.graph_optimization_level = _choice(
                level.removeprefix("ort_").removeprefix("enable_"),
                "graph optimization level", list(_OPT_LEVELS), {},
            )  # fmt: skip
        self.engine = normalize_engine(self.engine)
        if self.precision is not None:
            self.precision = _choice(self.precision, "precision", PRECISIONS, _PRECISION_ALIASES)
        if self.performance_hint is not None:
            self.performance_hint = _choice(
                self.performance_hint, "performance hint", PERFORMANCE_HINTS, {}
            )

    def _check_types(self) -> None:
        """Types and bounds of the fields that are not choices (:class:`SchemaError`): stored
        ``edgekit.session`` settings may hold anything."""
        for name in ("intra_op_num_threads", "inter_op_num_threads"):
            if getattr(self, name) is not None:
                integer(0, MAX_THREADS)(getattr(self, name), name)
        if self.batch_streams is not None:
            integer(1, MAX_THREADS)(self.batch_streams, "batch_streams")
            if self.batch_streams > (self.intra_op_num_threads or self.batch_streams):
                raise InputError(
                    f"batch_streams={self.batch_streams} needs as many threads, and "
                    f"intra_op_num_threads is {self.intra_op_num_threads}",
                    hint="give each stream a thread: raise the threads or lower batch_streams")
        for name in ("allow_spinning", "enable_mem_pattern", "enable_cpu_mem_arena"):
            if getattr(self, name) is not None:
                boolean()(getattr(self, name), name)
        self.session_config = scalar_map()(self.session_config or {}, "session_config")
        self.openvino_config = scalar_map()(self.openvino_config or {}, "openvino_config")
        names = self.disabled_optimizers or []
        self.disabled_optimizers = list_of(string(max_len=256), 1024)(
            list(names) if isinstance(names, tuple) else names, "disabled_optimizers")

    @classmethod
    def from_dict(cls, d: Mapping[str, object] | None) -> SessionOptionsConfig:
        """Build from a dict (e.g. ``edgekit.session`` metadata); unknown keys are ignored."""
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise InputError(f"session settings must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)} | {"threads"}
        unknown = sorted(set(d) - known)
        if unknown:
            logger.debug("ignoring unknown session settings %s", unknown)
        kwargs: dict[str, Any] = {k: v for k, v in d.items() if k in known}
        return cls(**kwargs)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict without the unset (None / empty) fields."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, {}, [])}

    def merged(self, override: SessionOptionsConfig) -> SessionOptionsConfig:
        """A copy where every field set in ``override`` replaces this one's."""
        d = dataclasses.asdict(self)
        for k, v in dataclasses.asdict(override).items():
            if k in ("session_config", "openvino_config"):
                d[k] = {**d[k], **v}
            elif k == "disabled_optimizers":
                d[k] = list(dict.fromkeys([*d[k], *v]))
            elif v is not None:
                d[k] = v
        return SessionOptionsConfig(**d)

    def to_ort(self) -> ort.SessionOptions:
        """The :class:`onnxruntime.SessionOptions` these settings describe."""
        so = ort.SessionOptions()
        if self.streams > 1:
            so.intra_op_num_threads = self.stream_threads()
        elif self.intra_op_num_threads is not None:
            so.intra_op_num_threads = self.intra_op_num_threads
        if self.inter_op_num_threads is not None:
            so.inter_op_num_threads = self.inter_op_num_threads
        if self.execution_mode is not None:
            so.execution_mode = _EXEC_MODES[self.execution_mode]
        if self.graph_optimization_level is not None:
            so.graph_optimization_level = _OPT_LEVELS[self.graph_optimization_level]
        if self.enable_mem_pattern is not None:
            so.enable_mem_pattern = self.enable_mem_pattern
        if self.enable_cpu_mem_arena is not None:
            so.enable_cpu_mem_arena = self.enable_cpu_mem_arena
        entries = dict(self.session_config)
        if self.allow_spinning is not None:
            entries.setdefault(
                "session.intra_op.allow_spinning", "1" if self.allow_spinning else "0"
            )
        for k, v in entries.items():
            try:
                so.add_session_config_entry(k, v)
            except Exception as exc:  # onnxruntime rejects unknown/invalid entries
                raise InputError(f"invalid session config entry {k}={v!r}: {exc}") from exc
        return so

    def to_openvino(self) -> dict[str, str]:
        """OpenVINO ``compile_model`` properties: precision pinned (f32 unless bf16 is chosen),
        performance hint (LATENCY unless throughput), threads when set, then the extras."""
        props = {
            "INFERENCE_PRECISION_HINT": self.precision or "f32",
            "PERFORMANCE_HINT": (self.performance_hint or "latency").upper(),
        }
        if self.intra_op_num_threads:
            props["INFERENCE_NUM_THREADS"] = str(self.intra_op_num_threads)
        if self.streams > 1:
            props["NUM_STREAMS"] = str(self.streams)
        return {**props, **self.openvino_config}

    @property
    def streams(self) -> int:
        """The parts a call's batch is split into (:attr:`batch_streams`; 1 when unset)."""
        return self.batch_streams or 1

    def stream_threads(self) -> int:
        """The threads of one part: ``intra_op_num_threads`` (all cores when unset) shared
        between the :attr:`streams`, at least one each."""
        total = self.intra_op_num_threads or os.cpu_count() or 1
        return max(1, total // self.streams)


# ---------------------------------------------------------------------------------------------
# providers
# ---------------------------------------------------------------------------------------------
def available_providers() -> list[str]:
    """Short names of the execution providers this onnxruntime build offers (priority order)."""
    avail = set(ort.get_available_providers())
    order = list(AUTO_ORDER) + [n for n in PROVIDER_NAMES if n not in AUTO_ORDER]
    return [n for n in order if PROVIDER_NAMES[n] in avail]


def short_provider_name(name: str) -> str:
    """The short name of a provider (short, alias or full onnxruntime name; or ``"auto"``)."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key in PROVIDER_NAMES or key == "auto":
        return key
    for short, full in PROVIDER_NAMES.items():  # accept full onnxruntime names too
        if full.lower() == key:
            return short
    raise ProviderError(
        f"unknown execution provider {name!r}",
        hint=f"use auto or one of {', '.join(PROVIDER_NAMES)}",
    )


def resolve_providers(provider: str | Sequence[str] = "auto", fallback: bool = False) -> list[str]:
    """onnxruntime provider names for ``provider`` (a short name, ``"auto"``, or a list).

    Args:
        provider: ``"auto"`` (default), a short name such as ``"cuda"``, or a list in priority
            order. Names are case-insensitive; ``"cpu"`` is always appended as the last resort.
        fallback: when False (default) an unavailable provider raises :class:`ProviderError`
            listing the available ones; when True it logs a warning and is skipped.
    """
    wanted = [provider] if isinstance(provider, str) else list(provider)
    if not wanted:
        wanted = ["auto"]
    avail = available_providers()
    chosen: list[str] = []
    for name in wanted:
        short = short_provider_name(name)
        if short == "auto":
            chosen += [n for n in AUTO_ORDER if n in avail]
        elif short in avail:
            chosen.append(short)
        elif fallback:
            logger.warning(
                "execution provider %r is not available (available: %s); falling back",
                name,
                ", ".join(avail),
            )
        else:
            raise ProviderError(
                f"execution provider {name!r} is not available in this onnxruntime build "
                f"(available: {', '.join(avail)})",
                hint="choose one of those, use --provider auto, or allow fallback",
            )
    if "cpu" not in chosen:
        chosen.append("cpu")
    return [PROVIDER_NAMES[n] for n in dict.fromkeys(chosen)]
