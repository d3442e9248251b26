"""Bring inputs to a model: checked raw feeds (:class:`FeedChecker`) and metadata-aware
preparation of raw samples (:class:`InputPreparer`).

Preprocessing rule of :meth:`InputPreparer.prepare` (and so of ``EdgeModel.predict``):
:meth:`edgekit.metadata.Preprocessing.applies_to` (with a ``raw_dtype`` such as ``"uint8"``,
integer inputs only; without one, always). Pass ``preprocess=True`` / ``False`` to force either
way.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgekit.errors import InputError
from edgekit.metadata import ModelMetadata
from edgekit.runtime.specs import NUMERIC_KINDS, InputSpec

__all__ = ["FeedChecker", "InputPreparer", "MAX_SIGNATURES"]

#: Checked signatures kept per model (the cache is emptied when it is full).
MAX_SIGNATURES = 256


class FeedChecker:
    """The checks of ``EdgeModel.run``: names, numeric type (with safe casts), rank and fixed
    dimensions. A signature that passes unchanged is remembered, so a caller checks it once:
    for a single-input model, an array whose dtype *is* the input's dtype and whose shape is
    in :attr:`shapes`; else ``signature(feeds) in checker.valid``; :meth:`check` otherwise."""

    def __init__(self, inputs: Sequence[InputSpec]) -> None:
        self.inputs = tuple(inputs)
        self.input_names = tuple(s.name for s in self.inputs)
        self.names = frozenset(self.input_names)
        self.single = self.inputs[0] if len(self.inputs) == 1 else None
        self.valid: set[Any] = set()
        self.shapes: set[tuple[int, ...]] = set()

    def as_feeds(self, feeds: Any) -> dict[str, Any]:
        """A feeds dict from a mapping, or from one array for a single-input model."""
        if isinstance(feeds, Mapping):
            return dict(feeds)
        if self.single is not None:
            return {self.single.name: feeds}
        raise InputError(
            f"model has {len(self.inputs)} inputs; pass a dict "
            f"{{name: array}} with {', '.join(map(repr, self.input_names))}"
        )

    def check(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """``feeds`` checked and cast (a new dict when something was cast); remembers its
        signature when nothing needed a change."""
        if feeds.keys() != self.names:
            self.raise_names(feeds)
        new: dict[str, Any] | None = None
        for spec in self.inputs:
            x = feeds[spec.name]
            y = spec.check(x)
            if y is not x:
                if new is None:
                    new = dict(feeds)
                new[spec.name] = y
        if new is not None:
            return new
        if self.single is None:
            _remember(self.valid, self.signature(feeds))
        elif feeds[self.single.name].dtype is self.single.dtype:  # the hot path's test
            _remember(self.shapes, feeds[self.single.name].shape)
        return feeds

    @staticmethod
    def signature(feeds: Mapping[str, np.ndarray]) -> Any:
        """The key of a multi-input model's ``feeds`` in :attr:`valid`: ``(name, dtype,
        shape)`` of each input in ``feeds``' order."""
        return tuple([(k, v.dtype, v.shape) for k, v in feeds.items()])

    def raise_names(self, feeds: Mapping[str, Any]) -> None:
        """Raise :class:`InputError` naming the unknown and missing inputs of ``feeds``."""
        unknown = [k for k in feeds if k not in self.names]
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

    def spec(self, name: str) -> InputSpec:
        """The spec of input ``name`` (:class:`InputError` for an unknown name)."""
        for s in self.inputs:
            if s.name == name:
                return s
        self.raise_names({name: None})
        raise AssertionError  # pragma: no cover


def _remember(cache: set[Any], key: Any) -> None:
    if len(cache) >= MAX_SIGNATURES:
        cache.clear()
    cache.add(key)


