"""What an engine is: the protocol every library that runs a model for
:class:`~edgekit.runtime.model.EdgeModel` follows, and what it says about itself.

An :class:`Engine` loads one model file with one
:class:`~edgekit.runtime.session.SessionOptionsConfig` and offers only what EdgeModel needs:
the input/output specs (names, numpy dtypes, shapes in the file's order), the file's
``metadata_props``, a ``run(feeds)`` that takes *already checked* arrays (right names, dtypes,
ranks and fixed dims: EdgeModel checks them once per input signature) and returns numpy arrays
in the output order, where it runs (:attr:`~Engine.providers`, :attr:`~Engine.device`), and
``close``. Everything else (checks, preprocessing, the output contract, labels) lives in
EdgeModel and is shared by every engine, so results and errors are the same whichever engine
runs.

Its class attributes and class methods describe the engine before anything is loaded: its name
and aliases, whether it is installed (:meth:`Engine.unavailable_reason`) and its version, the
files it reads, the session settings it reads, the precisions it computes in, whether it honours
onnxruntime's execution providers, and whether it runs ops outside the ``ai.onnx`` domain. The
registry (:mod:`edgekit.runtime.engine_registry`) holds the engine classes by name; every
command that lists or validates engines reads it.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from edgekit.errors import InputError
from edgekit.runtime.specs import InputSpec

if TYPE_CHECKING:
    from edgekit.runtime.session import SessionOptionsConfig

__all__ = ["Engine", "Placement", "ProviderOptions"]

#: options per onnxruntime provider name (values as onnxruntime takes them)
ProviderOptions = Mapping[str, Mapping[str, object]]


@dataclass(frozen=True)
class Placement:
    """Where an engine that honours onnxruntime's execution providers places the model.

    Attributes:
        providers: onnxruntime provider names in priority order (see
            :func:`~edgekit.runtime.session.resolve_providers`); default ``CPU`` only.
        provider_options: options per onnxruntime provider name; default none.
        fallback: accept a session that could not initialise the first provider (warns);
            default False raises :class:`~edgekit.errors.ProviderError`.
    """

    providers: Sequence[str] = ("CPUExecutionProvider",)
    provider_options: ProviderOptions = field(default_factory=dict)
    fallback: bool = False


class Engine(abc.ABC):
    """What runs a model: specs, metadata, ``run`` on checked feeds, ``close``.

    A subclass sets the class attributes below, loads ``path`` in ``__init__`` (filling
    ``inputs``, ``outputs`` and ``props``) and implements :meth:`run` and :attr:`providers`.

    Attributes:
        name: the engine's canonical name (lower case), e.g. ``"onnxruntime"``.
        aliases: other accepted names, e.g. ``("ort",)``.
        label: the name in messages, e.g. ``"OpenVINO"``; default: ``name``.
        suffixes: model file suffixes it reads; default ``(".onnx",)``.
        settings: the :class:`SessionOptionsConfig` fields it reads (others are ignored).
        precisions: float precisions it computes in; default ``("f32",)``.
        uses_providers: True when it honours onnxruntime's execution providers; default
            False.
        package_providers: for an engine that does not use providers, the short provider
            names whose model-package variant it runs (first found); default ``("cpu",)``.
        runs_nonstandard_ops: True when it runs ops outside ``ai.onnx`` (onnxruntime's
            contrib ops, e.g. dynamic int8 of LSTMs); default False.
        qdq_ops: the op types whose inputs the engine wants quantized in a static int8 file,
            when it runs a file with Q/DQ on those only faster than onnxruntime's full QDQ
            (every op onnxruntime can quantize, each requantized); the tune builds that file
            for it (``int8-<name>``). Default None: full QDQ.
        qdq_scheme: more :class:`~edgekit.quantize.options.QuantScheme` fields of that
            layout (OpenVINO: ``slice_strided_pointwise`` on, ``stem_in_float`` off);
            default none.
        qdq_bf16_scheme: more fields of the layout when the engine computes the file's float
            parts in bf16 on this CPU (:meth:`precision_problem` of ``"bf16"`` is None); the
            tune builds ``int8-bf16-<name>`` then (OpenVINO: ``float_outputs`` on); default
            none.
        check_in_child: the per-engine proof (:mod:`edgekit.runtime.proof`) runs it in a child
            process, so that a crash of the engine on a file (OpenVINO 2026.4 segfaults
            compiling some int8 LSTMs) fails the check instead of killing the export; default
            False (a plug-in registered at run time is not known in a fresh process).
        path / config: the model file and the session settings it was loaded with.
        inputs / outputs: :class:`InputSpec` per input / output, in the file's order.
        props: the file's ``metadata_props``.
    """

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    label: ClassVar[str] = ""
    suffixes: ClassVar[tuple[str, ...]] = (".onnx",)
    settings: ClassVar[frozenset[str]] = frozenset()
    precisions: ClassVar[tuple[str, ...]] = ("f32",)
    uses_providers: ClassVar[bool] = False
    package_providers: ClassVar[tuple[str, ...]] = ("cpu",)
    runs_nonstandard_ops: ClassVar[bool] = False
    qdq_ops: ClassVar[tuple[str, ...] | None] = None
    qdq_scheme: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    qdq_bf16_scheme: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    check_in_child: ClassVar[bool] = False

    def __init__(self, path: Path, config: SessionOptionsConfig, placement: Placement) -> None:
        self.path = path
        self.config = config
        self.inputs: tuple[InputSpec, ...] = ()
        self.outputs: tuple[InputSpec, ...] = ()
        self.props: dict[str, str] = {}
        self.closed = False

    # -- what the engine says about itself -----------------------------------------------
    @classmethod
    def display_name(cls) -> str:
        """The name in messages (:attr:`label`, else :attr:`name`)."""
        return cls.label or cls.name

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None when the engine can run here, else why not (e.g. ``is not installed (pip
        install ...)``); default: always available."""
        return None

    @classmethod
    def available(cls) -> bool:
        """True when the engine can run here."""
        return cls.unavailable_reason() is None

    @classmethod
    def require(cls) -> None:
        """Raise (:class:`~edgekit.errors.MissingDependencyError` or
        :class:`~edgekit.errors.InputError`) when the engine cannot run here."""
        why = cls.unavailable_reason()
        if why is not None:
            raise InputError(f"engine {cls.name} {why}")

    @classmethod
    def version(cls) -> str | None:
        """The version of the library behind the engine (None: not installed / unknown)."""
        return None

    @classmethod
    def file_problem(cls, path: Path) -> str | None:
        """None when the engine reads ``path``'s format, else why not."""
        suffix = path.suffix.lower()
        if suffix in cls.suffixes:
            return None
        if suffix == ".ort":
            return f"{path.name} is in onnxruntime's ORT format, which {cls.display_name()} " \
                "cannot run"
        return f"{cls.display_name()} cannot run {suffix or 'suffix-less'} files"

    @classmethod
    def precision_problem(cls, precision: str) -> str | None:
        """None when the engine computes in ``precision`` here, else why not."""
        if precision in cls.precisions:
            return None
        return f"{cls.display_name()} computes in {', '.join(cls.precisions)} only"

    # -- a loaded model ------------------------------------------------------------------
    @abc.abstractmethod
    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs (file order) for checked ``feeds`` (name -> array of the input's dtype)."""

    @property
    @abc.abstractmethod
    def providers(self) -> list[str]:
        """Where it runs: onnxruntime's providers in use, or e.g. ``["openvino:CPU"]``."""

    @property
    def device(self) -> str:
        """A short description of the device (default: the providers)."""
        return ", ".join(self.providers)

    def close(self) -> None:
        """Release the engine's resources; later runs raise :class:`InputError`."""
        self.closed = True

    def _closed_error(self) -> InputError:
        return InputError(f"model {self.path.name} is closed")
