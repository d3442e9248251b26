"""The built-in engines, and how :class:`~edgekit.runtime.model.EdgeModel` picks one and its
settings.

:data:`BUILTIN_ENGINES` is the one place the built-in engines are registered
(:mod:`edgekit.runtime.engine_registry`): onnxruntime (:mod:`edgekit.runtime.engine_ort`, the
default) and OpenVINO (:mod:`edgekit.runtime.engine_openvino`). :func:`open_engine` loads a
registered engine by name; :func:`choose_engine` decides which one runs a file (the explicit
choice, else the engine a tuned model stores when it is registered, installed and reads the
file, else onnxruntime); :func:`session_settings` merges the stored and explicit settings.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgekit.errors import InputError
from edgekit.metadata import PREFIX
from edgekit.runtime.engine_base import Engine, Placement
from edgekit.runtime.engine_openvino import OpenVinoEngine
from edgekit.runtime.engine_ort import OnnxruntimeEngine
from edgekit.runtime.engine_registry import engine_class, engine_names, register_engine
from edgekit.runtime.session import SessionOptionsConfig
from edgekit.schema import parse_json

__all__ = [
    "BUILTIN_ENGINES",
    "DEFAULT_ENGINE",
    "open_engine",
    "choose_engine",
    "stored_session",
    "session_settings",
]

logger = logging.getLogger(__name__)

#: the engines edgekit ships, registered on import (a new built-in engine: one entry here)
BUILTIN_ENGINES: tuple[type[Engine], ...] = (OnnxruntimeEngine, OpenVinoEngine)
for _cls in BUILTIN_ENGINES:
    register_engine(_cls)

#: the engine of ``engine="auto"`` when the model stores none (or one that cannot run here)
DEFAULT_ENGINE = OnnxruntimeEngine.name

#: settings that belong to the engine a model was tuned for: dropped when another one runs it
#: (a batch split was timed on that engine only)
_ENGINE_ONLY: dict[str, Any] = {"precision": None, "performance_hint": None,
                                   "openvino_config": {}, "batch_streams": None}


def open_engine(name: str, path: Path, config: SessionOptionsConfig,
                placement: Placement | None = None) -> Engine:
    """The registered engine ``name`` with ``path`` loaded with ``config``; ``placement`` (the
    onnxruntime providers, default CPU) applies to engines that use providers."""
    cls = engine_class(name)
    ignored = sorted(k for k in config.to_dict() if k not in cls.settings and k != "engine")
    if ignored:
        logger.debug("%s does not read the session settings %s", cls.name, ignored)
    return cls(path, config, placement or Placement())


def stored_session(props: Mapping[str, str] | None,
                   path: Path) -> tuple[dict[str, object], object]:
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


def choose_engine(explicit: str | None, stored: object, path: Path) -> tuple[str, bool]:
    """The engine to run ``path`` with, and whether its stored engine-specific settings apply.

    ``explicit`` (a canonical name, or None for auto) wins; an explicit engine that is not
    installed raises (:class:`~edgekit.errors.MissingDependencyError` naming the extra), one
    that cannot read the file raises :class:`InputError`. Otherwise the ``stored`` engine is
    used when it is registered, installed and reads the file, else onnxruntime with a warning.
    """
    stored_name = str(stored).strip().lower() if stored else DEFAULT_ENGINE
    if explicit is not None:
        cls = engine_class(explicit)
        why = cls.file_problem(path)
        if why is not None:
            raise InputError(why, hint=f'use an {"/".join(cls.suffixes)} file with '
                             f'engine="{cls.name}", or engine="{DEFAULT_ENGINE}"')
        cls.require()
        return cls.name, cls.name == stored_name
    if stored_name == DEFAULT_ENGINE:
        return DEFAULT_ENGINE, True
    why = _stored_problem(stored_name, path)
    if why is None:
        return stored_name, True
    logger.warning(
        "%s: its stored engine %r %s; falling back to %s", path.name, stored, why, DEFAULT_ENGINE
    )
    return DEFAULT_ENGINE, False


def _stored_problem(name: str, path: Path) -> str | None:
    """Why the stored engine ``name`` cannot run ``path`` here (None: it can)."""
    if name not in engine_names():
        return f"is not known to this edgekit (known: {', '.join(engine_names())})"
    cls = engine_class(name)
    if cls.file_problem(path) is not None:
        return f"cannot run a {path.suffix.lower()} file"
    return cls.unavailable_reason()


def session_settings(stored: Mapping[str, object], explicit: SessionOptionsConfig, engine: str,
                     applies: bool) -> SessionOptionsConfig:
    """Stored settings (without the engine-specific ones unless they ``applies``) overridden by
    the ``explicit`` ones, for ``engine``. Explicit threads fewer than the stored
    ``batch_streams`` cap them (one stream per thread; none on one thread)."""
    base = SessionOptionsConfig.from_dict(stored)
    if not applies:
        base = dataclasses.replace(base, **_ENGINE_ONLY)
    threads = explicit.intra_op_num_threads
    if threads and explicit.batch_streams is None and base.streams > threads:
        base = dataclasses.replace(base, batch_streams=threads if threads > 1 else None)
    return dataclasses.replace(base.merged(explicit), engine=engine)
