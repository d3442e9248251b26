"""Bound calls: the per-call path of a small model on onnxruntime's CPU provider.

``session.run`` turns every feed into an ``OrtValue`` and every output into a new numpy array
inside onnxruntime's Python binding; on a model whose arithmetic takes microseconds that is
most of the call (the breast-cancer MLP on an AMD EPYC AVX2 core: 16.4 µs per ``run``, 9.6 µs
bound). :class:`BoundRuns` instead binds, once per input signature (the input shapes), an
input buffer per input and an output buffer per output to an onnxruntime ``IOBinding``; a call
copies the feeds into the input buffers, runs the binding and returns copies of the output
buffers (each call's arrays are the caller's own, as ``session.run``'s are).

It is taken only where it cannot be slower or wrong:

- inputs and outputs numeric tensors of at most :data:`MAX_BOUND_BYTES` together (larger
  copies cost more than the binding saves: MobileNetV2's 588 KiB image breaks even);
- one call at a time: a call that finds the binding busy (another thread is in it) runs
  ``session.run``, so concurrent callers never share buffers and never wait for each other;
- at most :data:`MAX_SIGNATURES` signatures get a binding (the first ones seen); the first call
  of a signature runs ``session.run`` and its outputs give the output buffers' shapes;
- a feed whose shape or dtype is not the signature's exactly is not copied (``np.copyto`` with
  ``casting="no"`` refuses); a bound run that fails (an output whose shape depends on the
  values, e.g. ``NonZero``) turns bound calls off for the model, and the call is run again
  through ``session.run``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from edgekit.runtime.specs import InputSpec

__all__ = ["BoundRuns", "MAX_BOUND_BYTES", "MAX_SIGNATURES"]

logger = logging.getLogger(__name__)

#: largest sum of input and output bytes of a bound signature
MAX_BOUND_BYTES = 64 * 1024
#: most input signatures (shapes) that get a binding
MAX_SIGNATURES = 4

Feeds = Mapping[str, np.ndarray]
Call = Callable[[Feeds], list[np.ndarray]]


def _bound_call(session: ort.InferenceSession, feeds: Feeds, names: Sequence[str],
                outputs: Sequence[np.ndarray], output_names: Sequence[str],
                options: ort.RunOptions) -> Call:
    """A call of ``session`` through an ``IOBinding`` of buffers shaped and typed as ``feeds``
    (the inputs ``names``) and ``outputs``: copies in, runs, returns copies of the outputs.
    One input and one output (most small models) get a call without loops."""
    binding = session.io_binding()
    ins = [np.empty_like(feeds[n], order="C") for n in names]
    outs = [np.empty_like(a, order="C") for a in outputs]
    for name, buf in zip(names, ins, strict=True):
        binding.bind_input(name, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)
    for name, buf in zip(output_names, outs, strict=True):
        binding.bind_output(name, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)
    io, run, copyto = binding._iobinding, session._sess.run_with_iobinding, np.copyto
    pairs = list(zip(names, ins, strict=True))
    if len(ins) == 1 and len(outs) == 1:
        (name, buf), (out,) = pairs[0], outs

        def one(feeds: Feeds) -> list[np.ndarray]:
            copyto(buf, feeds[name], casting="no")
            run(io, options)
            return [out.copy()]

        one.binding = binding  # type: ignore[attr-defined]  # keeps the buffers' owner alive
        return one

    def call(feeds: Feeds) -> list[np.ndarray]:
        for n, b in pairs:
            copyto(b, feeds[n], casting="no")
        run(io, options)
        return [o.copy() for o in outs]

    call.binding = binding  # type: ignore[attr-defined]
    return call


class BoundRuns:
    """Bound calls of one CPU session (see the module's docstring).

    Args:
        session: the session (its only provider the CPU one).
        inputs / outputs: the session's input and output specs, in its order.
        plain: the session's ordinary run (``session.run`` and its error handling).
    """

    def __init__(self, session: ort.InferenceSession, inputs: Sequence[InputSpec],
                 outputs: Sequence[InputSpec], plain: Call) -> None:
        self._session: ort.InferenceSession | None = session
        self._plain = plain
        self._names = tuple(s.name for s in inputs)
        self._one = self._names[0] if len(self._names) == 1 else None
        self._output_names = [s.name for s in outputs]
        self._options = ort.RunOptions()
        self._options.log_severity_level = 4  # a refused bound run is retried, not logged
        #: bound calls by input shapes (one input: its shape; else the tuple of shapes)
        self._calls: dict[tuple[Any, ...], Call] = {}
        lock = threading.Lock()
        self._acquire, self._release = lock.acquire, lock.release

    @property
    def on(self) -> bool:
        """False once a bound run failed (or the engine closed): every call is then plain."""
        return self._session is not None

    @property
    def signatures(self) -> list[tuple[Any, ...]]:
        """The input signatures that have a binding (one input: its shape)."""
        return list(self._calls)

    @staticmethod
    def supports(session: ort.InferenceSession, inputs: Sequence[InputSpec],
                 outputs: Sequence[InputSpec]) -> bool:
        """Whether ``session`` can take bound calls: CPU provider only, numeric tensors in and
        out."""
        return (session.get_providers() == ["CPUExecutionProvider"]
                and hasattr(getattr(session, "_sess", None), "run_with_iobinding")
                and all(s.dtype is not None and not s.is_string for s in (*inputs, *outputs)))

    def run(self, feeds: Feeds) -> list[np.ndarray]:
        """The outputs of ``feeds``: bound when the signature has a binding and it is free,
        else the plain run (which may give the signature its binding)."""
        if not self._acquire(False):  # busy: another thread is in it
            return self._plain(feeds)
        try:
            one = self._one
            try:
                key = feeds[one].shape if one is not None else self._key(feeds)
            except (KeyError, AttributeError):
                return self._plain(feeds)
            call = self._calls.get(key)
            if call is None:
                outputs = self._plain(feeds)
                self._bind(key, feeds, outputs)
                return outputs
            try:
                return call(feeds)
            except TypeError:  # a dtype not the signature's: the plain run casts or refuses
                return self._plain(feeds)
            except Exception as exc:  # an output shape that depends on the values (NonZero)
                self._off(exc)
                return self._plain(feeds)
        finally:
            self._release()

    def _key(self, feeds: Feeds) -> tuple[Any, ...]:
        return tuple([feeds[n].shape for n in self._names])

    def close(self) -> None:
        """Drop the bindings (and with them the session); later calls are plain runs."""
        self._off(None)

    def _off(self, exc: Exception | None) -> None:
        if exc is not None:
            logger.debug("bound calls off: %s", exc)
        self._calls.clear()
        self._session = None

    def _bind(self, key: tuple[Any, ...], feeds: Feeds, outputs: Sequence[np.ndarray]) -> None:
        """Bind ``key``'s buffers, shaped and typed as this plain run's feeds and outputs,
        when there is room and they are small enough."""
        session = self._session  # None once off
        if session is None or len(self._calls) >= MAX_SIGNATURES:
            return
        every = (*(feeds[n] for n in self._names), *outputs)
        if not all(isinstance(a, np.ndarray) and a.dtype.kind in "biuf" and a.size
                   for a in every):
            return  # strings, sequences or empty tensors: always the plain run
        if sum(a.nbytes for a in every) > MAX_BOUND_BYTES:
            return
        try:
            self._calls[key] = _bound_call(session, feeds, self._names, outputs,
                                           self._output_names, self._options)
        except Exception as exc:  # onnxruntime refused the binding: plain runs from now on
            self._off(exc)
