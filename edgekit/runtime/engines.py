"""Engines: the libraries that actually run a model for :class:`~edgekit.runtime.model.EdgeModel`.

Design. An :class:`Engine` loads one model file with one :class:`SessionOptionsConfig` and
offers only what :class:`~edgekit.runtime.model.EdgeModel` needs: the input/output specs (names,
numpy dtypes, shapes in the ONNX file's order), the file's ``metadata_props``, a ``run(feeds)``
that takes *already checked* arrays (right names, dtypes, ranks and fixed dims: EdgeModel checks
them once per input signature) and returns numpy arrays in the ONNX output order, a
description of where it runs, and ``close``. Everything else (checks, preprocessing, the output
contract, labels) lives in EdgeModel and is shared by every engine, so results and errors are
the same whichever engine runs.

- :class:`OnnxruntimeEngine` wraps :class:`onnxruntime.InferenceSession` (the default; base
  install). Its ``run`` calls the C++ session directly, skipping ``InferenceSession.run``'s
  Python-side validation, which EdgeModel's checks replace; failures are retried through the
  public API, which owns onnxruntime's provider fallback.
- :class:`OpenVinoEngine` uses the ``openvino`` runtime directly (``pip install
  "edgekit[openvino]"``, imported lazily): ``Core().read_model`` then ``compile_model`` on CPU
  with the session's threads, precision (``INFERENCE_PRECISION_HINT`` pinned to f32 unless bf16
  is chosen) and performance hint. Dynamic dimensions are compiled static per input shape (up
  to :data:`MAX_STATIC_SHAPES`, then one dynamic compilation serves the rest), since static
  shapes run faster; each compilation keeps one infer request per thread, and inputs are passed
  without copying. Outputs are copied out of OpenVINO's buffers, so they stay valid.

:func:`open_engine` builds one by name (:data:`~edgekit.runtime.session.ENGINE_NAMES`).
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnxruntime as ort

from edgekit.errors import InputError, ModelLoadError, ProviderError, require
from edgekit.metadata import PREFIX
from edgekit.runtime.session import ENGINE_NAMES, SessionOptionsConfig
from edgekit.runtime.specs import InputSpec, read_onnx_props, type_string
from edgekit.schema import parse_json

__all__ = [
    "Engine",
    "OnnxruntimeEngine",
    "OpenVinoEngine",
    "MAX_STATIC_SHAPES",
    "open_engine",
    "openvino_available",
    "load_openvino",
    "choose_engine",
    "stored_session",
    "session_settings",
]

logger = logging.getLogger(__name__)
_ENGINE_ONLY: dict[str, Any] = {"precision": None, "performance_hint": None, "openvino_config": {}}

#: Input shapes an :class:`OpenVinoEngine` compiles statically before it compiles dynamically.
MAX_STATIC_SHAPES = 8


class Engine(abc.ABC):
    """What runs a model: specs, metadata, ``run`` on checked feeds, ``close``.

    Attributes:
        name: the engine's name (``"onnxruntime"`` or ``"openvino"``).
        path: the model file.
        config: the session settings it was built with.
        inputs / outputs: :class:`InputSpec` per input / output, in the file's order.
        props: the file's ``metadata_props``.
    """

    name: ClassVar[str] = ""

    def __init__(self, path: Path, config: SessionOptionsConfig) -> None:
        self.path = path
        self.config = config
        self.inputs: tuple[InputSpec, ...] = ()
        self.outputs: tuple[InputSpec, ...] = ()
        self.props: dict[str, str] = {}
        self.closed = False

    @abc.abstractmethod
    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs (ONNX order) for checked ``feeds`` (name -> array of the input's dtype)."""

    @property
    @abc.abstractmethod
    def providers(self) -> list[str]:
        """Where it runs: onnxruntime's providers in use, or ``["openvino:CPU"]``."""

    @property
    def device(self) -> str:
        """A short description of the device (default: the providers)."""
        return ", ".join(self.providers)

    def close(self) -> None:
        """Release the engine's resources; later runs raise :class:`InputError`."""
        self.closed = True

    def _closed_error(self) -> InputError:
        return InputError(f"model {self.path.name} is closed")


