"""The onnxruntime engine (the default; base install): an :class:`onnxruntime.InferenceSession`.

Its ``run`` calls the C++ session directly, skipping ``InferenceSession.run``'s Python-side
validation, which :class:`~edgekit.runtime.model.EdgeModel`'s checks replace; failures are
retried through the public API, which owns onnxruntime's provider fallback. A small model on
the CPU provider runs through buffers bound once per input signature
(:mod:`edgekit.runtime.ort_binding`), which skips the binding's per-call conversions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edgekit.errors import InputError, ModelLoadError, ProviderError
from edgekit.runtime.engine_base import Engine, Placement
from edgekit.runtime.ort_binding import BoundRuns
from edgekit.runtime.session import SessionOptionsConfig
from edgekit.runtime.specs import InputSpec

__all__ = ["OnnxruntimeEngine", "share_cpu_arena"]

logger = logging.getLogger(__name__)
_SHARED_ARENA = [False]  # whether share_cpu_arena registered the process's arena


def share_cpu_arena() -> bool:
    """From now on, every onnxruntime CPU session of this process draws its activations from
    one arena (onnxruntime's environment allocator, ``session.use_env_allocators``) instead of
    an arena each. Sessions that run one at a time (a tune's fp32 reference and candidates,
    timed in turns) then hold the memory of the largest run, not the sum of all: ConvNeXtTiny
    at 224, batch 32, three sessions: 1.97 GB instead of 4.9 GB. The arena is kept until the
    process ends. Returns whether it is on (False when onnxruntime refuses, e.g. an
    application registered its own allocator first)."""
    if not _SHARED_ARENA[0]:
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                                 ort.OrtMemType.DEFAULT)
        try:
            ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))
        except Exception as exc:  # onnxruntime's own refusal: each session keeps its arena
            logger.debug("shared CPU arena not registered: %s", exc)
            return False
        _SHARED_ARENA[0] = True
    return True


class OnnxruntimeEngine(Engine):
    """An :class:`onnxruntime.InferenceSession` (``.onnx`` or ``.ort``).

    Args:
        path / config: the model file and its settings (``precision="bf16"`` is refused).
        placement: the onnxruntime providers, their options and whether to fall back.
    """

    name = "onnxruntime"
    aliases = ("ort",)
    suffixes = (".onnx", ".ort")
    settings = frozenset({
        "intra_op_num_threads", "inter_op_num_threads", "execution_mode",
        "graph_optimization_level", "allow_spinning", "enable_mem_pattern",
        "enable_cpu_mem_arena", "session_config", "disabled_optimizers", "precision",
        "batch_streams",
    })  # fmt: skip
    uses_providers = True
    runs_nonstandard_ops = True

    def __init__(self, path: Path, config: SessionOptionsConfig, placement: Placement) -> None:
        super().__init__(path, config, placement)
        if config.precision == "bf16":
            raise InputError(
                "onnxruntime computes float models in f32; precision bf16 is OpenVINO's",
                hint='use engine="openvino", or precision f32',
            )
        self.requested_providers = list(placement.providers)
        opts = [dict(placement.provider_options.get(p, {})) for p in self.requested_providers]
        self._session: ort.InferenceSession | None = self._create(opts)
        self._check_providers(placement.fallback)
        sess = self._session
        self.props = dict(sess.get_modelmeta().custom_metadata_map)
        self.inputs = tuple(InputSpec(i.name, i.type, i.shape) for i in sess.get_inputs())
        self.outputs = tuple(InputSpec(o.name, o.type, o.shape) for o in sess.get_outputs())
        self._output_list = [s.name for s in self.outputs]
        self._c_run: Callable[..., list[np.ndarray]] = (
            getattr(getattr(sess, "_sess", None), "run", None) or sess.run)
        self._bound: BoundRuns | None = (
            BoundRuns(sess, self.inputs, self.outputs, self._plain_run)
            if BoundRuns.supports(sess, self.inputs, self.outputs) else None)

    @classmethod
    def version(cls) -> str | None:
        return str(ort.__version__)

    def _create(self, provider_opts: list[dict[str, Any]]) -> ort.InferenceSession:
        so = self.config.to_ort()
        so.log_severity_level = 3
        if _SHARED_ARENA[0] and self.config.enable_cpu_mem_arena is not False:
            so.add_session_config_entry("session.use_env_allocators", "1")
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
    def bound(self) -> BoundRuns | None:
        """The bound calls of a small model on the CPU provider (None: every call is plain)."""
        return self._bound

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        bound = self._bound  # small models on the CPU provider: see edgekit.runtime.ort_binding
        if bound is not None:
            return bound.run(feeds)
        return self._plain_run(feeds)

    def _plain_run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
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
        if self._bound is not None:
            self._bound.close()
            self._bound = None
        self._c_run = _closed_run


def _closed_run(*args: object) -> list[np.ndarray]:
    raise InputError("the model is closed")
