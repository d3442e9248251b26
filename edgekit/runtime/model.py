"""The device runtime: load a ``.onnx`` / ``.ort`` model and run it with onnxruntime.

This module imports only numpy and onnxruntime (plus :mod:`edgekit.errors`,
:mod:`edgekit.metadata` and, for text, :mod:`edgekit.inputs.text`, all pure Python), so a device
app needs ``pip install edgekit`` without TensorFlow or onnx. Pillow is imported lazily by
:func:`load_image` only.

Typical use::

    from edgekit.runtime.model import EdgeModel

    with EdgeModel("model.onnx", provider="auto") as model:
        probs = model.predict(image_uint8)          # preprocessing from the metadata
        labels = model.predict_labels(image_uint8)  # ["Sneaker"]
        raw = model.run({"input": x_float32})       # raw path, no preprocessing

Providers are chosen by short, case-insensitive names (see :data:`PROVIDER_NAMES`); ``"auto"``
tries :data:`AUTO_ORDER` and keeps those onnxruntime reports as available.

Preprocessing rule of :meth:`EdgeModel.predict`: when the metadata names a ``raw_dtype``
(e.g. ``"uint8"`` for images), scale/offset/standardisation are applied to *integer* inputs
only; floating-point inputs are taken as already preprocessed and only cast. When the metadata
names no ``raw_dtype`` (e.g. tabular standardisation), preprocessing is always applied. Pass
``preprocess=True`` / ``False`` to force either way.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import mmap
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edgekit.contract import OutputKind, to_probabilities
from edgekit.errors import InputError, ModelLoadError, ProviderError, require
from edgekit.metadata import PREFIX, ModelMetadata, Preprocessing

__all__ = [
    "EdgeModel",
    "SessionOptionsConfig",
    "InputSpec",
    "PROVIDER_NAMES",
    "AUTO_ORDER",
    "available_providers",
    "resolve_providers",
    "load_image",
    "load_array",
    "predict_input",
    "format_predictions",
]

logger = logging.getLogger("edgekit.runtime.model")

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
_ORT_DTYPES: dict[str, np.dtype[Any]] = {
    f"tensor({name})": np.dtype(np_name)
    for name, np_name in [
        ("float", "float32"), ("double", "float64"), ("float16", "float16"),
        ("int8", "int8"), ("int16", "int16"), ("int32", "int32"), ("int64", "int64"),
        ("uint8", "uint8"), ("uint16", "uint16"), ("uint32", "uint32"), ("uint64", "uint64"),
        ("bool", "bool"),
    ]
}  # fmt: skip
_NUMERIC_KINDS = frozenset("biuf")
_vdot = np.vdot
_isfinite = math.isfinite


# ---------------------------------------------------------------------------------------------
# session settings
# ---------------------------------------------------------------------------------------------
@dataclass
class SessionOptionsConfig:
    """onnxruntime session settings; ``None`` means "onnxruntime's default".

    ``edgekit tune`` stores one of these as JSON under the ONNX metadata key
    ``edgekit.session``; :class:`EdgeModel` applies it on load (explicit arguments win).

    Attributes:
        intra_op_num_threads: threads inside one op; default None (onnxruntime: all cores).
        inter_op_num_threads: threads across ops (parallel mode only); default None.
        execution_mode: ``"sequential"`` or ``"parallel"``; default None (sequential).
        graph_optimization_level: ``"disable"``, ``"basic"``, ``"extended"``, ``"layout"`` or
            ``"all"``; default None (all).
        allow_spinning: let idle intra-op threads spin; default None (onnxruntime: yes).
        enable_mem_pattern: default None (onnxruntime: yes).
        enable_cpu_mem_arena: default None (onnxruntime: yes).
        session_config: extra ``add_session_config_entry`` key/values; default empty.
        disabled_optimizers: onnxruntime graph transformers to skip at load (e.g.
            ``"QDQPropagationTransformer"``, which ``edgekit tune`` disables for
            mixed-precision models); default none.
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

    def __post_init__(self) -> None:
        for name in ("intra_op_num_threads", "inter_op_num_threads"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise InputError(f"{name} must be an integer >= 0, got {v!r}")
        if self.execution_mode is not None:
            self.execution_mode = str(self.execution_mode).lower()
            if self.execution_mode not in _EXEC_MODES:
                raise InputError(
                    f"unknown execution mode {self.execution_mode!r}",
                    hint=f"use one of {', '.join(_EXEC_MODES)}",
                )
        if self.graph_optimization_level is not None:
            level = str(self.graph_optimization_level).lower()
            self.graph_optimization_level = level.removeprefix("ort_").removeprefix("enable_")
            if self.graph_optimization_level not in _OPT_LEVELS:
                raise InputError(
                    f"unknown graph optimization level {level!r}",
                    hint=f"use one of {', '.join(_OPT_LEVELS)}",
                )
        self.session_config = {str(k): str(v) for k, v in (self.session_config or {}).items()}
        self.disabled_optimizers = [str(o) for o in (self.disabled_optimizers or [])]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> SessionOptionsConfig:
        """Build from a dict (e.g. ``edgekit.session`` metadata); unknown keys are ignored."""
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise InputError(f"session settings must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            logger.debug("ignoring unknown session settings %s", unknown)
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict without the unset (None / empty) fields."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, {}, [])}

    def merged(self, override: SessionOptionsConfig) -> SessionOptionsConfig:
        """A copy where every field set in ``override`` replaces this one's."""
        d = dataclasses.asdict(self)
        for k, v in dataclasses.asdict(override).items():
            if k == "session_config":
                d[k] = {**d[k], **v}
            elif k == "disabled_optimizers":
                d[k] = list(dict.fromkeys([*d[k], *v]))
            elif v is not None:
                d[k] = v
        return SessionOptionsConfig(**d)

    def to_ort(self) -> ort.SessionOptions:
        """The :class:`onnxruntime.SessionOptions` these settings describe."""
        so = ort.SessionOptions()
        if self.intra_op_num_threads is not None:
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


# ---------------------------------------------------------------------------------------------
# providers
# ---------------------------------------------------------------------------------------------
def available_providers() -> list[str]:
    """Short names of the execution providers this onnxruntime build offers (priority order)."""
    avail = set(ort.get_available_providers())
    order = list(AUTO_ORDER) + [n for n in PROVIDER_NAMES if n not in AUTO_ORDER]
    return [n for n in order if PROVIDER_NAMES[n] in avail]


def _short_name(name: str) -> str:
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
        short = _short_name(name)
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


# ---------------------------------------------------------------------------------------------
# metadata without a session (ONNX protobuf, top-level fields only)
# ---------------------------------------------------------------------------------------------
def _varint(buf: Any, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _read_onnx_props(path: Path) -> dict[str, str] | None:
    """``metadata_props`` of an ONNX file, parsed without the onnx package (None on failure)."""
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            props: dict[str, str] = {}
            pos, end = 0, len(buf)
            while pos < end:
                tag, pos = _varint(buf, pos)
                wire = tag & 7
                if wire == 0:
                    _, pos = _varint(buf, pos)
                elif wire == 1:
                    pos += 8
                elif wire == 5:
                    pos += 4
                elif wire == 2:
                    n, pos = _varint(buf, pos)
                    if tag >> 3 == 14:  # ModelProto.metadata_props
                        k, v = _read_entry(buf[pos : pos + n])
                        props[k] = v
                    pos += n
                else:
                    return None
            return props if pos == end else None
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return None


def _read_entry(b: bytes) -> tuple[str, str]:
    key = value = ""
    pos = 0
    while pos < len(b):
        tag, pos = _varint(b, pos)
        if tag & 7 != 2:
            raise ValueError("unexpected wire type")
        n, pos = _varint(b, pos)
        s = bytes(b[pos : pos + n]).decode()
        pos += n
        if tag >> 3 == 1:
            key = s
        elif tag >> 3 == 2:
            value = s
    return key, value


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------
class InputSpec:
    """One model input: name, numpy dtype, shape (None for dynamic dims), precomputed checks."""

    __slots__ = (
        "name", "type", "dtype", "shape", "ndim", "fixed", "is_float", "tail_start", "tail", "head"
    )  # fmt: skip

    def __init__(self, name: str, type_str: str, shape: Sequence[Any]) -> None:
        self.name = name
        self.type = type_str
        self.dtype: np.dtype[Any] | None = _ORT_DTYPES.get(type_str)
        self.shape: tuple[int | None, ...] = tuple(
            d if isinstance(d, int) and d >= 0 else None for d in shape
        )
        self.ndim = len(self.shape)
        self.fixed: tuple[tuple[int, int], ...] = tuple(
            (i, d) for i, d in enumerate(self.shape) if d is not None
        )
        self.is_float = self.dtype is not None and self.dtype.kind == "f"
        # fast shape check: the fixed trailing dims compare as one tuple; fixed dims before
        # the last dynamic one ("head") take the slow path
        dyn = [i for i, d in enumerate(self.shape) if d is None]
        self.tail_start = dyn[-1] + 1 if dyn else 0
        self.tail: tuple[int | None, ...] = self.shape[self.tail_start :]
        self.head = any(d is not None for d in self.shape[: self.tail_start])

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "shape": list(self.shape)}

    def describe(self) -> str:
        dims = ", ".join("N" if d is None else str(d) for d in self.shape)
        return f"{self.name!r} ({self.type}, shape [{dims}])"

    def check(self, x: Any) -> np.ndarray:
        """Return ``x`` as an array this input accepts, or raise :class:`InputError`."""
        if type(x) is not np.ndarray:
            x = self._as_array(x)
        if x.dtype is not self.dtype and self.dtype is not None and x.dtype != self.dtype:
            x = self._cast(x)
        shape = x.shape
        if len(shape) != self.ndim or shape[self.tail_start :] != self.tail or self.head:
            self._check_dims(shape)
        # x.x is NaN exactly when x holds a NaN (squares are >= 0, so no inf - inf) and +inf
        # when x holds an infinity (or squares overflow); one BLAS dot is several times cheaper
        # than np.isfinite(x).all() at these sizes, and only a non-finite dot looks closer.
        if self.is_float and not _isfinite(_vdot(x, x)):
            self._check_finite(x)
        return x

    def _check_finite(self, x: np.ndarray) -> None:
        hint = "send finite numbers, or load the model with check_nan=False to allow them"
        if np.isnan(x).any():
            raise InputError(f"input {self.name!r} contains NaN values", hint=hint)
        if np.isinf(x).any():
            raise InputError(
                f"input {self.name!r} contains infinite values (Infinity, or numbers too large "
                f"for {self.dtype})",
                hint=hint,
            )

    def _check_dims(self, shape: tuple[int, ...]) -> None:
        if len(shape) != self.ndim:
            raise InputError(
                f"input {self.name!r} needs rank {self.ndim} (shape {self._shape_str()}), "
                f"got rank {len(shape)} (shape {list(shape)})"
            )
        for axis, size in self.fixed:
            if shape[axis] != size:
                raise InputError(
                    f"input {self.name!r} needs size {size} on axis {axis} "
                    f"(shape {self._shape_str()}), got shape {list(shape)}"
                )

    def _shape_str(self) -> str:
        return "[" + ", ".join("N" if d is None else str(d) for d in self.shape) + "]"

    def _as_array(self, x: Any) -> np.ndarray:
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as exc:
            raise InputError(f"input {self.name!r} is not a rectangular array: {exc}") from exc
        if x.dtype.kind not in _NUMERIC_KINDS:
            raise InputError(
                f"input {self.name!r} must be numeric, got {x.dtype} data",
                hint="pass numbers (text goes to predict() of a text model)",
            )
        return x

    def _cast(self, x: np.ndarray) -> np.ndarray:
        want = self.dtype
        assert want is not None
        kind, wkind = x.dtype.kind, want.kind
        if kind not in _NUMERIC_KINDS:
            raise InputError(f"input {self.name!r} must be numeric, got {x.dtype} data")
        if kind == "f" and wkind == "f":
            with np.errstate(over="ignore"):  # overflow -> inf, refused by the finite check
                return x.astype(want)
        if kind in "iu" and wkind in "iu":
            info = np.iinfo(want)
            if x.size and (x.min() < info.min or x.max() > info.max):
                raise InputError(
                    f"input {self.name!r} has values outside the {want} range "
                    f"[{info.min}, {info.max}]"
                )
            return x.astype(want)
        hint = "use predict() to apply the model's preprocessing" if kind in "iub" else None
        raise InputError(
            f"input {self.name!r} needs {want} data, got {x.dtype} (no safe automatic cast)",
            hint=hint or f"convert the data to {want} first",
        )


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------
class EdgeModel:
    """A loaded ``.onnx`` / ``.ort`` model: checked raw :meth:`run` and metadata-aware
    :meth:`predict`. Thread-safe: one instance may be used from many threads at once.

    Args:
        path: the model file (``.onnx`` or ``.ort``).
        provider: ``"auto"`` (default), a short name (``cpu``, ``cuda``, ``tensorrt``,
            ``coreml``, ``nnapi``, ``xnnpack``, ``qnn``, ``openvino``, ``dml``) or a list.
        fallback: skip unavailable providers with a warning instead of raising; default False.
        threads: intra-op threads; default None (the stored setting, else onnxruntime's).
        graph_optimization: ``"disable"``/``"basic"``/``"extended"``/``"all"``; default None.
        session_options: more settings (a :class:`SessionOptionsConfig` or dict); default None.
        use_stored_session: apply the ``edgekit.session`` metadata a tuned model stores;
            default True. Explicit arguments override stored settings.
        provider_options: per-provider options keyed by short name, e.g.
            ``{"cuda": {"device_id": 1}}``; default None.
        check_nan: reject float inputs containing NaN or +-Inf in :meth:`run`; default True
            (False lets them through).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        provider: str | Sequence[str] = "auto",
        *,
        fallback: bool = False,
        threads: int | None = None,
        graph_optimization: str | None = None,
        session_options: SessionOptionsConfig | Mapping[str, Any] | None = None,
        use_stored_session: bool = True,
        provider_options: Mapping[str, Mapping[str, Any]] | None = None,
        check_nan: bool = True,
    ) -> None:
        self.path = Path(path)
        self._check_path()
        if isinstance(session_options, SessionOptionsConfig):
            explicit = session_options
        else:
            explicit = SessionOptionsConfig.from_dict(session_options)
        explicit = explicit.merged(
            SessionOptionsConfig(
                intra_op_num_threads=threads, graph_optimization_level=graph_optimization
            )
        )
        self.requested_providers = resolve_providers(provider, fallback=fallback)
        self._provider_options = {
            PROVIDER_NAMES[_short_name(k)]: dict(v) for k, v in (provider_options or {}).items()
        }
        is_ort = self.path.suffix.lower() == ".ort"
        stored_props = None if is_ort else _read_onnx_props(self.path)
        stored = self._stored_session(stored_props) if use_stored_session else None
        self.session_config = (stored or SessionOptionsConfig()).merged(explicit)
        self._session: ort.InferenceSession | None = self._create_session(self.session_config)
        props = dict(self._session.get_modelmeta().custom_metadata_map)
        if is_ort and use_stored_session:  # .ort: settings are only known after loading
            stored = self._stored_session(props)
            if stored is not None:
                self.session_config = stored.merged(explicit)
                self._session = self._create_session(self.session_config)
        wanted = [provider] if isinstance(provider, str) else list(provider)
        auto = any(str(w).strip().lower() == "auto" for w in wanted)
        self._check_providers(fallback or auto)  # "auto" means: the best that works
        try:
            self.metadata = ModelMetadata.from_props(props)
        except (ValueError, TypeError, KeyError, InputError) as exc:
            raise ModelLoadError(f"edgekit metadata of {self.path} is malformed: {exc}") from exc
        # the output contract written at export decides what predict() returns; no guessing
        kinds = self.metadata.output_kinds or []
        try:
            self.output_kind: OutputKind | None = OutputKind(kinds[0]) if kinds else None
        except ValueError as exc:
            raise ModelLoadError(f"edgekit metadata of {self.path} is malformed: {exc}") from exc
        if kinds == [] and self.metadata.task == "classification" and PREFIX + "task" in props:
            logger.warning("%s has no output contract (exported by an older edgekit): predict() "
                           "returns its raw first output; export it again", self.path.name)
        sess = self._session
        self.inputs: tuple[InputSpec, ...] = tuple(
            InputSpec(i.name, i.type, i.shape) for i in sess.get_inputs()
        )
        self.outputs: tuple[InputSpec, ...] = tuple(
            InputSpec(o.name, o.type, o.shape) for o in sess.get_outputs()
        )
        self.input_names: tuple[str, ...] = tuple(s.name for s in self.inputs)
        self.output_names: tuple[str, ...] = tuple(s.name for s in self.outputs)
        self._names = frozenset(self.input_names)
        self._single = self.inputs[0] if len(self.inputs) == 1 else None
        self._output_list = list(self.output_names)
        self._bind_run()
        self._check_nan = check_nan
        if not check_nan:
            for spec in self.inputs:
                spec.is_float = False
        self._tokenizer: Any = None
        self._tok_lock = threading.Lock()

    # -- loading -------------------------------------------------------------------------
    def _check_path(self) -> None:
        p = self.path
        if not p.exists():
            raise InputError(f"model file {p} does not exist")
        if p.is_dir():
            raise InputError(f"{p} is a folder, not a model file", hint="pass the .onnx file")
        if p.suffix.lower() not in (".onnx", ".ort"):
            raise InputError(
                f"{p} is not an .onnx or .ort file",
                hint="export the Keras model first: edgekit export MODEL -o OUTDIR",
            )

    def _stored_session(self, props: Mapping[str, str] | None) -> SessionOptionsConfig | None:
        raw = (props or {}).get(PREFIX + "session")
        if not raw:
            return None
        try:
            return SessionOptionsConfig.from_dict(json.loads(raw))
        except (ValueError, TypeError, InputError) as exc:
            logger.warning("ignoring malformed edgekit.session metadata in %s: %s", self.path, exc)
            return None

    def _create_session(self, config: SessionOptionsConfig) -> ort.InferenceSession:
        so = config.to_ort()
        so.log_severity_level = 3
        opts = [self._provider_options.get(p, {}) for p in self.requested_providers]
        try:
            return ort.InferenceSession(
                str(self.path), sess_options=so, providers=self.requested_providers,
                provider_options=opts, disabled_optimizers=config.disabled_optimizers or None,
            )  # fmt: skip
        except Exception as exc:
            raise ModelLoadError(
                f"cannot load {self.path} with onnxruntime: {str(exc).strip()}",
                hint="the file may be truncated or not a model; re-export it",
            ) from exc

    def _check_providers(self, fallback: bool) -> None:
        assert self._session is not None
        active = self._session.get_providers()
        missing = [p for p in self.requested_providers if p not in active]
        if missing and self.requested_providers[0] in missing:
            msg = (
                f"onnxruntime could not initialise {', '.join(missing)}; using {', '.join(active)}"
            )
            if not fallback:
                raise ProviderError(msg, hint="check the provider's libraries, or allow fallback")
            logger.warning("%s", msg)

    # -- properties ----------------------------------------------------------------------
    @property
    def session(self) -> ort.InferenceSession:
        """The underlying :class:`onnxruntime.InferenceSession`."""
        if self._session is None:
            raise InputError(f"model {self.path.name} is closed")
        return self._session

    @property
    def providers(self) -> list[str]:
        """Execution providers actually in use, in priority order (onnxruntime names)."""
        return list(self.session.get_providers())

    @property
    def labels(self) -> list[str] | None:
        """Class labels stored in the metadata (None when there are none)."""
        return self.metadata.labels

    @property
    def preprocessing(self) -> Preprocessing | None:
        return self.metadata.preprocessing

    @property
    def is_text(self) -> bool:
        """True when the metadata carries a tokenizer (``predict`` then accepts strings)."""
        return self.metadata.tokenizer is not None

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary: inputs, outputs, providers, labels, preprocessing, task."""
        pre = self.metadata.preprocessing
        tok = self.metadata.tokenizer or {}
        return {
            "model": self.path.name,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "providers": self.providers,
            "task": self.metadata.task,
            "labels": self.metadata.labels,
            "preprocessing": pre.to_dict() if pre else None,
            "text": self.is_text,
            "sequence_length": tok.get("sequence_length") if tok else None,
            "session": self.session_config.to_dict(),
        }

    # -- raw path ------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, Any] | np.ndarray) -> list[np.ndarray]:
        """Run the model on model-ready inputs (no preprocessing); outputs in model order.

        ``feeds`` maps input names to arrays, or is one array for a single-input model. Names,
        rank, fixed dimensions, numeric type and NaN are checked (:class:`InputError`);
        float64 -> float32 and int64 -> int32 style casts happen automatically.
        """
        if type(feeds) is not dict:
            feeds = self._as_feeds(feeds)
        if feeds.keys() != self._names:
            self._raise_names(feeds)
        new: dict[str, Any] | None = None
        for spec in self.inputs:
            x = feeds[spec.name]
            y = spec.check(x)
            if y is not x:
                if new is None:
                    new = dict(feeds)
                new[spec.name] = y
        try:
            return self._run(self._output_list, new or feeds, None)
        except Exception as exc:
            return self._run_failed(new or feeds, exc)

    def _run_failed(self, feeds: dict[str, Any], exc: Exception) -> list[np.ndarray]:
        """Retry through the public API (it owns onnxruntime's provider fallback), else raise."""
        if self._session is None:
            raise InputError(f"model {self.path.name} is closed") from None
        try:
            return self._session.run(None, feeds)
        except Exception:
            raise InputError(f"onnxruntime could not run {self.path.name}: {exc}") from exc

    def _bind_run(self) -> None:
        # The checks above replace InferenceSession.run's own Python-side validation, so the
        # hot path calls the C++ session directly (same signature); any failure is retried
        # through the public ``InferenceSession.run`` in :meth:`_run_failed`.
        sess = self._session
        if sess is None:
            self._run: Any = _closed_run
        else:
            self._run = getattr(getattr(sess, "_sess", None), "run", None) or sess.run

    def _as_feeds(self, feeds: Any) -> dict[str, Any]:
        if isinstance(feeds, Mapping):
            return dict(feeds)
        if self._single is not None:
            return {self._single.name: feeds}
        raise InputError(
            f"model has {len(self.inputs)} inputs; pass a dict "
            f"{{name: array}} with {', '.join(map(repr, self.input_names))}"
        )

    def _raise_names(self, feeds: Mapping[str, Any]) -> None:
        unknown = [k for k in feeds if k not in self._names]
        missing = [k for k in self.input_names if k not in feeds]
        parts = []
        if unknown:
            parts.append(f"unknown input name(s) {', '.join(map(repr, unknown))}")
        if missing:
            parts.append(f"missing input(s) {', '.join(map(repr, missing))}")
        raise InputError(
            "; ".join(parts),
            hint=f"the model's inputs are {', '.join(map(repr, self.input_names))}",
        )

    # -- metadata-aware path -------------------------------------------------------------
    def prepare(self, x: Any, *, preprocess: bool | None = None) -> dict[str, np.ndarray]:
        """Model-ready feeds for raw ``x``: tokenising, preprocessing, batching (see module doc).

        Args:
            x: one sample or a batch (array-like), a str / list of str for text models, or a
                dict for multi-input models (batched and cast, not preprocessed).
            preprocess: None (default) follows the rule in the module doc; True / False force.
        """
        if isinstance(x, Mapping):
            feeds = {}
            for name, v in x.items():
                spec = self._spec(name)
                feeds[name] = self._batch(spec, spec._as_array(v))
            return feeds
        spec = self._single
        if spec is None:
            raise InputError(
                f"model has {len(self.inputs)} inputs; pass a dict with "
                f"{', '.join(map(repr, self.input_names))}"
            )
        if self._is_text_input(x):
            return {spec.name: self._batch(spec, self.tokenizer.encode(_texts(x)))}
        try:
            a = np.asarray(x)
        except (ValueError, TypeError) as exc:
            raise InputError(f"input is not a rectangular array: {exc}") from exc
        if a.dtype.kind not in _NUMERIC_KINDS:
            hint = (
                "this is not a text model" if a.dtype.kind in "USO" and not self.is_text else None
            )
            raise InputError(f"input must be numeric, got {a.dtype} data", hint=hint)
        pre = self.metadata.preprocessing
        want = spec.dtype
        if want is not None and want.kind == "f":
            apply = preprocess
            if apply is None:
                apply = pre is not None and (pre.raw_dtype is None or a.dtype.kind in "iub")
            if apply and pre is not None and not pre.is_identity:
                try:
                    a = pre.apply(a, dtype=want)
                except ValueError as exc:  # e.g. 29 features against 30 means/stds
                    b = a[None] if a.ndim == spec.ndim - 1 else a
                    spec._check_dims(b.shape)  # the usual message: "needs size 30 on axis 1"
                    msg = f"input {spec.name!r} does not fit its preprocessing: {exc}"
                    raise InputError(msg) from None
            elif a.dtype != want:
                a = a.astype(want)
        return {spec.name: self._batch(spec, a)}

    def _spec(self, name: str) -> InputSpec:
        for s in self.inputs:
            if s.name == name:
                return s
        self._raise_names({name: None})
        raise AssertionError  # pragma: no cover

    def _is_text_input(self, x: Any) -> bool:
        if isinstance(x, str):
            return True
        if isinstance(x, np.ndarray):
            return x.dtype.kind in "US"
        if isinstance(x, (list, tuple)) and x and all(isinstance(t, str) for t in x):
            return True
        return False

    @property
    def tokenizer(self) -> Any:
        """The :class:`edgekit.inputs.text.TextTokenizer` of a text model (built on first use)."""
        if self._tokenizer is None:
            if self.metadata.tokenizer is None:
                raise InputError(
                    f"{self.path.name} is not a text model (no tokenizer in its metadata)",
                    hint="pass numeric arrays instead of text",
                )
            with self._tok_lock:
                if self._tokenizer is None:
                    from edgekit.inputs.text import TextTokenizer

                    self._tokenizer = TextTokenizer.from_dict(self.metadata.tokenizer)
        return self._tokenizer

    def _batch(self, spec: InputSpec, a: np.ndarray) -> np.ndarray:
        """Add the batch axis (and a missing channel axis of size 1) when ``a`` lacks them."""
        if a.ndim == spec.ndim:
            return a
        if a.ndim == spec.ndim - 1 and _fits(a.shape, spec.shape[1:]):
            return a[None]
        ch = self._channel_axis(spec)
        if ch is not None and a.ndim in (spec.ndim - 1, spec.ndim - 2):
            b = a[..., None] if ch == -1 else np.expand_dims(a, a.ndim - 2)
            return self._batch(spec, b) if b.ndim < spec.ndim else b
        return a

    def _channel_axis(self, spec: InputSpec) -> int | None:
        if spec.ndim != 4:
            return None
        pre = self.metadata.preprocessing
        layout = pre.layout if pre is not None else "NHWC"
        if layout.upper() == "NCHW" and spec.shape[1] == 1:
            return 1
        if spec.shape[-1] == 1:
            return -1
        return None

    def predict(self, x: Any, *, preprocess: bool | None = None) -> np.ndarray:
        """The first output for raw ``x`` (see :meth:`prepare`), read by the output contract.

        ``probabilities`` are returned as they are (softmax rows renormalised to sum to 1,
        absorbing fp16/int8 rounding), ``logits`` get a softmax (a sigmoid for one column),
        ``regression``/``other`` outputs and models without a contract are returned unchanged
        (see :mod:`edgekit.contract`).
        """
        y = np.asarray(self.run(self.prepare(x, preprocess=preprocess))[0])
        return to_probabilities(y, self.output_kind)

    def top_k(self, probs: np.ndarray, k: int = 3) -> list[list[tuple[str, float]]]:
        """The ``k`` most likely ``(label, probability)`` pairs of each row of ``probs``.

        A single sigmoid column with two labels is read as ``[1 - p, p]``. Without stored labels
        the class index is the label.
        """
        p = np.asarray(probs, dtype=np.float64)
        if p.ndim == 1:
            p = p[None]
        p = p.reshape(p.shape[0], -1)
        labels = self.metadata.labels
        if p.shape[1] == 1 and labels is not None and len(labels) == 2:
            p = np.concatenate([1.0 - p, p], axis=1)
        k = max(1, min(int(k), p.shape[1]))
        order = np.argsort(-p, axis=1, kind="stable")[:, :k]
        names = labels if labels is not None and len(labels) == p.shape[1] else None
        return [
            [(names[j] if names else str(j), float(row[j])) for j in idx]
            for row, idx in zip(p, order, strict=True)
        ]

    def predict_labels(self, x: Any, *, preprocess: bool | None = None) -> list[str]:
        """The most likely stored label of each sample of ``x``."""
        return [row[0][0] for row in self.top_k(self.predict(x, preprocess=preprocess), 1)]

    def predict_top_k(
        self, x: Any, k: int = 3, *, preprocess: bool | None = None
    ) -> list[list[tuple[str, float]]]:
        """``k`` (default 3) most likely ``(label, probability)`` pairs per sample."""
        return self.top_k(self.predict(x, preprocess=preprocess), k)

    # -- lifecycle -----------------------------------------------------------------------
    def warmup(self, runs: int = 3, batch: int = 1) -> None:
        """Run ``runs`` (default 3) inferences on zeros (dynamic dims set to ``batch``/1)."""
        feeds = {}
        for i, spec in enumerate(self.inputs):
            shape = [
                d if d is not None else (batch if j == 0 else 1) for j, d in enumerate(spec.shape)
            ]
            if spec.dtype is None:
                raise InputError(f"cannot warm up input {spec.name!r} of type {spec.type}")
            feeds[self.input_names[i]] = np.zeros(shape, dtype=spec.dtype)
        for _ in range(max(0, runs)):
            self.run(feeds)

    def close(self) -> None:
        """Release the onnxruntime session; later calls raise :class:`InputError`."""
        self._session = None
        self._bind_run()

    def __enter__(self) -> EdgeModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._session is None else ", ".join(self.providers)
        return f"EdgeModel({str(self.path)!r}, {state})"


def _closed_run(*args: Any) -> list[np.ndarray]:
    raise InputError("the model is closed")


def _fits(shape: Sequence[int], want: Sequence[int | None]) -> bool:
    return len(shape) == len(want) and all(
        w is None or s == w for s, w in zip(shape, want, strict=True)
    )


def _texts(x: Any) -> list[str]:
    if isinstance(x, str):
        return [x]
    return [str(t) for t in (x.tolist() if isinstance(x, np.ndarray) else x)]


# ---------------------------------------------------------------------------------------------
# file inputs and the `edgekit run` command
# ---------------------------------------------------------------------------------------------
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def load_image(
    path: str | os.PathLike[str], preprocessing: Preprocessing | None = None
) -> np.ndarray:
    """uint8 image array as the metadata describes it (needs ``edgekit[image]``).

    Resized to ``image_size`` ([height, width]) when set, greyscaled when ``color`` is
    ``"grayscale"`` (RGB when ``"rgb"``), shaped HWC (CHW for ``layout="NCHW"``).
    """
    image_mod: Any = require("PIL.Image", "image", package="pillow")
    p = Path(path)
    if not p.is_file():
        raise InputError(f"image file {p} does not exist")
    pre = preprocessing or Preprocessing()
    try:
        with image_mod.open(p) as im:
            if pre.color == "grayscale":
                im = im.convert("L")
            elif pre.color == "rgb" or im.mode not in ("L", "RGB"):
                im = im.convert("RGB")
            if pre.image_size:
                h, w = (int(v) for v in pre.image_size)
                im = im.resize((w, h), image_mod.Resampling.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read image {p}: {exc}") from exc
    if a.ndim == 2:
        a = a[..., None]
    if pre.layout.upper() == "NCHW":
        a = np.ascontiguousarray(a.transpose(2, 0, 1))
    return a


def load_array(
    path: str | os.PathLike[str], input_names: Iterable[str] = ()
) -> np.ndarray | dict[str, np.ndarray]:
    """Array from a ``.npy`` file, or from a ``.npz`` file (one array, or one per input name)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"input file {p} does not exist")
    names = list(input_names)
    try:
        data = np.load(p, allow_pickle=False)
        if isinstance(data, np.ndarray):
            return data
        with data:
            keys = list(data.keys())
            if names and set(names) <= set(keys):
                return {n: data[n] for n in names}
            if len(keys) == 1:
                return data[keys[0]]
            for k in ("x", "inputs", "input", "images"):
                if k in keys:
                    return data[k]
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"cannot read {p} as a numpy file: {exc}") from exc
    raise InputError(
        f"{p} holds several arrays ({', '.join(keys)}) and none is named after the model input",
        hint=f"store one array, or name it {', '.join(names) or 'x'}",
    )


def predict_input(
    model: str | os.PathLike[str] | EdgeModel,
    input_path: str | os.PathLike[str] | None = None,
    *,
    text: str | None = None,
    provider: str = "auto",
    fallback: bool = False,
    top_k: int = 3,
) -> dict[str, Any]:
    """What ``edgekit run`` does: load the input, predict, return a JSON-ready report.

    ``input_path`` is a ``.npy``/``.npz`` file or an image file; ``text`` is raw text for text
    models (exactly one of them). ``top_k`` defaults to 3.
    """
    if (input_path is None) == (text is None):
        raise InputError("give exactly one input: a file, or --text for text models")
    em = model if isinstance(model, EdgeModel) else EdgeModel(model, provider, fallback=fallback)
    if text is not None:
        x: Any = [text]
        source = "text"
    else:
        p = Path(input_path)  # type: ignore[arg-type]
        suffix = p.suffix.lower()
        if suffix in (".npy", ".npz"):
            x = load_array(p, em.input_names)
        elif suffix in _IMAGE_SUFFIXES:
            x = load_image(p, em.preprocessing)
        else:
            raise InputError(
                f"unsupported input file type {suffix or p.name!r}",
                hint="use a .npy/.npz array, a PNG/JPEG image, or --text",
            )
        source = str(p)
    probs = em.predict(x)
    report: dict[str, Any] = {
        "model": str(em.path),
        "input": source,
        "providers": em.providers,
        "task": em.metadata.task,
    }
    if em.metadata.task == "classification":
        report["predictions"] = [
            [{"label": lab, "probability": prob} for lab, prob in row]
            for row in em.top_k(probs, top_k)
        ]
    else:
        report["outputs"] = probs.tolist()
    return report


def format_predictions(report: dict[str, Any]) -> str:
    """Human-readable table of a :func:`predict_input` report."""
    lines = [f"model: {report['model']}  ({', '.join(report['providers'])})"]
    if "outputs" in report:
        lines += [f"sample {i}: {row}" for i, row in enumerate(report["outputs"])]
        return "\n".join(lines)
    rows = report["predictions"]
    width = max([5] + [len(p["label"]) for row in rows for p in row])
    for i, row in enumerate(rows):
        if len(rows) > 1:
            lines.append(f"sample {i}:")
        lines.append(f"  {'label':<{width}}  probability")
        lines += [f"  {p['label']:<{width}}  {p['probability']:.4f}" for p in row]
    return "\n".join(lines)