# ---------------------------------------------------------------------------------------------
# onnxruntime
# ---------------------------------------------------------------------------------------------
class OnnxruntimeEngine(Engine):
    """An :class:`onnxruntime.InferenceSession` (``.onnx`` or ``.ort``).

    Args:
        path / config: the model file and its settings (``precision="bf16"`` is refused).
        providers: onnxruntime provider names in priority order (see
            :func:`~edgekit.runtime.session.resolve_providers`).
        provider_options: options per onnxruntime provider name; default none.
        fallback: accept a session that could not initialise the first provider (warns);
            default False raises :class:`ProviderError`.
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: Path,
        config: SessionOptionsConfig,
        providers: list[str],
        provider_options: Mapping[str, Mapping[str, Any]] | None = None,
        fallback: bool = False,
    ) -> None:
        super().__init__(path, config)
        if config.precision == "bf16":
            raise InputError(
                "onnxruntime computes float models in f32; precision bf16 is OpenVINO's",
                hint='use engine="openvino", or precision f32',
            )
        self.requested_providers = list(providers)
        opts = [dict((provider_options or {}).get(p, {})) for p in providers]
        self._session: ort.InferenceSession | None = self._create(opts)
        self._check_providers(fallback)
        sess = self._session
        self.props = dict(sess.get_modelmeta().custom_metadata_map)
        self.inputs = tuple(InputSpec(i.name, i.type, i.shape) for i in sess.get_inputs())
        self.outputs = tuple(InputSpec(o.name, o.type, o.shape) for o in sess.get_outputs())
        self._output_list = [s.name for s in self.outputs]
        self._c_run: Any = getattr(getattr(sess, "_sess", None), "run", None) or sess.run

    def _create(self, provider_opts: list[dict[str, Any]]) -> ort.InferenceSession:
        so = self.config.to_ort()
        so.log_severity_level = 3
        try:
            return ort.InferenceSession(
                str(self.path), sess_options=so, providers=self.requested_providers,
                provider_options=provider_opts,
                disabled_optimizers=self.config.disabled_optimizers or None,
            )  # fmt: skip
        except Exception as exc:
            raise ModelLoadError(
                f"cannot load {self.path} with onnxruntime: {str(exc).strip()}",
                hint="the file may be truncated or not a model; re-export it",
            ) from exc

    def _check_providers(self, fallback: bool) -> None:
        active = self.session.get_providers()
        missing = [p for p in self.requested_providers if p not in active]
        if missing and self.requested_providers[0] in missing:
            msg = (
                f"onnxruntime could not initialise {', '.join(missing)}; using {', '.join(active)}"
            )
            if not fallback:
                raise ProviderError(msg, hint="check the provider's libraries, or allow fallback")
            logger.warning("%s", msg)

    @property
    def session(self) -> ort.InferenceSession:
        """The :class:`onnxruntime.InferenceSession`."""
        if self._session is None:
            raise self._closed_error()
        return self._session

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self._c_run(self._output_list, feeds, None)
        except Exception as exc:
            return self._run_failed(feeds, exc)

    def _run_failed(self, feeds: Mapping[str, np.ndarray], exc: Exception) -> list[np.ndarray]:
        """Retry through the public API (it owns onnxruntime's provider fallback), else raise."""
        if self._session is None:
            raise self._closed_error() from None
        try:
            return self._session.run(None, dict(feeds))
        except Exception:
            raise InputError(f"onnxruntime could not run {self.path.name}: {exc}") from exc

    def close(self) -> None:
        super().close()
        self._session = None
        self._c_run = _closed_run


def _closed_run(*args: Any) -> list[np.ndarray]:
    raise InputError("the model is closed")


# ---------------------------------------------------------------------------------------------
# OpenVINO
# ---------------------------------------------------------------------------------------------
def load_openvino() -> Any:
    """The ``openvino`` module, or :class:`~edgekit.errors.MissingDependencyError` naming
    ``pip install "edgekit[openvino]"``."""
    return require("openvino", "openvino")


def openvino_available() -> bool:
    """True when ``import openvino`` works here."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


class _Compiled:
    """One compiled model and one infer request per thread."""

    __slots__ = ("compiled", "local")

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled
        self.local = threading.local()

    def new_request(self) -> Any:
        req = self.local.req = self.compiled.create_infer_request()
        return req


class OpenVinoEngine(Engine):
    """An ONNX file run by the ``openvino`` runtime on CPU (see the module doc).

    Args:
        path / config: the ``.onnx`` file and its settings (threads, precision, performance
            hint, ``openvino_config``; onnxruntime-only settings are ignored).
    """

    name = "openvino"

    def __init__(self, path: Path, config: SessionOptionsConfig) -> None:
        super().__init__(path, config)
        if path.suffix.lower() == ".ort":
            raise InputError(
                f"{path.name} is in onnxruntime's ORT format, which only onnxruntime runs",
                hint='use the .onnx file with engine="openvino", or engine="onnxruntime"',
            )
        self._ov = load_openvino()
        self._tensor = self._ov.Tensor
        self._core = self._ov.Core()
        try:
            self._model = self._core.read_model(str(path))
        except Exception as exc:
            raise openvino_read_error(path, exc) from exc
        self.props = read_onnx_props(path) or {}
        self.inputs = tuple(_spec(p) for p in self._model.inputs)
        self.outputs = tuple(_spec(p) for p in self._model.outputs)
        self._in_names = tuple(s.name for s in self.inputs)
        self._single = self._in_names[0] if len(self._in_names) == 1 else None
        self._n_out = range(len(self.outputs))
        self._one_output = len(self.outputs) == 1
        self._lock = threading.Lock()
        self._by_shape: dict[Any, _Compiled] = {}
        self._static = 0
        self._dynamic: _Compiled | None = None
        self._compile_default()

    def _compile(self, model: Any) -> _Compiled:
        try:
            return _Compiled(self._core.compile_model(model, "CPU", self.config.to_openvino()))
        except Exception as exc:
            msg = str(exc).strip().splitlines()
            raise ModelLoadError(
                f"openvino cannot compile {self.path.name}: {msg[-1] if msg else exc}",
                hint='check the session settings, or use engine="onnxruntime"',
            ) from exc

    def _compile_default(self) -> None:
        """Compile now for the default shape (dynamic dims 1), so load errors show at load."""
        key = tuple(tuple(1 if d is None else d for d in s.shape) for s in self.inputs)
        if all(d is not None for s in self.inputs for d in s.shape):
            self._store(self._key(key), self._compile(self._model))
            return
        try:
            self._compile_for(key)
        except ModelLoadError:  # e.g. a dynamic length that cannot be 1: compile dynamic
            self._dynamic = self._compile(self._model)

    def _key(self, shapes: tuple[tuple[int, ...], ...]) -> Any:
        return shapes[0] if self._single is not None else shapes

    def _store(self, key: Any, c: _Compiled) -> _Compiled:
        if len(self._by_shape) < 4 * MAX_STATIC_SHAPES:
            self._by_shape[key] = c
        return c

    def _compile_for(self, shapes: tuple[tuple[int, ...], ...]) -> _Compiled:
        """The compilation for ``shapes`` (static while fewer than MAX_STATIC_SHAPES)."""
        with self._lock:
            if self.closed:
                raise self._closed_error()
            key = self._key(shapes)
            if key in self._by_shape:
                return self._by_shape[key]
            if self._static >= MAX_STATIC_SHAPES:
                if self._dynamic is None:
                    self._dynamic = self._compile(self._model)
                return self._store(key, self._dynamic)
            model = self._model.clone()
            try:
                model.reshape({i: list(s) for i, s in enumerate(shapes)})
            except Exception as exc:
                raise InputError(
                    f"openvino cannot run {self.path.name} on input shapes "
                    f"{[list(s) for s in shapes]}: {str(exc).strip().splitlines()[-1]}"
                ) from exc
            self._static += 1
            return self._store(key, self._compile(model))

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        # single input / single output: no loops or comprehensions (each costs ~1 us per call
        # on a 70-100 us CNN call; see benchmarks/runtime_overhead.py)
        if self._single is not None:
            a = feeds[self._single]
            c = self._by_shape.get(a.shape) or self._compile_for((a.shape,))
        else:
            arrays = [feeds[n] for n in self._in_names]
            shapes = tuple([x.shape for x in arrays])
            c = self._by_shape.get(shapes) or self._compile_for(shapes)
        try:
            req = c.local.req
        except AttributeError:
            req = c.new_request()
        if self._single is not None:
            try:
                req.set_input_tensor(self._tensor(a, shared_memory=True))
            except (ValueError, RuntimeError):  # read-only or not C-contiguous: copy it
                req.set_input_tensor(self._tensor(np.array(a, order="C")))
        else:
            for i, x in enumerate(arrays):
                try:
                    req.set_input_tensor(i, self._tensor(x, shared_memory=True))
                except (ValueError, RuntimeError):
                    req.set_input_tensor(i, self._tensor(np.array(x, order="C")))
        try:
            req.infer()
        except RuntimeError as exc:
            raise InputError(f"openvino could not run {self.path.name}: {exc}") from exc
        if self._one_output:
            return [req.get_output_tensor().data.copy()]
        return [req.get_output_tensor(i).data.copy() for i in self._n_out]

    @property
    def compiled(self) -> Any:
        """The ``openvino.CompiledModel`` of the default shape (properties: ``get_property``)."""
        if self.closed:
            raise self._closed_error()
        key = tuple(tuple(1 if d is None else d for d in s.shape) for s in self.inputs)
        c = self._by_shape.get(self._key(key)) or self._dynamic
        assert c is not None
        return c.compiled

    @property
    def providers(self) -> list[str]:
        if self.closed:
            raise self._closed_error()
        return ["openvino:CPU"]

    @property
    def device(self) -> str:
        return f"openvino CPU ({self._core.get_property('CPU', 'FULL_DEVICE_NAME')})"

    def close(self) -> None:
        with self._lock:
            super().close()
            self._by_shape = {}
            self._dynamic = None


#: how OpenVINO's ONNX reader names the ops it has no rule for
_UNREAD = re.compile(r"(?:No conversion rule found for operations|Conversion is failed for):?"
                     r"\s*([^\n]+)")


def openvino_read_error(path: Path, exc: BaseException) -> ModelLoadError:
    """The error for a file OpenVINO's reader refused: the ops it cannot read when it names
    them (a valid file, an engine gap), else its last message line."""
    text = str(exc)
    found = _UNREAD.search(text)
    if found:
        ops = found.group(1).strip().rstrip(".")
        return ModelLoadError(
            f"OpenVINO cannot read {ops} in {path.name} (its ONNX reader has no rule for it)",
            hint='run it on onnxruntime (engine="onnxruntime"), which reads every standard op')
    last = text.strip().splitlines()[-1] if text.strip() else type(exc).__name__
    return ModelLoadError(f"cannot load {path} with openvino: {last}",
                          hint="the file may be truncated or not a model; re-export it")


def _spec(port: Any) -> InputSpec:
    """An :class:`InputSpec` from an OpenVINO model input/output port."""
    pshape = port.get_partial_shape()
    if pshape.rank.is_dynamic:
        shape: list[int | None] = []
    else:
        shape = [d.get_length() if d.is_static else None for d in pshape]
    return InputSpec(port.get_any_name(), type_string(port.get_element_type().to_dtype()), shape)


def open_engine(
    name: str,
    path: Path,
    config: SessionOptionsConfig,
    providers: list[str],
    provider_options: Mapping[str, Mapping[str, Any]] | None = None,
    fallback: bool = False,
) -> Engine:
    """The engine ``name`` (``"onnxruntime"`` or ``"openvino"``) loaded with ``config``;
    ``providers``, ``provider_options`` and ``fallback`` apply to onnxruntime only."""
    if name == "openvino":
        return OpenVinoEngine(path, config)
    return OnnxruntimeEngine(path, config, providers, provider_options, fallback)


# ---------------------------------------------------------------------------------------------
# choosing the engine and its settings
# ---------------------------------------------------------------------------------------------
def stored_session(props: Mapping[str, str] | None, path: Path) -> tuple[dict[str, Any], Any]:
    """The ``edgekit.session`` metadata as (settings without the engine, stored engine)."""
    raw = (props or {}).get(PREFIX + "session")
    if not raw:
        return {}, None
    try:
        d = parse_json(raw, PREFIX + "session")
        if not isinstance(d, dict):
            raise ValueError(f"a JSON object is needed, got {type(d).__name__}")
        engine = d.pop("engine", None)
        SessionOptionsConfig.from_dict(d)  # validate here, so a bad value is ignored here
        return d, engine
    except (ValueError, TypeError, InputError) as exc:
        logger.warning("ignoring malformed edgekit.session metadata in %s: %s", path, exc)
        return {}, None


def choose_engine(explicit: str | None, stored: Any, path: Path) -> tuple[str, bool]:
    """The engine to run ``path`` with, and whether its stored engine-specific settings apply.

    ``explicit`` (a canonical name, or None for auto) wins; an unavailable explicit OpenVINO
    raises :class:`~edgekit.errors.MissingDependencyError`. Otherwise the ``stored`` engine is
    used when it is known and installed, else onnxruntime with a warning.
    """
    is_ort = path.suffix.lower() == ".ort"
    stored_name = str(stored).strip().lower() if stored else "onnxruntime"
    if explicit is not None:
        if explicit == "openvino":
            if is_ort:
                raise InputError(
                    f"{path.name} is in onnxruntime's ORT format, which OpenVINO cannot run",
                    hint='use the .onnx file with engine="openvino", or engine="onnxruntime"',
                )
            load_openvino()
        return explicit, explicit == stored_name
    if stored_name == "onnxruntime":
        return "onnxruntime", True
    if stored_name not in ENGINE_NAMES:
        why = f"is not known to this edgekit (known: {', '.join(ENGINE_NAMES)})"
    elif is_ort:
        why = "cannot run an .ort file"
    elif not openvino_available():
        why = 'is not installed (pip install "edgekit[openvino]")'
    else:
        return stored_name, True
    logger.warning(
        "%s: its stored engine %r %s; falling back to onnxruntime", path.name, stored, why
    )
    return "onnxruntime", False


def session_settings(
    stored: Mapping[str, Any], explicit: SessionOptionsConfig, engine: str, applies: bool
) -> SessionOptionsConfig:
    """Stored settings (without the engine-specific ones unless they ``applies``) overridden by
    the ``explicit`` ones, for ``engine``."""
    base = SessionOptionsConfig.from_dict(stored)
    if not applies:
        base = dataclasses.replace(base, **_ENGINE_ONLY)
    return dataclasses.replace(base.merged(explicit), engine=engine)