class InputPreparer:
    """Model-ready feeds for raw samples: tokenising, preprocessing, batching (module doc).

    Args:
        checker: the model's :class:`FeedChecker` (its input specs and names).
        metadata: the model's edgekit metadata (preprocessing, tokenizer).
        name: the model file's name, for messages.
    """

    def __init__(self, checker: FeedChecker, metadata: ModelMetadata, name: str) -> None:
        self.checker = checker
        self.metadata = metadata
        self.name = name
        self._tokenizer: Any = None
        self._tok_lock = threading.Lock()

    @property
    def tokenizer(self) -> Any:
        """The :class:`edgekit.inputs.text.TextTokenizer` of a text model (built on first use)."""
        if self._tokenizer is None:
            if self.metadata.tokenizer is None:
                raise InputError(
                    f"{self.name} is not a text model (no tokenizer in its metadata)",
                    hint="pass numeric arrays instead of text",
                )
            with self._tok_lock:
                if self._tokenizer is None:
                    from edgekit.inputs.text import TextTokenizer

                    self._tokenizer = TextTokenizer.from_dict(self.metadata.tokenizer)
        return self._tokenizer

    def prepare(self, x: Any, *, preprocess: bool | None = None) -> dict[str, np.ndarray]:
        """Feeds for ``x``: one sample or a batch (array-like), str / list of str for text
        models and string inputs, or a dict for multi-input models (batched and cast, not
        preprocessed).
        ``preprocess``: None (default) follows the module doc's rule; True / False force."""
        if isinstance(x, Mapping):
            feeds = {}
            for name, v in x.items():
                named = self.checker.spec(name)
                feeds[name] = (self._strings(named, v) if named.is_string
                               else self._batch(named, named._as_array(v)))
            return feeds
        spec = self.checker.single
        if spec is None:
            raise InputError(
                f"model has {len(self.checker.inputs)} inputs; pass a dict with "
                f"{', '.join(map(repr, self.checker.input_names))}"
            )
        if spec.is_string:  # the model itself reads text (a StringLookup inside)
            return {spec.name: self._strings(spec, x)}
        if _is_text(x):
            return {spec.name: self._batch(spec, self.tokenizer.encode(_texts(x)))}
        try:
            a = np.asarray(x)
        except (ValueError, TypeError) as exc:
            raise InputError(f"input is not a rectangular array: {exc}") from exc
        if a.dtype.kind not in NUMERIC_KINDS:
            is_text = self.metadata.tokenizer is not None
            hint = "this is not a text model" if a.dtype.kind in "USO" and not is_text else None
            raise InputError(f"input must be numeric, got {a.dtype} data", hint=hint)
        return {spec.name: self._batch(spec, self._preprocess(spec, a, preprocess))}

    def _preprocess(self, spec: InputSpec, a: np.ndarray, preprocess: bool | None) -> np.ndarray:
        pre = self.metadata.preprocessing
        want = spec.dtype
        if want is None or want.kind != "f":
            return a
        apply = preprocess
        if apply is None:
            apply = pre is not None and pre.applies_to(a.dtype)
        if apply and pre is not None and not pre.is_identity:
            try:
                return pre.apply(a, dtype=want)
            except ValueError as exc:  # e.g. 29 features against 30 means/stds
                b = a[None] if a.ndim == spec.ndim - 1 else a
                spec._check_dims(b.shape)  # the usual message: "needs size 30 on axis 1"
                msg = f"input {spec.name!r} does not fit its preprocessing: {exc}"
                raise InputError(msg) from None
        if a.dtype == want:
            return a
        with np.errstate(over="ignore"):  # too large for float32 -> inf, refused as such
            return a.astype(want)

    def _strings(self, spec: InputSpec, x: Any) -> np.ndarray:
        """Text for string input ``spec``, batched: one string or a list of strings for an
        ``(N, 1)`` input is one sample each (a trailing axis of 1 added)."""
        a = spec._as_array(x)
        one = a.ndim == spec.ndim - 1 and _fits(a.shape, spec.shape[1:])
        if a.ndim < spec.ndim and spec.ndim > 1 and spec.shape[-1] == 1 and not one:
            a = a[..., None]
        return self._batch(spec, a)

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


def _is_text(x: Any) -> bool:
    if isinstance(x, str):
        return True
    if isinstance(x, np.ndarray):
        return x.dtype.kind in "US"
    return isinstance(x, (list, tuple)) and bool(x) and all(isinstance(t, str) for t in x)


def _fits(shape: Sequence[int], want: Sequence[int | None]) -> bool:
    return len(shape) == len(want) and all(
        w is None or s == w for s, w in zip(shape, want, strict=True)
    )


def _texts(x: Any) -> list[str]:
    if isinstance(x, str):
        return [x]
    return [str(t) for t in (x.tolist() if isinstance(x, np.ndarray) else x)]
