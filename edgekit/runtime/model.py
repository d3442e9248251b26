"""The device runtime: load a ``.onnx`` / ``.ort`` model and run it with onnxruntime or OpenVINO.

This module imports only numpy and onnxruntime (plus pure-Python edgekit modules; OpenVINO is
imported only when it runs a model, Pillow only by :func:`~edgekit.runtime.predict.load_image`),
so a device app needs ``pip install edgekit`` without TensorFlow or onnx.

Typical use::

    from edgekit.runtime.model import EdgeModel

    with EdgeModel("model.onnx", provider="auto") as model:
        probs = model.predict(image_uint8)          # preprocessing from the metadata
        labels = model.predict_labels(image_uint8)  # ["Sneaker"]
        raw = model.run({"input": x_float32})       # raw path, no preprocessing

    EdgeModel("model.int8.onnx", engine="openvino",
              session=SessionOptionsConfig(threads=1, precision="f32"))

Engines (:mod:`edgekit.runtime.engines`, registered in :mod:`edgekit.runtime.engine_registry`):
``engine="auto"`` (default) uses the engine a tuned model's stored settings name when it is
installed (else onnxruntime, with a warning), and onnxruntime otherwise. Providers
(onnxruntime only) are chosen by short, case-insensitive names (see
:mod:`edgekit.runtime.session`). ``predict`` preprocesses by the rule in
:mod:`edgekit.runtime.prepare`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from edgekit.contract import (
    DEFAULT_THRESHOLD,
    OutputKind,
    graph_kind,
    is_multi_label,
    to_probabilities,
    top_k_rows,
)
from edgekit.errors import InputError, ModelLoadError
from edgekit.metadata import PREFIX, ModelMetadata, Preprocessing
from edgekit.runtime.engine_base import Engine, Placement, ProviderOptions
from edgekit.runtime.engine_ort import OnnxruntimeEngine
from edgekit.runtime.engine_record import proven_engine
from edgekit.runtime.engine_registry import engine_class
from edgekit.runtime.engines import choose_engine, open_engine, session_settings, stored_session
from edgekit.runtime.modelpackage import PackageSelection, is_model_package, open_package
from edgekit.runtime.output_ops import output_ops
from edgekit.runtime.prepare import FeedChecker, InputPreparer
from edgekit.runtime.session import (
    PROVIDER_NAMES,
    SessionOptionsConfig,
    resolve_providers,
    short_provider_name,
)
from edgekit.runtime.specs import InputSpec, read_onnx_props
from edgekit.runtime.streams import BatchStreams, split_problem

if TYPE_CHECKING:
    from edgekit.inputs.text import TextTokenizer

__all__ = ["EdgeModel", "RawInput", "Feeds"]

#: what :meth:`EdgeModel.predict` takes: one sample or a batch (array-like), text for text
#: models, or input name -> array-like for multi-input models
RawInput = npt.ArrayLike | Mapping[str, npt.ArrayLike]
#: what :meth:`EdgeModel.run` takes: input name -> array, or one array for one input
Feeds = Mapping[str, npt.ArrayLike] | np.ndarray

logger = logging.getLogger(__name__)


def _check_path(p: Path) -> None:
    if not p.exists():
        raise InputError(f"model file {p} does not exist")
    if p.is_dir():
        raise InputError(f"{p} is a folder but not a model package (no manifest.json)",
                         hint="pass the .onnx file, or a folder of edgekit export --package")
    if p.suffix.lower() not in (".onnx", ".ort"):
        raise InputError(
            f"{p} is not an .onnx or .ort file",
            hint="export the Keras model first: edgekit export MODEL -o OUTDIR",
        )


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------
class EdgeModel:
    """A loaded ``.onnx`` / ``.ort`` model or model package: checked raw :meth:`run` and
    metadata-aware
    :meth:`predict`, the same whichever engine runs it. Thread-safe: one instance may be used
    from many threads at once.

    Args:
        path: the model file (``.onnx`` or ``.ort``), or an ONNX Runtime model package folder:
            the variant for the providers present runs (see
            :mod:`edgekit.runtime.modelpackage`; ``package`` says which and why).
        provider: onnxruntime provider: ``"auto"`` (default), a short name (``cpu``, ``cuda``,
            ``tensorrt``, ``coreml``, ``nnapi``, ``xnnpack``, ``qnn``, ``openvino``, ``dml``)
            or a list. OpenVINO runs on CPU and ignores it.
        engine: ``"auto"`` (default: the stored engine when installed, else onnxruntime),
            or a registered engine (:mod:`edgekit.runtime.engine_registry`: ``"onnxruntime"``,
            ``"openvino"`` ...).
        fallback: skip unavailable providers with a warning instead of raising; default False.
        threads: intra-op threads; default None (the stored setting, else the engine's).
        graph_optimization: ``"disable"``/``"basic"``/``"extended"``/``"all"`` (onnxruntime);
            default None.
        session: more settings (a :class:`SessionOptionsConfig` or dict); default None.
        use_stored_session: apply the ``edgekit.session`` metadata a tuned model stores;
            default True. Explicit arguments override stored settings.
        provider_options: per-provider options keyed by short name, e.g.
            ``{"cuda": {"device_id": 1}}``; default None.
        check_nan: refuse float inputs holding NaN or +-Inf (:class:`InputError`). None
            (default): :meth:`prepare`, :meth:`predict`, :meth:`check_values` and ``edgekit
            serve`` refuse them, :meth:`run` (the hot path, model-ready inputs) leaves them to
            the engine like a bare session; True: :meth:`run` refuses them too (one scan of
            the input per call, 5-10 us in context on a 28x28 image); False: nothing refuses them.
        variant: the variant of a model package to run, by name; default None (selected).
        check_engine: honour the file's per-engine record (``edgekit.engines``, written by
            export/quantize/tune: :mod:`edgekit.runtime.proof`): an engine the file failed on
            is refused when named and skipped by ``"auto"``; default True. False runs it
            anyway.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        provider: str | Sequence[str] = "auto",
        *,
        engine: str = "auto",
        fallback: bool = False,
        threads: int | None = None,
        graph_optimization: str | None = None,
        session: SessionOptionsConfig | Mapping[str, object] | None = None,
        use_stored_session: bool = True,
        provider_options: ProviderOptions | None = None,
        check_nan: bool | None = None,
        variant: str | None = None,
        check_engine: bool = True,
    ) -> None:
        self.path = Path(path)
        is_package = is_model_package(self.path)
        if not is_package:
            _check_path(self.path)
            if variant is not None:
                raise InputError(f"variant={variant!r} needs a model package folder, not a file")
        explicit = (
            session
            if isinstance(session, SessionOptionsConfig)
            else SessionOptionsConfig.from_dict(session)
        )
        explicit = explicit.merged(SessionOptionsConfig(
            intra_op_num_threads=threads, graph_optimization_level=graph_optimization,
            engine=engine,
        ))  # fmt: skip
        self.requested_providers = resolve_providers(provider, fallback=fallback)
        self.package: PackageSelection | None = None
        if is_package:
            self._select_variant(explicit.engine, variant)
        options = {PROVIDER_NAMES[short_provider_name(k)]: dict(v)
                   for k, v in (provider_options or {}).items()}
        wanted = [provider] if isinstance(provider, str) else list(provider)
        auto = any(str(w).strip().lower() == "auto" for w in wanted)
        # "auto" means: the best that works
        self._placement = Placement(self.requested_providers, options, fallback or auto)
        self._check_engine = check_engine
        self._engine = self._load(explicit, use_stored_session)
        self._read_metadata(self._engine.props)
        self._bind(check_nan)
        self._read_graph()

    # -- loading -------------------------------------------------------------------------
    def _select_variant(self, engine: str | None, variant: str | None) -> None:
        """The package's variant for the requested providers (for an engine that does not use
        onnxruntime's providers, such as OpenVINO: the variant of its ``package_providers``,
        e.g. the OpenVINO EP's, else CPU's), run from its EP on."""
        cls = engine_class(engine) if engine is not None else None
        own = None if cls is None or cls.uses_providers else [
            PROVIDER_NAMES[n] for n in cls.package_providers]
        self.package = open_package(self.path, own or self.requested_providers, variant)
        self.path = self.package.model_file
        if own is None:
            self.requested_providers = self.package.providers

    def _open(self, stored: Mapping[str, object], engine_raw: object,
              explicit: SessionOptionsConfig) -> Engine:  # fmt: skip
        name, applies = choose_engine(explicit.engine, engine_raw, self.path)
        if self._check_engine:
            proven = proven_engine(name, explicit.engine is not None, self._props, self.path)
            applies, name = applies and proven == name, proven
        self.session_config = session_settings(stored, explicit, name, applies)
        return open_engine(name, self.path, self.session_config, self._placement)

    def _load(self, explicit: SessionOptionsConfig, use_stored: bool) -> Engine:
        """The engine, with the stored settings (read from the file, or for ``.ort`` files,
        which only onnxruntime reads, after a first load)."""
        is_ort = self.path.suffix.lower() == ".ort"
        self._props = None if is_ort else read_onnx_props(self.path)
        stored, engine_raw = stored_session(self._props if use_stored else None, self.path)
        engine = self._open(stored, engine_raw, explicit)
        if is_ort and use_stored:
            stored, engine_raw = stored_session(engine.props, self.path)
            if stored or engine_raw:
                engine.close()
                engine = self._open(stored, engine_raw, explicit)
        return engine

    def _read_metadata(self, props: Mapping[str, str]) -> None:
        try:
            self.metadata = ModelMetadata.from_props(dict(props))
        except InputError as exc:  # a value of the wrong type or out of bounds
            raise ModelLoadError(f"edgekit metadata of {self.path} is malformed: {exc.message}",
                                 hint="export the model again with edgekit, or correct its "
                                 "edgekit.* metadata_props") from exc
        # the output contract written at export decides what predict() returns; no guessing
        kinds = self.metadata.output_kinds or []  # checked: OutputKind values
        self.output_kind: OutputKind | None = OutputKind(kinds[0]) if kinds else None
        if kinds == [] and self.metadata.task == "classification" and PREFIX + "task" in props:
            logger.warning(
                "%s has no output contract (exported by an older edgekit): predict() "
                "returns its raw first output; export it again",
                self.path.name,
            )

    def _read_graph(self) -> None:
        """Correct a ``probabilities`` contract from the op ending the graph (files exported
        before ``independent`` existed; see :func:`edgekit.contract.graph_kind`)."""
        if self.output_kind is not OutputKind.PROBABILITIES:
            return
        ends = output_ops(self.path)
        if ends:
            rank = self.outputs[0].ndim if self.outputs else None
            self.output_kind = graph_kind(self.output_kind, ends[0].op, ends[0].axis, rank)

    def _bind(self, check_nan: bool | None) -> None:
        eng = self._engine
        self.inputs: tuple[InputSpec, ...] = eng.inputs
        self.outputs: tuple[InputSpec, ...] = eng.outputs
        self.input_names: tuple[str, ...] = tuple(s.name for s in self.inputs)
        self.output_names: tuple[str, ...] = tuple(s.name for s in self.outputs)
        self._checker = FeedChecker(self.inputs)
        self._valid, self._shapes = self._checker.valid, self._checker.shapes
        single = self._checker.single
        self._one = None if single is None else (single.name, single.dtype)
        floats = tuple(s for s in self.inputs if s.is_float)
        self._finite = floats if check_nan else ()  # run's per-call scan: opt-in
        self._finite_raw = () if check_nan is False else floats  # prepare / serve
        self._streams = self._batch_streams(eng)
        self._engine_run = self._streams or eng.run
        self._preparer = InputPreparer(self._checker, self.metadata, self.path.name)

    def _batch_streams(self, eng: Engine) -> BatchStreams | None:
        """The batch splitter of ``batch_streams`` (None: one part); refuses a model whose
        batch cannot be split (the engine is closed first)."""
        streams = self.session_config.streams
        if streams < 2:
            return None
        why = split_problem(eng.inputs, eng.outputs, eng.props)
        if why is not None:
            eng.close()
            raise InputError(f"batch_streams={streams} cannot split the batch of "
                             f"{self.path.name}: {why}", hint="leave batch_streams unset")
        return BatchStreams(eng.run, streams)

    # -- properties ----------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        """The :class:`~edgekit.runtime.engine_base.Engine` running the model."""
        return self._engine

    @property
    def engine_name(self) -> str:
        """The engine's name (``"onnxruntime"``, ``"openvino"`` ...)."""
        return self._engine.name

    @property
    def session(self) -> ort.InferenceSession:
        """The :class:`onnxruntime.InferenceSession` (onnxruntime engine only)."""
        if not isinstance(self._engine, OnnxruntimeEngine):
            raise InputError(
                f"{self.path.name} runs on {self.engine_name}, which has no onnxruntime session",
                hint="use model.engine for the engine's own objects",
            )
        return self._engine.session

    @property
    def providers(self) -> list[str]:
        """Where the model runs: onnxruntime's providers in use (priority order), or
        ``["openvino:CPU"]``."""
        return self._engine.providers

    @property
    def labels(self) -> list[str] | None:
        """Class labels stored in the metadata (None when there are none)."""
        return self.metadata.labels

    @property
    def preprocessing(self) -> Preprocessing | None:
        """The input preprocessing stored in the metadata (None when there is none)."""
        return self.metadata.preprocessing

    @property
    def is_text(self) -> bool:
        """True when the metadata carries a tokenizer (``predict`` then accepts strings)."""
        return self.metadata.tokenizer is not None

    @property
    def tokenizer(self) -> TextTokenizer:
        """The :class:`edgekit.inputs.text.TextTokenizer` of a text model (built on first use)."""
        return self._preparer.tokenizer

    def describe(self) -> dict[str, object]:
        """JSON-ready summary: inputs, outputs, engine, providers, labels, preprocessing, task."""
        pre = self.metadata.preprocessing
        tok = self.metadata.tokenizer or {}
        return {
            "model": self.path.name,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "engine": self.engine_name,
            "providers": self.providers,
            "task": self.metadata.task,
            "labels": self.metadata.labels,
            "preprocessing": pre.to_dict() if pre else None,
            "text": self.is_text,
            "sequence_length": tok.get("sequence_length") if tok else None,
            "session": self.session_config.to_dict(),
            "package": self.package.to_dict() if self.package else None,
        }

    # -- raw path ------------------------------------------------------------------------
    def run(self, feeds: Feeds) -> list[np.ndarray]:
        """Run the model on model-ready inputs (no preprocessing); outputs in model order.

        ``feeds`` maps input names to arrays, or is one array for a single-input model. Names,
        rank, fixed dimensions and numeric type are checked once per input signature (names,
        dtypes, shapes; :class:`InputError`); float64 -> float32 and int64 -> int32 style casts
        happen automatically. A string input takes text (``str`` arrays, object arrays of
        ``str``, UTF-8 ``bytes``), nothing else. Values (NaN/Inf) are checked on every call
        only when the model was loaded with ``check_nan=True``; :meth:`check_values` does it
        on demand.
        """
        if type(feeds) is not dict:
            feeds = self._checker.as_feeds(feeds)
        one = self._one  # a single input's (name, dtype), else None; see FeedChecker
        try:
            if one is not None:
                v = feeds[one[0]]
                ok = v.dtype is one[1] and v.shape in self._shapes and len(feeds) == 1
            else:
                ok = self._checker.signature(feeds) in self._valid
        except (KeyError, AttributeError, TypeError):  # not arrays, or not its name: below
            ok = False
        if not ok:
            feeds = self._checker.check(feeds)
        for spec in self._finite:  # empty unless check_nan=True
            spec.check_finite(feeds[spec.name])
        return self._engine_run(feeds)

    # -- metadata-aware path -------------------------------------------------------------
    def prepare(self, x: RawInput, *, preprocess: bool | None = None) -> dict[str, np.ndarray]:
        """Model-ready feeds for raw ``x``: tokenising, preprocessing, batching; NaN/Inf are
        refused (:meth:`check_values`) unless the model was loaded with ``check_nan=False``.

        Args:
            x: one sample or a batch (array-like), a str / list of str for text models (a
                tokenizer in the metadata) and for a string input (one string per sample of
                an ``(N, 1)`` input), or a dict for multi-input models (batched and cast, not
                preprocessed).
            preprocess: None (default) follows the rule in :mod:`edgekit.runtime.prepare`;
                True / False force.
        """
        feeds = self._preparer.prepare(x, preprocess=preprocess)
        self.check_values(feeds)
        return feeds

    def check_values(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Raise :class:`InputError` when a float input of ``feeds`` (model-ready arrays)
        holds NaN or +-Inf; does nothing for a model loaded with ``check_nan=False``."""
        for spec in self._finite_raw:
            spec.check_finite(feeds[spec.name])

    def predict(self, x: RawInput, *, preprocess: bool | None = None) -> np.ndarray:
        """The first output for raw ``x`` (see :meth:`prepare`), read by the output contract.

        ``probabilities`` (a softmax over the last axis) are renormalised to sum to 1 over that
        axis (absorbing fp16/int8 rounding), ``logits`` get a softmax (a sigmoid for one
        column); ``independent`` (sigmoid) probabilities, ``regression``/``other`` outputs and
        models without a contract are returned unchanged (see :mod:`edgekit.contract`).
        """
        y = np.asarray(self.run(self.prepare(x, preprocess=preprocess))[0])
        return to_probabilities(y, self.output_kind)

    def top_k(self, probs: np.ndarray, k: int | None = None, *,
              threshold: float = DEFAULT_THRESHOLD) -> list[list[tuple[str, float]]]:
        """The most likely ``(label, probability)`` pairs of each row, most likely first.

        A distribution gives its ``k`` (default 3) first classes; a single sigmoid column with
        two labels is read as ``[1 - p, p]``. A multi-label model (sigmoid outputs, several
        classes) gives every label whose probability is at or over ``threshold`` (default 0.5;
        at most ``k`` when given), possibly none. Without stored labels the class index is the
        label. Per-pixel or per-step outputs have no rows: :class:`InputError`.
        """
        return top_k_rows(probs, self.output_kind, self.metadata.labels, k, threshold)

    def predict_labels(self, x: RawInput, *, preprocess: bool | None = None,
                       threshold: float = DEFAULT_THRESHOLD) -> list[str] | list[list[str]]:
        """The most likely stored label of each sample of ``x``; for a multi-label model the
        list of labels at or over ``threshold`` (default 0.5) of each sample (see
        :meth:`top_k`)."""
        probs = self.predict(x, preprocess=preprocess)
        rows = self.top_k(probs, None, threshold=threshold)
        if self.multi_label(probs):
            return [[name for name, _ in row] for row in rows]
        return [row[0][0] for row in rows]

    def multi_label(self, probs: np.ndarray) -> bool:
        """True when ``probs`` (from :meth:`predict`) are independent probabilities of several
        classes: labels and top-k are then chosen by threshold."""
        return is_multi_label(probs, self.output_kind)

    def predict_top_k(self, x: RawInput, k: int | None = None, *,
                      preprocess: bool | None = None,
                      threshold: float = DEFAULT_THRESHOLD) -> list[list[tuple[str, float]]]:
        """The most likely ``(label, probability)`` pairs per sample (see :meth:`top_k`)."""
        return self.top_k(self.predict(x, preprocess=preprocess), k, threshold=threshold)

    # -- lifecycle -----------------------------------------------------------------------
    def warmup(self, runs: int = 3, batch: int = 1) -> None:
        """Run ``runs`` (default 3) inferences on zeros (empty strings for string inputs;
        dynamic dims set to ``batch``/1)."""
        feeds = {}
        for spec in self.inputs:
            shape = [
                d if d is not None else (batch if j == 0 else 1) for j, d in enumerate(spec.shape)
            ]
            if spec.is_string:
                feeds[spec.name] = np.full(shape, "", dtype=object)
            elif spec.dtype is None:
                raise InputError(f"cannot warm up input {spec.name!r} of type {spec.type}")
            else:
                feeds[spec.name] = np.zeros(shape, dtype=spec.dtype)
        for _ in range(max(0, runs)):
            self.run(feeds)

    def close(self) -> None:
        """Release the engine (and the threads of its batch streams); later calls raise
        :class:`InputError`."""
        if self._streams is not None:
            self._streams.close()
        self._engine.close()

    def __enter__(self) -> EdgeModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._engine.closed:
            return f"EdgeModel({str(self.path)!r}, closed)"
        return f"EdgeModel({str(self.path)!r}, {self.engine_name}: {', '.join(self.providers)})"
